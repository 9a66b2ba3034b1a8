"""Errors raised at the adapter boundary: a stable `code` and whether a retry may succeed."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol


class PeerError(Exception):
    """A retryable failure the peer reported for this message (HTTP 500, `error_code` 99, a malformed reply):
    it counts against the message's attempt budget."""

    code = "peer_error"
    retryable = True
    # The peer itself is down or refuses us (unreachable, 502/503/504/429, timeout, credentials refused): not the
    # message's fault. The relay pauses the peer and such failures never use up a message's attempts.
    peer_down = False
    # Seconds the peer asked hub to wait before calling again (its Retry-After, on a 429 or 503), when it said so
    retry_after: float | None = None

    def __init__(
        self, peer: str, detail: str, *, code: str | None = None, reply: Any = None, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{peer}: {detail}")
        self.peer = peer
        self.detail = detail
        self.reply = reply
        if code is not None:
            self.code = code
        if retry_after is not None:
            self.retry_after = retry_after


class PeerUnavailable(PeerError):
    """Connection refused, 502/503/504, 429, outage: try again later."""

    code = "peer_unavailable"
    peer_down = True


class PeerTimeout(PeerError):
    code = "peer_timeout"
    peer_down = True


class PeerProtocolError(PeerError):
    """The peer answered something that is not its contract (not JSON, missing fields)."""

    code = "peer_malformed_reply"


@contextmanager
def reply_parsed(peer: str, what: str) -> Iterator[None]:
    """Reading fields out of a peer's reply: a field missing or of the wrong type, a number or a date that is
    not one, is the peer breaking its contract (PeerProtocolError), not an error of hub's."""
    from hub.domain.errors import DomainError  # an invalid date or identifier in the reply

    try:
        yield
    except (AttributeError, KeyError, TypeError, ValueError, DomainError) as exc:
        raise PeerProtocolError(peer, f"{what}: reply breaks the contract ({exc.__class__.__name__}: {exc})") from None


class PeerAuthFailed(PeerError):
    """Our credentials were refused: a configuration problem, so messages wait rather than die."""

    code = "peer_auth_failed"
    peer_down = True


class PeerRejected(PeerError):
    """The peer refused the message itself (contract or business rule): retrying cannot help."""

    code = "peer_rejected"
    retryable = False


def wait_asked(exc: PeerError) -> dict[str, Any]:
    """`retry_after` (whole seconds, rounded up) for hub's own 503 when the peer behind it said how long to wait:
    passed on to hub's client in its Retry-After (DomainError.headers). Empty when it did not say."""
    if exc.retry_after is None:
        return {}
    return {"retry_after": max(1, math.ceil(exc.retry_after))}


class SharedWaits(Protocol):
    """Where the hub processes of a cluster tell each other a peer's wait (hub.adapters.waits.RedisWaits)."""

    def left(self, peer: str) -> float | None:
        """Seconds left of the wait another process noted; None: none (or the store did not answer)."""

    def note(self, peer: str, seconds: float) -> None: ...


class AskedToWait:
    """The waits peers asked hub for (their Retry-After on a 429 or 503), by peer: no call to a peer before its
    wait is over — the caller is answered at once with what is left of it (and passes that on: `wait_asked`).
    `shared`: in distributed mode every hub process learns the wait from the first one told it, instead of each
    calling the peer once more and being told again."""

    def __init__(self, shared: SharedWaits | None = None) -> None:
        self._until: dict[str, float] = {}  # peer -> monotonic time its wait runs to
        self._shared = shared

    def left(self, peer: str) -> float:
        """Seconds left of the peer's wait (0 or less: none)."""
        left = self._until.get(peer, 0.0) - time.monotonic()
        if left <= 0 and self._shared is not None and (told := self._shared.left(peer)):
            self._until[peer] = time.monotonic() + told  # no round trip to the store for the rest of it
            return told
        return left

    def check(self, peer: str) -> None:
        """Raise PeerUnavailable, without a call, while the peer's wait runs."""
        left = self.left(peer)
        if left > 0:
            raise PeerUnavailable(
                peer, f"not called: it asked to wait (another {left:.0f} s)", code="peer_http_unavailable",
                retry_after=left,
            )  # fmt: skip

    def note(self, peer: str, exc: PeerError) -> None:
        """Remember the wait `exc` carries, if any (a longer one already noted stands)."""
        if exc.retry_after:
            self._until[peer] = max(self._until.get(peer, 0.0), time.monotonic() + exc.retry_after)
            if self._shared is not None:
                self._shared.note(peer, exc.retry_after)
