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
from typing import TextIO

from celeritas.app import DuplicateTaskName
from celeritas.worker.loading import LoadError, Setup, load
from celeritas.worker.pool import ChildSetupFailed
from celeritas.worker.runtime import Runtime, WorkerOptions

__all__ = ["LoadError", "Setup", "WorkerOptions", "run_worker"]

logger = logging.getLogger("celeritas.worker")


def run_worker(options: WorkerOptions, setup: Setup, *, errors: TextIO | None = None) -> int:
    """Loads the tasks, refuses a bad setup before connecting, then runs until drained;
    returns the exit code (0 after a clean drain, 1 when the tasks do not load or the
    coordinator refuses the worker)."""
    errors = errors if errors is not None else sys.stderr
    try:
        app = load(setup)
        app.check()
    except (LoadError, DuplicateTaskName) as error:
        print(f"celeritas worker: {error}", file=errors)
        return 1
    if not app.tasks:
        print("celeritas worker: no tasks found; name the app with -A module:app", file=errors)
        return 1
    runtime = Runtime(options, app, setup)
    try:
        return asyncio.run(runtime.run())
    except ChildSetupFailed as error:
        print(f"celeritas worker: a child process could not load the tasks: {error}", file=errors)
        return 1
