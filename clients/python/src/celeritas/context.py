"""What a running Python task sees: its request (Celery's ``self.request``) and the calls
that reach the coordinator through its worker (progress, records, children and callbacks,
recorded keys), plus the stop signal.

A task declared with ``bind=True`` receives its context as its first argument; any task may
ask for it with :func:`current_task`. Tasks in child processes get a :class:`TaskContext`
whose calls travel to the worker process over a pipe; ``async def`` tasks get an
:class:`AsyncTaskContext` on the worker's event loop, whose round trips are awaited.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

from celeritas.execution import Retry, SoftTimeLimitExceeded, StopRequested, TaskCancelled
from celeritas.models import TaskSpec
from celeritas.protocol import RecordEntry

__all__ = [
    "AsyncTaskContext",
    "ContextRequestFailed",
    "TaskContext",
    "TaskRequest",
    "current_task",
]


class ContextRequestFailed(Exception):
    """The coordinator could not answer a task's request (children, recorded keys).
    ``retryable`` says whether asking again may work (the stream was down)."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class TaskRequest:
    """The attempt being run (Celery's ``self.request``)."""

    id: str
    name: str
    attempt: int
    #: Retries used before this attempt.
    retries: int
    max_retries: int
    root_id: str
    parent_id: str | None
    queue: str
    priority: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: True when the task runs inline (eager mode or a direct call), not on a worker.
    is_eager: bool = False


def record_entry(kind: str, key: str, status: str, data: Any = None) -> RecordEntry:
    data_json = "" if data is None else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return RecordEntry(kind=kind, key=key, status=status, data_json=data_json)


class SyncChannel(Protocol):
    """How a :class:`TaskContext` reaches its worker."""

    def progress(self, done: int, total: int, message: str) -> None: ...
    def records(self, records: list[RecordEntry]) -> None: ...
    def submit_children(
        self, children: list[TaskSpec], callback: TaskSpec | None
    ) -> tuple[list[str], str | None]: ...
    def query_records(self, kind: str, status: str | None) -> list[str]: ...
    def stop_reason(self) -> str | None: ...


class AsyncChannel(Protocol):
    """How an :class:`AsyncTaskContext` reaches its worker."""

    def progress(self, done: int, total: int, message: str) -> None: ...
    def records(self, records: list[RecordEntry]) -> None: ...
    async def submit_children(
        self, children: list[TaskSpec], callback: TaskSpec | None
    ) -> tuple[list[str], str | None]: ...
    async def query_records(self, kind: str, status: str | None) -> list[str]: ...
    def stop_reason(self) -> str | None: ...
    async def wait_for_stop(self) -> str: ...


def _specs(children: Iterable[TaskSpec]) -> list[TaskSpec]:
    specs = list(children)
    for index, spec in enumerate(specs):
        if not isinstance(spec, TaskSpec):
            raise TypeError(f"children[{index}]: expected a TaskSpec (task.s(...)), got {spec!r}")
    return specs


class _BaseContext:
    def __init__(self, request: TaskRequest) -> None:
        self.request = request

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.request.name} {self.request.id}#{self.request.attempt}>"

    def _stop_reason(self) -> str | None:
        raise NotImplementedError

    @property
    def stop_requested(self) -> bool:
        """True once the task should stop: its soft time limit passed, or it was cancelled."""
        return self._stop_reason() is not None

    def check_stop(self) -> None:
        """Raises :class:`SoftTimeLimitExceeded` or :class:`TaskCancelled` if the task should
        stop; a loop calls it between items."""
        reason = self._stop_reason()
        if reason == "soft_time_limit":
            raise SoftTimeLimitExceeded("the soft time limit passed")
        if reason is not None:
            raise TaskCancelled(reason)

    def retry(
        self, *, countdown: float | None = None, exc: BaseException | None = None, message: str | None = None
    ) -> NoReturn:
        """Fails this attempt and asks for another after ``countdown`` seconds (Celery's
        ``self.retry``); the coordinator decides whether retries remain."""
        raise Retry(message, countdown=countdown, exc=exc)


class TaskContext(_BaseContext):
    """The context of a plain function's attempt (in a worker's child process, or inline).
    Calls that need the coordinator's answer block until it comes."""

    def __init__(self, request: TaskRequest, channel: SyncChannel) -> None:
        super().__init__(request)
        self._channel = channel

    def _stop_reason(self) -> str | None:
        return self._channel.stop_reason()

    def progress(self, done: int, total: int = 0, message: str = "") -> None:
        """Reports progress; may be dropped when reports come faster than they can be sent."""
        self._channel.progress(done, total, message)

    def emit(self, kind: str, key: str, status: str, data: Any = None) -> None:
        """Emits one record (unique per root task, kind and key; writing a key again replaces
        it). Records are written before the task's result."""
        self._channel.records([record_entry(kind, key, status, data)])

    def emit_many(self, records: Iterable[tuple[str, str, str, Any]]) -> None:
        """Emits ``(kind, key, status, data)`` records in one go."""
        entries = [record_entry(*record) for record in records]
        if entries:
            self._channel.records(entries)

    def submit_children(self, children: Iterable[TaskSpec], callback: TaskSpec | None = None) -> list[str]:
        """Submits children of this task (``other.s(x=1)``), and perhaps a callback that runs
        once this task and all of them have finished (a chord); returns the children's ids.
        Give them idempotency keys so a retried attempt submits them once."""
        ids, _ = self._channel.submit_children(_specs(children), callback)
        return ids

    def recorded_keys(self, kind: str, status: str | None = None) -> set[str]:
        """The keys of ``kind`` (and ``status``) the task's tree already has records for, so
        a retried attempt can skip what an earlier one did."""
        return set(self._channel.query_records(kind, status))


class AsyncTaskContext(_BaseContext):
    """The context of an ``async def`` task's attempt on the worker's event loop."""

    def __init__(self, request: TaskRequest, channel: AsyncChannel) -> None:
        super().__init__(request)
        self._channel = channel

    def _stop_reason(self) -> str | None:
        return self._channel.stop_reason()

    async def wait_for_stop(self) -> str:
        """Returns (with the reason) once the task should stop."""
        return await self._channel.wait_for_stop()

    def progress(self, done: int, total: int = 0, message: str = "") -> None:
        self._channel.progress(done, total, message)

    def emit(self, kind: str, key: str, status: str, data: Any = None) -> None:
        self._channel.records([record_entry(kind, key, status, data)])

    def emit_many(self, records: Iterable[tuple[str, str, str, Any]]) -> None:
        entries = [record_entry(*record) for record in records]
        if entries:
            self._channel.records(entries)

    async def submit_children(
        self, children: Iterable[TaskSpec], callback: TaskSpec | None = None
    ) -> list[str]:
        ids, _ = await self._channel.submit_children(_specs(children), callback)
        return ids

    async def recorded_keys(self, kind: str, status: str | None = None) -> set[str]:
        return set(await self._channel.query_records(kind, status))


_current: contextvars.ContextVar[TaskContext | AsyncTaskContext | None] = contextvars.ContextVar(
    "celeritas_current_task", default=None
)


def current_task() -> TaskContext | AsyncTaskContext | None:
    """The context of the task running in this thread (or asyncio task), if any."""
    return _current.get()


def set_current(context: TaskContext | AsyncTaskContext | None) -> contextvars.Token[Any]:
    return _current.set(context)


def reset_current(token: contextvars.Token[Any]) -> None:
    _current.reset(token)


__all__ += ["SoftTimeLimitExceeded", "StopRequested", "TaskCancelled"]
