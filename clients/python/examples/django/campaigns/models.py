"""What the project's own tasks read and write: a campaign's recipients."""

from __future__ import annotations

from django.db import models


class Recipient(models.Model):
    """One address of a campaign, and whether the campaign reached it."""

    campaign_id = models.CharField(max_length=100, db_index=True)
    email = models.EmailField()
    status = models.CharField(max_length=20, default="pending")
    delivered_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.email} ({self.status})"
