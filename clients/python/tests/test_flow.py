"""Flow control: pausing and resuming queues, and retrying and cancelling tasks in bulk by
selector (PauseQueue, ResumeQueue, RetryTasks, CancelTasks in proto/celeritas/v1/tasks.proto),
with the blocking client and its asyncio twin.

The module has a server of its own: a paused queue, or a selector by name, must not meet the
tasks of the other modules' tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import celeritas
from celeritas import BulkResult, TaskState
from celeritas.aio import AsyncClient
from celeritas.testing import DevServer

# Names no worker registers: their tasks stay pending (unserved) until cancelled.
UNSERVED = "flow.nobody_runs_it"
OTHER_UNSERVED = "flow.nobody_runs_this_either"


@pytest.fixture(scope="module")
def flow_server(celeritas_binary: Path) -> Iterator[DevServer]:
    with DevServer(celeritas_binary) as dev_server:
        yield dev_server


@pytest.fixture
def flow_client(flow_server: DevServer) -> Iterator[celeritas.Client]:
    with celeritas.Client(flow_server.url) as connected_client:
        yield connected_client


def _depth(client: celeritas.Client, queue: str) -> celeritas.QueueDepth:
    return next(depth for depth in client.inspect.queues() if depth.name == queue)


def test_a_paused_queue_holds_its_tasks_until_resumed(flow_client: celeritas.Client) -> None:
    client = flow_client
    before = datetime.now(timezone.utc)
    assert client.pause_queue("import") is True
    after = datetime.now(timezone.utc)
    try:
        assert client.pause_queue("import") is False, "pausing a paused queue changes nothing"
        held = [client.submit("noop", {"n": n}, queue="import").task_id for n in range(3)]
        # The sync point: a task submitted later, on a queue of lower priority, runs to the
        # end. Had the pause not held, the dev worker would have leased the import tasks first.
        other = client.submit("noop", {"other": True}, queue="default")
        assert client.result(other.task_id, timeout=30) == {"other": True}
        assert [client.get(task_id).state for task_id in held] == [TaskState.PENDING] * 3

        depth = _depth(client, "import")
        assert depth.paused_at is not None
        assert depth.paused_at.tzinfo is not None
        slack = timedelta(seconds=1)
        assert before - slack <= depth.paused_at <= after + slack
        assert depth.tasks_by_state.get("pending") == 3
        assert _depth(client, "default").paused_at is None
    finally:
        resumed = client.resume_queue("import")
    assert resumed is True
    assert client.resume_queue("import") is False, "resuming a running queue changes nothing"
    assert [client.result(task_id, timeout=30) for task_id in held] == [{"n": n} for n in range(3)]
    assert _depth(client, "import").paused_at is None


def test_failed_tasks_are_retried_in_bulk_after_a_dry_run(flow_client: celeritas.Client) -> None:
    client = flow_client
    started = datetime.now(timezone.utc)
    failing = [
        client.submit(
            "fail", {"retryable": False, "kind": "flow_bulk", "message": f"no {n}"}
        ).task_id
        for n in range(3)
    ]
    # Failed too, but of another kind: the selector leaves it alone.
    other = client.submit("fail", {"retryable": False, "kind": "flow_other"}).task_id
    for task_id in [*failing, other]:
        assert client.wait(task_id, timeout=30).state is TaskState.FAILED

    dry = client.retry_tasks(names=["fail"], error_kinds=["flow_bulk"], dry_run=True)
    assert dry == BulkResult(matched=3, changed=0)
    assert all(client.get(task_id).state is TaskState.FAILED for task_id in failing)
    # The moments travel: nothing was created after an hour from now, and a dry run of no
    # match answers a count of 0 instead of NotFound.
    later = started + timedelta(hours=1)
    assert client.retry_tasks(names=["fail"], created_after=later, dry_run=True) == BulkResult(0, 0)
    in_window = client.retry_tasks(
        error_kinds=["flow_bulk"], created_after=started - timedelta(seconds=1), dry_run=True
    )
    assert in_window.matched == 3

    retried = client.retry_tasks(names=["fail"], error_kinds=["flow_bulk"])
    assert retried == BulkResult(matched=3, changed=3)
    # `fail` fails whenever it runs: each retried task ran once more and failed again, its
    # first failure kept in its history.
    for task_id in failing:
        task = client.wait(task_id, timeout=30)
        assert task.state is TaskState.FAILED
        assert task.attempt == 2
        assert [failure.kind for failure in task.failures] == ["flow_bulk", "flow_bulk"]
    untouched = client.get(other)
    assert untouched.state is TaskState.FAILED and untouched.attempt == 1


def test_pending_tasks_are_cancelled_in_bulk_by_name(flow_client: celeritas.Client) -> None:
    client = flow_client
    waiting = [client.submit(UNSERVED, {"n": n}, queue="default").task_id for n in range(4)]
    decoy = client.submit(OTHER_UNSERVED, queue="default").task_id
    assert all(client.get(task_id).state is TaskState.PENDING for task_id in [*waiting, decoy])

    dry = client.cancel_tasks(names=[UNSERVED], dry_run=True)
    assert dry == BulkResult(matched=4, changed=0)
    assert all(client.get(task_id).state is TaskState.PENDING for task_id in waiting)

    cancelled = client.cancel_tasks(names=[UNSERVED], states=[TaskState.PENDING], queues=["default"])
    assert cancelled == BulkResult(matched=4, changed=4)
    assert all(client.get(task_id).state is TaskState.CANCELLED for task_id in waiting)
    assert client.get(decoy).state is TaskState.PENDING
    with pytest.raises(celeritas.NotFound):
        client.cancel_tasks(names=[UNSERVED])
    assert client.cancel_tasks(names=[OTHER_UNSERVED], states=["pending"]) == BulkResult(1, 1)


def test_bad_flow_requests_name_the_field(flow_client: celeritas.Client) -> None:
    client = flow_client
    with pytest.raises(celeritas.InvalidArgument) as unknown_queue:
        client.pause_queue("mail")
    assert unknown_queue.value.field == "queue"
    with pytest.raises(celeritas.InvalidArgument):
        client.resume_queue("mail")

    with pytest.raises(celeritas.InvalidArgument) as empty_retry:
        client.retry_tasks()
    assert empty_retry.value.field == "selector"
    with pytest.raises(celeritas.InvalidArgument) as empty_cancel:
        client.cancel_tasks(dry_run=True)
    assert empty_cancel.value.field == "selector"
    with pytest.raises(celeritas.InvalidArgument) as finished_state:
        client.cancel_tasks(names=[UNSERVED], states=[TaskState.SUCCEEDED])
    assert finished_state.value.field == "selector.states"
    with pytest.raises(celeritas.InvalidArgument) as unknown_selector_queue:
        client.retry_tasks(queues=["mail"])
    assert (unknown_selector_queue.value.field or "").startswith("selector.queues")

    with pytest.raises(celeritas.NotFound):
        client.retry_tasks(names=["flow.never_submitted"])
    with pytest.raises(celeritas.NotFound):
        client.cancel_tasks(names=["flow.never_submitted"])

    # Refused before anything is sent.
    with pytest.raises(ValueError, match="created_after"):
        client.retry_tasks(names=["fail"], created_after=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match=r"states\[0\]"):
        client.cancel_tasks(names=[UNSERVED], states=["stuck"])
    with pytest.raises(TypeError, match="names"):
        client.cancel_tasks(names=UNSERVED)


def test_the_async_client_pauses_retries_and_cancels(flow_server: DevServer) -> None:
    async def main() -> None:
        async with AsyncClient(flow_server.url) as client:
            assert await client.pause_queue("campaigns") is True
            try:
                held = await client.submit("noop", {"held": True}, queue="campaigns")
                depths = {depth.name: depth for depth in await client.inspect.queues()}
                assert depths["campaigns"].paused_at is not None
                assert (await client.get(held.task_id)).state is TaskState.PENDING
                dry = await client.cancel_tasks(queues=["campaigns"], dry_run=True)
                assert dry == BulkResult(matched=1, changed=0)
            finally:
                assert await client.resume_queue("campaigns") is True
            assert await client.result(held.task_id, timeout=30) == {"held": True}

            failed = await client.submit("fail", {"retryable": False, "kind": "flow_async"})
            assert (await client.wait(failed.task_id, timeout=30)).state is TaskState.FAILED
            assert await client.retry_tasks(error_kinds=["flow_async"]) == BulkResult(1, 1)
            assert (await client.wait(failed.task_id, timeout=30)).attempt == 2

            with pytest.raises(celeritas.InvalidArgument):
                await client.pause_queue("mail")
            with pytest.raises(celeritas.InvalidArgument):
                await client.retry_tasks()
            with pytest.raises(celeritas.NotFound):
                await client.cancel_tasks(names=["flow.never_submitted"])

    asyncio.run(main())


def test_a_tree_is_paused_and_resumed_and_groups_are_kept(flow_client: celeritas.Client) -> None:
    client = flow_client
    # A tree that stays unfinished: two children no worker runs.
    root = client.submit(
        "fan_out", {"task": UNSERVED, "args": [{}, {}], "queue": "default"}, group_key="customer:7"
    ).task_id
    # Its root succeeds once it has submitted them: from then on the tree is what it will be.
    assert client.wait(root, timeout=30).state is TaskState.SUCCEEDED
    try:
        pause = client.pause_tree(root)
        assert pause.changed is True
        assert pause.paused_at is not None and pause.paused_at.tzinfo is not None
        assert client.pause_tree(root).changed is False, "pausing a paused tree changes nothing"
        shown = client.get(root)
        assert shown.tree_paused_at == pause.paused_at
        assert shown.group_key == "customer:7"
        assert client.resume_tree(root) is True
        assert client.resume_tree(root) is False
        assert client.get(root).tree_paused_at is None
    finally:
        # fan_out's root finished when it submitted the children; they are what is left.
        client.cancel_tasks(root_id=root)

    with pytest.raises(celeritas.NotFound) as unknown:
        client.pause_tree("00000000-0000-4000-8000-000000000000")
    assert "task_id" in str(unknown.value)
    with pytest.raises(celeritas.InvalidArgument) as bad_group:
        client.submit("noop", {}, group_key="x" * 201)
    assert "group_key" in str(bad_group.value)
    with pytest.raises(celeritas.InvalidArgument) as bad_limit:
        client.submit("noop", {}, max_concurrency=0)
    assert "max_concurrency" in str(bad_limit.value)
    limited = client.submit("noop", {"limited": True}, group_key="g", max_concurrency=2)
    assert client.result(limited.task_id, timeout=30) == {"limited": True}
    assert client.get(limited.task_id).max_concurrency == 2


def test_the_async_client_pauses_and_resumes_trees(flow_server: DevServer) -> None:
    async def scenario() -> None:
        async with AsyncClient(flow_server.url) as client:
            root = (
                await client.submit("fan_out", {"task": UNSERVED, "args": [{}], "queue": "default"})
            ).task_id
            await client.wait(root, timeout=30)
            try:
                assert (await client.pause_tree(root)).changed is True
                assert (await client.get(root)).tree_paused_at is not None
                assert await client.resume_tree(root) is True
            finally:
                await client.cancel_tasks(root_id=root)

    asyncio.run(scenario())


def test_rate_limits_are_set_listed_and_cleared(flow_client: celeritas.Client) -> None:
    client = flow_client
    first = client.set_rate_limit("domain:*.flow.test", "20/s")
    assert first == celeritas.RateLimitSet(previous=None, governed=0)
    again = client.set_rate_limit("domain:*.flow.test", "30/m")
    assert again.previous == "20/s"
    [rule] = [
        rule for rule in client.inspect.rate_limits().limits if rule.pattern == "domain:*.flow.test"
    ]
    assert rule.source == "api"
    assert rule.per_second == 0.5
    assert rule.set_at is not None and rule.set_at.tzinfo is not None
    assert client.clear_rate_limit("domain:*.flow.test") == "30/m"
    assert all(rule.pattern != "domain:*.flow.test" for rule in client.inspect.rate_limits().limits)

    with pytest.raises(celeritas.NotFound) as missing:
        client.clear_rate_limit("domain:*.flow.test")
    assert "key" in str(missing.value)
    with pytest.raises(celeritas.InvalidArgument) as bad_rate:
        client.set_rate_limit("domain:x.flow.test", "ten per second")
    assert "rate" in str(bad_rate.value)
    with pytest.raises(celeritas.InvalidArgument) as bad_key:
        client.set_rate_limit("", "5/s")
    assert "key" in str(bad_key.value)


def test_the_async_client_sets_and_clears_rate_limits(flow_server: DevServer) -> None:
    async def scenario() -> None:
        async with AsyncClient(flow_server.url) as client:
            assert (await client.set_rate_limit("customer:flow", "2/s")).previous is None
            limits = (await client.inspect.rate_limits()).limits
            assert [rule.per_second for rule in limits if rule.pattern == "customer:flow"] == [2.0]
            assert await client.clear_rate_limit("customer:flow") == "2/s"

    asyncio.run(scenario())
