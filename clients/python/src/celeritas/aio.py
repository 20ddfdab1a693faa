"""The asyncio client: :class:`AsyncClient`, the twin of :class:`celeritas.Client` on grpc.aio.

Every method has the same name, arguments and answer as its blocking twin, as a coroutine;
``stream_progress`` and ``list_records`` are async iterators. Create the client inside the event
loop that uses it (grpc.aio channels belong to one loop), and close it with ``await
client.close()`` or ``async with``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from datetime import datetime
from typing import IO, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from celeritas import _wire
from celeritas._connection import PemSource, connection
from celeritas.client import DEFAULT_TIMEOUT
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
    files_pb2,
    files_pb2_grpc,
    inspect_pb2,
    inspect_pb2_grpc,
    tasks_pb2,
    tasks_pb2_grpc,
)

__all__ = ["AsyncClient", "AsyncInspect"]


class AsyncClient:
    """A connection to a celeritas coordinator for asyncio code.

    >>> async with AsyncClient("http://127.0.0.1:50051") as client:
    ...     submitted = await client.submit("fan_out", {"task": "noop", "count": 10})
    ...     async for event in client.stream_progress(submitted.task_id):
    ...         print(event.sequence, event.kind)

    Arguments, errors and retries are those of :class:`celeritas.Client`.
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
        self._channel = settings.async_channel()
        self._tasks = tasks_pb2_grpc.TaskServiceStub(self._channel)
        self._files = files_pb2_grpc.FileServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        #: The ``celery inspect`` questions: ``await client.inspect.active()`` and so on.
        self.inspect = AsyncInspect(self, inspect_pb2_grpc.InspectServiceStub(self._channel))

    # Lifecycle.

    async def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exception_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncClient({self.url!r})"

    # Submitting.

    async def submit(
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
        """Submits one task; see :meth:`celeritas.Client.submit`."""
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
        return _wire.submitted_task(await self._call(self._tasks.SubmitTask, request))

    async def submit_many(self, specs: Iterable[TaskSpec]) -> list[SubmittedTask]:
        """Submits tasks in one durable write; see :meth:`celeritas.Client.submit_many`."""
        request = _wire.submit_tasks_request(specs)
        response = await self._call(self._tasks.SubmitTasks, request)
        return [_wire.submitted_task(entry) for entry in response.tasks]

    # Reading and waiting.

    async def get(self, task_id: str, wait: Seconds | None = None) -> Task:
        """Returns a task, long-polling up to ``wait``; see :meth:`celeritas.Client.get`."""
        request = _wire.get_task_request(task_id, wait)
        extra = _wire.seconds_of(wait, "wait") if wait is not None else 0.0
        response = await self._call(self._tasks.GetTask, request, timeout=self.timeout + extra)
        return _wire.task(response.task)

    async def wait(
        self, task_id: str, timeout: Seconds | None = None, *, tree: bool = False
    ) -> Task:
        """Waits until the task finishes, or with ``tree=True`` until its whole tree has; see
        :meth:`celeritas.Client.wait`."""
        if tree:
            return await self._wait_for_tree(task_id, timeout)
        deadline = None if timeout is None else time.monotonic() + _wire.seconds_of(timeout, "timeout")
        while True:
            remaining = _wire.MAX_SERVER_WAIT_SECONDS
            if deadline is not None:
                remaining = min(remaining, max(0.0, deadline - time.monotonic()))
            task = await self.get(task_id, wait=remaining)
            if task.is_finished:
                return task
            if deadline is not None and time.monotonic() >= deadline:
                raise TaskTimeout(task, _wire.seconds_of(timeout, "timeout"))  # type: ignore[arg-type]

    async def _wait_for_tree(self, task_id: str, timeout: Seconds | None) -> Task:
        seconds = None if timeout is None else _wire.seconds_of(timeout, "timeout")
        deadline = None if seconds is None else time.monotonic() + seconds
        try:
            # Only the end matters; the stream's events are read and dropped.
            async for _ in self._stream_progress(task_id, None, deadline):
                pass
        except DeadlineExceeded:
            if seconds is None:
                raise
            raise TaskTimeout(await self.get(task_id), seconds, tree=True) from None
        return await self.get(task_id)

    async def result(
        self, task_id: str, timeout: Seconds | None = None, *, tree: bool = False
    ) -> Any:
        """Waits for the task (or its whole tree) and returns its result; see
        :meth:`celeritas.Client.result`."""
        task = await self.wait(task_id, timeout, tree=tree)
        if task.state is not TaskState.SUCCEEDED:
            raise TaskFailed(task)
        return task.result

    # Changing.

    async def cancel(self, task_id: str, terminate: bool = False) -> Task:
        """Cancels a task; see :meth:`celeritas.Client.cancel`."""
        request = tasks_pb2.CancelTaskRequest(task_id=task_id, terminate=terminate)
        return _wire.task((await self._call(self._tasks.CancelTask, request)).task)

    async def purge(self, queue: str) -> int:
        """Cancels a queue's waiting tasks; see :meth:`celeritas.Client.purge`."""
        request = tasks_pb2.PurgeQueueRequest(queue=queue)
        return int((await self._call(self._tasks.PurgeQueue, request)).cancelled)

    async def pause_queue(self, queue: str) -> bool:
        """Pauses a queue; see :meth:`celeritas.Client.pause_queue`."""
        request = tasks_pb2.PauseQueueRequest(queue=queue)
        return bool((await self._call(self._tasks.PauseQueue, request)).changed)

    async def resume_queue(self, queue: str) -> bool:
        """Resumes a paused queue; see :meth:`celeritas.Client.resume_queue`."""
        request = tasks_pb2.ResumeQueueRequest(queue=queue)
        return bool((await self._call(self._tasks.ResumeQueue, request)).changed)

    async def pause_tree(self, task_id: str) -> TreePause:
        """Pauses a task tree; see :meth:`celeritas.Client.pause_tree`."""
        request = tasks_pb2.PauseTreeRequest(task_id=task_id)
        return _wire.tree_pause(await self._call(self._tasks.PauseTree, request))

    async def resume_tree(self, task_id: str) -> bool:
        """Resumes a paused tree; see :meth:`celeritas.Client.resume_tree`."""
        request = tasks_pb2.ResumeTreeRequest(task_id=task_id)
        return bool((await self._call(self._tasks.ResumeTree, request)).changed)

    async def set_rate_limit(self, key: str, rate: str) -> RateLimitSet:
        """Sets a rate limit; see :meth:`celeritas.Client.set_rate_limit`."""
        request = tasks_pb2.SetRateLimitRequest(key=key, rate=rate)
        return _wire.rate_limit_set(await self._call(self._tasks.SetRateLimit, request))

    async def clear_rate_limit(self, key: str) -> str:
        """Clears a rate limit; see :meth:`celeritas.Client.clear_rate_limit`."""
        request = tasks_pb2.ClearRateLimitRequest(key=key)
        return str((await self._call(self._tasks.ClearRateLimit, request)).previous)

    async def requeue(self, task_id: str, reason: str, attempt: int | None = None) -> Task:
        """Requeues a stuck task; see :meth:`celeritas.Client.requeue`."""
        request = tasks_pb2.RequeueTaskRequest(task_id=task_id, reason=reason, attempt=attempt or 0)
        return _wire.task((await self._call(self._tasks.RequeueTask, request)).task)

    async def fail(self, task_id: str, reason: str, attempt: int | None = None) -> Task:
        """Fails a stuck task; see :meth:`celeritas.Client.fail`."""
        request = tasks_pb2.FailTaskRequest(task_id=task_id, reason=reason, attempt=attempt or 0)
        return _wire.task((await self._call(self._tasks.FailTask, request)).task)

    async def retry_tasks(
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
        """Retries failed tasks in bulk; see :meth:`celeritas.Client.retry_tasks`."""
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
        response = await self._call(self._tasks.RetryTasks, request)
        return BulkResult(matched=int(response.matched), changed=int(response.retried))

    async def cancel_tasks(
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
        """Cancels unfinished tasks in bulk; see :meth:`celeritas.Client.cancel_tasks`."""
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
        response = await self._call(self._tasks.CancelTasks, request)
        return BulkResult(matched=int(response.matched), changed=int(response.cancelled))

    async def list_tasks(
        self,
        *,
        names: Iterable[str] = (),
        states: Iterable[TaskState | str] = (),
        root_id: str | None = None,
        quiet_for: Seconds | None = None,
        limit: int | None = None,
        include_payloads: bool = False,
    ) -> list[Task]:
        """Lists tasks; see :meth:`celeritas.Client.list_tasks`."""
        request = _wire.list_tasks_request(
            names, states, root_id, quiet_for, limit, include_payloads
        )
        response = await self._call(self._tasks.ListTasks, request)
        return [_wire.task(task) for task in response.tasks]

    # Progress and records.

    def stream_progress(
        self, task_id: str, from_sequence: int | None = None
    ) -> AsyncIterator[Event]:
        """Iterates over a tree's events, resuming across reconnections; see
        :meth:`celeritas.Client.stream_progress`."""
        return self._stream_progress(task_id, from_sequence, None)

    async def _stream_progress(
        self, task_id: str, from_sequence: int | None, deadline: float | None
    ) -> AsyncIterator[Event]:
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
                async for message in call:
                    event = _wire.event(message)
                    last_sequence = event.sequence
                    retries_done = 0
                    yield event
                    if event.is_last:
                        return
                interruption: Unavailable = Unavailable(
                    "the progress stream ended before the tree finished"
                )
            except grpc.RpcError as rpc_error:
                error = error_from_rpc_error(rpc_error)
                if not isinstance(error, Unavailable):
                    raise error from None
                interruption = error
            finally:
                call.cancel()
            if not self.retry.allows_retry(retries_done):
                raise interruption
            backoff = self.retry.backoff(retries_done)
            if deadline is not None and time.monotonic() + backoff >= deadline:
                raise DeadlineExceeded("the deadline passed while the progress stream was down")
            await asyncio.sleep(backoff)
            retries_done += 1

    async def list_records(
        self,
        task_id: str,
        whole_tree: bool = False,
        kind: str | None = None,
        status: str | None = None,
        *,
        page_size: int | None = None,
    ) -> AsyncIterator[Record]:
        """Iterates over a task's records, page after page; see
        :meth:`celeritas.Client.list_records`."""
        page_token = ""
        while True:
            request = _wire.list_records_request(
                task_id, whole_tree, kind, status, page_size, page_token
            )
            response = await self._call(self._tasks.ListRecords, request)
            for message in response.records:
                yield _wire.record(message)
            if not response.next_page_token:
                return
            page_token = response.next_page_token

    # Files.

    async def upload(
        self,
        source: _wire.UploadSource,
        name: str | None = None,
        content_type: str | None = None,
    ) -> StoredFile:
        """Stores a file in the coordinator, as :meth:`celeritas.Client.upload` does; the file is
        read in a thread, a chunk at a time, so the event loop never waits on the disk."""
        file_name = _wire.upload_name(source, name)
        if isinstance(source, (str, os.PathLike)):
            reader = await asyncio.to_thread(open, source, "rb")
            try:
                return await self._upload(reader, file_name, content_type)
            finally:
                reader.close()
        return await self._upload(source, file_name, content_type)

    async def _upload(self, reader: IO[bytes], name: str, content_type: str | None) -> StoredFile:
        async def requests() -> AsyncIterator[files_pb2.UploadRequest]:
            yield _wire.upload_header(name, content_type)
            while chunk := await asyncio.to_thread(reader.read, _wire.UPLOAD_CHUNK_BYTES):
                yield _wire.upload_chunk(chunk)

        try:
            response = await self._files.Upload(requests(), metadata=self._metadata)
        except grpc.RpcError as rpc_error:
            raise error_from_rpc_error(rpc_error) from None
        return _wire.stored_file(response.file)

    # Health.

    async def health(self, service: str = "") -> HealthStatus:
        """Asks the gRPC health service, without retries; see :meth:`celeritas.Client.health`."""
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            # types-grpcio-health-checking's HealthStub declares no methods.
            response = await self._health.Check(  # type: ignore[attr-defined]
                request, timeout=self.timeout, metadata=self._metadata
            )
        except grpc.RpcError as rpc_error:
            raise error_from_rpc_error(rpc_error) from None
        return _wire.health_status(response)

    # The one place calls are made, converted and retried.

    async def _call(
        self,
        method: Callable[..., Any],
        request: Any,
        *,
        timeout: float | None = None,
    ) -> Any:
        retries_done = 0
        while True:
            try:
                return await method(
                    request,
                    timeout=self.timeout if timeout is None else timeout,
                    metadata=self._metadata,
                )
            except grpc.RpcError as rpc_error:
                error = error_from_rpc_error(rpc_error)
                if not isinstance(error, Unavailable) or not self.retry.allows_retry(retries_done):
                    raise error from None
            await asyncio.sleep(self.retry.backoff(retries_done))
            retries_done += 1


class AsyncInspect:
    """The ``celery inspect`` questions for asyncio code (``client.inspect``); see
    :class:`celeritas.client.Inspect`."""

    def __init__(self, client: AsyncClient, stub: inspect_pb2_grpc.InspectServiceStub) -> None:
        self._client = client
        self._stub = stub

    async def ping(self, timeout: Seconds | None = None) -> list[WorkerPing]:
        """A round trip to each connected worker."""
        request = _wire.ping_request(timeout)
        call_timeout = self._client.timeout + (_wire.seconds_of(timeout, "timeout") if timeout else 0)
        response = await self._client._call(self._stub.Ping, request, timeout=call_timeout)
        return [_wire.worker_ping(entry) for entry in response.workers]

    async def active(
        self, limit: int | None = None, include_args: bool = False
    ) -> list[WorkerTasks]:
        """The tasks running now, by worker.

        At most ``limit`` (server default 1,000; at most 10,000, or 100 with args); args
        are left out (``{}``) unless ``include_args``.
        """
        request = inspect_pb2.ActiveRequest(limit=limit or 0, include_args=include_args)
        response = await self._client._call(self._stub.Active, request)
        return [_wire.worker_tasks(entry) for entry in response.workers]

    async def reserved(
        self, limit: int | None = None, include_args: bool = False
    ) -> list[WorkerTasks]:
        """The tasks leased but not started, by worker.

        At most ``limit`` (server default 1,000; at most 10,000, or 100 with args); args
        are left out (``{}``) unless ``include_args``.
        """
        request = inspect_pb2.ReservedRequest(limit=limit or 0, include_args=include_args)
        response = await self._client._call(self._stub.Reserved, request)
        return [_wire.worker_tasks(entry) for entry in response.workers]

    async def scheduled(self, limit: int | None = None) -> ScheduledWork:
        """Tasks waiting for their ETA or a retry, and the periodic schedules."""
        request = inspect_pb2.ScheduledRequest(limit=limit or 0)
        return _wire.scheduled_work(await self._client._call(self._stub.Scheduled, request))

    async def stats(self) -> list[WorkerStats]:
        """Each known worker's process and counters."""
        response = await self._client._call(self._stub.Stats, inspect_pb2.StatsRequest())
        return [_wire.worker_stats(entry) for entry in response.workers]

    async def active_queues(self) -> list[WorkerQueues]:
        """The queues each known worker consumes."""
        response = await self._client._call(
            self._stub.ActiveQueues, inspect_pb2.ActiveQueuesRequest()
        )
        return [_wire.worker_queues(entry) for entry in response.workers]

    async def registered(self) -> list[WorkerTaskNames]:
        """The task names each known worker runs."""
        response = await self._client._call(self._stub.Registered, inspect_pb2.RegisteredRequest())
        return [_wire.worker_task_names(entry) for entry in response.workers]

    async def rate_limits(self) -> RateLimits:
        """The rate limits in force and the limited keys in use."""
        response = await self._client._call(
            self._stub.RateLimits, inspect_pb2.RateLimitsRequest()
        )
        return _wire.rate_limits(response)

    async def queues(self) -> list[QueueDepth]:
        """Each configured queue's depth."""
        response = await self._client._call(self._stub.Queues, inspect_pb2.QueuesRequest())
        return [_wire.queue_depth(entry) for entry in response.queues]

    async def close_idle_connections(
        self, queue: str | None = None, timeout: Seconds | None = None
    ) -> list[WorkerPing]:
        """Closes workers' idle SMTP connections; see
        :meth:`celeritas.client.Inspect.close_idle_connections`."""
        request = _wire.close_idle_connections_request(queue, timeout)
        call_timeout = self._client.timeout + (_wire.seconds_of(timeout, "timeout") if timeout else 0)
        response = await self._client._call(
            self._stub.CloseIdleConnections, request, timeout=call_timeout
        )
        return [_wire.worker_ping(entry) for entry in response.workers]
