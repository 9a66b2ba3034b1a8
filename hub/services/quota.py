"""How fast a client system may read personal data: a token bucket per client, `per_minute` tokens a minute and at
most a minute's worth saved up. It bounds what a leaked API key or a runaway integration can pull out of the
population database (bulk harvesting) without getting in the way of citizens filling in forms.

Embedded mode keeps the buckets in the process. Distributed mode keeps them in Redis (the broker), so every hub
process on every machine draws from the same bucket; the update is one Lua script (atomic, Redis's own clock).
When Redis does not answer, reads are let through — a broker outage must not stop citizens' forms — with a
warning in the log, and Redis is not asked again for a few seconds."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from typing import Any, Protocol

from hub.domain.errors import TooManyRequests

log = logging.getLogger("hub.quota")

# KEYS[1]: the bucket; ARGV: tokens per second, capacity. Returns {1, 0} when a token was taken, else {0, ms to wait}.
TAKE = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1e6
local rate, capacity = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or t
tokens = math.min(capacity, tokens + math.max(0, t - at) * rate)
local taken = 0
if tokens >= 1 then
  tokens = tokens - 1
  taken = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(t))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
if taken == 1 then return {1, 0} end
return {0, math.ceil((1 - tokens) / rate * 1000)}
"""
# KEYS[1]: the bucket; ARGV[1]: its capacity. A token taken for a read that never reached the register, back.
GIVE_BACK = """
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens'))
if tokens then redis.call('HSET', KEYS[1], 'tokens', tostring(math.min(tonumber(ARGV[1]), tokens + 1))) end
return 0
"""
# KEYS[1]: a pace's next free slot; ARGV: seconds between slots, the longest wait for one. Returns {1, ms until the
# slot taken} or {0, ms until the next one is free} (not taken). Redis's clock: one for every machine.
PACE = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1e6
local interval, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2])
local due = math.max(tonumber(redis.call('GET', KEYS[1])) or t, t)
if due - t > max_wait then return {0, math.ceil((due - t) * 1000)} end
redis.call('SET', KEYS[1], tostring(due + interval), 'PX', math.ceil((due - t + interval) * 1000) + 1000)
return {1, math.ceil((due - t) * 1000)}
"""
KEY_PREFIX = "hub:quota:prefill:"
RATE_PREFIX = "hub:rate:"  # the relay's paces, one per peer (hub.sync.rates)


def take_slot(slots: dict[str, float], key: str, interval: float, max_wait: float) -> tuple[bool, float]:
    """`Quota.pace` on `slots` (each pace's next free slot, on the monotonic clock), which the caller holds alone
    meanwhile: the slot taken and the next one noted when it is at most `max_wait` away. PACE does the same in
    Redis."""
    now = time.monotonic()
    due = max(float(slots.get(key, now)), now)  # the next free slot
    if due - now > max_wait:
        return False, due - now
    slots[key] = due + interval
    return True, due - now


class Quota(Protocol):
    def take(self, client: str, per_minute: int) -> float | None:
        """Take one read from the client's bucket: None if it may go on, else the seconds until it may."""
        ...

    async def take_async(self, client: str, per_minute: int) -> float | None: ...

    def pace(self, key: str, interval: float, max_wait: float) -> tuple[bool, float]:
        """The next slot of a pace of one every `interval` seconds (a generic cell rate: no two slots closer): (True,
        seconds until it) when that is at most `max_wait` away — the slot is then taken —, else (False, seconds
        until the next slot is free). The relay's pace towards a peer (hub.sync.rates)."""
        ...

    async def give_back_async(self, client: str, per_minute: int) -> None:
        """Put back the token a read took that was refused before it reached the register (its compartment full):
        the quota bounds what is read, and a client retrying through a register's overload is not limited for it."""
        ...

    def close(self) -> None: ...


class LocalQuota:
    """The buckets of one process (embedded mode)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, monotonic time)
        self._slots: dict[str, float] = {}  # pace -> monotonic time of its next free slot

    def take(self, client: str, per_minute: int) -> float | None:
        rate, capacity = per_minute / 60.0, float(per_minute)
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(client, (capacity, now))
            tokens = min(capacity, tokens + (now - at) * rate)
            if tokens >= 1:
                self._buckets[client] = (tokens - 1, now)
                return None
            self._buckets[client] = (tokens, now)
            return (1 - tokens) / rate

    def pace(self, key: str, interval: float, max_wait: float) -> tuple[bool, float]:
        with self._lock:
            return take_slot(self._slots, key, interval, max_wait)

    async def take_async(self, client: str, per_minute: int) -> float | None:
        return self.take(client, per_minute)

    async def give_back_async(self, client: str, per_minute: int) -> None:
        with self._lock:
            if (found := self._buckets.get(client)) is not None:
                self._buckets[client] = (min(float(per_minute), found[0] + 1), found[1])

    def close(self) -> None:
        pass


class RedisQuota:
    """The buckets in Redis, shared by every hub process (distributed mode)."""

    def __init__(self, url: str, *, timeout: float = 0.25, pause_after_failure: float = 5.0) -> None:
        import redis

        self._url = url
        self._timeout = timeout
        self._pause = pause_after_failure
        self._sync = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._script = self._sync.register_script(TAKE)
        self._pace = self._sync.register_script(PACE)
        self._async: dict[asyncio.AbstractEventLoop, tuple[Any, Any, Any]] = {}  # a client per event loop
        self._down_until = 0.0

    def take(self, client: str, per_minute: int) -> float | None:
        if time.monotonic() < self._down_until:
            return None
        try:
            taken, wait_ms = self._script(keys=[KEY_PREFIX + client], args=[per_minute / 60.0, per_minute])
        except Exception as exc:  # noqa: BLE001 - any Redis failure: let the read through, say so
            self._failed(exc)
            return None
        return None if int(taken) == 1 else int(wait_ms) / 1000

    def pace(self, key: str, interval: float, max_wait: float) -> tuple[bool, float]:
        if time.monotonic() < self._down_until:
            return True, 0.0
        try:
            taken, wait_ms = self._pace(keys=[RATE_PREFIX + key], args=[interval, max_wait])
        except Exception as exc:  # noqa: BLE001 - as in take: let the delivery go, say so
            self._failed(exc)
            return True, 0.0
        return int(taken) == 1, int(wait_ms) / 1000

    async def take_async(self, client: str, per_minute: int) -> float | None:
        if time.monotonic() < self._down_until:
            return None
        try:
            script = self._async_scripts()[1]
            taken, wait_ms = await script(keys=[KEY_PREFIX + client], args=[per_minute / 60.0, per_minute])
        except Exception as exc:  # noqa: BLE001 - as in take
            self._failed(exc)
            return None
        return None if int(taken) == 1 else int(wait_ms) / 1000

    async def give_back_async(self, client: str, per_minute: int) -> None:
        if time.monotonic() < self._down_until:
            return
        try:
            await self._async_scripts()[2](keys=[KEY_PREFIX + client], args=[per_minute])
        except Exception as exc:  # noqa: BLE001 - as in take: the token stays spent, nothing else
            self._failed(exc)

    def _async_scripts(self) -> tuple[Any, Any, Any]:
        import redis.asyncio

        loop = asyncio.get_running_loop()
        found = self._async.get(loop)
        if found is None:
            conn = redis.asyncio.Redis.from_url(
                self._url, socket_timeout=self._timeout, socket_connect_timeout=self._timeout
            )
            found = self._async[loop] = (conn, conn.register_script(TAKE), conn.register_script(GIVE_BACK))
        return found

    def _failed(self, exc: Exception) -> None:
        self._down_until = time.monotonic() + self._pause
        log.warning(
            "read quotas and delivery rates not checked (Redis did not answer; let through for %.0f s): %s",
            self._pause,
            exc,
        )

    def close(self) -> None:
        self._sync.close()
        for loop, (conn, *_scripts) in self._async.items():
            if loop.is_running():  # from another thread: the loop closes its own connection
                asyncio.run_coroutine_threadsafe(conn.aclose(), loop)
        self._async.clear()


def citizen_turn(quota: Quota | None, subject: str, per_minute: int | None) -> None:
    """One of a signed-in citizen's requests about their data (usage, consents, withdrawals, dossiers): past
    `per_minute` of them a minute (one bucket per citizen, keyed by the ID's HMAC), 429 — nothing read, nothing
    written."""
    if per_minute is not None and quota is not None:
        wait = quota.take(f"citizen:{subject}", per_minute)
        if wait is not None:
            raise TooManyRequests(
                f"more than {per_minute} requests about your data in a minute", retry_after=retry_after(wait)
            )


def retry_after(seconds: float) -> int:
    """Whole seconds for a Retry-After header (never 0: the client would come straight back)."""
    return max(1, math.ceil(seconds))
