"""The asyncio twin, AsyncClient, against the shared server: the same surface, awaited."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

import celeritas
from celeritas import TaskSpec, TaskState
from celeritas.testing import DevServer

Answer = TypeVar("Answer")


def run_with_client(
    server: DevServer, scenario: Callable[[celeritas.AsyncClient], Awaitable[Answer]]
) -> Answer:
    """Runs `scenario` in a fresh event loop with a client created inside it (grpc.aio channels
    belong to the loop that made them)."""

    async def main() -> Answer:
        async with celeritas.AsyncClient(server.url, token="s3cret") as client:
            return await scenario(client)

    return asyncio.run(main())


def test_submit_get_wait_and_result(server: DevServer) -> None:
    async def scenario(client: celeritas.AsyncClient) -> None:
        submitted = await client.submit("noop", {"async": True}, queue="email", priority=3)
        task = await client.wait(submitted.task_id, timeout=20)
        assert task.state is TaskState.SUCCEEDED and task.queue == "email" and task.priority == 3
        assert task.idempotency_key, "generated, as by the blocking client"
        assert await client.result(submitted.task_id) == {"async": True}
        assert (await client.get(submitted.task_id, wait=1)).result == {"async": True}

    run_with_client(server, scenario)


def test_submit_many_and_failures(server: DevServer) -> None:
    async def scenario(client: celeritas.AsyncClient) -> None:
        submitted = await client.submit_many(
            [TaskSpec("noop", {"n": 1}), TaskSpec("fail", {"retryable": False, "kind": "nope"})]
        )
        assert await client.result(submitted[0].task_id, timeout=20) == {"n": 1}
        with pytest.raises(celeritas.TaskFailed) as failure:
            await client.result(submitted[1].task_id, timeout=20)
        assert failure.value.error is not None and failure.value.error.kind == "nope"

    run_with_client(server, scenario)


def test_result_with_tree_waits_for_the_children_and_times_out_while_they_run(
    server: DevServer,
) -> None:
    async def scenario(client: celeritas.AsyncClient) -> None:
        quick = await client.submit(
            "fan_out", {"task": "sleep", "args": [{"ms": 300}] * 2, "callback": {"task": "noop"}}
        )
        assert (await client.result(quick.task_id, timeout=30, tree=True))["children"] == 2
        assert await client.list_tasks(root_id=quick.task_id) == [], "the whole tree finished"

        slow = await client.submit("fan_out", {"task": "sleep", "args": [{"ms": 60_000}]})
        try:
            assert (await client.wait(slow.task_id, timeout=20)).state is TaskState.SUCCEEDED
            with pytest.raises(celeritas.TaskTimeout) as timed_out:
                await client.wait(slow.task_id, timeout=0.5, tree=True)
            assert timed_out.value.tree and timed_out.value.task.state is TaskState.SUCCEEDED
        finally:
            await client.cancel(slow.task_id, terminate=True)

    run_with_client(server, scenario)


def test_stream_progress_and_list_records(server: DevServer) -> None:
    async def scenario(client: celeritas.AsyncClient) -> None:
        submitted = await client.submit(
            "fan_out", {"task": "emit_records", "args": [{"count": 3}, {"count": 2, "kind": "x"}]}
        )
        events = [event async for event in client.stream_progress(submitted.task_id)]
        assert [event.sequence for event in events] == list(range(1, len(events) + 1))
        assert events[-1].tree_finished == celeritas.TreeFinished(TaskState.SUCCEEDED)
        assert events[-1].aggregate.records_by_status == {"ok": 5}

        resumed = [event async for event in client.stream_progress(submitted.task_id, 2)]
        assert resumed == events[2:]

        records = [
            record
            async for record in client.list_records(submitted.task_id, whole_tree=True, page_size=2)
        ]
        assert sorted(record.key for record in records) == [
            "item-0",
            "item-1",
            "item-2",
            "x-0",
            "x-1",
        ]

    run_with_client(server, scenario)


def test_cancel_purge_health_and_errors(server: DevServer) -> None:
    async def scenario(client: celeritas.AsyncClient) -> None:
        waiting = await client.submit("noop", queue="campaigns", countdown=600)
        assert await client.purge("campaigns") >= 1
        assert (await client.get(waiting.task_id)).state is TaskState.CANCELLED

        sleeping = await client.submit("noop", countdown=600)
        assert (await client.cancel(sleeping.task_id)).state is TaskState.CANCELLED

        assert await client.health() is celeritas.HealthStatus.SERVING

        with pytest.raises(celeritas.InvalidArgument) as refused:
            await client.submit("noop", queue="mail")
        assert refused.value.field == "task.queue"
        with pytest.raises(celeritas.NotFound):
            await client.get("00000000-0000-0000-0000-000000000000")

        # A child's tree cannot be streamed; find a child through a fan_out's records.
        root = await client.submit("fan_out", {"task": "emit_records", "args": [{"count": 1}]})
        async for _ in client.stream_progress(root.task_id):
            pass
        child = (await anext(aiter(client.list_records(root.task_id, True)))).task_id
        with pytest.raises(celeritas.FailedPrecondition) as refused:
            async for _ in client.stream_progress(child):
                pass
        assert root.task_id in refused.value.message

    run_with_client(server, scenario)
