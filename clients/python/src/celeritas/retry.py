"""How the client retries calls that found the coordinator unavailable.

UNAVAILABLE means the request was not accepted (the coordinator was unreachable, restarting,
or could not write durably), so the call may be sent again. Submissions are safe to repeat
because the client gives each one an idempotency key. Other codes are never retried: they
would fail the same way again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["NO_RETRIES", "RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for UNAVAILABLE.

    A call is tried at most ``attempts`` times. Before retry *n* (0-based) the client sleeps
    ``min(max_backoff, initial_backoff * multiplier**n)``, half of it fixed and half random, so
    clients that lost the same coordinator do not all come back at the same instant. With the
    defaults a call gives up after six tries spread over roughly 3 to 6 seconds, long enough for
    a coordinator to restart.

    A progress stream uses the same policy per outage: every event it receives resets the count.
    """

    attempts: int = 6
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts: at least 1 (the first try)")
        if self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError("backoffs must not be negative")
        if self.multiplier < 1:
            raise ValueError("multiplier: at least 1")

    def allows_retry(self, retries_done: int) -> bool:
        """Whether another try is allowed after ``retries_done`` retries (plus the first try)."""
        return retries_done + 1 < self.attempts

    def backoff(self, retries_done: int) -> float:
        """Seconds to sleep before the retry that follows ``retries_done`` earlier retries."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier**retries_done)
        return ceiling / 2 + random.uniform(0, ceiling / 2)


#: Try once; raise ``Unavailable`` at once.
NO_RETRIES = RetryPolicy(attempts=1)
