"""A peer's wait (its Retry-After) shared by every hub process of a cluster, in Redis beside the tasks.

One key per peer, `hub:wait:{peer}`, that expires when the wait does: the first process the peer told to wait
notes it, every other one reads it before calling the peer (one PTTL) and then holds it itself for the rest of the
wait. Redis not answering is no reason to fail a request: the process goes on with what it knows itself, says so
once a minute, and asks Redis again a few seconds later."""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger("hub.waits")
PREFIX = "hub:wait:"
MAX_WAIT_S = 3600.0  # a Retry-After is capped at an hour where it is read (hub.adapters.http); so is its note here


class RedisWaits:
    def __init__(self, url: str, *, timeout: float = 0.25, pause_after_failure: float = 5.0) -> None:
        import redis

        self._redis: Any = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._pause = pause_after_failure
        self._down_until = 0.0
        self._said = 0.0

    def left(self, peer: str) -> float | None:
        if time.monotonic() < self._down_until:
            return None
        try:
            ms = int(self._redis.pttl(PREFIX + peer))
        except Exception as exc:  # noqa: BLE001 - Redis down: go on with this process's own knowledge
            self._failed(exc)
            return None
        return ms / 1000 if ms > 0 else None

    def note(self, peer: str, seconds: float) -> None:
        """Note the wait for every process; a longer one already noted stands (PEXPIRE … GT)."""
        if time.monotonic() < self._down_until:
            return
        ms = max(1, int(min(seconds, MAX_WAIT_S) * 1000))
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.set(PREFIX + peer, b"1", px=ms, nx=True)
            pipe.pexpire(PREFIX + peer, ms, gt=True)
            pipe.execute()
        except Exception as exc:  # noqa: BLE001 - as in left
            self._failed(exc)

    def close(self) -> None:
        self._redis.close()

    def _failed(self, exc: Exception) -> None:
        now = time.monotonic()
        self._down_until = now + self._pause
        if now - self._said >= 60:
            self._said = now
            log.warning("peer waits not shared: Redis did not answer (%s)", exc.__class__.__name__)
