"""The celeritas tasks this project calls.

In VashSender this would be ``celeritas.django.task("send_campaign")``, which the workers of
``celeritas dev`` run too; but it sends mail, so it needs a relay (``CELERITAS_SMTP_URL``) and
an SMTP server. To run with nothing but ``celeritas dev``, the example calls the built-in
``fan_out`` in its place, which has the same shape: a root task that submits one child per
batch of recipients (``emit_records``: one delivery record per recipient) and a callback once
every batch has finished.
"""

from __future__ import annotations

from typing import Any

import celeritas.django

fan_out = celeritas.django.task("fan_out", queue="campaigns")


def send_campaign(campaign_id: str, recipients: int, batch_size: int) -> celeritas.TaskHandle:
    """Starts sending a campaign to ``recipients`` addresses in batches; returns its handle."""
    batches: list[dict[str, Any]] = []
    for batch_number, first in enumerate(range(0, recipients, batch_size)):
        batches.append(
            {
                "count": min(batch_size, recipients - first),
                # Record keys are unique per root task and kind: a kind per batch keeps them apart.
                "kind": f"{campaign_id}-batch-{batch_number}",
                "status": "delivered",
            }
        )
    return fan_out.delay(
        task="emit_records",
        args=batches,
        callback={"task": "noop", "args": {"campaign_id": campaign_id, "finished": True}},
    )
