"""Finding an app's tasks: the modules to import, in the worker and in each of its child
processes (which import them again: they are started fresh, not forked from a process that
holds gRPC channels)."""

from __future__ import annotations

import importlib
import traceback
from dataclasses import dataclass

from celeritas.app import Celeritas, default_app

__all__ = ["LoadError", "Setup", "load"]


class LoadError(Exception):
    """A task module did not import, or the app is not where ``-A`` says; the message says
    which and why."""


@dataclass(frozen=True)
class Setup:
    """How to find the tasks, sent to every child process."""

    #: ``package.module:attribute`` (or ``package.module``, whose ``app`` it is); None for the
    #: default app (Django's, with the shared tasks).
    app: str | None = None
    #: More modules to import for their tasks (Celery's ``--include``).
    includes: tuple[str, ...] = ()
    #: Set Django up first and discover every installed app's ``tasks`` module.
    django: bool = False


def _import(module_name: str, why: str) -> object:
    try:
        return importlib.import_module(module_name)
    except BaseException as error:
        trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        raise LoadError(
            f"cannot import {why} {module_name!r}: {type(error).__name__}: {error}\n{trace}"
        ) from error


def load(setup: Setup) -> Celeritas:
    """Imports what ``setup`` names and returns the app whose tasks the worker runs."""
    if setup.django:
        try:
            import django

            django.setup()
            from celeritas.django.discovery import discover_task_modules

            discover_task_modules()
        except BaseException as error:
            trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            raise LoadError(f"cannot set Django up and import its apps' tasks: {error}\n{trace}") from error
    app: Celeritas = default_app()
    if setup.app is not None:
        module_name, _, attribute = setup.app.partition(":")
        module = _import(module_name, "the app's module")
        if attribute:
            found = getattr(module, attribute, None)
        else:
            found = getattr(module, "app", None) or next(
                (value for value in vars(module).values() if isinstance(value, Celeritas)), None
            )
        if not isinstance(found, Celeritas):
            raise LoadError(f"{setup.app}: no celeritas.Celeritas app there (found {found!r})")
        app = found
    for module_name in setup.includes:
        _import(module_name, "task module")
    return app
