"""The Python tasks the worker tests run (``python -m celeritas.worker -A worker_tasks:app``)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from celeritas import Celeritas, PermanentError, Retry, SoftTimeLimitExceeded, TaskCancelled
from celeritas.context import TaskContext

app = Celeritas("worker-tests")


@app.task(name="t.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="t.greet")
async def greet(name: str) -> str:
    await asyncio.sleep(0)
    return f"hello {name}"


@app.task(name="t.pid")
def pid() -> int:
    return os.getpid()


@app.task(name="t.report", bind=True)
def report(self: TaskContext, items: list[str]) -> dict[str, Any]:
    for number, item in enumerate(items, 1):
        self.emit("item", item, "seen", {"number": number})
        self.progress(number, len(items), f"item {item}")
    return {"seen": len(items), "recorded": sorted(self.recorded_keys("item", "seen"))}


@app.task(name="t.flaky", bind=True)
def flaky(self: TaskContext, failures: int) -> dict[str, int]:
    if self.request.retries < failures:
        self.retry(countdown=0.1, exc=ConnectionError(f"attempt {self.request.attempt} failed"))
    return {"attempt": self.request.attempt, "retries": self.request.retries}


class MailboxGone(PermanentError):
    pass


@app.task(name="t.permanent")
def permanent(address: str) -> None:
    raise MailboxGone(f"{address}: no such mailbox")


@app.task(name="t.crash")
def crash() -> None:
    raise ValueError("a plain bug")


@app.task(name="t.careful")
def careful(nap: float) -> dict[str, Any]:
    """Sleeps until its soft time limit interrupts it, then cleans up and returns."""
    started = time.monotonic()
    try:
        while True:
            time.sleep(nap)
    except SoftTimeLimitExceeded:
        return {"stopped_after": round(time.monotonic() - started, 1)}


@app.task(name="t.cancellable")
def cancellable() -> str:
    try:
        while True:
            time.sleep(0.05)
    except TaskCancelled:
        return "cleaned up"


@app.task(name="t.spin")
def spin() -> None:
    """A CPU-bound loop that even swallows the soft limit: only a kill ends it."""
    while True:
        try:
            while True:
                pass
        except SoftTimeLimitExceeded:
            continue


@app.task(name="t.unserializable")
def unserializable() -> Any:
    return {"ids": {1, 2, 3}}


@app.task(name="t.fan_out_to_noops", bind=True)
def fan_out_to_noops(self: TaskContext, count: int) -> dict[str, Any]:
    children = [
        app_spec("noop", {"number": number}, key=f"{self.request.id}-{number}") for number in range(count)
    ]
    ids = self.submit_children(children, callback=collect.s(parent=self.request.id))
    return {"children": len(ids)}


@app.task(name="t.collect", bind=True)
def collect(self: TaskContext, parent: str) -> dict[str, Any]:
    return {"parent": parent, "callback_of": self.request.parent_id}


@app.task(name="t.async_report")
async def async_report(count: int) -> dict[str, Any]:
    from celeritas.context import AsyncTaskContext, current_task

    context = current_task()
    assert isinstance(context, AsyncTaskContext)
    context.emit_many(("async", str(number), "done", None) for number in range(count))
    keys = await context.recorded_keys("async")
    return {"emitted": count, "worker_pid": os.getpid(), "keys_before": len(keys)}


def app_spec(name: str, args: dict[str, Any], key: str) -> Any:
    from celeritas import TaskSpec

    return TaskSpec(name=name, args=args, idempotency_key=key)


__all__ = ["Retry", "app"]
