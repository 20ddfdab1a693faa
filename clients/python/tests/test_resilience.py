"""Retries and resumption: each test runs its own coordinator and stops, kills and restarts it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

import celeritas
from celeritas import TaskState
from celeritas.testing import DevServer, free_port

# Short leases, so a killed coordinator's leases are settled in seconds, not the default 45.
QUICK_LEASES = {
    "CELERITAS_COORDINATOR__HEARTBEAT_INTERVAL": "500ms",
    "CELERITAS_COORDINATOR__LEASE_TTL": "2s",
    "CELERITAS_COORDINATOR__LEASE_GRACE": "1s",
}

# Patient enough to outlast a restart (about a second here), quick enough to notice it.
PATIENT = celeritas.RetryPolicy(attempts=60, initial_backoff=0.05, max_backoff=0.5)

# Children that take a while, so the tree is still running when the coordinator goes away.
SLOW_FAN_OUT = {"task": "sleep", "args": [{"ms": 400}] * 8, "callback": {"task": "noop"}}


@pytest.fixture
def own_server(celeritas_binary: Path, tmp_path: Path) -> Iterator[DevServer]:
    server = DevServer(celeritas_binary, working_directory=tmp_path, environment=QUICK_LEASES)
    server.start()
    yield server
    server.stop()


def restart_later(server: DevServer, delay: float) -> threading.Thread:
    """Starts `server` again (same port, same store) after `delay` seconds, in the background,
    so the test's own thread can be inside a call that is retrying meanwhile."""

    def restart() -> None:
        time.sleep(delay)
        server.start()

    thread = threading.Thread(target=restart, name="restart-coordinator")
    thread.start()
    return thread


def assert_every_event_once(events: list[celeritas.Event]) -> None:
    assert [event.sequence for event in events] == list(range(1, len(events) + 1))
    assert [event.is_last for event in events].count(True) == 1 and events[-1].is_last


@pytest.mark.parametrize("how", ["killed", "stopped"])
def test_a_progress_stream_resumes_across_a_coordinator_restart(
    own_server: DevServer, how: str
) -> None:
    client = celeritas.Client(own_server.url, retry=PATIENT)
    submitted = client.submit("fan_out", SLOW_FAN_OUT)
    events: list[celeritas.Event] = []
    restarter = None
    restarted_at = None

    for event in client.stream_progress(submitted.task_id):
        events.append(event)
        if restarter is None:
            if how == "killed":
                own_server.kill()
            else:
                own_server.stop()
            restarted_at = datetime.now(timezone.utc)
            restarter = restart_later(own_server, 1.0)
    assert restarter is not None
    restarter.join()

    assert_every_event_once(events)
    assert events[-1].tree_finished == celeritas.TreeFinished(TaskState.SUCCEEDED)
    assert events[-1].aggregate.tasks_finished == 10
    assert events[-1].at is not None and restarted_at is not None
    assert events[-1].at > restarted_at, "the stream went on with events from after the restart"
    client.close()


def test_the_async_progress_stream_resumes_across_a_coordinator_restart(
    own_server: DevServer,
) -> None:
    async def follow() -> list[celeritas.Event]:
        async with celeritas.AsyncClient(own_server.url, retry=PATIENT) as client:
            submitted = await client.submit("fan_out", SLOW_FAN_OUT)
            events = []
            restarter = None
            async for event in client.stream_progress(submitted.task_id):
                events.append(event)
                if restarter is None:
                    own_server.kill()
                    restarter = restart_later(own_server, 1.0)
            assert restarter is not None
            restarter.join()
            return events

    events = asyncio.run(follow())

    assert_every_event_once(events)
    assert events[-1].tree_finished == celeritas.TreeFinished(TaskState.SUCCEEDED)


def test_a_submit_retries_until_the_coordinator_is_back(own_server: DevServer) -> None:
    client = celeritas.Client(own_server.url, retry=PATIENT)
    own_server.stop()
    restarter = restart_later(own_server, 1.0)

    started = time.monotonic()
    submitted = client.submit("noop", {"after": "restart"})
    restarter.join()

    assert time.monotonic() - started >= 0.9, "the first tries found no coordinator"
    assert submitted.created
    assert client.result(submitted.task_id, timeout=20) == {"after": "restart"}
    client.close()


def test_unavailable_is_raised_once_the_retries_run_out() -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    policy = celeritas.RetryPolicy(attempts=3, initial_backoff=0.2, max_backoff=0.2)

    started = time.monotonic()
    with celeritas.Client(nobody, retry=policy) as client:
        with pytest.raises(celeritas.Unavailable) as unavailable:
            client.get("00000000-0000-0000-0000-000000000000")

    # Two backoffs of at least half of 0.2 s each came between the three tries.
    assert time.monotonic() - started >= 0.2
    assert unavailable.value.code.name == "UNAVAILABLE"


def test_health_is_not_retried() -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    with celeritas.Client(nobody, retry=PATIENT) as client:
        started = time.monotonic()
        with pytest.raises(celeritas.Unavailable):
            client.health()
        assert time.monotonic() - started < 5
