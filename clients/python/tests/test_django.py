"""The Django integration (``celeritas.django``) against a real server: how arguments travel."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest
from django.conf import settings
from django.test import override_settings

import celeritas
import celeritas.django
from celeritas.testing import DevServer


@pytest.fixture
def django_settings(server: DevServer) -> Iterator[None]:
    """Django configured as a project using celeritas would be, pointed at the test server."""
    if not settings.configured:
        settings.configure()
    with override_settings(CELERITAS_URL=server.url):
        yield


@pytest.mark.usefixtures("django_settings")
def test_arguments_are_encoded_as_djangos_json_encoder_does() -> None:
    # noop answers its arguments, so the result is what the task received.
    echo = celeritas.django.task("noop")
    campaign_uuid = uuid.UUID("0b6d3f4e-9c1a-4f7e-8a2b-5d6c7e8f9a0b")

    handle = echo.delay(
        send_at=datetime(2026, 12, 1, 21, 37, 11, 123456, tzinfo=timezone.utc),
        local_send_at=datetime(2026, 12, 1, 23, 37, 11, tzinfo=timezone(timedelta(hours=2))),
        day=date(2026, 12, 1),
        at=time(9, 30, 15, 250000),
        price=Decimal("12.50"),
        campaign=campaign_uuid,
        nested=[{"window": timedelta(days=1, hours=2, minutes=3, seconds=4)}],
        plain={"count": 3, "name": "spring"},
    )

    assert handle.get(timeout=20) == {
        "send_at": "2026-12-01T21:37:11.123Z",
        "local_send_at": "2026-12-01T23:37:11+02:00",
        "day": "2026-12-01",
        "at": "09:30:15.250",
        "price": "12.50",
        "campaign": "0b6d3f4e-9c1a-4f7e-8a2b-5d6c7e8f9a0b",
        "nested": [{"window": "P1DT02H03M04S"}],
        "plain": {"count": 3, "name": "spring"},
    }


@pytest.mark.usefixtures("django_settings")
def test_apply_async_encodes_the_same_way_and_refuses_what_json_cannot_carry() -> None:
    echo = celeritas.django.task("noop")

    handle = echo.apply_async({"amount": Decimal("0.1")}, priority=3)

    assert handle.get(timeout=20) == {"amount": "0.1"}
    with pytest.raises(TypeError, match="noop: the arguments are not JSON-serializable"):
        echo.delay(unknown=object())
    with pytest.raises(TypeError, match="timezone-aware times"):
        echo.delay(at=time(9, 30, tzinfo=timezone.utc))
