"""Celery's autodiscovery: every installed app's ``tasks`` module is imported, so its
``@shared_task`` functions register."""

from __future__ import annotations

import importlib
import importlib.util

from django.apps import apps

__all__ = ["discover_task_modules"]


def discover_task_modules(module_name: str = "tasks") -> list[str]:
    """Imports ``<app>.tasks`` for every installed app that has one; returns their names.
    A module that exists and fails to import raises (the worker reports it); a missing one is
    skipped."""
    found = []
    for config in apps.get_app_configs():
        candidate = f"{config.name}.{module_name}"
        try:
            spec = importlib.util.find_spec(candidate)
        except ModuleNotFoundError:
            spec = None
        if spec is None:
            continue
        importlib.import_module(candidate)
        found.append(candidate)
    return found
