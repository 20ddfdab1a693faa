"""Listing quiet tasks, requeueing and failing stuck ones, and the close-idle-connections
control, with the blocking client and its asyncio twin."""

from __future__ import annotations

import asyncio
import time

import pytest

import celeritas
from celeritas import TaskState
from celeritas.aio import AsyncClient


def _wait_for(condition, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("the condition did not hold in time")


def test_a_quiet_task_is_listed_requeued_and_then_failed(client: celeritas.Client) -> None:
    submitted = client.submit("sleep", {"ms": 60_000})
    quiet = _wait_for(
        lambda: [
            task
            for task in client.list_tasks(names=["sleep"], states=["running"], quiet_for=0.3)
            if task.id == submitted.task_id
        ]
    )
    assert quiet[0].attempt == 1
    in_tree = client.list_tasks(root_id=submitted.task_id, states=[TaskState.RUNNING])
    assert [task.id for task in in_tree] == [submitted.task_id]
    assert in_tree[0].args == {}, "args are read only when asked for"
    with_args = client.list_tasks(root_id=submitted.task_id, include_payloads=True)
    assert with_args[0].args == {"ms": 60_000}

    requeued = client.requeue(submitted.task_id, "no progress", attempt=1)
    assert requeued.retries == 1
    assert requeued.failures[0].kind == "requeued"
    assert requeued.failures[0].message == "no progress"
    _wait_for(lambda: client.get(submitted.task_id).attempt == 2)

    with pytest.raises(celeritas.FailedPrecondition) as stale:
        client.fail(submitted.task_id, "late", attempt=1)
    assert "attempt 1" in stale.value.message

    failed = client.fail(submitted.task_id, "given up")
    assert failed.state is TaskState.FAILED
    assert failed.error is not None and failed.error.kind == "failed_by_request"


def test_bad_requests_name_the_field(client: celeritas.Client) -> None:
    with pytest.raises(ValueError, match=r"states\[0\]"):
        client.list_tasks(states=["stuck"])
    with pytest.raises(celeritas.InvalidArgument) as empty_reason:
        client.requeue("01a20cf6-36f5-74fb-8237-04720b58241c", " ")
    assert empty_reason.value.field == "reason"
    with pytest.raises(celeritas.NotFound):
        client.requeue("01a20cf6-36f5-74fb-8237-04720b58241c", "gone")


def test_close_idle_connections_reaches_the_dev_worker(client: celeritas.Client) -> None:
    answers = client.inspect.close_idle_connections(queue="email", timeout=5)
    assert len(answers) == 1
    assert answers[0].answered
    assert answers[0].detail.startswith("closed 0 idle SMTP connection(s)")


def test_the_async_client_lists_and_requeues(server) -> None:
    async def main() -> None:
        async with AsyncClient(server.url) as client:
            submitted = await client.submit("sleep", {"ms": 60_000})
            for _ in range(200):
                tasks = await client.list_tasks(names=["sleep"], states=["running"])
                if any(task.id == submitted.task_id for task in tasks):
                    break
                await asyncio.sleep(0.1)
            requeued = await client.requeue(submitted.task_id, "by hand")
            assert requeued.failures[-1].kind == "requeued"
            await client.cancel(submitted.task_id, terminate=True)
            answers = await client.inspect.close_idle_connections()
            assert answers and answers[0].answered

    asyncio.run(main())
