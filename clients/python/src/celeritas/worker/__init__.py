"""The Python worker: runs an app's tasks for celeritas coordinators, with the Rust worker's
guarantees (``WorkerService.Connect``).

    python -m celeritas.worker -A proj.tasks:app -Q default,import -c 4

Plain functions run in ``-c`` child processes (prefork), ``async def`` tasks on the worker's
event loop. :func:`run_worker` is the same from Python (Django's ``celeritas_worker`` command
calls it).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable

from celeritas.app import DuplicateTaskName
from celeritas.worker.loading import LoadError, Setup, load
from celeritas.worker.pool import ChildSetupFailed
from celeritas.worker.runtime import Runtime, WorkerOptions

__all__ = ["LoadError", "Setup", "WorkerOptions", "run_worker"]

logger = logging.getLogger("celeritas.worker")

#: The interpreter's thread switch interval while the worker runs, in seconds. gRPC's core
#: hands every message between its own thread and the event loop's; at Python's default (5 ms)
#: each handoff may wait for the other thread's interval to end. Measured with
#: scripts/bench-compare's Python run: no-op throughput at -c 8 went from about 730 to 910
#: tasks/s. The worker process runs no CPU-bound Python (plain functions run in children).
SWITCH_INTERVAL_SECONDS = 0.0002


def _print_error(text: str) -> None:
    print(text, file=sys.stderr)


def run_worker(options: WorkerOptions, setup: Setup, *, errors: Callable[[str], None] = _print_error) -> int:
    """Loads the tasks, refuses a bad setup before connecting, then runs until drained;
    returns the exit code (0 after a clean drain, 1 when the tasks do not load or the
    coordinator refuses the worker)."""
    try:
        app = load(setup)
        app.check()
    except (LoadError, DuplicateTaskName) as error:
        errors(f"celeritas worker: {error}")
        return 1
    if not app.tasks:
        errors("celeritas worker: no tasks found; name the app with -A module:app")
        return 1
    runtime = Runtime(options, app, setup)
    previous_interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    try:
        return asyncio.run(runtime.run())
    except ChildSetupFailed as error:
        errors(f"celeritas worker: a child process could not load the tasks: {error}")
        return 1
    finally:
        sys.setswitchinterval(previous_interval)
