"""The worker's event loop: one asyncio loop owns all of a worker's state (leases waiting,
tasks running, results not yet acknowledged) across reconnects, as the Rust worker's runtime
does (``src/worker/runtime/``), so a broken stream loses nothing the worker holds: on the
next stream it reports its leases in the hello, keeps those the coordinator confirms, and
sends its results (and their records) again.

Invariants:

- A message that must arrive (results, records, credit, releases) waits in the stream's
  outbox, in order; only heartbeats and progress ticks may be dropped.
- A result stays until its ``ResultAck``, and is sent again after a reconnect or when 30 s pass
  unacknowledged.
- The worker never runs more than ``concurrency`` tasks, nor holds more than ``concurrency x
  prefetch_multiplier`` leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import grpc

from celeritas import _worker_wire
from celeritas import protocol as p
from celeritas._connection import Connection, PemSource, connection
from celeritas._version import __version__
from celeritas.app import Celeritas, Task
from celeritas.context import AsyncTaskContext, ContextRequestFailed, TaskRequest, set_current
from celeritas.execution import run_async
from celeritas.models import TaskSpec
from celeritas.v1 import workers_pb2, workers_pb2_grpc
from celeritas.worker.child import Job
from celeritas.worker.loading import Setup
from celeritas.worker.pool import Child, ProcessPool, resident_memory_bytes

__all__ = ["Refused", "Runtime", "WorkerOptions"]

logger = logging.getLogger("celeritas.worker")

#: A result not acknowledged this long after it was sent is sent again.
RESEND_UNACKED_AFTER = 30.0
#: How long a stopping worker keeps trying to deliver results after its tasks ended.
FINAL_DELIVERY_GRACE = 10.0
#: Beyond this many messages waiting, heartbeats and progress ticks are dropped.
DROPPABLE_HIGH_WATER = 1024


class Refused(Exception):
    """The coordinator refused the worker's hello: its configuration is wrong."""


#: Codes that, before the welcome, mean the coordinator refuses this worker as configured (its
#: hello, its credentials, or what they allow): retrying cannot help, so the worker stops.
REFUSAL_CODES = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
)


@dataclass
class WorkerOptions:
    """How a worker runs (the command line's options)."""

    #: Coordinators to connect to, tried in turn after a failure.
    urls: list[str]
    queues: list[str]
    concurrency: int = 1
    prefetch_multiplier: int = 1
    worker_id: str = ""
    hostname: str = field(default_factory=lambda: socket.gethostname() or "localhost")
    #: Sent as ``authorization: Bearer <token>``; never shown by ``repr``.
    token: str | None = field(default=None, repr=False)
    #: For ``https://`` URLs: the CA to trust (else the system's roots), and a client
    #: certificate and its key (the worker's identity); paths or PEM bytes. The files are read
    #: again at each connection, so a renewed certificate is used from the next one.
    tls_ca: PemSource | None = None
    tls_cert: PemSource | None = None
    tls_key: PemSource | None = None
    shutdown_timeout: float = 30.0
    reconnect_backoff_max: float = 5.0
    #: Each child process is replaced by a fresh one after this many tasks (Celery's option).
    max_tasks_per_child: int | None = None
    execution_log: Path | None = None

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("urls: at least one coordinator")
        if not self.queues:
            raise ValueError("queues: at least one")
        if self.concurrency < 1 or self.prefetch_multiplier < 1:
            raise ValueError("concurrency and prefetch_multiplier: at least 1")
        if not self.worker_id:
            self.worker_id = f"{self.hostname}:{os.getpid()}"
        # Settings that cannot work (a CA with an http:// URL, a certificate without its key, a
        # file that cannot be read) stop the worker before it starts.
        for url in self.urls:
            self.connection(url)

    def connection(self, url: str) -> Connection:
        """The channel settings for ``url``, the files read now. The environment is not read
        here: the command line resolves its defaults (``options_from``)."""
        return connection(
            url,
            self.token,
            tls_ca=self.tls_ca,
            tls_cert=self.tls_cert,
            tls_key=self.tls_key,
            environment=None,
        )

    @property
    def capacity(self) -> int:
        return self.concurrency * self.prefetch_multiplier


