"""The Python worker's guarantees when things break: a worker killed with -9 in the middle of
2,000 tasks loses none and repeats only what it had in flight; a coordinator restart loses no
result the worker holds."""

from __future__ import annotations

from pathlib import Path

from worker_support import PythonWorker, read_executions, runs_per_task, wait_until

import celeritas
from celeritas import TaskSpec, TaskState
from celeritas.testing import DevServer

QUICK_LEASES = {
    "CELERITAS_COORDINATOR__HEARTBEAT_INTERVAL": "500ms",
    "CELERITAS_COORDINATOR__LEASE_TTL": "2s",
    "CELERITAS_COORDINATOR__LEASE_GRACE": "1s",
}
PATIENT = celeritas.RetryPolicy(attempts=100, initial_backoff=0.05, max_backoff=0.5)


def test_kill_9_in_the_middle_of_2000_tasks_loses_nothing_and_repeats_only_work_in_flight(
    celeritas_binary: Path, tmp_path: Path
) -> None:
    log = tmp_path / "executions.jsonl"
    concurrency, prefetch = 4, 2
    with (
        DevServer(celeritas_binary, builtin_worker=False, environment=QUICK_LEASES) as server,
        celeritas.Client(server.url) as client,
    ):
        specs = [
            TaskSpec(name="t.add", args={"x": number, "y": 1}, queue="default") for number in range(2000)
        ]
        submitted = client.submit_many(specs)
        doomed = PythonWorker(
            server.url,
            tmp_path,
            name="py-doomed",
            concurrency=concurrency,
            extra=["--prefetch-multiplier", str(prefetch)],
            execution_log=log,
        ).start()
        wait_until(lambda: len(read_executions(log)) >= 500, 120, "500 attempts started")
        doomed.kill()
        started_before_kill = len(read_executions(log))

        with PythonWorker(server.url, tmp_path, name="py-survivor", concurrency=4, execution_log=log):
            for number, task in enumerate(submitted):
                assert client.result(task.task_id, timeout=120) == number + 1

    runs = runs_per_task(read_executions(log))
    assert set(runs) == {task.task_id for task in submitted}
    repeated = [task_id for task_id, count in runs.items() if count > 1]
    # Only leases the killed worker held (at most concurrency x prefetch) run twice.
    assert len(repeated) <= concurrency * prefetch
    assert all(runs[task_id] == 2 for task_id in repeated)
    assert started_before_kill < 2000


def test_results_held_across_a_coordinator_restart_are_delivered(
    celeritas_binary: Path, tmp_path: Path
) -> None:
    server = DevServer(
        celeritas_binary,
        builtin_worker=False,
        working_directory=tmp_path / "server",
        environment=QUICK_LEASES,
    )
    (tmp_path / "server").mkdir()
    server.start()
    try:
        client = celeritas.Client(server.url, retry=PATIENT)
        with PythonWorker(server.url, tmp_path, name="py-steadfast", concurrency=2):
            sleeper = client.submit(
                "t.careful", {"nap": 0.05}, queue="default", soft_time_limit=3, hard_time_limit=30
            )
            wait_until(
                lambda: client.get(sleeper.task_id).state is TaskState.RUNNING, what="the task running"
            )
            server.kill()
            server.start()
            # The worker reconnects, keeps its lease, and its result lands once the task ends.
            assert client.result(sleeper.task_id, timeout=60)["stopped_after"] >= 2.5
            after = client.submit("t.add", {"x": 20, "y": 22}, queue="default")
            assert client.result(after.task_id, timeout=30) == 42
            assert client.get(sleeper.task_id).attempt == 1
        client.close()
    finally:
        server.close()
