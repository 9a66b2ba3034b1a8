"""One run per interval across the cluster: every Celery worker runs a ticker, and before it sends a scheduled job
(portal polling, late-payment checks, reconciliation) it claims the job's slot in Redis — SET NX with an expiry a
little shorter than the interval. The first worker to claim sends it; the others skip that round. A worker that
dies holding a slot loses it when it expires, so the schedule never stops."""

from __future__ import annotations

import os
import socket
from typing import Any

PREFIX = "hub:schedule:"


def claim(client: Any, job: str, interval: float) -> bool:
    """True if this worker won `job`'s slot for the coming `interval` seconds (Redis SET NX PX)."""
    ttl_ms = max(100, int(interval * 1000 * 0.9))
    owner = f"{socket.gethostname()}:{os.getpid()}"
    return bool(client.set(PREFIX + job, owner, nx=True, px=ttl_ms))
