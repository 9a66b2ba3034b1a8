"""The pace of deliveries to each peer (HUB_PEER_RATE_LIMITS, ADR 0049): one message every 1/rate seconds at most
(a generic cell rate: slots, no two closer, so no second ever holds more than the rate and one), the slots shared
by every worker — in Redis (the broker, its clock) in distributed mode, in the process in embedded mode, where each
`hub serve` process takes its share of the rate.

A message whose slot comes within `max_wait` takes it and waits for it on its delivery thread (its batch's lease is
renewed meanwhile); one whose slot is further off goes back in line untried, due when the pace frees up — no
attempt counted, its dossier's later messages still behind it — and the next claims leave it until then."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from hub.adapters.errors import PeerUnavailable
from hub.services.quota import Quota

log = logging.getLogger("hub.relay")

SHARE_FOR = 5.0  # seconds a count of the processes sharing a rate is used before it is counted again


class PeerRates:
    def __init__(
        self,
        limits: Mapping[str, float],
        paces: Quota,
        *,
        share: Callable[[], int] = lambda: 1,
        max_wait: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`limits`: messages a second by destination, for each of its systems; `paces`: where the next free slot of
        each peer is kept (Redis, or the process); `share`: how many processes keep paces of their own (embedded
        mode: the `hub serve` processes; 1 when the paces are shared)."""
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
            self._say(peer, limit)
            return wait
        if wait > 0:
            self._sleep(wait)
        return None

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

    def _say(self, peer: str, limit: float) -> None:
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
