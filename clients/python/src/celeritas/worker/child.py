"""A worker's child process: runs plain-function tasks one at a time, for the worker process
that started it, and speaks to it over a pipe (never gRPC).

What travels on the pipe, as pickled tuples:

- worker → child: ``("run", Job)``, ``("reply", request_id, ok, payload)``, ``("exit",)``;
- child → worker: ``("ready", pid)`` or ``("setup_failed", message)`` once, then per job
  ``("progress", done, total, message)``, ``("records", [RecordEntry])``,
  ``("children", request_id, [TaskSpec], TaskSpec | None)``,
  ``("query", request_id, kind, status)``, and ``("done", Outcome)`` last.

The stop signal arrives as a POSIX signal, because the task's code holds the child's only
thread: SIGUSR1 for the soft time limit, SIGUSR2 for a cancellation. The handler raises
:class:`SoftTimeLimitExceeded` / :class:`TaskCancelled` in the task (as Celery does), except
while the task is inside a call that talks on the pipe, which would leave half a message on
it: then the exception is raised as the call returns.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any

from celeritas.context import ContextRequestFailed, TaskContext, TaskRequest, reset_current, set_current
from celeritas.execution import SoftTimeLimitExceeded, TaskCancelled, failure_outcome, run_sync
from celeritas.models import TaskSpec
from celeritas.protocol import Failure, RecordEntry
from celeritas.worker.loading import LoadError, Setup, load

STOP_SIGNALS = {signal.SIGUSR1: "soft_time_limit", signal.SIGUSR2: "cancelled"}


@dataclass(frozen=True)
class Job:
    """One attempt for a child to run."""

    request: TaskRequest
    args_json: str


class _State:
    def __init__(self) -> None:
        self.running = False
        self.in_call = 0
        self.reason: str | None = None
        self.raised = False

    def stop_exception(self) -> Exception:
        if self.reason == "soft_time_limit":
            return SoftTimeLimitExceeded("the soft time limit passed")
        return TaskCancelled("the task was cancelled")


_state = _State()


def _on_stop_signal(signal_number: int, frame: FrameType | None) -> None:
    _state.reason = STOP_SIGNALS.get(signal.Signals(signal_number), "cancelled")
    if _state.running and not _state.in_call and not _state.raised:
        _state.raised = True
        raise _state.stop_exception()


class _PipeChannel:
    """A task's calls, sent to the worker process on the pipe."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._next_request = 0

    def _send(self, message: tuple[Any, ...]) -> None:
        _state.in_call += 1
        try:
            self._connection.send(message)
        finally:
            _state.in_call -= 1
        self._raise_deferred_stop()

    def _ask(self, message: tuple[Any, ...]) -> Any:
        _state.in_call += 1
        try:
            self._connection.send(message)
            while True:
                answer = self._connection.recv()
                if answer[0] == "reply" and answer[1] == message[1]:
                    break
        finally:
            _state.in_call -= 1
        self._raise_deferred_stop()
        _, _, ok, payload = answer
        if not ok:
            text, retryable = payload
            raise ContextRequestFailed(text, retryable)
        return payload

    def _raise_deferred_stop(self) -> None:
        if _state.reason is not None and _state.running and not _state.raised and not _state.in_call:
            _state.raised = True
            raise _state.stop_exception()

    def _request_id(self) -> int:
        self._next_request += 1
        return self._next_request

    def progress(self, done: int, total: int, message: str) -> None:
        self._send(("progress", done, total, message))

    def records(self, records: list[RecordEntry]) -> None:
        self._send(("records", records))

    def submit_children(
        self, children: list[TaskSpec], callback: TaskSpec | None
    ) -> tuple[list[str], str | None]:
        ids, callback_id = self._ask(("children", self._request_id(), children, callback))
        return list(ids), callback_id

    def query_records(self, kind: str, status: str | None) -> list[str]:
        return list(self._ask(("query", self._request_id(), kind, status)))

    def stop_reason(self) -> str | None:
        return _state.reason


def _die_with_parent() -> None:
    """Asks Linux to kill this process when its parent (the fork server, which ends with the
    worker) dies, so a worker killed with -9 leaves no child running its task."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _drain_pending_stop_signals() -> None:
    while signal.sigtimedwait(list(STOP_SIGNALS), 0) is not None:
        pass


def main(connection: Connection, setup: Setup) -> None:
    """The child's life: set up, say ready, run jobs until told to exit or the pipe closes."""
    # Ctrl+C reaches the whole process group; the worker decides what happens to tasks.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent()
    try:
        app = load(setup)
        tasks = app.tasks
    except LoadError as error:
        connection.send(("setup_failed", str(error)))
        return
    close_connections = None
    if setup.django:
        from django.db import close_old_connections

        close_connections = close_old_connections
    signal.pthread_sigmask(signal.SIG_BLOCK, list(STOP_SIGNALS))
    for signal_number in STOP_SIGNALS:
        signal.signal(signal_number, _on_stop_signal)
    channel = _PipeChannel(connection)
    connection.send(("ready", os.getpid()))
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return
        if message[0] == "exit":
            return
        if message[0] != "run":
            continue
        job: Job = message[1]
        task = tasks.get(job.request.name)
        if task is None:
            connection.send(("done", Failure("unregistered", f"no task {job.request.name!r} here", False)))
            continue
        if close_connections is not None:
            close_connections()
        context = TaskContext(job.request, channel)
        token = set_current(context)
        _drain_pending_stop_signals()
        _state.reason, _state.raised, _state.running = None, False, True
        signal.pthread_sigmask(signal.SIG_UNBLOCK, list(STOP_SIGNALS))
        try:
            try:
                outcome, _ = run_sync(task, context, job.args_json)
            finally:
                signal.pthread_sigmask(signal.SIG_BLOCK, list(STOP_SIGNALS))
                _state.running = False
        except (SoftTimeLimitExceeded, TaskCancelled) as error:
            # The signal came after the task's own code returned (while its result was encoded).
            outcome = failure_outcome(task, error)
        reset_current(token)
        if close_connections is not None:
            close_connections()
        try:
            connection.send(("done", outcome))
        except (BrokenPipeError, OSError):
            return
