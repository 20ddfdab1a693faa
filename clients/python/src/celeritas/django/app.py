"""The app Django projects declare their tasks on, configured from Django's settings.

Settings: ``CELERITAS_URL``, ``CELERITAS_TOKEN``, ``CELERITAS_TLS_CA``, ``CELERITAS_TLS_CERT``,
``CELERITAS_TLS_KEY`` (as for :func:`celeritas.django.task`) and ``CELERITAS_TASK_ALWAYS_EAGER``
(``$CELERITAS_TASK_ALWAYS_EAGER`` when unset). Arguments are encoded with ``DjangoJSONEncoder``.
Tasks declared with :func:`shared_task` in an app's ``tasks.py`` are found by ``manage.py
celeritas_worker`` (Celery's autodiscovery).
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder

from celeritas import app as app_module
from celeritas._connection import PemSource
from celeritas.app import Celeritas, _truthy

__all__ = ["DjangoCeleritas", "app", "shared_task"]

DEFAULT_URL = "http://127.0.0.1:50051"


class DjangoCeleritas(Celeritas):
    """A :class:`celeritas.Celeritas` whose settings are read from Django's, when used."""

    def __init__(self, main: str | None = "django") -> None:
        super().__init__(main, json_encoder=DjangoJSONEncoder)

    @property
    def url(self) -> str:
        return self._url or getattr(settings, "CELERITAS_URL", None) or DEFAULT_URL

    @url.setter
    def url(self, value: str | None) -> None:
        self._url = value

    @property
    def token(self) -> str | None:
        return self._token or getattr(settings, "CELERITAS_TOKEN", None) or None

    @property
    def tls_ca(self) -> PemSource | None:
        return self._tls_ca or getattr(settings, "CELERITAS_TLS_CA", None) or None

    @property
    def tls_cert(self) -> PemSource | None:
        return self._tls_cert or getattr(settings, "CELERITAS_TLS_CERT", None) or None

    @property
    def tls_key(self) -> PemSource | None:
        return self._tls_key or getattr(settings, "CELERITAS_TLS_KEY", None) or None

    @property
    def task_always_eager(self) -> bool:
        if self._task_always_eager is not None:
            return self._task_always_eager
        configured = getattr(settings, "CELERITAS_TASK_ALWAYS_EAGER", None)
        if configured is not None:
            return bool(configured)
        return _truthy(os.environ.get("CELERITAS_TASK_ALWAYS_EAGER"))

    @task_always_eager.setter
    def task_always_eager(self, value: bool | None) -> None:
        self._task_always_eager = value


#: The project's app: shared tasks are submitted with its client.
app = DjangoCeleritas()
app_module.set_default_app(app)


def shared_task(*args: Any, **options: Any) -> Any:
    """Celery's ``shared_task`` for Django: ``@shared_task`` or ``@shared_task(name=...,
    queue=..., max_retries=..., soft_time_limit=..., time_limit=..., bind=True)``."""
    return app_module.shared_task(*args, **options)
