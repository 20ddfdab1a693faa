"""What running one attempt of a Python task means, the same in a worker's child process, on
its event loop and in eager mode: binding the JSON arguments to the function's parameters,
calling it, and turning what it returned or raised into an outcome for the coordinator.

The exceptions a task raises to say how it failed live here too: :class:`Retry`,
:class:`PermanentError`, and the stop signals :class:`SoftTimeLimitExceeded` and
:class:`TaskCancelled`.
"""

from __future__ import annotations

import inspect
import json
import traceback
from typing import TYPE_CHECKING, Any

from celeritas.protocol import Failure, Outcome, Success

if TYPE_CHECKING:
    from celeritas.app import Task
    from celeritas.context import AsyncTaskContext, TaskContext

__all__ = [
    "PermanentError",
    "Retry",
    "SoftTimeLimitExceeded",
    "StopRequested",
    "TaskCancelled",
]


class Retry(Exception):
    """Raise to fail this attempt and ask for another (Celery's ``self.retry``).

    ``countdown`` (seconds) is when; None lets the task's configured backoff decide. ``exc``
    is the error that caused it: its type names the failure's kind and its traceback goes in
    the message. The coordinator decides whether retries remain (``max_retries``).
    """

    def __init__(
        self, message: str | None = None, *, countdown: float | None = None, exc: BaseException | None = None
    ) -> None:
        self.countdown = countdown
        self.exc = exc
        self.message = message
        super().__init__(message or (f"retry: {exc}" if exc is not None else "retry requested"))


class PermanentError(Exception):
    """Raise (or subclass) for a failure no retry can fix: the task fails at once. The
    failure's kind is the exception's type name (``PermanentError``, or the subclass')."""


class StopRequested(Exception):
    """The task was asked to stop. Catch it to clean up; raised inside tasks that run in child
    processes, and by :meth:`TaskContext.check_stop` anywhere."""


class SoftTimeLimitExceeded(StopRequested):
    """The task's soft time limit passed (Celery's exception of the same name)."""


class TaskCancelled(StopRequested):
    """The task was cancelled while it ran."""


def bind_arguments(task: Task, context: object | None, args_json: str) -> inspect.BoundArguments | Failure:
    """The lease's arguments bound to the task's parameters, or the permanent failure that says
    why they do not fit."""
    try:
        arguments = json.loads(args_json) if args_json else {}
    except ValueError as error:
        return Failure("invalid_args", f"{task.name}: the arguments are not JSON: {error}", retryable=False)
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return Failure(
            "invalid_args",
            f"{task.name}: the arguments must be a JSON object of keyword arguments, "
            f"not {type(arguments).__name__}",
            retryable=False,
        )
    leading = (context,) if task.bind else ()
    try:
        return task.signature_of_function.bind(*leading, **arguments)
    except TypeError as error:
        return Failure(
            "invalid_args",
            f"{task.name}{task.public_signature}: the arguments {args_json or '{}'} do not bind: {error}",
            retryable=False,
        )


def result_outcome(task: Task, value: Any) -> Outcome:
    """A returned value as a success, or a permanent failure when JSON cannot carry it."""
    try:
        return Success(json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":")))
    except (TypeError, ValueError) as error:
        return Failure(
            "unserializable_result",
            f"{task.name} returned a value of type {type(value).__name__} that is not "
            f"JSON-serialisable: {error}",
            retryable=False,
        )


def _describe(error: BaseException) -> str:
    text = str(error)
    trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return f"{text}\n\n{trace}" if text else trace


def failure_outcome(task: Task, error: BaseException) -> Failure:
    """What an exception means for the attempt: Retry asks for another, PermanentError (and
    the task's ``permanent_errors``) fail for good, anything else is retried by policy."""
    if isinstance(error, Retry):
        cause = error.exc
        kind = type(cause).__name__ if cause is not None else "Retry"
        # A cause that was never raised has no traceback of its own: the retry's tells where.
        trace_of = cause if cause is not None and cause.__traceback__ is not None else error
        trace = "".join(traceback.format_exception(type(trace_of), trace_of, trace_of.__traceback__))
        headline = error.message or (str(cause) if cause is not None else "the task asked to be retried")
        message = f"{headline}\n\n{trace}"
        return Failure(kind, message, retryable=True, retry_after=error.countdown)
    permanent = isinstance(error, PermanentError) or isinstance(error, task.permanent_errors)
    return Failure(type(error).__name__, _describe(error), retryable=not permanent)


def run_sync(task: Task, context: TaskContext, args_json: str) -> tuple[Outcome, BaseException | None]:
    """Runs a plain function's attempt; the exception it raised comes back too (eager mode
    re-raises it)."""
    bound = bind_arguments(task, context, args_json)
    if isinstance(bound, Failure):
        return bound, None
    try:
        value = task.function(*bound.args, **bound.kwargs)
    except Exception as error:
        return failure_outcome(task, error), error
    return result_outcome(task, value), None


async def run_async(
    task: Task, context: AsyncTaskContext, args_json: str
) -> tuple[Outcome, BaseException | None]:
    """Runs an ``async def`` task's attempt."""
    bound = bind_arguments(task, context, args_json)
    if isinstance(bound, Failure):
        return bound, None
    try:
        value = await task.function(*bound.args, **bound.kwargs)
    except Exception as error:
        return failure_outcome(task, error), error
    return result_outcome(task, value), None
