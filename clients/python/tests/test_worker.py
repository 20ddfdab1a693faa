"""The Python worker against a real coordinator: results, records, retries, failures, time
limits, cancellation, child replacement and bad setups.

The coordinator here runs no worker of its own (``builtin_worker=False``), so every task on
its queues is run by the Python workers the tests start.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from worker_support import TESTS_DIRECTORY, PythonWorker, wait_until

import celeritas
from celeritas import TaskState
from celeritas.testing import DevServer, free_port

QUICK_LEASES = {
    "CELERITAS_COORDINATOR__HEARTBEAT_INTERVAL": "500ms",
    "CELERITAS_COORDINATOR__LEASE_TTL": "2s",
    "CELERITAS_COORDINATOR__LEASE_GRACE": "1s",
}
# Queues of their own for the tests whose workers are not the shared one.
OWN_QUEUES = {f"CELERITAS_QUEUES__{queue.upper()}__PRIORITY": "0" for queue in ("limits", "recycle", "crash")}


@pytest.fixture(scope="module")
def bare_server(celeritas_binary: Path) -> Iterator[DevServer]:
    with DevServer(
        celeritas_binary, builtin_worker=False, environment={**QUICK_LEASES, **OWN_QUEUES}
    ) as server:
        yield server


@pytest.fixture(scope="module")
def bare_client(bare_server: DevServer) -> Iterator[celeritas.Client]:
    with celeritas.Client(bare_server.url) as client:
        yield client


@pytest.fixture(scope="module")
def worker(bare_server: DevServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PythonWorker]:
    """One worker for the tests that do not stop, kill or reconfigure it."""
    directory = tmp_path_factory.mktemp("worker")
    with PythonWorker(bare_server.url, directory, name="py-shared", concurrency=2) as shared:
        yield shared
    assert shared.process is not None and shared.process.returncode == 0, shared.log_tail()


def test_plain_and_async_tasks_return_their_results(
    worker: PythonWorker, bare_client: celeritas.Client
) -> None:
    added = bare_client.submit("t.add", {"x": 2, "y": 3}, queue="default")
    greeted = bare_client.submit("t.greet", {"name": "Anna"}, queue="default")

    assert bare_client.result(added.task_id, timeout=30) == 5
    assert bare_client.result(greeted.task_id, timeout=30) == "hello Anna"
    assert bare_client.get(added.task_id).worker_id == "py-shared"


def test_records_and_progress_reach_the_client(worker: PythonWorker, bare_client: celeritas.Client) -> None:
    submitted = bare_client.submit("t.report", {"items": ["a", "b", "c"]}, queue="default")

    result = bare_client.result(submitted.task_id, timeout=30)

    records = list(bare_client.list_records(submitted.task_id))
    assert [(record.kind, record.key, record.status, record.data) for record in records] == [
        ("item", "a", "seen", {"number": 1}),
        ("item", "b", "seen", {"number": 2}),
        ("item", "c", "seen", {"number": 3}),
    ]
    assert result["seen"] == 3
    task = bare_client.get(submitted.task_id)
    assert task.progress is not None and (task.progress.done, task.progress.total) == (3, 3)


def test_async_tasks_emit_records_and_query_them(worker: PythonWorker, bare_client: celeritas.Client) -> None:
    submitted = bare_client.submit("t.async_report", {"count": 5}, queue="default")

    result = bare_client.result(submitted.task_id, timeout=30)

    assert result["emitted"] == 5
    assert worker.process is not None and result["worker_pid"] == worker.process.pid
    assert sorted(record.key for record in bare_client.list_records(submitted.task_id)) == list("01234")


def test_retry_asks_for_another_attempt_after_its_countdown(
    worker: PythonWorker, bare_client: celeritas.Client
) -> None:
    submitted = bare_client.submit("t.flaky", {"failures": 2}, queue="default", max_retries=3)

    assert bare_client.result(submitted.task_id, timeout=30) == {"attempt": 3, "retries": 2}
    failures = bare_client.get(submitted.task_id).failures
    assert [failure.kind for failure in failures] == ["ConnectionError", "ConnectionError"]
    assert "attempt 1 failed" in failures[0].message
    assert "Traceback" in failures[0].message


def test_a_permanent_error_fails_at_once_with_its_type_and_traceback(
    worker: PythonWorker, bare_client: celeritas.Client
) -> None:
    submitted = bare_client.submit(
        "t.permanent", {"address": "x@example.org"}, queue="default", max_retries=5
    )

    task = bare_client.wait(submitted.task_id, timeout=30)

    assert task.state is TaskState.FAILED
    assert task.attempt == 1
    assert task.error is not None and task.error.kind == "MailboxGone"
    assert task.error.message.startswith("x@example.org: no such mailbox")
    assert 'worker_tasks.py", line' in task.error.message


def test_any_other_exception_is_retried_by_policy(
    worker: PythonWorker, bare_client: celeritas.Client
) -> None:
    submitted = bare_client.submit("t.crash", {}, queue="default", max_retries=1)

    task = bare_client.wait(submitted.task_id, timeout=60)

    assert task.state is TaskState.FAILED
    assert [failure.kind for failure in task.failures] == ["ValueError", "ValueError"]


def test_a_task_catches_its_soft_time_limit(worker: PythonWorker, bare_client: celeritas.Client) -> None:
    submitted = bare_client.submit(
        "t.careful", {"nap": 0.05}, queue="default", soft_time_limit=0.5, hard_time_limit=20
    )

    result = bare_client.result(submitted.task_id, timeout=30)

    assert 0.4 <= result["stopped_after"] < 5


def test_a_cancelled_task_is_told_to_stop(worker: PythonWorker, bare_client: celeritas.Client) -> None:
    submitted = bare_client.submit("t.cancellable", {}, queue="default")
    wait_until(lambda: bare_client.get(submitted.task_id).state is TaskState.RUNNING, what="the task running")

    assert bare_client.cancel(submitted.task_id).state is TaskState.CANCELLED
    # The worker stopped the task and its place runs the next one.
    after = bare_client.submit("t.add", {"x": 1, "y": 1}, queue="default")
    assert bare_client.result(after.task_id, timeout=30) == 2


@pytest.mark.parametrize(
    ("name", "args", "kind", "words"),
    [
        ("t.add", {"x": 1}, "invalid_args", "missing a required argument: 'y'"),
        ("t.add", {"x": 1, "y": 2, "z": 3}, "invalid_args", "unexpected keyword argument 'z'"),
        ("t.add", [1, 2], "invalid_args", "must be a JSON object"),
        ("t.unserializable", {}, "unserializable_result", "Object of type set is not JSON serializable"),
    ],
)
def test_bad_input_fails_permanently_saying_why(
    worker: PythonWorker, bare_client: celeritas.Client, name: str, args: object, kind: str, words: str
) -> None:
    submitted = bare_client.submit(name, args, queue="default", max_retries=3)

    task = bare_client.wait(submitted.task_id, timeout=30)

    assert task.state is TaskState.FAILED
    assert task.attempt == 1
    assert task.error is not None and task.error.kind == kind
    assert words in task.error.message


def test_the_worker_answers_pings_and_reports_stats(
    worker: PythonWorker, bare_client: celeritas.Client
) -> None:
    pings = [ping for ping in bare_client.inspect.ping() if ping.worker_id == "py-shared"]
    assert pings and pings[0].answered
    registered = [entry for entry in bare_client.inspect.registered() if entry.worker_id == "py-shared"]
    assert "t.add" in registered[0].task_names and "t.greet" in registered[0].task_names

    def counted() -> bool:
        stats = [entry for entry in bare_client.inspect.stats() if entry.worker_id == "py-shared"]
        return bool(stats) and stats[0].processed.get("t.add", 0) >= 1 and stats[0].memory_rss_bytes > 0

    wait_until(counted, what="a heartbeat with the worker's stats")


def test_a_hard_time_limit_kills_a_cpu_bound_loop_and_replaces_the_child(
    bare_server: DevServer, bare_client: celeritas.Client, tmp_path: Path
) -> None:
    with PythonWorker(bare_server.url, tmp_path, name="py-limits", queues="limits", concurrency=1):
        before = bare_client.result(bare_client.submit("t.pid", {}, queue="limits").task_id, timeout=30)
        spinning = bare_client.submit("t.spin", {}, queue="limits", soft_time_limit=0.5, hard_time_limit=1.5)

        task = bare_client.wait(spinning.task_id, timeout=30)
        after = bare_client.result(bare_client.submit("t.pid", {}, queue="limits").task_id, timeout=30)

    assert task.state is TaskState.FAILED
    assert task.error is not None and task.error.kind == "time_limit"
    assert f"child process {before} was killed" in task.error.message
    assert after != before


def test_children_are_replaced_after_max_tasks_per_child(
    bare_server: DevServer, bare_client: celeritas.Client, tmp_path: Path
) -> None:
    with PythonWorker(
        bare_server.url,
        tmp_path,
        name="py-recycle",
        queues="recycle",
        concurrency=1,
        extra=["--max-tasks-per-child", "2"],
    ):
        pids = [
            bare_client.result(bare_client.submit("t.pid", {}, queue="recycle").task_id, timeout=30)
            for _ in range(4)
        ]

    assert pids[0] == pids[1] != pids[2] == pids[3]


def run_worker_command(*arguments: str) -> subprocess.CompletedProcess[str]:
    """A worker pointed at a port nothing listens on: if it tried to connect it would retry
    forever, so exiting proves it stopped before connecting."""
    return subprocess.run(
        [sys.executable, "-m", "celeritas.worker", *arguments, "--url", f"http://127.0.0.1:{free_port()}"],
        cwd=TESTS_DIRECTORY,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_task_module_that_fails_to_import_stops_the_worker_before_connecting(tmp_path: Path) -> None:
    (tmp_path / "broken_tasks.py").write_text("import celeritas\napp = celeritas.Celeritas()\n1 / 0\n")
    finished = subprocess.run(
        [sys.executable, "-m", "celeritas.worker", "-A", "broken_tasks:app", "--url", "http://127.0.0.1:1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert finished.returncode == 1
    assert (
        "cannot import the app's module 'broken_tasks': ZeroDivisionError: division by zero"
        in finished.stderr
    )
    assert "connected" not in finished.stderr


def test_a_missing_app_module_is_named(tmp_path: Path) -> None:
    finished = run_worker_command("-A", "no_such_tasks:app")

    assert finished.returncode == 1
    assert "no_such_tasks" in finished.stderr and "ModuleNotFoundError" in finished.stderr


def test_two_tasks_under_one_name_are_refused_at_start() -> None:
    finished = run_worker_command("-A", "duplicate_tasks:app")

    assert finished.returncode == 1
    assert "task name 'same.name' is registered twice" in finished.stderr
    assert "duplicate_tasks.first" in finished.stderr and "duplicate_tasks.second" in finished.stderr


def test_sigterm_drains_finishing_the_running_task_and_giving_back_the_waiting_one(
    bare_server: DevServer, bare_client: celeritas.Client, tmp_path: Path
) -> None:
    draining = PythonWorker(
        bare_server.url,
        tmp_path,
        name="py-drain",
        queues="crash",
        concurrency=1,
        extra=["--prefetch-multiplier", "2"],
    ).start()
    running = bare_client.submit(
        "t.careful", {"nap": 0.05}, queue="crash", soft_time_limit=1.5, hard_time_limit=30
    )
    wait_until(
        lambda: bare_client.get(running.task_id).state is TaskState.RUNNING, what="the first task running"
    )
    waiting = bare_client.submit("t.add", {"x": 1, "y": 2}, queue="crash")
    wait_until(
        lambda: bare_client.get(waiting.task_id).state is TaskState.LEASED, what="the second task leased"
    )

    assert draining.stop() == 0

    assert bare_client.get(running.task_id).state is TaskState.SUCCEEDED
    assert bare_client.get(waiting.task_id).state is TaskState.PENDING
    assert [entry["task_id"] for entry in draining.executions()] == [running.task_id]
    with PythonWorker(bare_server.url, tmp_path, name="py-after-drain", queues="crash", concurrency=1):
        assert bare_client.result(waiting.task_id, timeout=30) == 3
