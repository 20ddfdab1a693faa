"""`client.inspect`: the InspectService (proto/celeritas/v1/inspect.proto)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

import celeritas
from celeritas import TaskState
from celeritas.testing import DevServer

BUILT_IN_TASKS = {"noop", "sleep", "fail", "fan_out", "emit_records", "test_celery"}
SEED_QUEUES = {"campaigns": 10, "email": 10, "import": 5, "default": 0}


@pytest.fixture
def sleeping_task(client: celeritas.Client) -> Iterator[str]:
    """A task running for a minute, seen running before the test starts."""
    submitted = client.submit("sleep", {"ms": 60_000})
    events = client.stream_progress(submitted.task_id)
    assert next(events).state_changed.state is TaskState.RUNNING  # type: ignore[union-attr]
    events.close()
    yield submitted.task_id
    client.cancel(submitted.task_id, terminate=True)


def test_ping_reaches_the_dev_worker(client: celeritas.Client) -> None:
    # `celeritas dev` says it listens before its worker has connected; run first, this test
    # waits for the worker's hello.
    deadline = time.monotonic() + 30
    while not any(entry.connected for entry in client.inspect.registered()):
        assert time.monotonic() < deadline, "the dev worker never connected"
        time.sleep(0.05)
    pings = client.inspect.ping(timeout=5)

    answered = [ping for ping in pings if ping.answered]
    assert answered, pings
    assert answered[0].worker_id and answered[0].hostname and answered[0].coordinator_id
    assert answered[0].round_trip is not None
    assert timedelta(0) <= answered[0].round_trip < timedelta(seconds=5)


def test_active_lists_the_running_task(client: celeritas.Client, sleeping_task: str) -> None:
    active = client.inspect.active()

    running = {brief.id: brief for worker in active for brief in worker.tasks}
    assert sleeping_task in running
    brief = running[sleeping_task]
    # Args are left out unless asked for: a campaign's batches carry their recipients.
    assert brief.name == "sleep" and brief.queue == "default" and brief.args == {}
    with_args = client.inspect.active(include_args=True, limit=10)
    running = {brief.id: brief for worker in with_args for brief in worker.tasks}
    assert running[sleeping_task].args == {"ms": 60_000}
    assert brief.attempt == 1 and brief.started_at is not None and brief.worker_id


def test_reserved_answers_by_worker(client: celeritas.Client) -> None:
    # The dev worker prefetches nothing beyond what it runs, so there may be no entries; the
    # call must still answer with the shape the proto promises.
    for worker in client.inspect.reserved():
        assert worker.worker_id
        assert all(brief.started_at is None for brief in worker.tasks)


def test_scheduled_lists_a_task_waiting_for_its_countdown(client: celeritas.Client) -> None:
    submitted = client.submit("noop", countdown=600)
    try:
        scheduled = client.inspect.scheduled(limit=10_000)

        waiting = {brief.id: brief for brief in scheduled.tasks}
        assert submitted.task_id in waiting
        assert waiting[submitted.task_id].run_at is not None
        assert isinstance(scheduled.schedules, list)
    finally:
        client.cancel(submitted.task_id)


def test_stats_describe_the_dev_worker(client: celeritas.Client) -> None:
    client.result(client.submit("noop").task_id, timeout=20)

    # Workers report their counters with their heartbeats (every five seconds by default).
    deadline = time.monotonic() + 15
    while True:
        stats = [entry for entry in client.inspect.stats() if entry.connected]
        assert stats
        worker = stats[0]
        if worker.processed.get("noop", 0) >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.25)

    assert worker.pid > 0 and worker.concurrency >= 1 and worker.prefetch_multiplier >= 1
    assert worker.uptime is not None and worker.version
    assert worker.processed.get("noop", 0) >= 1


def test_active_queues_and_registered_show_the_dev_worker(client: celeritas.Client) -> None:
    queues = [entry for entry in client.inspect.active_queues() if entry.connected]
    assert queues
    assert {queue.name: queue.priority for queue in queues[0].queues} == SEED_QUEUES
    priorities = [queue.priority for queue in queues[0].queues]
    assert priorities == sorted(priorities, reverse=True), "highest priority first"

    registered = [entry for entry in client.inspect.registered() if entry.connected]
    assert registered and BUILT_IN_TASKS <= set(registered[0].task_names)


def test_queues_show_depth_by_state(client: celeritas.Client) -> None:
    submitted = client.submit("noop", queue="import", countdown=600)
    # No worker registers this name: it waits, and the queue says so.
    unserved = client.submit("reports.nobody_has_it", queue="default")
    try:
        depths = {depth.name: depth for depth in client.inspect.queues()}

        assert {name: depth.priority for name, depth in depths.items()} == SEED_QUEUES
        assert depths["import"].tasks_by_state.get("scheduled", 0) >= 1
        assert depths["default"].consumers >= 1
        assert depths["default"].unserved == {"reports.nobody_has_it": 1}
        assert client.get(unserved.task_id).state == celeritas.TaskState.PENDING
    finally:
        client.cancel(submitted.task_id)
        client.cancel(unserved.task_id)


def test_the_async_twin_asks_the_same_questions(server: DevServer) -> None:
    async def ask() -> tuple[list[celeritas.WorkerPing], list[celeritas.QueueDepth]]:
        async with celeritas.AsyncClient(server.url) as client:
            return await client.inspect.ping(), await client.inspect.queues()

    pings, depths = asyncio.run(ask())

    assert any(ping.answered for ping in pings)
    assert {depth.name for depth in depths} == set(SEED_QUEUES)
