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

from django.utils import timezone

import celeritas.django
from celeritas import TaskContext
from celeritas.django import shared_task

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


# The project's own Python tasks: `manage.py celeritas_worker` finds them here (every installed
# app's tasks.py) and runs them with the ORM set up.


@shared_task(name="campaigns.deliver", queue="default", bind=True, max_retries=3)
def deliver(self: TaskContext, campaign_id: str) -> dict[str, Any]:
    """Marks the campaign's pending recipients delivered, one `delivery` record each."""
    from campaigns.models import Recipient

    delivered = 0
    for recipient in Recipient.objects.filter(campaign_id=campaign_id, status="pending").order_by("pk"):
        recipient.status = "delivered"
        recipient.delivered_at = timezone.now()
        recipient.save(update_fields=["status", "delivered_at"])
        self.emit("delivery", recipient.email, "delivered", {"recipient_id": recipient.pk})
        delivered += 1
    return {
        "campaign_id": campaign_id,
        "delivered": delivered,
        "recipients": Recipient.objects.filter(campaign_id=campaign_id).count(),
    }


@shared_task(name="campaigns.welcome", queue="default")
def welcome(email: str) -> str:
    """Sent when a recipient is added; called with `delay_on_commit`, so a rolled-back
    signup sends nothing."""
    return f"welcome {email}"
