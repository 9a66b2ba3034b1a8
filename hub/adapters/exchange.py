"""What an adapter reports of each outbound exchange, for the append-only exchange record."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ExchangeRecord:
    peer: str
    operation: str
    correlation_id: str
    request_digest: str
    response_digest: str | None
    duration_ms: float
    outcome: str  # ok | handled (a refusal the same call answered itself) | retryable | permanent; inbound:
    # accepted | rejected (SUCCEEDED says which are not failures)
    error_code: str | None = None


ExchangeHook = Callable[[ExchangeRecord], None]

# The outcomes in the exchange record that are not failures: hub's own calls that succeeded (ok) or whose refusal
# the same call answered itself (handled), and a peer's push hub accepted (accepted; inbound). The failures: a call
# that failed (retryable, permanent) and a push hub refused (rejected). An error rate (the console's, the
# HubPeerErrors alert's) counts these as its successes, every other outcome as a failure.
SUCCEEDED = ("ok", "handled", "accepted")
INBOUND = ("accepted", "rejected")  # a peer's push hub answered: its duration is hub's, not the peer's


def digest(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


class Exchange:
    """One exchange being made (see `recorded`): say how it ended with `answered` or `failed`."""

    def __init__(self) -> None:
        self.response: bytes | None = None
        self.outcome = "ok"
        self.error_code: str | None = None

    def answered(self, response: bytes) -> None:
        self.response = response

    def failed(self, error_code: str, *, retryable: bool, response: bytes | None = None) -> None:
        self.outcome, self.error_code, self.response = ("retryable" if retryable else "permanent"), error_code, response


@contextmanager
def recorded(
    hook: ExchangeHook | None, peer: str, operation: str, correlation_id: str, request: bytes
) -> Iterator[Exchange]:
    """Time an exchange made outside an adapter's own recording (a key set, an OCSP or CRL fetch, a time-stamp)
    and report it to `hook` (if any) as it ends; an exception escaping the block, if the block did not say how the
    exchange failed, is reported as unreachable."""
    exchange, started = Exchange(), time.perf_counter()
    try:
        yield exchange
    except Exception:
        if exchange.outcome == "ok":  # not already said by the block
            exchange.failed("unreachable", retryable=True)
        raise
    finally:
        if hook is not None:
            hook(
                ExchangeRecord(
                    peer,
                    operation,
                    correlation_id,
                    hashlib.sha256(request).hexdigest(),
                    digest(exchange.response),
                    (time.perf_counter() - started) * 1000,
                    exchange.outcome,
                    exchange.error_code,
                )
            )
