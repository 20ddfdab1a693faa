"""Python worker processes for tests: started as a user starts them
(``python -m celeritas.worker``), with an execution log, and waited for by condition."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import celeritas

TESTS_DIRECTORY = Path(__file__).resolve().parent

_Value = TypeVar("_Value")


def wait_until(condition: Callable[[], _Value], timeout: float = 30.0, what: str = "the condition") -> _Value:
    """Polls ``condition`` until it returns something truthy, and returns that."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        time.sleep(0.05)


class PythonWorker:
    """``python -m celeritas.worker`` as a child process of the test."""

    def __init__(
        self,
        url: str,
        directory: Path,
        *,
        name: str,
        queues: str = "default",
        concurrency: int = 2,
        app: str = "worker_tasks:app",
        extra: Sequence[str] = (),
        execution_log: Path | None = None,
        environment: Mapping[str, str] | None = None,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        """``environment`` adds variables to the worker's; ``client_options`` are the
        :class:`celeritas.Client` arguments (a token, a CA) of the client that waits for the
        worker to connect."""
        self.url = url
        self.environment = dict(environment or {})
        self.client_options = dict(client_options or {})
        self.name = name
        self.execution_log = execution_log or directory / f"{name}.executions.jsonl"
        self.log_path = directory / f"{name}.log"
        self.command = [
            sys.executable,
            "-m",
            "celeritas.worker",
            "-A",
            app,
            "-Q",
            queues,
            "-c",
            str(concurrency),
            "--url",
            url,
            "--name",
            name,
            "--execution-log",
            str(self.execution_log),
            *extra,
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True) -> PythonWorker:
        environment = {
            **os.environ,
            **self.environment,
            "PYTHONPATH": os.pathsep.join([str(TESTS_DIRECTORY), *sys.path]),
        }
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command, cwd=TESTS_DIRECTORY, env=environment, stdout=log, stderr=subprocess.STDOUT
            )
        if wait:
            self.wait_connected()
        return self

    def wait_connected(self, timeout: float = 60.0) -> None:
        """Until the coordinator lists the worker as connected."""
        with celeritas.Client(self.url, **self.client_options) as client:

            def connected() -> bool:
                if self.process is not None and self.process.poll() is not None:
                    raise AssertionError(f"worker {self.name} exited: {self.log_tail()}")
                return any(
                    entry.worker_id == self.name and entry.connected for entry in client.inspect.registered()
                )

            wait_until(connected, timeout, f"worker {self.name} connecting")

    def wait_exited(self, timeout: float = 60.0) -> int:
        """Until the process ends on its own; its exit code."""
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker {self.name} still runs after {timeout}s: {self.log_tail()}"
            ) from None

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (a drain), and the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"worker {self.name} did not drain within {timeout}s: {self.log_tail()}"
            ) from None

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def executions(self) -> list[dict[str, Any]]:
        return read_executions(self.execution_log)

    def __enter__(self) -> PythonWorker:
        return self.start()

    def __exit__(self, *exception_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop()


def read_executions(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def runs_per_task(executions: list[dict[str, Any]]) -> collections.Counter[str]:
    return collections.Counter(entry["task_id"] for entry in executions)
