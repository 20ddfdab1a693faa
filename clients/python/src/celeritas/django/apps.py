"""The Django app that carries the management commands (``INSTALLED_APPS``)."""

from django.apps import AppConfig


class CeleritasConfig(AppConfig):
    name = "celeritas.django"
    # The default label would be "django", which says nothing and may clash.
    label = "celeritas"
    verbose_name = "celeritas"
