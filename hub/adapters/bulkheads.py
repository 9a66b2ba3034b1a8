"""Bulkheads: what the API does while it waits on a peer runs on threads of that peer's own (ADR 0046).

The API's blocking work runs on anyio's threadpool, sized to the database pool (HUB_DB_POOL_SIZE): a burst queues
on the event loop instead of opening a connection per request. A peer that stops answering held those threads for
its whole timeout: twenty pre-fills waiting on a population database that hangs took every one of them, and every
other request needing one — a dossier's view, `/readyz`, the console, a one-stop system's look-up — waited behind
them, for a peer it never calls. Here each peer has a compartment: at most `size` of its requests on threads at once
(threads beside the shared pool's, not taken from it); a request finding its peer's compartment full waits for a
place on the event loop, without a thread, at most `wait` seconds — then it is answered 503 `peer_busy` with a
Retry-After, and hub goes on serving everything else.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from hub.domain.errors import DomainError

log = logging.getLogger("hub.bulkheads")
T = TypeVar("T")


class PeerBusy(DomainError):
    """Hub already waits on this peer for as many requests as it lets wait at once: try again shortly."""

    code = "peer_busy"
    status = 503
    title = "Peer busy"


class Compartment:
    """One peer's places on threads, and what was refused for want of one."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.limiter = anyio.CapacityLimiter(size)
        self.refused = 0

    @property
    def in_use(self) -> int:
        return int(self.limiter.borrowed_tokens)

    @property
    def waiting(self) -> int:
        return int(self.limiter.statistics().tasks_waiting)


class Bulkheads:
    """The compartments of the peers the API waits on, made as they are first used (an anyio limiter is made in
    the event loop that uses it). `size`: a peer's requests on threads at once; `wait`: seconds a request may wait
    for a place before it is refused (0: refused at once when full)."""

    def __init__(self, size: int, wait: float) -> None:
        self.size, self.wait = size, wait
        self._compartments: dict[str, Compartment] = {}
        self._threads: anyio.CapacityLimiter | None = None  # the compartments' own threads: never the shared pool
        self._said: dict[str, float] = {}

    def compartment(self, peer: str) -> Compartment:
        found = self._compartments.get(peer)
        if found is None:
            found = self._compartments[peer] = Compartment(self.size)
        return found

    def state(self) -> dict[str, tuple[int, int, int, int]]:
        """Per peer: (places, in use, waiting, refused since start) — for the metrics."""
        made = list(self._compartments.items())  # (one step under the GIL: a scrape's thread beside the loop)
        return {p: (c.size, c.in_use, c.waiting, c.refused) for p, c in sorted(made)}

    async def run(self, peer: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)` on a thread of `peer`'s compartment; PeerBusy if no place came free in time."""
        compartment = self.compartment(peer)
        if self._threads is None:
            self._threads = anyio.CapacityLimiter(10_000)  # bounded by the compartments, not by this
        placed = False
        try:
            compartment.limiter.acquire_nowait()
            placed = True
        except anyio.WouldBlock:
            with anyio.move_on_after(self.wait):
                await compartment.limiter.acquire()
                placed = True
        if not placed:
            compartment.refused += 1
            self._say(peer)
            raise PeerBusy(
                f"hub already waits on {peer} for {compartment.size} requests, the most it lets wait at once "
                "(HUB_PEER_CONCURRENCY); try again shortly",
                peer=peer,
                retry_after=max(1, math.ceil(self.wait)),
            )
        try:
            return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), limiter=self._threads)
        finally:
            compartment.limiter.release()

    def _say(self, peer: str) -> None:
        now = time.monotonic()
        if now - self._said.get(peer, -60.0) >= 60:  # once a minute a peer, not once a request
            self._said[peer] = now
            log.warning(
                "requests refused: every place waiting on %s is taken (a peer slow or not answering)",
                peer,
                extra={"peer": peer, "places": self.size},
            )
