"""The blocking client: :class:`Client` and its :class:`Inspect` namespace.

One ``Client`` holds one gRPC channel; it is thread-safe and meant to be shared (create it once
per process, not per request). ``celeritas.aio.AsyncClient`` is its asyncio twin with the same
methods.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import IO, Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from celeritas import _wire
from celeritas._connection import PemSource, connection
from celeritas.errors import (
    DeadlineExceeded,
    TaskFailed,
    TaskTimeout,
    Unavailable,
    error_from_rpc_error,
)
from celeritas.models import (
    BulkResult,
    Event,
    HealthStatus,
    QueueDepth,
    RateLimits,
    RateLimitSet,
    Record,
    ScheduledWork,
    Seconds,
    StoredFile,
    SubmittedTask,
    Task,
    TaskSpec,
    TaskState,
    TreePause,
    WorkerPing,
    WorkerQueues,
    WorkerStats,
    WorkerTaskNames,
    WorkerTasks,
)
from celeritas.retry import RetryPolicy
from celeritas.v1 import (
    files_pb2_grpc,
    inspect_pb2,
    inspect_pb2_grpc,
    tasks_pb2,
    tasks_pb2_grpc,
)

__all__ = ["Client", "Inspect"]

_Answer = TypeVar("_Answer")

#: The deadline of a call that is not a long poll or a stream, in seconds.
DEFAULT_TIMEOUT = 30.0


class Client:
    """A connection to a celeritas coordinator.

    >>> client = Client("http://127.0.0.1:50051")
    >>> submitted = client.submit("fan_out", {"task": "noop", "count": 10})
    >>> for event in client.stream_progress(submitted.task_id):
    ...     print(event.sequence, event.kind, event.aggregate.tasks_finished)

    ``url`` is ``http://host:port`` (plaintext), ``https://host[:port]`` (TLS) or ``host:port``.
    ``token``, when given, travels with every call as ``authorization: Bearer <token>``.
    With an ``https://`` URL, ``tls_ca`` is the CA (PEM) to trust instead of the system's roots,
    and ``tls_cert`` with ``tls_key`` a client certificate to present; each is a file's path or
    the PEM itself as bytes. A CA or certificate with a plaintext URL raises ``ValueError``, as
    does a file that cannot be read. Each of the four not given is read from
    ``$CELERITAS_TOKEN``, ``$CELERITAS_TLS_CA``, ``$CELERITAS_TLS_CERT``, ``$CELERITAS_TLS_KEY``
    (as the ``celeritas`` command line does). The token is never shown by ``repr`` or errors.
    ``timeout`` is each call's deadline in seconds (a long poll adds its wait to it; progress
    streams have none). ``retry`` decides how calls that find the coordinator UNAVAILABLE are
    retried (see :class:`celeritas.RetryPolicy`).

    Every failed call raises a :class:`celeritas.CeleritasError` subclass named for its gRPC
    status code (``InvalidArgument``, ``NotFound``, ...).
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        tls_ca: PemSource | None = None,
        tls_cert: PemSource | None = None,
        tls_key: PemSource | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
    ) -> None:
        settings = connection(url, token, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key)
        self.url = url
        self.timeout = timeout
        self.retry = retry if retry is not None else RetryPolicy()
        self._metadata = settings.metadata
        self._channel = settings.sync_channel()
        self._tasks = tasks_pb2_grpc.TaskServiceStub(self._channel)
        self._files = files_pb2_grpc.FileServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        #: The ``celery inspect`` questions: ``client.inspect.active()`` and so on.
        self.inspect = Inspect(self, inspect_pb2_grpc.InspectServiceStub(self._channel))

    # Lifecycle.

    def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exception_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # Submitting.

    def submit(
        self,
        name: str,
        args: Any = None,
        *,
        queue: str | None = None,
        priority: int = 0,
        countdown: Seconds | None = None,
        eta: datetime | None = None,
        expires: Seconds | datetime | None = None,
        max_retries: int | None = None,
        idempotency_key: str | None = None,
        soft_time_limit: Seconds | None = None,
        hard_time_limit: Seconds | None = None,
        rate_keys: Mapping[str, int] | None = None,
        group_key: str | None = None,
        max_concurrency: int | None = None,
    ) -> SubmittedTask:
        """Submits one task and returns its id once it is durably stored.

        ``args`` is any JSON-serializable value (usually a dict). ``queue`` defaults to the
        coordinator's route for ``name``. ``countdown`` (seconds or timedelta) and ``eta`` (an
        aware datetime) delay the start; ``expires`` is a duration after submission or an aware
        datetime after which an unstarted task never runs. ``max_retries`` and the time limits
        override the task's configured policy.

        Without an ``idempotency_key`` the client generates one, so that its own retries after
        a lost answer cannot create the task twice. Give your own to make *your* retries safe
        too: a second submission with the same key returns the first task (``created=False``).

        ``rate_keys`` maps rate keys (``{"customer:42": 1, "domain:gmail.com": 1}``) to what a
        run costs each (0 means 1). While a ``[rate_limits]`` pattern of the coordinator's
        configuration covers a key, the task is leased only when that key has room,
        cluster-wide. Keys with ``*``, empty or over 200 bytes, more than 64 keys or a cost over
        1,000,000 raise :class:`celeritas.InvalidArgument` naming ``rate_keys``.

        ``group_key`` puts the task in a fairness group (a tenant, a campaign; its children
        inherit it): within a queue and priority, groups take turns. ``max_concurrency`` lets
        at most that many tasks of its name and group be leased or running at once.
        """
        spec = TaskSpec(
            name=name,
            args=args,
            queue=queue,
            priority=priority,
            countdown=countdown,
            eta=eta,
            expires=expires,
            max_retries=max_retries,
            idempotency_key=idempotency_key,
            soft_time_limit=soft_time_limit,
            hard_time_limit=hard_time_limit,
            rate_keys=rate_keys,
            group_key=group_key,
            max_concurrency=max_concurrency,
        )
        request = _wire.submit_task_request(spec)
        return _wire.submitted_task(self._call(self._tasks.SubmitTask, request))

    def submit_many(self, specs: Iterable[TaskSpec]) -> list[SubmittedTask]:
        """Submits up to 10,000 tasks in one durable write: all are accepted or none is.

        The answer is in the order of ``specs``. Errors name the spec by index
        (``tasks[7].queue: ...``). Specs without an idempotency key get a generated one, as in
        :meth:`submit`.
        """
        request = _wire.submit_tasks_request(specs)
        response = self._call(self._tasks.SubmitTasks, request)
        return [_wire.submitted_task(entry) for entry in response.tasks]

    # Reading and waiting.

    def get(self, task_id: str, wait: Seconds | None = None) -> Task:
        """Returns a task. With ``wait``, the server holds the answer until the task finishes or
        ``wait`` runs out (at most 60 seconds), then answers with the task as it is."""
        request = _wire.get_task_request(task_id, wait)
        extra = _wire.seconds_of(wait, "wait") if wait is not None else 0.0
        response = self._call(self._tasks.GetTask, request, timeout=self.timeout + extra)
        return _wire.task(response.task)

    def wait(self, task_id: str, timeout: Seconds | None = None, *, tree: bool = False) -> Task:
        """Waits until the task finishes and returns it, whatever its final state.

        Long-polls in slices of up to 60 seconds; ``timeout`` None waits as long as it takes.
        Raises :class:`celeritas.TaskTimeout` if the task has not finished within ``timeout``.

        A task that fans out (a campaign, ``fan_out``) finishes once it has submitted its
        children, long before they have run. ``tree=True`` waits for the whole tree instead:
        the task, every descendant and every callback, following the tree's progress stream to
        its ``tree_finished`` event; then it returns the task (the root). The task must be a
        root (a child raises :class:`celeritas.FailedPrecondition` naming its root).
        """
        if tree:
            return self._wait_for_tree(task_id, timeout)
        deadline = None if timeout is None else time.monotonic() + _wire.seconds_of(timeout, "timeout")
        while True:
            remaining = _wire.MAX_SERVER_WAIT_SECONDS
            if deadline is not None:
                remaining = min(remaining, max(0.0, deadline - time.monotonic()))
            task = self.get(task_id, wait=remaining)
            if task.is_finished:
                return task
            if deadline is not None and time.monotonic() >= deadline:
                raise TaskTimeout(task, _wire.seconds_of(timeout, "timeout"))  # type: ignore[arg-type]

    def _wait_for_tree(self, task_id: str, timeout: Seconds | None) -> Task:
        seconds = None if timeout is None else _wire.seconds_of(timeout, "timeout")
        deadline = None if seconds is None else time.monotonic() + seconds
        try:
            # Only the end matters; the stream's events are read and dropped.
            for _ in self._stream_progress(task_id, None, deadline):
                pass
        except DeadlineExceeded:
            if seconds is None:
                raise
            raise TaskTimeout(self.get(task_id), seconds, tree=True) from None
        return self.get(task_id)

    def result(self, task_id: str, timeout: Seconds | None = None, *, tree: bool = False) -> Any:
        """Waits for the task and returns its result (decoded JSON).

        Raises :class:`celeritas.TaskFailed` when it failed, was cancelled or expired, and
        :class:`celeritas.TaskTimeout` when it has not finished within ``timeout``. With
        ``tree=True`` it waits for the task's whole tree first (see :meth:`wait`); the result
        and the verdict are still the root's: how the descendants ended is in the tree's
        aggregate and records.
        """
        task = self.wait(task_id, timeout, tree=tree)
        if task.state is not TaskState.SUCCEEDED:
            raise TaskFailed(task)
        return task.result

    # Changing.

    def cancel(self, task_id: str, terminate: bool = False) -> Task:
        """Cancels a task: a pending or scheduled one never starts; a running one is asked to
        stop, or aborted at once with ``terminate``. Unfinished descendants are cancelled too.
        Returns the task after the cancellation was recorded (a finished task is unchanged)."""
        request = tasks_pb2.CancelTaskRequest(task_id=task_id, terminate=terminate)
        return _wire.task(self._call(self._tasks.CancelTask, request).task)

    def purge(self, queue: str) -> int:
        """Cancels every pending and scheduled task of ``queue`` and returns how many. Tasks
        already leased or running are not touched."""
        request = tasks_pb2.PurgeQueueRequest(queue=queue)
        return int(self._call(self._tasks.PurgeQueue, request).cancelled)

    def pause_queue(self, queue: str) -> bool:
        """Pauses ``queue``: no worker gets a new lease from it, on any coordinator, until it
        is resumed; tasks already leased or running finish. The pause is stored, so it outlives
        restarts; ``inspect.queues()`` shows it as ``paused_at``. Returns False when the queue
        was paused already. An unknown queue raises :class:`celeritas.InvalidArgument`."""
        request = tasks_pb2.PauseQueueRequest(queue=queue)
        return bool(self._call(self._tasks.PauseQueue, request).changed)

    def resume_queue(self, queue: str) -> bool:
        """Resumes a paused ``queue``: its pending tasks are leased again at once. Returns
        False when the queue was not paused."""
        request = tasks_pb2.ResumeQueueRequest(queue=queue)
        return bool(self._call(self._tasks.ResumeQueue, request).changed)

    def pause_tree(self, task_id: str) -> TreePause:
        """Pauses the tree rooted at ``task_id`` (a campaign): its waiting tasks are held, its
        running ones are asked to stop (a batch after its current message) and wait again with
        no retry counted. An unknown id raises :class:`celeritas.NotFound`; a task that is not
        a root, or a tree whose tasks have all finished, :class:`celeritas.FailedPrecondition`."""
        request = tasks_pb2.PauseTreeRequest(task_id=task_id)
        return _wire.tree_pause(self._call(self._tasks.PauseTree, request))

    def resume_tree(self, task_id: str) -> bool:
        """Resumes a paused tree where it left off; False when it was not paused."""
        request = tasks_pb2.ResumeTreeRequest(task_id=task_id)
        return bool(self._call(self._tasks.ResumeTree, request).changed)

    def set_rate_limit(self, key: str, rate: str) -> RateLimitSet:
        """Limits ``key`` (``"domain:gmail.com"``, or a pattern where ``*`` stands for any text)
        to ``rate`` (``"20/s"``, ``"600/m"``, ``"3600/h"``) on every coordinator, stored, over
        a configured limit of the same pattern; tasks already waiting that it covers are
        limited too. A malformed rate or key raises :class:`celeritas.InvalidArgument` naming
        ``rate`` or ``key``."""
        request = tasks_pb2.SetRateLimitRequest(key=key, rate=rate)
        return _wire.rate_limit_set(self._call(self._tasks.SetRateLimit, request))

    def clear_rate_limit(self, key: str) -> str:
        """Removes a limit set with :meth:`set_rate_limit` (a configured one of the pattern
        holds again) and returns the rate it had; :class:`celeritas.NotFound` when there is
        none."""
        request = tasks_pb2.ClearRateLimitRequest(key=key)
        return str(self._call(self._tasks.ClearRateLimit, request).previous)

    def requeue(self, task_id: str, reason: str, attempt: int | None = None) -> Task:
        """Ends a leased or running task's attempt (its worker is told to abort it) and puts
        the task back on its queue, recording ``reason`` as a failed attempt that counts a
        retry; with no retry left the task fails. With ``attempt``, only if the task is still
        on that attempt (``FailedPrecondition`` otherwise)."""
        request = tasks_pb2.RequeueTaskRequest(task_id=task_id, reason=reason, attempt=attempt or 0)
        return _wire.task(self._call(self._tasks.RequeueTask, request).task)

    def fail(self, task_id: str, reason: str, attempt: int | None = None) -> Task:
        """Ends a leased or running task's attempt and fails the task for good with
        ``reason``; ``attempt`` as for :meth:`requeue`."""
        request = tasks_pb2.FailTaskRequest(task_id=task_id, reason=reason, attempt=attempt or 0)
        return _wire.task(self._call(self._tasks.FailTask, request).task)

    def retry_tasks(
        self,
        *,
        names: Iterable[str] | None = None,
        queues: Iterable[str] | None = None,
        root_id: str | None = None,
        error_kinds: Iterable[str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        finished_after: datetime | None = None,
        finished_before: datetime | None = None,
        dry_run: bool = False,
    ) -> BulkResult:
        """Puts the failed tasks that match back on their queues, each with a fresh set of
        retries (their failed attempts stay in ``failures``); with ``dry_run`` only counts them.

        Every criterion given must match, and at least one must be given (an empty selector
        raises :class:`celeritas.InvalidArgument` naming ``selector``): one of ``names``, on
        one of ``queues``, of the tree ``root_id``, whose last error is of one of
        ``error_kinds``, created / finished within ``[*_after, *_before)``. Moments are aware
        datetimes (a naive one raises ``ValueError``). Tasks that fail after the call began are
        not included. When nothing matches (and not ``dry_run``) raises
        :class:`celeritas.NotFound`. Returns ``BulkResult(matched, changed)``.
        """
        selector = _wire.task_selector_pb(
            names=names,
            queues=queues,
            root_id=root_id,
            states=None,
            error_kinds=error_kinds,
            created_after=created_after,
            created_before=created_before,
            finished_after=finished_after,
            finished_before=finished_before,
        )
        request = tasks_pb2.RetryTasksRequest(selector=selector, dry_run=dry_run)
        response = self._call(self._tasks.RetryTasks, request)
        return BulkResult(matched=int(response.matched), changed=int(response.retried))

    def cancel_tasks(
        self,
        *,
        names: Iterable[str] | None = None,
        queues: Iterable[str] | None = None,
        root_id: str | None = None,
        states: Iterable[TaskState | str] | None = None,
        error_kinds: Iterable[str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        finished_after: datetime | None = None,
        finished_before: datetime | None = None,
        terminate: bool = False,
        dry_run: bool = False,
    ) -> BulkResult:
        """Cancels the unfinished tasks that match, each as :meth:`cancel` would (running ones
        are asked to stop, or aborted with ``terminate``; their unfinished descendants are
        cancelled too); with ``dry_run`` only counts them.

        The criteria are those of :meth:`retry_tasks`, plus ``states``: unfinished states only
        (pending, scheduled, leased, running, waiting), all of them when None. Tasks submitted
        after the call began are not included. An empty selector raises
        :class:`celeritas.InvalidArgument`, no match (not ``dry_run``)
        :class:`celeritas.NotFound`. Returns ``BulkResult(matched, changed)``; descendants
        cancelled along with a matched task are not counted.
        """
        selector = _wire.task_selector_pb(
            names=names,
            queues=queues,
            root_id=root_id,
            states=states,
            error_kinds=error_kinds,
            created_after=created_after,
            created_before=created_before,
            finished_after=finished_after,
            finished_before=finished_before,
        )
        request = tasks_pb2.CancelTasksRequest(
            selector=selector, dry_run=dry_run, terminate=terminate
        )
        response = self._call(self._tasks.CancelTasks, request)
        return BulkResult(matched=int(response.matched), changed=int(response.cancelled))

    def list_tasks(
        self,
        *,
        names: Iterable[str] = (),
        states: Iterable[TaskState | str] = (),
        root_id: str | None = None,
        quiet_for: Seconds | None = None,
        limit: int | None = None,
        include_payloads: bool = False,
    ) -> list[Task]:
        """Tasks with one of ``names`` (any name when empty) in one of ``states`` (the
        unfinished states when empty), of the tree ``root_id``, with no progress, start or
        submission for ``quiet_for`` seconds; longest quiet first, at most ``limit`` (server
        default 1,000). The tasks' ``args`` and ``result`` are read only with
        ``include_payloads`` (a campaign's batches carry their recipients)."""
        request = _wire.list_tasks_request(
            names, states, root_id, quiet_for, limit, include_payloads
        )
        return [_wire.task(task) for task in self._call(self._tasks.ListTasks, request).tasks]

    # Progress and records.

    def stream_progress(self, task_id: str, from_sequence: int | None = None) -> Iterator[Event]:
        """Iterates over the events of a task tree until the whole tree has finished.

        ``task_id`` must be a root task (a child answers ``FailedPrecondition`` naming its
        root). Iteration starts after ``from_sequence`` (from the beginning when None) and ends
        after the event with ``tree_finished``.

        The iterator survives coordinator restarts: when the stream breaks with UNAVAILABLE it
        reconnects (following the client's retry policy, reset by every event received) and
        resumes after the last event it yielded, so the caller sees every event exactly once.
        Errors are raised when iteration reaches them, not when this method is called.
        """
        return self._stream_progress(task_id, from_sequence, None)

    def _stream_progress(
        self, task_id: str, from_sequence: int | None, deadline: float | None
    ) -> Iterator[Event]:
        """:meth:`stream_progress`, raising :class:`celeritas.DeadlineExceeded` once the
        ``time.monotonic()`` moment ``deadline`` has passed (None: no deadline)."""
        last_sequence = from_sequence
        retries_done = 0
        while True:
            request = _wire.stream_progress_request(task_id, last_sequence)
            call = self._tasks.StreamProgress(
                request, timeout=_wire.time_left(deadline), metadata=self._metadata
            )
            try:
                for message in call:
                    event = _wire.event(message)
                    last_sequence = event.sequence
                    retries_done = 0
                    yield event
                    if event.is_last:
                        return
                # The server closed the stream before the tree finished (a coordinator on its
                # way down may do that): resume like after UNAVAILABLE.
                interruption: Unavailable = Unavailable(
                    "the progress stream ended before the tree finished"
                )
            except grpc.RpcError as rpc_error:
                error = error_from_rpc_error(rpc_error)
                if not isinstance(error, Unavailable):
                    raise error from None
                interruption = error
            finally:
                # Also reached when the caller stops iterating early: end the server's stream.
                call.cancel()
            if not self.retry.allows_retry(retries_done):
                raise interruption
            backoff = self.retry.backoff(retries_done)
            if deadline is not None and time.monotonic() + backoff >= deadline:
                raise DeadlineExceeded("the deadline passed while the progress stream was down")
            time.sleep(backoff)
            retries_done += 1

    def list_records(
        self,
        task_id: str,
        whole_tree: bool = False,
        kind: str | None = None,
        status: str | None = None,
        *,
        page_size: int | None = None,
    ) -> Iterator[Record]:
        """Iterates over the records a task emitted, oldest first, fetching page after page.

        ``whole_tree`` lists the records of the task's whole tree (the task must be a root);
        ``kind`` and ``status`` filter. ``page_size`` (1 to 10,000; default 1,000 on the server)
        only changes how many records each round trip carries.
        """
        page_token = ""
        while True:
            request = _wire.list_records_request(
                task_id, whole_tree, kind, status, page_size, page_token
            )
            response = self._call(self._tasks.ListRecords, request)
            for message in response.records:
                yield _wire.record(message)
            if not response.next_page_token:
                return
            page_token = response.next_page_token

    # Files.

    def upload(
        self,
        source: _wire.UploadSource,
        name: str | None = None,
        content_type: str | None = None,
    ) -> StoredFile:
        """Stores a file in the coordinator for tasks to read and returns it; its ``file_id``
        goes in a task's args (workers on any host read it back by that id).

        ``source`` is a path or a binary file object open for reading, read from where it
        stands in chunks of 1 MiB (never whole). ``name`` defaults to the path's last part;
        ``content_type`` to ``application/octet-stream``. A file over the coordinator's
        ``files.max_bytes`` raises :class:`celeritas.InvalidArgument` naming both sizes, and
        nothing is kept. The call has no deadline (a large file takes its time) and is not
        retried: a stream cannot be replayed.
        """
        file_name = _wire.upload_name(source, name)
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as reader:
                return self._upload(reader, file_name, content_type)
        return self._upload(source, file_name, content_type)

    def _upload(self, reader: IO[bytes], name: str, content_type: str | None) -> StoredFile:
        requests = _wire.upload_requests(reader, name, content_type)
        try:
            response = self._files.Upload(requests, metadata=self._metadata)
        except grpc.RpcError as rpc_error:
            raise error_from_rpc_error(rpc_error) from None
        return _wire.stored_file(response.file)

    # Health.

    def health(self, service: str = "") -> HealthStatus:
        """Asks the coordinator's gRPC health service; ``SERVING`` while its store answers.

        Not retried, so that an outage shows at once: a coordinator that cannot be reached
        raises :class:`celeritas.Unavailable`.
        """
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            # types-grpcio-health-checking's HealthStub declares no methods.
            response = self._health.Check(  # type: ignore[attr-defined]
                request, timeout=self.timeout, metadata=self._metadata
            )
        except grpc.RpcError as rpc_error:
            raise error_from_rpc_error(rpc_error) from None
        return _wire.health_status(response)

    # The one place calls are made, converted and retried.

    def _call(
        self,
        method: Callable[..., _Answer],
        request: Any,
        *,
        timeout: float | None = None,
    ) -> _Answer:
        retries_done = 0
        while True:
            try:
                return method(
                    request,
                    timeout=self.timeout if timeout is None else timeout,
                    metadata=self._metadata,
                )
            except grpc.RpcError as rpc_error:
                error = error_from_rpc_error(rpc_error)
                if not isinstance(error, Unavailable) or not self.retry.allows_retry(retries_done):
                    raise error from None
            time.sleep(self.retry.backoff(retries_done))
            retries_done += 1


class Inspect:
    """What ``celery inspect`` answers, asked of the coordinator (``client.inspect``).

    Worker-level answers cover every worker the store knows; ``ping`` reaches the workers
    connected to the coordinator that answers.
    """

    def __init__(self, client: Client, stub: inspect_pb2_grpc.InspectServiceStub) -> None:
        self._client = client
        self._stub = stub

    def ping(self, timeout: Seconds | None = None) -> list[WorkerPing]:
        """A round trip to each connected worker over its stream; ``timeout`` is how long to
        wait for answers (server default 2 seconds, at most 30)."""
        request = _wire.ping_request(timeout)
        call_timeout = self._client.timeout + (_wire.seconds_of(timeout, "timeout") if timeout else 0)
        response = self._client._call(self._stub.Ping, request, timeout=call_timeout)
        return [_wire.worker_ping(entry) for entry in response.workers]

    def active(
        self, limit: int | None = None, include_args: bool = False
    ) -> list[WorkerTasks]:
        """The tasks running now, by worker.

        At most ``limit`` (server default 1,000; at most 10,000, or 100 with args); args
        are left out (``{}``) unless ``include_args``.
        """
        request = inspect_pb2.ActiveRequest(limit=limit or 0, include_args=include_args)
        response = self._client._call(self._stub.Active, request)
        return [_wire.worker_tasks(entry) for entry in response.workers]

    def reserved(
        self, limit: int | None = None, include_args: bool = False
    ) -> list[WorkerTasks]:
        """The tasks leased but not started (prefetched), by worker.

        At most ``limit`` (server default 1,000; at most 10,000, or 100 with args); args
        are left out (``{}``) unless ``include_args``.
        """
        request = inspect_pb2.ReservedRequest(limit=limit or 0, include_args=include_args)
        response = self._client._call(self._stub.Reserved, request)
        return [_wire.worker_tasks(entry) for entry in response.workers]

    def scheduled(self, limit: int | None = None) -> ScheduledWork:
        """Tasks waiting for their ETA or a retry's backoff (soonest first, at most ``limit``;
        server default 100), and the periodic schedules."""
        request = inspect_pb2.ScheduledRequest(limit=limit or 0)
        return _wire.scheduled_work(self._client._call(self._stub.Scheduled, request))

    def stats(self) -> list[WorkerStats]:
        """Each known worker's process and counters."""
        response = self._client._call(self._stub.Stats, inspect_pb2.StatsRequest())
        return [_wire.worker_stats(entry) for entry in response.workers]

    def active_queues(self) -> list[WorkerQueues]:
        """The queues each known worker consumes."""
        response = self._client._call(self._stub.ActiveQueues, inspect_pb2.ActiveQueuesRequest())
        return [_wire.worker_queues(entry) for entry in response.workers]

    def registered(self) -> list[WorkerTaskNames]:
        """The task names each known worker runs."""
        response = self._client._call(self._stub.Registered, inspect_pb2.RegisteredRequest())
        return [_wire.worker_task_names(entry) for entry in response.workers]

    def rate_limits(self) -> RateLimits:
        """Every rate limit in force (configured or set through the API, the first match
        first) and each limited key in use with the rate it runs at now."""
        response = self._client._call(self._stub.RateLimits, inspect_pb2.RateLimitsRequest())
        return _wire.rate_limits(response)

    def queues(self) -> list[QueueDepth]:
        """Each configured queue's depth by state, the age of its oldest pending task and
        since when it is paused (``paused_at``, None when it is not), highest priority first."""
        response = self._client._call(self._stub.Queues, inspect_pb2.QueuesRequest())
        return [_wire.queue_depth(entry) for entry in response.queues]

    def close_idle_connections(
        self, queue: str | None = None, timeout: Seconds | None = None
    ) -> list[WorkerPing]:
        """Tells the connected workers consuming ``queue`` (every one when None) to close the
        idle connections of their SMTP pools; each answer's ``detail`` says what was closed."""
        request = _wire.close_idle_connections_request(queue, timeout)
        call_timeout = self._client.timeout + (_wire.seconds_of(timeout, "timeout") if timeout else 0)
        response = self._client._call(self._stub.CloseIdleConnections, request, timeout=call_timeout)
        return [_wire.worker_ping(entry) for entry in response.workers]
