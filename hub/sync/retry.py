"""Retry policy: capped exponential backoff with jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_seconds: float = 1.0
    cap_seconds: float = 300.0
    max_attempts: int = 25
    # A peer that is down (unreachable, 5xx, timeouts) is not the message's fault: such failures end in a dead
    # letter only when the message is this old, however many probes it took. Other retryable failures (the peer
    # answered, but not yet "ok") count against max_attempts.
    give_up_after_seconds: float = 72 * 3600.0

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        """Delay before the next try after `attempts` failed tries ("equal jitter": half fixed, half random)."""
        exp = min(self.cap_seconds, self.base_seconds * 2.0 ** max(0, attempts - 1))
        jitter: float = (rng or random).uniform(0, exp / 2)
        return exp / 2 + jitter

    def exhausted(self, attempts: int) -> bool:
        return attempts >= self.max_attempts

    def too_old(self, age_seconds: float) -> bool:
        return age_seconds >= self.give_up_after_seconds
