"""The pace of deliveries to each peer (HUB_PEER_RATE_LIMITS, ADR 0049): one message every 1/rate seconds at most
(a generic cell rate: slots, no two closer, so no second ever holds more than the rate and one), the slots shared
by every worker — in Redis (the broker, its clock) in distributed mode, in a small file beside the SQLite database
in embedded mode (its `hub serve` processes share one machine, and its monotonic clock).

A message whose slot comes within `max_wait` takes it and waits for it on its delivery thread (its batch's lease is
renewed meanwhile); one whose slot is further off goes back in line untried, due when the pace frees up — no
attempt counted, its dossier's later messages still behind it — and the next claims leave it until then."""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from hub.adapters.errors import PeerUnavailable
from hub.services.quota import take_slot

log = logging.getLogger("hub.relay")

SHARE_FOR = 5.0  # seconds a count of the processes sharing a rate is used before it is counted again


class Paces(Protocol):
    """Where the next free slot of each peer is kept: Redis (hub.services.quota.RedisQuota), a file beside the
    SQLite database (FilePaces), or the process (LocalQuota)."""

    def pace(self, key: str, interval: float, max_wait: float) -> tuple[bool, float]: ...


class PeerRates:
    def __init__(
        self,
        limits: Mapping[str, float],
        paces: Paces,
        *,
        share: Callable[[], int] = lambda: 1,
        max_wait: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`limits`: messages a second by destination, for each of its systems; `paces`: where the next free slot of
        each peer is kept; `share`: how many processes keep paces of their own, each taking its share of the rate
        (embedded mode on PostgreSQL, no broker: the `hub serve` processes; 1 when the paces are shared)."""
        self.limits = dict(limits)
        self.paces = paces
        self.max_wait = max_wait
        self._share = share
        self._sleep = sleep
        self._shared: tuple[float, int] = (float("-inf"), 1)  # (monotonic time counted, processes)
        self._said: dict[str, float] = {}
        self._lock = threading.Lock()

    def turn(self, destination: str, peer: str) -> float | None:
        """Wait for a message's turn to go to `peer` (one of `destination`'s systems): None once it may go, or the
        seconds until the pace frees up when its turn is more than `max_wait` away (the message is to go back in
        line)."""
        limit = self.limits.get(destination)
        if limit is None:
            return None
        taken, wait = self.paces.pace(peer, self._processes() / limit, self.max_wait)
        if not taken:
            self.held(destination, peer)
            return wait
        if wait > 0:
            self._sleep(wait)
        return None

    def budget(self, destination: str) -> int | None:
        """How many of `destination`'s messages one batch can deliver to one of its systems: those whose slots come
        within `max_wait` (and the one free now). None for a destination whose pace is not limited. A worker claims
        no more than this for each of the destination's systems (`hub.sync.relay.Relay`), instead of claiming a full
        batch and putting most of it back in line untried."""
        limit = self.limits.get(destination)
        if limit is None:
            return None
        return math.ceil(limit / self._processes() * self.max_wait) + 1

    def admit(self, destination: str, peer: str) -> None:
        """A request's turn (waited for up to `max_wait`), or PeerUnavailable `peer_rate_limited` with the wait as
        its Retry-After: for the API's requests that ask a peer, answered "try again later" past its rate."""
        later = self.turn(destination, peer)
        if later is not None:
            raise PeerUnavailable(
                peer, f"held to its rate (HUB_PEER_RATE_LIMITS: {self.limits[destination]:g} a second)",
                code="peer_rate_limited", retry_after=later,
            )  # fmt: skip

    def wait_turn(self, destination: str, peer: str) -> None:
        """Wait for a turn however far off it is: for the work in the background that asks a peer (a reconciliation's
        look-ups), sharing its rate with the deliveries."""
        while (wait := self.turn(destination, peer)) is not None:
            self._sleep(wait)

    def _processes(self) -> int:
        now = time.monotonic()
        at, count = self._shared
        if now - at >= SHARE_FOR:
            try:
                count = max(1, self._share())
            except Exception:  # the count is a refinement: keep the last one
                log.warning("could not count the processes sharing the delivery rates", exc_info=True)
            self._shared = (now, count)
        return count

    def held(self, destination: str, peer: str) -> None:
        """Tell the operators, once a minute per peer, that deliveries to `peer` wait for their turns."""
        limit = self.limits[destination]
        now = time.monotonic()
        with self._lock:
            if now - self._said.get(peer, float("-inf")) < 60:
                return
            self._said[peer] = now
        log.info(
            "deliveries to %s held to %g a second (HUB_PEER_RATE_LIMITS): the rest wait their turn",
            peer,
            limit,
            extra={"peer": peer, "rate": limit},
        )


class FilePaces:
    """The paces of the `hub serve` processes delivering from one SQLite database (embedded mode): each peer's next
    free slot, in a small JSON file beside the database (`hub.db.paces`), read and written under an exclusive
    `flock` — one pace for every process, as Redis keeps one for a cluster. Times are the machine's monotonic clock,
    which every process on it shares. A file that cannot be read (cut short by a crash) is taken as empty: a
    slot's worth of messages may go early once, nothing is lost."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()  # a flock is held by the open file, which this process's threads share
        self._fd: int | None = None
        self._pid = 0
        self._said = float("-inf")

    def pace(self, key: str, interval: float, max_wait: float) -> tuple[bool, float]:
        with self._lock:
            try:
                fd = self._file()
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:  # as when Redis does not answer: let the message go, say so
                self._failed(exc)
                return True, 0.0
            try:
                slots = self._read(fd)
                taken, wait = take_slot(slots, key, interval, max_wait)
                if not taken:
                    return False, wait
                data = json.dumps(slots).encode()
                try:
                    os.pwrite(fd, data, 0)
                    os.ftruncate(fd, len(data))
                except OSError as exc:  # the disk full: the slot is taken all the same, not noted
                    self._failed(exc)
                return True, wait
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _failed(self, exc: OSError) -> None:
        now = time.monotonic()
        if now - self._said >= 60:  # once a minute, not once a message
            self._said = now
            log.warning("delivery rates not kept in %s (%s): messages let through", self.path, exc)

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # (a forked process opens its own)
            self._fd, self._pid = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600), os.getpid()
        return self._fd

    @staticmethod
    def _read(fd: int) -> dict[str, float]:
        raw = os.pread(fd, 65536, 0)
        try:
            slots = json.loads(raw) if raw else {}
        except ValueError:
            return {}
        return slots if isinstance(slots, dict) else {}

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None