@dataclass
class _Running:
    lease: p.Lease
    task: Task
    started: float
    child: Child | None = None
    coroutine: asyncio.Task[tuple[p.Outcome, BaseException | None]] | None = None
    stop_reason: str | None = None
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    #: Why the worker ended it itself: "time_limit", "terminate", "abort", "lost".
    ended_by: str | None = None
    orphaned: bool = False
    timers: list[asyncio.TimerHandle] = field(default_factory=list)


@dataclass
class _Unacked:
    outcome: p.Outcome
    sent_at: float


class _Link:
    """An open stream."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.outbox: deque[workers_pb2.ConnectRequest] = deque()
        self.wakeup = asyncio.Event()
        self.welcomed = False
        self.writing = False

    def put(self, message: workers_pb2.ConnectRequest) -> None:
        self.outbox.append(message)
        self.wakeup.set()

    @property
    def idle(self) -> bool:
        return not self.outbox and not self.writing


class _TaskChannel:
    """The calls of an ``async def`` task, straight into the runtime."""

    def __init__(self, runtime: Runtime, running: _Running) -> None:
        self._runtime = runtime
        self._running = running

    def progress(self, done: int, total: int, message: str) -> None:
        self._runtime.on_progress(self._running, done, total, message)

    def records(self, records: list[p.RecordEntry]) -> None:
        self._runtime.on_records(self._running, records)

    async def submit_children(
        self, children: list[TaskSpec], callback: TaskSpec | None
    ) -> tuple[list[str], str | None]:
        future = self._runtime.ask_children(self._running, children, callback)
        ok, payload = await future
        if not ok:
            raise ContextRequestFailed(*payload)
        ids, callback_id = payload
        return list(ids), callback_id

    async def query_records(self, kind: str, status: str | None) -> list[str]:
        ok, payload = await self._runtime.ask_records(self._running, kind, status)
        if not ok:
            raise ContextRequestFailed(*payload)
        return list(payload)

    def stop_reason(self) -> str | None:
        return self._running.stop_reason

    async def wait_for_stop(self) -> str:
        await self._running.stop_event.wait()
        return self._running.stop_reason or "cancelled"


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Runtime:
    """Runs ``app``'s tasks for the coordinators of ``options`` until drained."""

    def __init__(self, options: WorkerOptions, app: Celeritas, setup: Setup) -> None:
        self.options = options
        self.app = app
        self.setup = setup
        self.tasks = app.tasks
        self.waiting: list[p.Lease] = []
        self.running: dict[p.LeaseToken, _Running] = {}
        self.unacked: dict[p.LeaseToken, _Unacked] = {}
        self.records: dict[p.LeaseToken, list[p.RecordEntry]] = {}
        #: Requests sent to the coordinator, by request id: where the answer goes.
        self.pending: dict[int, asyncio.Future[tuple[bool, Any]]] = {}
        self.next_request = 0
        self.processed_by_name: dict[str, int] = {}
        self.failed_by_name: dict[str, int] = {}
        self.started_at = _now()
        self.link: _Link | None = None
        self.pool: ProcessPool | None = None
        self.draining = False
        self.drain_started: float | None = None
        self.finished = asyncio.Event()
        self.exit_code = 0
        self.refusal: str | None = None
        self.backoff = 0.1
        self.url_index = 0
        self._timers: list[asyncio.TimerHandle] = []

    # Life.

    async def run(self) -> int:
        """Runs until drained; returns the process' exit code."""
        loop = asyncio.get_running_loop()
        for signal_number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signal_number, self.on_signal, signal_number)
        if any(not task.is_async for task in self.tasks.values()):
            self.pool = ProcessPool(
                self.options.concurrency,
                self.setup,
                self.on_child_message,
                self.on_child_exit,
                self.options.max_tasks_per_child,
                on_ready=self.start_waiting,
            )
            await self.pool.start()
        logger.info(
            "worker %s ready: queues %s, concurrency %d (prefetch %d), %d tasks: %s",
            self.options.worker_id,
            ",".join(self.options.queues),
            self.options.concurrency,
            self.options.prefetch_multiplier,
            len(self.tasks),
            ", ".join(sorted(self.tasks)),
        )
        connector = asyncio.create_task(self.connect_forever())
        await self.finished.wait()
        await self.close_link()
        connector.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await connector
        for timer in self._timers:
            timer.cancel()
        if self.pool is not None:
            await self.pool.close()
        if self.refusal is not None:
            logger.error("the coordinator refused this worker: %s", self.refusal)
            return 1
        logger.info(
            "worker stopped: %d tasks processed, %d failed",
            sum(self.processed_by_name.values()),
            sum(self.failed_by_name.values()),
        )
        return self.exit_code

    def on_signal(self, signal_number: int) -> None:
        if self.draining:
            logger.warning("second %s: stopping now", signal.Signals(signal_number).name)
            self.exit_code = 1
            self.finished.set()
            return
        self.drain(f"{signal.Signals(signal_number).name} received")

    def drain(self, why: str) -> None:
        """Takes no more work, gives back waiting leases, and lets running tasks finish until
        the shutdown timeout."""
        if self.draining:
            return
        logger.info("draining (%s): %d running, %d waiting", why, len(self.running), len(self.waiting))
        self.draining = True
        self.drain_started = time.monotonic()
        waiting = [lease.token for lease in self.waiting]
        self.waiting.clear()
        if waiting:
            self.send(p.Release(waiting))
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(self.options.shutdown_timeout, self.on_drain_deadline))
        self._timers.append(
            loop.call_later(self.options.shutdown_timeout + FINAL_DELIVERY_GRACE, self.on_final_deadline)
        )
        self.check_drained()

    def on_drain_deadline(self) -> None:
        if self.running:
            logger.warning(
                "%d tasks did not finish within the shutdown timeout; aborting them", len(self.running)
            )
        for running in list(self.running.values()):
            self.abort(running, "abort")

    def on_final_deadline(self) -> None:
        if not self.finished.is_set():
            logger.warning(
                "stopping with %d results the coordinator has not acknowledged; their tasks will run again",
                len(self.unacked),
            )
            self.finished.set()

    def check_drained(self) -> None:
        if (
            self.draining
            and not self.waiting
            and not self.running
            and not self.unacked
            and (self.link is None or self.link.idle)
        ):
            self.finished.set()

    # The connection.

    async def connect_forever(self) -> None:
        while True:
            url = self.options.urls[self.url_index % len(self.options.urls)]
            try:
                await self.session(url)
                self.backoff = 0.1
                if not self.finished.is_set():
                    logger.info("the coordinator closed the stream; reconnecting")
            except Refused as error:
                self.refusal = str(error)
                self.finished.set()
                return
            except (grpc.aio.AioRpcError, OSError, ConnectionError, ValueError) as error:
                # ValueError: a certificate file unreadable at this connection (being renewed);
                # it was readable at start.
                detail = error.details() if isinstance(error, grpc.aio.AioRpcError) else str(error)
                logger.warning(
                    "no stream to the coordinator at %s (%s); retrying in %.1fs", url, detail, self.backoff
                )
                self.url_index += 1
            finally:
                self.link = None
                self.fail_pending("the stream to the coordinator broke")
            if self.finished.is_set():
                return
            self.check_drained()
            await asyncio.sleep(self.backoff)
            self.backoff = min(self.backoff * 2, self.options.reconnect_backoff_max)

    async def session(self, url: str) -> None:
        settings = self.options.connection(url)
        channel = settings.async_channel()
        try:
            stub = workers_pb2_grpc.WorkerServiceStub(channel)
            call = stub.Connect(metadata=settings.metadata)
            try:
                await call.write(_worker_wire.request(self.hello()))
            except grpc.aio.AioRpcError as error:
                # Refused before the hello was written (a missing or rejected token).
                if error.code() in REFUSAL_CODES:
                    raise Refused(error.details() or str(error.code())) from error
                raise
            except asyncio.InvalidStateError:
                pass  # The call has ended already: reading it below raises its status.
            link = _Link(call)
            self.link = link
            writer = asyncio.create_task(self.write_forever(link))
            heartbeat: asyncio.Task[None] | None = None
            try:
                while True:
                    try:
                        response = await call.read()
                    except grpc.aio.AioRpcError as error:
                        if not link.welcomed and error.code() in REFUSAL_CODES:
                            raise Refused(error.details() or str(error.code())) from error
                        raise
                    if response is grpc.aio.EOF:
                        return
                    for message in _worker_wire.coordinator_messages(response):
                        if isinstance(message, p.Welcome):
                            self.on_welcome(link, message)
                            heartbeat = asyncio.create_task(
                                self.heartbeat_forever(link, message.heartbeat_interval)
                            )
                        elif message is not None:
                            self.on_message(message)
            finally:
                writer.cancel()
                if heartbeat is not None:
                    heartbeat.cancel()
        finally:
            await channel.close(grace=None)

    async def write_forever(self, link: _Link) -> None:
        while True:
            while link.outbox:
                link.writing = True
                # Everything queued goes in one write (a batch): each write costs the event
                # loop a round trip through gRPC's core, so one per message bounds throughput.
                messages = [link.outbox.popleft()]
                size = messages[0].ByteSize()
                while (
                    link.outbox
                    and len(messages) < _worker_wire.BATCH_MESSAGES
                    and size + link.outbox[0].ByteSize() <= _worker_wire.BATCH_BYTES
                ):
                    message = link.outbox.popleft()
                    size += message.ByteSize()
                    messages.append(message)
                try:
                    await link.call.write(_worker_wire.batched(messages))
                except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
                    # The stream is gone; its end arrives on the reading side.
                    link.outbox.clear()
                    return
                finally:
                    link.writing = False
            self.check_drained()
            link.wakeup.clear()
            await link.wakeup.wait()

    async def heartbeat_forever(self, link: _Link, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.send_or_drop(p.Heartbeat(self.stats()))
            self.resend_overdue_results()

    async def close_link(self) -> None:
        """Closes the stream cleanly and waits briefly for the coordinator to end it."""
        link = self.link
        if link is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(link.call.done_writing(), 2)
            while await asyncio.wait_for(link.call.read(), 2) is not grpc.aio.EOF:
                pass

    def hello(self) -> p.Hello:
        held = {lease.token for lease in self.waiting}
        held.update(token for token, running in self.running.items() if not running.orphaned)
        held.update(self.unacked)
        return p.Hello(
            worker_id=self.options.worker_id,
            hostname=self.options.hostname,
            pid=os.getpid(),
            queues=self.options.queues,
            concurrency=self.options.concurrency,
            prefetch_multiplier=self.options.prefetch_multiplier,
            task_names=sorted(self.tasks),
            version=f"celeritas-python/{__version__}",
            held_leases=sorted(held),
        )

    def stats(self) -> p.Stats:
        memory = resident_memory_bytes()
        if self.pool is not None:
            memory += self.pool.memory_rss_bytes()
        return p.Stats(
            processed=dict(self.processed_by_name),
            failed=dict(self.failed_by_name),
            memory_rss_bytes=memory,
            started_at=self.started_at,
        )

    # Saying things.

    def send(self, message: p.WorkerMessage) -> None:
        """A message that must arrive: it waits in the outbox, in order. Without a welcomed
        stream it is dropped: results and records are kept until acknowledged and sent again
        after the next welcome, and the hello reports the leases held."""
        if self.link is None or not self.link.welcomed:
            return
        self.link.put(_worker_wire.request(message))

    def send_or_drop(self, message: p.WorkerMessage) -> None:
        """A message that may be lost (a heartbeat, a progress tick)."""
        if self.link is not None and self.link.welcomed and len(self.link.outbox) < DROPPABLE_HIGH_WATER:
            self.link.put(_worker_wire.request(message))

    def send_records(self, token: p.LeaseToken, records: list[p.RecordEntry]) -> None:
        for start in range(0, len(records), p.RECORDS_PER_MESSAGE):
            self.send(p.EmitRecords(token, records[start : start + p.RECORDS_PER_MESSAGE]))

    def grant_one(self) -> None:
        if not self.draining:
            self.send(p.Credit(1))

    def resend_overdue_results(self) -> None:
        if self.link is None or not self.link.welcomed:
            return
        now = time.monotonic()
        for token, unacked in self.unacked.items():
            if now - unacked.sent_at >= RESEND_UNACKED_AFTER:
                logger.info("result of %s not acknowledged yet; sending it again", token)
                unacked.sent_at = now
                self.send_records(token, self.records.get(token, []))
                self.send(p.Result(token, unacked.outcome))

    def fail_pending(self, why: str) -> None:
        for future in self.pending.values():
            if not future.done():
                future.set_result((False, (why, True)))
        self.pending.clear()

    def _ask(self, message_for: Any) -> asyncio.Future[tuple[bool, Any]]:
        future: asyncio.Future[tuple[bool, Any]] = asyncio.get_running_loop().create_future()
        if self.link is None or not self.link.welcomed:
            future.set_result((False, ("the worker is not connected to a coordinator right now", True)))
            return future
        self.next_request += 1
        try:
            message = message_for(self.next_request)
            self.send(message)
        except (TypeError, ValueError) as error:
            future.set_result((False, (str(error), False)))
            return future
        self.pending[self.next_request] = future
        return future

    def ask_children(
        self, running: _Running, children: list[TaskSpec], callback: TaskSpec | None
    ) -> asyncio.Future[tuple[bool, Any]]:
        return self._ask(
            lambda request_id: p.SubmitChildren(request_id, running.lease.token, children, callback)
        )

    def ask_records(
        self, running: _Running, kind: str, status: str | None
    ) -> asyncio.Future[tuple[bool, Any]]:
        return self._ask(lambda request_id: p.QueryRecords(request_id, running.lease.token, kind, status))

    def on_progress(self, running: _Running, done: int, total: int, message: str) -> None:
        if not running.orphaned:
            self.send_or_drop(p.ProgressReport(running.lease.token, int(done), int(total), str(message)))

    def on_records(self, running: _Running, records: list[p.RecordEntry]) -> None:
        token = running.lease.token
        self.records.setdefault(token, []).extend(records)
        self.send_records(token, records)

    # What the coordinator says.

    def on_welcome(self, link: _Link, welcome: p.Welcome) -> None:
        logger.info(
            "connected to coordinator %s (kept %d leases)", welcome.coordinator_id, len(welcome.kept_leases)
        )
        self.backoff = 0.1
        link.welcomed = True
        kept = set(welcome.kept_leases)
        self.waiting = [lease for lease in self.waiting if lease.token in kept]
        for token, running in self.running.items():
            if token not in kept and not running.orphaned:
                logger.info("lease %s lost while disconnected; aborting its task", token)
                running.orphaned = True
                self.abort(running, "lost")
        for token in [token for token in self.unacked if token not in kept]:
            logger.info("the coordinator did not keep %s: its result is dropped", token)
            del self.unacked[token]
        self.records = {token: records for token, records in self.records.items() if token in kept}
        for token, records in self.records.items():
            self.send_records(token, records)
        now = time.monotonic()
        for token, unacked in self.unacked.items():
            unacked.sent_at = now
            self.send(p.Result(token, unacked.outcome))
        if self.draining:
            waiting = [lease.token for lease in self.waiting]
            self.waiting.clear()
            if waiting:
                self.send(p.Release(waiting))
            self.check_drained()
            return
        held = len(self.waiting) + sum(1 for running in self.running.values() if not running.orphaned)
        grant = self.options.capacity - held
        if grant > 0:
            self.send(p.Credit(grant))
        self.start_waiting()

    def on_message(self, message: p.CoordinatorMessage) -> None:
        if isinstance(message, p.Lease):
            if self.draining:
                self.send(p.Release([message.token]))
                return
            if len(self.waiting) + len(self.running) >= self.options.capacity:
                logger.error("the coordinator sent a lease beyond this worker's capacity; giving it back")
                self.send(p.Release([message.token]))
                return
            self.waiting.append(message)
            self.start_waiting()
        elif isinstance(message, p.ResultAck):
            self.unacked.pop(message.token, None)
            self.records.pop(message.token, None)
            if not message.accepted:
                logger.info("the coordinator refused the result of %s: %s", message.token, message.reason)
            self.check_drained()
        elif isinstance(message, p.Cancel):
            self.on_cancel(message)
        elif isinstance(message, p.Control):
            self.on_control(message)
        elif isinstance(message, p.ChildrenSubmitted):
            future = self.pending.pop(message.request_id, None)
            if future is not None and not future.done():
                if message.error is not None:
                    future.set_result((False, (message.error, message.retryable)))
                else:
                    future.set_result((True, (message.task_ids, message.callback_id)))
        elif isinstance(message, p.RecordsQueried):
            future = self.pending.pop(message.request_id, None)
            if future is not None and not future.done():
                if message.error is not None:
                    future.set_result((False, (message.error, message.retryable)))
                else:
                    future.set_result((True, message.keys))

    def on_control(self, control: p.Control) -> None:
        if control.command == "ping":
            self.send(p.ControlReply(control.request_id, "pong"))
        elif control.command == "drain":
            self.send(p.ControlReply(control.request_id, "draining"))
            self.drain("the coordinator asked this worker to drain")
        elif control.command == "close_idle_connections":
            self.send(p.ControlReply(control.request_id, "a Python worker pools no connections"))
        else:
            self.send(
                p.ControlReply(control.request_id, "unsupported: this worker does not know the command")
            )

    def on_cancel(self, cancel: p.Cancel) -> None:
        for index, lease in enumerate(self.waiting):
            if lease.token == cancel.token:
                del self.waiting[index]
                logger.info("%s cancelled before it started (%s)", cancel.token, cancel.reason)
                self.send(p.Release([cancel.token]))
                self.grant_one()
                return
        running = self.running.get(cancel.token)
        if running is not None:
            logger.info(
                "cancelling running %s (%s, terminate=%s)", cancel.token, cancel.reason, cancel.terminate
            )
            self.stop(running, "cancelled")
            if cancel.terminate:
                self.abort(running, "terminate")

    # Running tasks.

    def start_waiting(self) -> None:
        """Starts waiting leases while there is room: an ``async def`` task needs a place in
        ``concurrency``, a plain one an idle child too."""
        index = 0
        while len(self.running) < self.options.concurrency and index < len(self.waiting):
            lease = self.waiting[index]
            if lease.expires_at is not None and lease.expires_at <= _now():
                del self.waiting[index]
                self.send(p.Release([lease.token]))
                self.grant_one()
                continue
            task = self.tasks.get(lease.name)
            if task is None:
                del self.waiting[index]
                self.count(lease.name, failed=True)
                self.finish(
                    lease.token,
                    p.Failure(
                        "unregistered",
                        f"worker {self.options.worker_id} does not run task {lease.name!r}; "
                        f"it runs {', '.join(sorted(self.tasks))}",
                        retryable=False,
                    ),
                )
                continue
            child = None
            if not task.is_async:
                assert self.pool is not None
                child = self.pool.idle()
                if child is None:
                    index += 1
                    continue
            del self.waiting[index]
            self.start(lease, task, child)

    def start(self, lease: p.Lease, task: Task, child: Child | None) -> None:
        self.log_execution(lease)
        running = _Running(lease=lease, task=task, started=time.monotonic(), child=child)
        self.running[lease.token] = running
        self.send(p.Started(lease.token, _now()))
        request = TaskRequest(
            id=lease.token.task_id,
            name=lease.name,
            attempt=lease.token.attempt,
            retries=lease.retries,
            max_retries=lease.max_retries,
            root_id=lease.root_id,
            parent_id=lease.parent_id,
            queue=lease.queue,
            priority=lease.priority,
            kwargs=_kwargs_of(lease.args_json),
        )
        loop = asyncio.get_running_loop()
        if lease.soft_time_limit is not None:
            running.timers.append(
                loop.call_later(lease.soft_time_limit, self.stop, running, "soft_time_limit")
            )
        if lease.hard_time_limit is not None:
            running.timers.append(loop.call_later(lease.hard_time_limit, self.abort, running, "time_limit"))
        if child is not None:
            assert self.pool is not None
            self.pool.run(child, lease.token, Job(request, lease.args_json))
        else:
            context = AsyncTaskContext(request, _TaskChannel(self, running))
            running.coroutine = asyncio.create_task(self._run_async(task, context, lease.args_json))
            running.coroutine.add_done_callback(lambda done: self.on_async_done(running, done))

    async def _run_async(
        self, task: Task, context: AsyncTaskContext, args_json: str
    ) -> tuple[p.Outcome, BaseException | None]:
        set_current(context)
        return await run_async(task, context, args_json)

    def stop(self, running: _Running, reason: str) -> None:
        """Tells the task to stop: its flag, and in a child the signal that raises
        ``SoftTimeLimitExceeded`` / ``TaskCancelled``."""
        if running.lease.token not in self.running or running.stop_reason is not None:
            return
        running.stop_reason = reason
        running.stop_event.set()
        if running.child is not None and self.pool is not None:
            self.pool.signal_stop(running.child, reason)

    def abort(self, running: _Running, why: str) -> None:
        """Ends the task at once: its child is killed (and replaced), its coroutine cancelled."""
        if running.lease.token not in self.running or running.ended_by is not None:
            return
        running.ended_by = why
        if running.child is not None and self.pool is not None:
            self.pool.kill(running.child)
        elif running.coroutine is not None:
            running.coroutine.cancel()

    def _ended_by_worker(self, running: _Running) -> p.Failure:
        if running.ended_by == "time_limit":
            where = f"; its child process {running.child.pid} was killed" if running.child else ""
            return p.Failure(
                "time_limit",
                f"the hard time limit of {running.lease.hard_time_limit:g}s passed{where}",
                retryable=False,
            )
        if running.ended_by == "abort":
            return p.Failure("aborted", "the worker stopped before the task finished", retryable=True)
        return p.Failure("aborted", "the task was aborted before it finished", retryable=self.draining)

    def on_async_done(
        self, running: _Running, done: asyncio.Task[tuple[p.Outcome, BaseException | None]]
    ) -> None:
        if done.cancelled():
            outcome: p.Outcome = self._ended_by_worker(running)
        elif done.exception() is not None:
            error = done.exception()
            outcome = p.Failure(type(error).__name__, str(error), retryable=True)
        else:
            outcome = done.result()[0]
        self.on_finished(running, outcome)

    def on_child_message(self, child: Child, message: tuple[Any, ...]) -> None:
        running = self.running.get(child.job) if child.job is not None else None
        if running is None or running.child is not child:
            if message[0] in ("children", "query") and self.pool is not None:
                self.pool.reply(child, message[1], False, ("the task is no longer running", False))
            if message[0] == "done":
                child.job = None
                self.start_waiting()
            return
        kind = message[0]
        if kind == "progress":
            self.on_progress(running, message[1], message[2], message[3])
        elif kind == "records":
            self.on_records(running, message[1])
        elif kind in ("children", "query"):
            request_id = message[1]
            if kind == "children":
                future = self.ask_children(running, message[2], message[3])
            else:
                future = self.ask_records(running, message[2], message[3])

            def answer(done: asyncio.Future[tuple[bool, Any]]) -> None:
                if self.pool is not None:
                    self.pool.reply(child, request_id, *done.result())

            future.add_done_callback(answer)
        elif kind == "done":
            child.job = None
            self.on_finished(running, message[1])

    def on_child_exit(self, child: Child, exit_code: int | None) -> None:
        running = self.running.get(child.job) if child.job is not None else None
        if running is None or running.child is not child:
            if not self.pool or not self.pool.closing:
                logger.info("child process %d exited (code %s); starting a fresh one", child.pid, exit_code)
            return
        if running.ended_by is not None:
            outcome = self._ended_by_worker(running)
        else:
            outcome = p.Failure(
                "worker_lost",
                f"the child process {child.pid} running the task exited with code {exit_code}",
                retryable=True,
            )
        logger.warning("child process %d ended running %s: %s", child.pid, running.lease.token, outcome.kind)
        self.on_finished(running, outcome)

    def on_finished(self, running: _Running, outcome: p.Outcome) -> None:
        token = running.lease.token
        if self.running.get(token) is not running:
            return
        del self.running[token]
        for timer in running.timers:
            timer.cancel()
        if running.orphaned:
            self.count(running.lease.name, failed=False)
            self.records.pop(token, None)
        else:
            self.count(running.lease.name, failed=isinstance(outcome, p.Failure))
            self.finish(token, outcome)
        self.start_waiting()
        self.check_drained()

    def count(self, name: str, *, failed: bool) -> None:
        self.processed_by_name[name] = self.processed_by_name.get(name, 0) + 1
        if failed:
            self.failed_by_name[name] = self.failed_by_name.get(name, 0) + 1

    def finish(self, token: p.LeaseToken, outcome: p.Outcome) -> None:
        """Keeps a result until the coordinator acknowledges it, and sends it."""
        self.unacked[token] = _Unacked(outcome, time.monotonic())
        self.send(p.Result(token, outcome))
        self.grant_one()

    def log_execution(self, lease: p.Lease) -> None:
        """One JSON line per attempt started, as the Rust worker writes (for audits and tests
        that count executions)."""
        path = self.options.execution_log
        if path is None:
            return
        line = json.dumps(
            {
                "task_id": lease.token.task_id,
                "attempt": lease.token.attempt,
                "name": lease.name,
                "worker_id": self.options.worker_id,
                "at": _now().isoformat(),
            }
        )
        try:
            # One write of a short line to a file opened for appending lands whole.
            with open(path, "a", encoding="utf-8") as log:
                log.write(line + "\n")
        except OSError as error:
            logger.warning("cannot write the execution log %s: %s", path, error)


def _kwargs_of(args_json: str) -> dict[str, Any]:
    try:
        value = json.loads(args_json) if args_json else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
