"""The exceptions the client raises.

Every failed call raises a :class:`CeleritasError` subclass chosen by its gRPC status code, so
callers can catch exactly what they can handle (``except celeritas.NotFound``) and still reach
the code and the server's message. The server's messages name the offending field first
(``task.queue: unknown queue "mail"; ...``); :attr:`CeleritasError.field` extracts it.

A task that *ran* and did not succeed is not a failed call: waiting for its result raises
:class:`TaskFailed` (or :class:`TaskTimeout` when it did not finish in time) instead.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import grpc

if TYPE_CHECKING:
    from celeritas.models import Task, TaskState

__all__ = [
    "AlreadyExists",
    "Cancelled",
    "CeleritasError",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "TaskFailed",
    "TaskTimeout",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "error_from_rpc_error",
]

# A field path as the server writes it at the start of a message: `task_id`, `task.queue`,
# `tasks[2].queue`.
_FIELD_PART = r"[A-Za-z_][A-Za-z0-9_]*(?:\[\d+\])?"
_LEADING_FIELD = re.compile(rf"^({_FIELD_PART}(?:\.{_FIELD_PART})*): ")


class CeleritasError(Exception):
    """A call to a coordinator failed. Carries the gRPC status code and the server's message."""

    #: The gRPC status code this class stands for; the base class covers every other code.
    status_code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code: grpc.StatusCode = code if code is not None else self.status_code
        self.message: str = message

    @property
    def field(self) -> str | None:
        """The request field the message names first (``tasks[2].queue``), if it names one."""
        match = _LEADING_FIELD.match(self.message)
        return match.group(1) if match else None

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code.name})"


class InvalidArgument(CeleritasError):
    """The request did not validate; the message names the field."""

    status_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(CeleritasError):
    """The task (or other entity) named in the request does not exist."""

    status_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(CeleritasError):
    """The entity the request would create exists already."""

    status_code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(CeleritasError):
    """The request is valid but not in the current state, e.g. streaming a task that is not a
    root (the message names the root to follow)."""

    status_code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(CeleritasError):
    """The token is valid but does not allow this call."""

    status_code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(CeleritasError):
    """The call carried no token, or one the server does not accept."""

    status_code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(CeleritasError):
    """A limit was hit, such as the largest message the server takes."""

    status_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(CeleritasError):
    """The coordinator could not be reached, or could not durably accept the request. Nothing
    was written; the client retries these itself before raising one."""

    status_code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(CeleritasError):
    """The call did not complete before its deadline (the client's ``timeout``)."""

    status_code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(CeleritasError):
    """The call was cancelled before it completed."""

    status_code = grpc.StatusCode.CANCELLED


class Unimplemented(CeleritasError):
    """The coordinator does not serve this method (it runs an older version)."""

    status_code = grpc.StatusCode.UNIMPLEMENTED


class Internal(CeleritasError):
    """The coordinator failed in a way it does not explain to clients; its log has the cause."""

    status_code = grpc.StatusCode.INTERNAL


_ERROR_CLASS_BY_CODE: dict[grpc.StatusCode, type[CeleritasError]] = {
    error_class.status_code: error_class
    for error_class in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        PermissionDenied,
        Unauthenticated,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Cancelled,
        Unimplemented,
        Internal,
    )
}


def error_from_rpc_error(rpc_error: grpc.RpcError) -> CeleritasError:
    """Turns a failed gRPC call (sync or asyncio) into the matching :class:`CeleritasError`."""
    # Both grpc.Call (sync) and grpc.aio.AioRpcError provide code() and details(); a bare
    # RpcError (never raised by grpc itself for a completed call) has neither.
    code_method = getattr(rpc_error, "code", None)
    details_method = getattr(rpc_error, "details", None)
    code = code_method() if callable(code_method) else grpc.StatusCode.UNKNOWN
    message = details_method() if callable(details_method) else None
    if not message:
        # gRPC's own errors (UNIMPLEMENTED for an unknown method) may come without details.
        message = f"the server answered {code.name} without a message"
    error_class = _ERROR_CLASS_BY_CODE.get(code, CeleritasError)
    return error_class(message, code=code)


class TaskFailed(Exception):
    """The task ended without succeeding: it failed, was cancelled, or expired.

    Raised when waiting for a result (``TaskHandle.get``, ``Client.result``), not for failed
    calls. ``task`` is the task as it ended; ``error`` its last error, when it failed.
    """

    def __init__(self, task: Task) -> None:
        self.task: Task = task
        self.state: TaskState = task.state
        self.error = task.error
        if task.error is not None:
            description = f"{task.error.kind}: {task.error.message}"
        else:
            description = "no error reported"
        super().__init__(f"task {task.id} ({task.name}) ended {task.state.value}: {description}")


class TaskTimeout(TimeoutError):
    """The task had not finished when the caller's timeout ran out. It may still finish."""

    def __init__(self, task: Task, timeout: float, *, tree: bool = False) -> None:
        self.task: Task = task
        self.timeout: float = timeout
        #: True when the wait was for the task's whole tree (``tree=True``).
        self.tree: bool = tree
        if tree:
            message = (
                f"the tree of task {task.id} ({task.name}, {task.state.value}) had not "
                f"finished after {timeout:g}s"
            )
        else:
            message = f"task {task.id} ({task.name}) was still {task.state.value} after {timeout:g}s"
        super().__init__(message)
