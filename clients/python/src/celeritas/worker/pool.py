"""The worker's child processes (prefork, like Celery's default pool): each runs one
plain-function task at a time, so CPU-bound tasks run in parallel and a task past its hard
time limit can be killed with its process and the process replaced.

Children are started by a fork server (``multiprocessing``'s ``forkserver``): a fresh
interpreter, started before the worker opens any gRPC channel and never holding one, forks
them. gRPC does not survive ``fork()`` of a process using it, so forking the worker itself
would break the children (and a replacement forked after the stream is up most of all).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from celeritas.worker import child as child_module
from celeritas.worker.loading import Setup

__all__ = ["Child", "ChildSetupFailed", "ProcessPool"]

logger = logging.getLogger("celeritas.worker")

#: How long a new child may take to import the tasks and say it is ready.
CHILD_READY_TIMEOUT = 120.0


class ChildSetupFailed(Exception):
    """A child could not import the tasks."""


class Child:
    """One child process, as the worker sees it."""

    def __init__(self, process: BaseProcess, connection: Connection) -> None:
        self.process = process
        self.connection = connection
        self.pid: int = process.pid or 0
        self.ready = False
        #: What it runs now (the runtime's key), None when idle.
        self.job: Any = None
        self.jobs_done = 0
        self.retiring = False
        self.gone = False

    def __repr__(self) -> str:
        return f"<Child {self.pid}{' busy' if self.job is not None else ''}>"


class ProcessPool:
    """``size`` children, replaced when they exit. ``on_message(child, message)`` receives
    what a child says; ``on_exit(child, exit_code)`` is told when one ended (with the job it
    had, if any) before its replacement is started; ``on_ready()`` when a child can take work."""

    def __init__(
        self,
        size: int,
        setup: Setup,
        on_message: Callable[[Child, tuple[Any, ...]], None],
        on_exit: Callable[[Child, int | None], None],
        max_tasks_per_child: int | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.size = size
        self.setup = setup
        self._on_message = on_message
        self._on_exit = on_exit
        self._on_ready = on_ready
        self.max_tasks_per_child = max_tasks_per_child
        self.children: list[Child] = []
        self.closing = False
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["celeritas.worker.child"])
        self._first_ready: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Starts the children and returns once all are ready; raises
        :class:`ChildSetupFailed` if one cannot import the tasks."""
        self._loop = asyncio.get_running_loop()
        self._first_ready = self._loop.create_future()
        for _ in range(self.size):
            self._spawn()
        deadline = self._loop.time() + CHILD_READY_TIMEOUT
        while not all(child.ready for child in self.children):
            if self._first_ready.done():
                self._first_ready.result()
            if self._loop.time() > deadline:
                raise ChildSetupFailed(
                    f"the child processes were not ready within {CHILD_READY_TIMEOUT:.0f}s"
                )
            await asyncio.sleep(0.02)

    def _spawn(self) -> None:
        assert self._loop is not None
        parent_end, child_end = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=child_module.main, args=(child_end, self.setup), name="celeritas-child", daemon=True
        )
        process.start()
        child_end.close()
        child = Child(process, parent_end)
        self.children.append(child)
        self._loop.add_reader(parent_end.fileno(), self._readable, child)

    def _readable(self, child: Child) -> None:
        try:
            while child.connection.poll():
                message = child.connection.recv()
                self._dispatch(child, message)
        except (EOFError, OSError):
            self._lost(child)

    def _dispatch(self, child: Child, message: tuple[Any, ...]) -> None:
        if message[0] == "ready":
            child.ready = True
            if self._on_ready is not None:
                self._on_ready()
            return
        if message[0] == "setup_failed":
            if self._first_ready is not None and not self._first_ready.done():
                self._first_ready.set_exception(ChildSetupFailed(message[1]))
            else:
                logger.error("a replacement child process could not set up: %s", message[1])
            return
        if message[0] == "done":
            child.jobs_done += 1
        self._on_message(child, message)
        if (
            message[0] == "done"
            and self.max_tasks_per_child is not None
            and child.jobs_done >= self.max_tasks_per_child
        ):
            self.retire(child)

    def _lost(self, child: Child) -> None:
        """The pipe closed: the child is ending. Its exit code comes once its process is gone."""
        if child.gone:
            return
        child.gone = True
        assert self._loop is not None
        self._loop.remove_reader(child.connection.fileno())
        child.connection.close()
        self._loop.add_reader(child.process.sentinel, self._exited, child)

    def _exited(self, child: Child) -> None:
        assert self._loop is not None
        self._loop.remove_reader(child.process.sentinel)
        child.process.join(0)
        exit_code = child.process.exitcode
        self.children.remove(child)
        self._on_exit(child, exit_code)
        child.job = None
        if not self.closing:
            self._spawn()

    def idle(self) -> Child | None:
        """A ready child with nothing to do."""
        for child in self.children:
            if child.ready and child.job is None and not child.retiring and not child.gone:
                return child
        return None

    def run(self, child: Child, job_key: Any, job: child_module.Job) -> None:
        child.job = job_key
        child.connection.send(("run", job))

    def reply(self, child: Child, request_id: int, ok: bool, payload: Any) -> None:
        if not child.gone:
            try:
                child.connection.send(("reply", request_id, ok, payload))
            except OSError:
                self._lost(child)

    def signal_stop(self, child: Child, reason: str) -> None:
        """The task should stop: SIGUSR1 (soft limit) or SIGUSR2 (cancelled)."""
        number = signal.SIGUSR1 if reason == "soft_time_limit" else signal.SIGUSR2
        self._kill(child, number)

    def kill(self, child: Child) -> None:
        """Ends the child at once (SIGKILL); its exit is reported and it is replaced."""
        self._kill(child, signal.SIGKILL)

    def _kill(self, child: Child, number: int) -> None:
        if child.pid and not child.gone:
            try:
                os.kill(child.pid, number)
            except ProcessLookupError:
                pass

    def retire(self, child: Child) -> None:
        """Asks an idle child to exit (after ``max_tasks_per_child`` tasks); a fresh one
        replaces it."""
        child.retiring = True
        try:
            child.connection.send(("exit",))
        except OSError:
            self._lost(child)

    def memory_rss_bytes(self) -> int:
        return sum(resident_memory_bytes(child.pid) for child in self.children if child.pid)

    async def close(self, timeout: float = 5.0) -> None:
        """Asks every child to exit, killing those still there after ``timeout``."""
        self.closing = True
        assert self._loop is not None
        for child in list(self.children):
            if child.job is None:
                self.retire(child)
            else:
                self.kill(child)
        deadline = self._loop.time() + timeout
        while self.children and self._loop.time() < deadline:
            await asyncio.sleep(0.02)
        for child in list(self.children):
            self.kill(child)
            child.process.join(1)


def resident_memory_bytes(pid: int | str = "self") -> int:
    """A process' resident memory from /proc (0 where there is none)."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
