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
    try:
        return asyncio.run(runtime.run())
    except ChildSetupFailed as error:
        errors(f"celeritas worker: a child process could not load the tasks: {error}")
        return 1
