"""Celery-like task objects bound to the client configured in Django's settings."""

from __future__ import annotations

import json
import threading
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder

from celeritas._connection import PemSource
from celeritas.client import Client
from celeritas.handle import TaskHandle
from celeritas.models import Seconds

__all__ = ["RemoteTask", "get_client", "handle", "task"]

DEFAULT_URL = "http://127.0.0.1:50051"

_clients: dict[tuple[Any, ...], Client] = {}
_clients_lock = threading.Lock()


def get_client() -> Client:
    """The process's client for ``settings.CELERITAS_URL``, ``settings.CELERITAS_TOKEN`` and
    ``settings.CELERITAS_TLS_CA`` / ``_CERT`` / ``_KEY`` (each unset one falls back to its
    environment variable, as in :class:`celeritas.Client`).

    Created on first use and reused after; a change of a setting (``override_settings`` in
    tests) gets a client of its own.
    """
    url: str = getattr(settings, "CELERITAS_URL", DEFAULT_URL)
    token: str | None = getattr(settings, "CELERITAS_TOKEN", None)
    tls_ca: PemSource | None = getattr(settings, "CELERITAS_TLS_CA", None)
    tls_cert: PemSource | None = getattr(settings, "CELERITAS_TLS_CERT", None)
    tls_key: PemSource | None = getattr(settings, "CELERITAS_TLS_KEY", None)
    key = (url, token, tls_ca, tls_cert, tls_key)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = Client(url, token, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key)
        return client


def handle(task_id: str) -> TaskHandle:
    """A handle on a task submitted earlier (Celery's ``AsyncResult(task_id)``)."""
    return TaskHandle(get_client(), task_id)


class RemoteTask:
    """A task that runs on celeritas workers, called like a Celery task.

    Made by :func:`task`. Options given here (queue, priority, limits) apply to every call;
    ``apply_async`` may override them per call.
    """

    def __init__(
        self,
        name: str,
        *,
        queue: str | None = None,
        priority: int = 0,
        max_retries: int | None = None,
        expires: Seconds | None = None,
        soft_time_limit: Seconds | None = None,
        hard_time_limit: Seconds | None = None,
    ) -> None:
        self.name = name
        self.queue = queue
        self.priority = priority
        self.max_retries = max_retries
        self.expires = expires
        self.soft_time_limit = soft_time_limit
        self.hard_time_limit = hard_time_limit

    def __repr__(self) -> str:
        return f"<RemoteTask {self.name}>"

    def delay(self, *args: Any, **kwargs: Any) -> TaskHandle:
        """Submits the task with ``kwargs`` as its arguments and returns its handle.

        ``report.delay(day=date(2026, 12, 1), total=Decimal("9.50"))`` submits
        ``{"day": "2026-12-01", "total": "9.50"}`` (see :meth:`apply_async` for how values are
        encoded). A name that is a Python keyword, such as ``from``, goes through
        ``apply_async({"from": ...})`` or ``delay(**{"from": ...})``.
        """
        if args:
            # Celery passes positional arguments too; celeritas tasks take one JSON object, so
            # only named arguments have a meaning.
            raise TypeError(
                f"{self.name}.delay() takes keyword arguments only (celeritas task arguments "
                "are a JSON object)"
            )
        return self.apply_async(kwargs)

    def apply_async(
        self,
        kwargs: dict[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        countdown: Seconds | None = None,
        eta: datetime | None = None,
        expires: Seconds | datetime | None = None,
        max_retries: int | None = None,
        idempotency_key: str | None = None,
        soft_time_limit: Seconds | None = None,
        hard_time_limit: Seconds | None = None,
    ) -> TaskHandle:
        """Submits the task with options, as Celery's ``apply_async`` does (``kwargs`` are the
        task's arguments; the rest is :meth:`celeritas.Client.submit`'s options).

        The arguments are encoded as Django encodes JSON (``DjangoJSONEncoder``, what
        ``JsonResponse`` uses): datetimes, dates and naive times as ISO 8601 text (``Z`` for
        UTC, milliseconds at most), ``timedelta`` as an ISO 8601 duration (``P1DT02H00M00S``),
        ``Decimal``, ``UUID`` and lazy translation strings as text. The task receives that text,
        not the Python value.
        """
        client = get_client()
        submitted = client.submit(
            self.name,
            _as_json_data(self.name, kwargs or {}),
            queue=queue if queue is not None else self.queue,
            priority=priority if priority is not None else self.priority,
            countdown=countdown,
            eta=eta,
            expires=expires if expires is not None else self.expires,
            max_retries=max_retries if max_retries is not None else self.max_retries,
            idempotency_key=idempotency_key,
            soft_time_limit=soft_time_limit if soft_time_limit is not None else self.soft_time_limit,
            hard_time_limit=hard_time_limit if hard_time_limit is not None else self.hard_time_limit,
        )
        return TaskHandle(client, submitted.task_id, created=submitted.created)

    def handle(self, task_id: str) -> TaskHandle:
        """A handle on an earlier call of this task, from its id."""
        return handle(task_id)


def _as_json_data(name: str, arguments: dict[str, Any]) -> Any:
    """``arguments`` as plain JSON data, the values Django's encoder knows turned into text."""
    try:
        return json.loads(json.dumps(arguments, cls=DjangoJSONEncoder))
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name}: the arguments are not JSON-serializable: {error}") from error


def task(
    name: str,
    *,
    queue: str | None = None,
    priority: int = 0,
    max_retries: int | None = None,
    expires: Seconds | None = None,
    soft_time_limit: Seconds | None = None,
    hard_time_limit: Seconds | None = None,
) -> RemoteTask:
    """Declares a task that celeritas workers run: ``send_campaign = task("send_campaign")``.

    Nothing is contacted until the task is called. ``queue`` None lets the coordinator's routes
    decide.
    """
    return RemoteTask(
        name,
        queue=queue,
        priority=priority,
        max_retries=max_retries,
        expires=expires,
        soft_time_limit=soft_time_limit,
        hard_time_limit=hard_time_limit,
    )
