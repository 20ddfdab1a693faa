"""Declaring Python tasks the way Celery does: an app, ``@app.task``, ``.delay()``.

>>> app = Celeritas("billing", url="http://127.0.0.1:50051")
>>> @app.task(queue="default", max_retries=5)
... def charge(invoice_id: int, amount: str) -> dict:
...     ...
>>> charge.delay(invoice_id=7, amount="9.50")     # submits; a worker of this app runs it
>>> charge(invoice_id=7, amount="9.50")           # runs inline, like calling the function

celeritas tasks take one JSON object as arguments: it is bound to the function's keyword
parameters. ``celeritas.worker`` runs an app's tasks (plain functions in child processes,
``async def`` ones on its event loop). With ``CELERITAS_TASK_ALWAYS_EAGER=1`` (or
``task_always_eager=True``) ``.delay()`` runs the task inline instead, for unit tests.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from celeritas._connection import PemSource
from celeritas.client import Client
from celeritas.context import (
    AsyncTaskContext,
    ContextRequestFailed,
    TaskContext,
    TaskRequest,
    reset_current,
    set_current,
)
from celeritas.execution import run_async, run_sync
from celeritas.handle import TaskHandle
from celeritas.models import Seconds, TaskSpec, TaskState
from celeritas.protocol import Failure, Outcome, RecordEntry, Success

__all__ = [
    "Celeritas",
    "DuplicateTaskName",
    "EagerResult",
    "Task",
    "shared_task",
]

DEFAULT_URL = "http://127.0.0.1:50051"
#: How many times eager mode retries a task that asks for it, when the task sets no max_retries.
EAGER_DEFAULT_MAX_RETRIES = 3


class DuplicateTaskName(Exception):
    """Two different functions were registered under one task name."""


def _truthy(text: str | None) -> bool:
    return (text or "").strip().lower() in ("1", "true", "yes", "on")


class Task:
    """A registered task: call ``.delay()`` / ``.apply_async()`` to submit it, or call it to
    run it inline. Made by :meth:`Celeritas.task`."""

    def __init__(
        self,
        app: Celeritas | None,
        function: Callable[..., Any],
        *,
        name: str,
        queue: str | None,
        priority: int,
        max_retries: int | None,
        soft_time_limit: Seconds | None,
        time_limit: Seconds | None,
        expires: Seconds | None,
        bind: bool,
        permanent_errors: tuple[type[BaseException], ...],
    ) -> None:
        self._app = app
        self.function = function
        self.name = name
        self.queue = queue
        self.priority = priority
        self.max_retries = max_retries
        self.soft_time_limit = soft_time_limit
        self.time_limit = time_limit
        self.expires = expires
        self.bind = bind
        self.permanent_errors = permanent_errors
        self.is_async = inspect.iscoroutinefunction(function)
        self.signature_of_function = inspect.signature(function)
        parameters = list(self.signature_of_function.parameters.values())
        if bind:
            if not parameters:
                raise TypeError(f"{name}: bind=True needs a first parameter for the task context")
            parameters = parameters[1:]
        self.public_signature = self.signature_of_function.replace(parameters=parameters)
        functools.update_wrapper(self, function)

    @property
    def app(self) -> Celeritas:
        """The app the task belongs to (the default app for :func:`shared_task`)."""
        return self._app if self._app is not None else default_app()

    @property
    def definition(self) -> str:
        """Where the function is defined, ``module.qualname``, for messages."""
        return f"{self.function.__module__}.{self.function.__qualname__}"

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Runs the function inline, as Celery's ``task(...)`` does; a bound task gets a
        detached context (its calls to the coordinator fail)."""
        if self.bind:
            context = TaskContext(_inline_request(self, kwargs), _DetachedChannel())
            return self.function(context, *args, **kwargs)
        return self.function(*args, **kwargs)

    # Submitting.

    def arguments(self, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
        """Positional and keyword arguments as the one JSON object the task receives, checked
        against the function's parameters now rather than on a worker."""
        try:
            bound = self.public_signature.bind(*args, **(kwargs or {}))
        except TypeError as error:
            raise TypeError(f"{self.name}{self.public_signature}: {error}") from None
        arguments: dict[str, Any] = {}
        for parameter_name, value in bound.arguments.items():
            kind = self.public_signature.parameters[parameter_name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                arguments.update(value)
            elif kind is inspect.Parameter.VAR_POSITIONAL:
                if value:
                    raise TypeError(
                        f"{self.name}: *{parameter_name} cannot travel; celeritas arguments are a JSON object"
                    )
            else:
                arguments[parameter_name] = value
        return self.app.encode_arguments(self.name, arguments)

    def delay(self, *args: Any, **kwargs: Any) -> TaskHandle | EagerResult:
        """Submits the task with these arguments (Celery's ``delay``) and returns its handle."""
        return self.apply_async(args=args, kwargs=kwargs)

    def apply_async(
        self,
        kwargs: dict[str, Any] | None = None,
        *,
        args: Iterable[Any] = (),
        queue: str | None = None,
        priority: int | None = None,
        countdown: Seconds | None = None,
        eta: datetime | None = None,
        expires: Seconds | datetime | None = None,
        max_retries: int | None = None,
        idempotency_key: str | None = None,
        soft_time_limit: Seconds | None = None,
        time_limit: Seconds | None = None,
        rate_keys: Mapping[str, int] | None = None,
        group_key: str | None = None,
        max_concurrency: int | None = None,
    ) -> TaskHandle | EagerResult:
        """Submits the task with options, as Celery's ``apply_async`` (``countdown``, ``eta``,
        ``queue``, ``expires``, ``rate_keys``...); options not given come from the task's
        declaration."""
        arguments = self.arguments(args, kwargs)
        if self.app.task_always_eager:
            return self.app.run_eagerly(self, arguments)
        spec = self.signature(arguments, queue=queue, priority=priority)
        client = self.app.client
        submitted = client.submit(
            spec.name,
            spec.args,
            queue=spec.queue,
            priority=spec.priority,
            countdown=countdown,
            eta=eta,
            expires=expires if expires is not None else spec.expires,
            max_retries=max_retries if max_retries is not None else spec.max_retries,
            idempotency_key=idempotency_key,
            soft_time_limit=soft_time_limit if soft_time_limit is not None else spec.soft_time_limit,
            hard_time_limit=time_limit if time_limit is not None else spec.hard_time_limit,
            rate_keys=rate_keys,
            group_key=group_key,
            max_concurrency=max_concurrency,
        )
        return TaskHandle(client, submitted.task_id, created=submitted.created)

    def delay_on_commit(self, *args: Any, **kwargs: Any) -> None:
        """Submits once the current Django transaction commits, and never if it rolls back
        (Celery 5.4's ``delay_on_commit``). Outside a transaction it submits at once."""
        from django.db import transaction

        arguments = self.arguments(args, kwargs)
        transaction.on_commit(lambda: self.apply_async(arguments))

    def s(self, *args: Any, **kwargs: Any) -> TaskSpec:
        """A signature: this task with arguments, as a child or callback spec."""
        return self.signature(self.arguments(args, kwargs))

    def signature(self, kwargs: dict[str, Any] | None = None, **options: Any) -> TaskSpec:
        """A :class:`celeritas.TaskSpec` for this task, its declared options filled in;
        ``options`` (queue, priority, idempotency_key, countdown...) override them."""
        spec = TaskSpec(
            name=self.name,
            args=kwargs or {},
            queue=self.queue,
            priority=self.priority,
            max_retries=self.max_retries,
            expires=self.expires,
            soft_time_limit=self.soft_time_limit,
            hard_time_limit=self.time_limit,
        )
        overrides = {key: value for key, value in options.items() if value is not None}
        return replace(spec, **overrides) if overrides else spec


def _inline_request(task: Task, kwargs: dict[str, Any], *, attempt: int = 1, retries: int = 0) -> TaskRequest:
    task_id = str(uuid.uuid4())
    return TaskRequest(
        id=task_id,
        name=task.name,
        attempt=attempt,
        retries=retries,
        max_retries=task.max_retries if task.max_retries is not None else EAGER_DEFAULT_MAX_RETRIES,
        root_id=task_id,
        parent_id=None,
        queue=task.queue or "default",
        priority=task.priority,
        kwargs=dict(kwargs),
        is_eager=True,
    )


class _DetachedChannel:
    """The channel of a task called directly: nothing to report to."""

    def progress(self, done: int, total: int, message: str) -> None:
        pass

    def records(self, records: list[RecordEntry]) -> None:
        pass

    def submit_children(
        self, children: list[TaskSpec], callback: TaskSpec | None
    ) -> tuple[list[str], str | None]:
        raise ContextRequestFailed("a task called directly has no worker to submit children", False)

    def query_records(self, kind: str, status: str | None) -> list[str]:
        raise ContextRequestFailed("a task called directly has no records", False)

    def stop_reason(self) -> str | None:
        return None


@dataclass
class EagerResult:
    """What ``.delay()`` returns in eager mode: the task already ran (Celery's
    ``EagerResult``)."""

    id: str
    name: str
    outcome: Outcome
    exception: BaseException | None
    #: The records the task (and its eager children) emitted, in order.
    emitted: list[RecordEntry] = field(default_factory=list)
    #: The progress reports, in order.
    progress_reports: list[tuple[int, int, str]] = field(default_factory=list)
    #: The results of children and callbacks it submitted, in order.
    children: list[EagerResult] = field(default_factory=list)

    @property
    def state(self) -> TaskState:
        return TaskState.SUCCEEDED if isinstance(self.outcome, Success) else TaskState.FAILED

    def status(self) -> TaskState:
        return self.state

    def ready(self) -> bool:
        return True

    def successful(self) -> bool:
        return isinstance(self.outcome, Success)

    @property
    def result(self) -> Any:
        """The return value (decoded JSON, as a worker's result reads), or the exception."""
        if isinstance(self.outcome, Success):
            return json.loads(self.outcome.result_json)
        return self.exception

    def get(self, timeout: Seconds | None = None, *, propagate: bool = True, tree: bool = False) -> Any:
        """The result; raises the task's own exception if it failed (``propagate=False``
        returns it instead), or :class:`EagerTaskFailed` for failures raised by no exception."""
        if isinstance(self.outcome, Success):
            return json.loads(self.outcome.result_json)
        if not propagate:
            return self.exception or self.outcome
        if self.exception is not None:
            raise self.exception
        raise EagerTaskFailed(self.outcome)


class EagerTaskFailed(Exception):
    """An eagerly run task failed without an exception of its own (its arguments did not bind,
    its result was not JSON)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(f"{failure.kind}: {failure.message}")
        self.failure = failure


class _EagerChannel:
    def __init__(self, app: Celeritas, result: EagerResult) -> None:
        self._app = app
        self._result = result

    def progress(self, done: int, total: int, message: str) -> None:
        self._result.progress_reports.append((done, total, message))

    def records(self, records: list[RecordEntry]) -> None:
        self._result.emitted.extend(records)

    def submit_children(
        self, children: list[TaskSpec], callback: TaskSpec | None
    ) -> tuple[list[str], str | None]:
        ids = []
        for spec in [*children, *([callback] if callback is not None else [])]:
            task = self._app.tasks.get(spec.name)
            if task is None:
                raise ContextRequestFailed(
                    f"eager mode cannot run {spec.name!r}: not a task of this app", False
                )
            child = self._app.run_eagerly(task, spec.args or {})
            self._result.children.append(child)
            self._result.emitted.extend(child.emitted)
            ids.append(child.id)
        callback_id = ids.pop() if callback is not None else None
        return ids, callback_id

    def query_records(self, kind: str, status: str | None) -> list[str]:
        return [
            record.key
            for record in self._result.emitted
            if record.kind == kind and (status is None or record.status == status)
        ]

    def stop_reason(self) -> str | None:
        return None


class _EagerAsyncChannel(_EagerChannel):
    async def submit_children(  # type: ignore[override]
        self, children: list[TaskSpec], callback: TaskSpec | None
    ) -> tuple[list[str], str | None]:
        return await asyncio.to_thread(super().submit_children, children, callback)

    async def query_records(self, kind: str, status: str | None) -> list[str]:  # type: ignore[override]
        return super().query_records(kind, status)

    async def wait_for_stop(self) -> str:
        await asyncio.Event().wait()
        return "never"


class Celeritas:
    """An app: a registry of tasks and the client they are submitted with (Celery's
    ``Celery("proj")``).

    ``url`` and ``token`` default to ``$CELERITAS_URL`` / ``$CELERITAS_TOKEN`` (then
    ``http://127.0.0.1:50051``); ``tls_ca``, ``tls_cert`` and ``tls_key`` (for ``https://``
    URLs; see :class:`celeritas.Client`) to ``$CELERITAS_TLS_CA``, ``$CELERITAS_TLS_CERT`` and
    ``$CELERITAS_TLS_KEY``. ``task_always_eager`` None reads
    ``$CELERITAS_TASK_ALWAYS_EAGER``. ``json_encoder`` encodes arguments (Django's app uses
    ``DjangoJSONEncoder``).
    """

    def __init__(
        self,
        main: str | None = None,
        *,
        url: str | None = None,
        token: str | None = None,
        tls_ca: PemSource | None = None,
        tls_cert: PemSource | None = None,
        tls_key: PemSource | None = None,
        task_always_eager: bool | None = None,
        json_encoder: type[json.JSONEncoder] | None = None,
    ) -> None:
        self.main = main
        self._url = url
        self._token = token
        self._tls_ca = tls_ca
        self._tls_cert = tls_cert
        self._tls_key = tls_key
        self._task_always_eager = task_always_eager
        self.json_encoder = json_encoder
        self._tasks: dict[str, Task] = {}
        self._conflicts: list[tuple[Task, Task]] = []
        self._client: Client | None = None
        self._client_key: tuple[Any, ...] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Celeritas {self.main or '(unnamed)'}: {len(self.tasks)} tasks>"

    # Settings.

    @property
    def url(self) -> str:
        return self._url or os.environ.get("CELERITAS_URL") or DEFAULT_URL

    @url.setter
    def url(self, value: str | None) -> None:
        self._url = value

    @property
    def token(self) -> str | None:
        return self._token or os.environ.get("CELERITAS_TOKEN") or None

    @property
    def tls_ca(self) -> PemSource | None:
        """The CA to trust for an ``https://`` URL: a path or PEM bytes."""
        return self._tls_ca or os.environ.get("CELERITAS_TLS_CA") or None

    @property
    def tls_cert(self) -> PemSource | None:
        """The client certificate to present: a path or PEM bytes."""
        return self._tls_cert or os.environ.get("CELERITAS_TLS_CERT") or None

    @property
    def tls_key(self) -> PemSource | None:
        """The client certificate's private key: a path or PEM bytes."""
        return self._tls_key or os.environ.get("CELERITAS_TLS_KEY") or None

    @property
    def task_always_eager(self) -> bool:
        """Whether ``.delay()`` runs tasks inline."""
        if self._task_always_eager is not None:
            return self._task_always_eager
        return _truthy(os.environ.get("CELERITAS_TASK_ALWAYS_EAGER"))

    @task_always_eager.setter
    def task_always_eager(self, value: bool | None) -> None:
        self._task_always_eager = value

    @property
    def client(self) -> Client:
        """The app's client, made on first use; a change of URL, token or TLS setting makes a
        new one."""
        url, token, tls_ca, tls_cert, tls_key = self.url, self.token, self.tls_ca, self.tls_cert, self.tls_key
        key = (url, token, tls_ca, tls_cert, tls_key)
        with self._lock:
            if self._client is None or self._client_key != key:
                self._client = Client(url, token, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key)
                self._client_key = key
            return self._client

    def encode_arguments(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        try:
            encoded: dict[str, Any] = json.loads(json.dumps(arguments, cls=self.json_encoder))
        except (TypeError, ValueError) as error:
            raise TypeError(f"{name}: the arguments are not JSON-serializable: {error}") from error
        return encoded

    # Registering.

    def task(
        self,
        function: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int = 0,
        max_retries: int | None = None,
        soft_time_limit: Seconds | None = None,
        time_limit: Seconds | None = None,
        expires: Seconds | None = None,
        bind: bool = False,
        permanent_errors: Iterable[type[BaseException]] = (),
    ) -> Any:
        """Registers a function (plain or ``async def``) as a task: ``@app.task`` or
        ``@app.task(name=..., queue=..., max_retries=..., soft_time_limit=...,
        time_limit=..., bind=True)``. The name defaults to ``module.function``, as in Celery.
        ``permanent_errors`` are exception types that fail the task without a retry."""

        def register(function: Callable[..., Any]) -> Task:
            task = Task(
                self,
                function,
                name=name or f"{function.__module__}.{function.__name__}",
                queue=queue,
                priority=priority,
                max_retries=max_retries,
                soft_time_limit=soft_time_limit,
                time_limit=time_limit,
                expires=expires,
                bind=bind,
                permanent_errors=tuple(permanent_errors),
            )
            self.register(task)
            return task

        return register(function) if function is not None else register

    def register(self, task: Task) -> None:
        """Adds a task. A second function under a name already taken is remembered as a
        conflict, and :meth:`check` (which the worker calls at start) refuses it."""
        with self._lock:
            existing = self._tasks.get(task.name)
            if existing is not None and existing.definition != task.definition:
                self._conflicts.append((existing, task))
                return
            self._tasks[task.name] = task

    @property
    def tasks(self) -> dict[str, Task]:
        """The app's tasks by name, shared tasks included."""
        merged = dict(_shared.tasks) if self is not _shared else {}
        merged.update(self._tasks)
        return merged

    def check(self) -> None:
        """Raises :class:`DuplicateTaskName` if two functions were registered under one name."""
        conflicts = list(self._conflicts) + (list(_shared._conflicts) if self is not _shared else [])
        if self is not _shared:
            for name, task in _shared._tasks.items():
                own = self._tasks.get(name)
                if own is not None and own.definition != task.definition:
                    conflicts.append((task, own))
        if conflicts:
            lines = [
                f"task name {first.name!r} is registered twice: {first.definition} and {second.definition}"
                for first, second in conflicts
            ]
            raise DuplicateTaskName("; ".join(lines))

    # Eager mode.

    def run_eagerly(self, task: Task, arguments: dict[str, Any]) -> EagerResult:
        """Runs ``task`` inline, retrying it as a worker would (without the countdowns)."""
        args_json = json.dumps(arguments)
        max_retries = task.max_retries if task.max_retries is not None else EAGER_DEFAULT_MAX_RETRIES
        retries = 0
        task_id = str(uuid.uuid4())
        while True:
            request = replace(
                _inline_request(task, arguments, attempt=retries + 1, retries=retries), id=task_id
            )
            result = EagerResult(id=task_id, name=task.name, outcome=Success("null"), exception=None)
            outcome: Outcome
            if task.is_async:
                async_context = AsyncTaskContext(request, _EagerAsyncChannel(self, result))
                outcome, error = _run_coroutine(run_async(task, async_context, args_json), async_context)
            else:
                context = TaskContext(request, _EagerChannel(self, result))
                token = set_current(context)
                try:
                    outcome, error = run_sync(task, context, args_json)
                finally:
                    reset_current(token)
            result.outcome, result.exception = outcome, error
            if isinstance(outcome, Failure) and outcome.retryable and retries < max_retries:
                retries += 1
                continue
            return result


def _run_coroutine(coroutine: Any, context: AsyncTaskContext) -> Any:
    async def with_context() -> Any:
        set_current(context)
        return await coroutine

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(with_context())
    # Called from async code: run on a loop of its own in a thread, as a blocking call would.
    outcome: list[Any] = []
    thread = threading.Thread(target=lambda: outcome.append(asyncio.run(with_context())))
    thread.start()
    thread.join()
    return outcome[0]


_shared = Celeritas("shared")
_default: Celeritas | None = None


def default_app() -> Celeritas:
    """The app shared tasks are submitted with when they belong to no app of their own: the
    one last created by :func:`set_default_app` (Django's), else one reading the
    environment."""
    return _default if _default is not None else _shared


def set_default_app(app: Celeritas) -> None:
    global _default
    _default = app


def shared_task(*args: Any, **options: Any) -> Any:
    """Celery's ``shared_task``: a task every app (and so every worker) has, submitted with
    the default app's client. Takes the options of :meth:`Celeritas.task`."""

    def register(function: Callable[..., Any]) -> Task:
        task: Task = _shared.task(**options)(function)
        task._app = None
        return task

    if args and callable(args[0]) and not options:
        return register(args[0])
    return register
