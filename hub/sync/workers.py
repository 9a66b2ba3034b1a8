"""Which workers are up and draining, for operators: `/readyz`, the console's overview, `hub workers`, metrics.

A backlog that grows says something is wrong; this says what: no worker at all (none started, all crashed), or a
worker that is up but has stopped taking tasks (a Celery consumer wedged after a broker outage — the worker's
main process still beats, its last drain grows old while the ticker asks for one every poll interval).

Distributed mode keeps it in Redis, next to the tasks: each worker's ticker sets `hub:worker:{name}` (host, pid,
pool size) with a time-to-live of a few ticks, so a worker killed with SIGKILL drops out by itself, and adds its
name to the set `hub:workers` (read instead of scanning the keys); each drain task
marks `hub:worker:{name}:drained` as it starts (in the round trip that answers the doorbell). Ages are read from
the keys' remaining time-to-live, on Redis's clock: machines whose clocks disagree still agree on them."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

PREFIX = "hub:worker:"
NAMES = "hub:workers"  # the set of names that have beaten; each one's own key says whether it still does
DRAINED = ":drained"
DRAINED_TTL_S = 86_400  # a worker that has not drained for a day shows "—"


@dataclass(frozen=True)
class WorkerSeen:
    name: str  # Celery's node name (celery@host), or "embedded@host"
    host: str
    pid: int
    processes: int  # the pool's size: drains it can run at once
    beat_age_s: float  # since its last sign of life
    last_drain_age_s: float | None  # since a drain last started there; None: none in the last day

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def beat_ttl(poll_interval: float) -> float:
    """How long a beat keeps a worker listed: a few ticks, and never less than 5 s (a busy machine's tick is late)."""
    return max(5.0, 5 * poll_interval)


class Roster:
    def __init__(self, redis: Any, *, ttl: float) -> None:
        self._redis = redis
        self._ttl_ms = int(ttl * 1000)

    def beat(self, name: str, *, host: str, pid: int, processes: int) -> float | None:
        """A worker's ticker, every tick (one round trip). Returns the seconds since a drain last started on that
        worker (None: no mark, e.g. none yet, or Redis restarted since)."""
        value = json.dumps({"host": host, "pid": pid, "processes": processes})
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(PREFIX + name, value, px=self._ttl_ms)
        pipe.sadd(NAMES, name)
        pipe.pttl(PREFIX + name + DRAINED)
        drain_left = pipe.execute()[2]
        return _drained_age(drain_left)

    def leave(self, name: str) -> None:
        """A worker shutting down cleanly drops out at once."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.delete(PREFIX + name)
        pipe.srem(NAMES, name)
        pipe.execute()

    def seen(self) -> list[WorkerSeen]:
        """The workers whose beat has not expired, by name. Two round trips whatever else the Redis holds (no
        SCAN of its keys: /readyz and metric scrapes ask often); names whose beat expired are forgotten here."""
        names = sorted(n.decode() for n in self._redis.smembers(NAMES))
        if not names:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.get(PREFIX + name)
            pipe.pttl(PREFIX + name)
            pipe.pttl(PREFIX + name + DRAINED)
        replies = pipe.execute()
        seen = list(_parse(names, replies, self._ttl_ms))
        gone = set(names) - {w.name for w in seen}
        if gone:
            self._redis.srem(NAMES, *gone)  # a worker that beats again is added again
        return seen


def mark_drained(pipe: Any, name: str) -> None:
    """Queue, on a pipeline, the mark that a drain started on worker `name`."""
    pipe.set(PREFIX + name + DRAINED, b"1", ex=DRAINED_TTL_S)


def _parse(names: list[str], replies: list[Any], ttl_ms: int) -> Iterable[WorkerSeen]:
    for i, name in enumerate(names):
        raw, beat_left, drain_left = replies[3 * i : 3 * i + 3]
        if raw is None or beat_left is None or beat_left < 0:  # expired, or left, after the set was read
            continue
        try:
            info = json.loads(raw)
            host, pid, processes = str(info["host"]), int(info["pid"]), int(info["processes"])
        except (ValueError, KeyError, TypeError):  # not a beat of this version: not shown rather than guessed
            continue
        drained = _drained_age(drain_left)
        yield WorkerSeen(name, host, pid, processes, round(max(0, ttl_ms - beat_left) / 1000, 1), drained)


def _drained_age(drain_left_ms: int | None) -> float | None:
    """The age of a drain mark from its remaining time-to-live (PTTL; negative: no such key)."""
    if drain_left_ms is None or drain_left_ms < 0:
        return None
    return round(max(0.0, DRAINED_TTL_S - drain_left_ms / 1000), 1)


class ConsumerWatch:
    """Tells when a worker's consumer has stopped taking tasks although it is up: its ticker asks for a drain every
    poll interval and its beats reach Redis, its pool runs nothing, and yet no drain has started on it for
    `limit` seconds (the wedge of a Celery consumer after broker outages: the process lives on, delivers nothing).
    Then the worker stops so that its supervisor starts it again (`hub worker` exits 75), rather than waiting for an
    operator to read the alert.

    A worker busy with long tasks (a reconciliation in every pool process) is not stuck; a broker that did not
    answer resets the clock (the consumer reconnects after it), as does a mark that Redis lost (restarted)."""

    def __init__(self, limit: float, now: float) -> None:
        self.limit = limit
        self.since = now  # when the consumer was last known to take tasks (or the watch's clock restarted)

    def beat(self, drained_age: float | None, *, busy: bool, now: float) -> bool:
        """One tick whose beat reached Redis: True when the consumer is stuck."""
        if drained_age is not None:
            self.since = max(self.since, now - drained_age)
        if busy:
            self.since = now
        return self.limit > 0 and now - self.since > self.limit

    def broker_down(self, now: float) -> None:
        self.since = now
