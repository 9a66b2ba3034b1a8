"""Deliver claimed outbox rows to their destination's adapter and record what happened.

The same `Relay.drain_step` runs in the embedded worker thread and in the Celery task."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from hub.adapters.errors import PeerError
from hub.adapters.exchange import ExchangeHook, ExchangeRecord
from hub.domain.dates import utcnow
from hub.logs import correlation_id
from hub.sync import outbox
from hub.sync.outbox import Claimed, Outcome, exchange_row
from hub.sync.rates import PeerRates
from hub.sync.retry import RetryPolicy

log = logging.getLogger("hub.relay")

# A deliverer sends one message to its destination: (claimed row, exchange hook) -> the peer's reply.
Deliverer = Callable[[Claimed, ExchangeHook], Any]

PEER_DOWN_PAUSE_CAP = 30.0  # seconds: a peer that was down is probed again at least this often
SYSTEMS_FOR = 5.0  # seconds a count of a destination's systems is used before it is counted again
PEER_GROUPS = 8  # peers of one batch delivered to side by side (the portal, one-stop systems, SMS, email…)


class LeaseKeeper:
    """Renews the leases of the batches this process is delivering, every third of a lease, from a thread of its
    own: a batch that takes longer than its lease (a slow peer, a session renewal, many waves of deliveries) is
    never claimed a second time while its worker lives, and the lease can stay short — when a worker dies, its
    rows are back in line within one lease."""

    def __init__(self, sessions: sessionmaker[Session], lease_seconds: float) -> None:
        self._sessions = sessions
        self._lease = lease_seconds
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0  # a Celery prefork child does not inherit its parent's thread: start one of its own

    def hold(self, token: str) -> None:
        with self._lock:
            self._held.add(token)
            if self._thread is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="hub-lease-keeper", daemon=True)
                self._thread.start()

    def release(self, token: str) -> None:
        with self._lock:
            self._held.discard(token)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._pid == os.getpid():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._lease / 3):
            with self._lock:
                tokens = sorted(self._held)
            if not tokens:
                continue
            try:
                with self._sessions.begin() as session:
                    outbox.renew(session, tokens, self._lease)
            except Exception:  # the database is away: the batch's outcome cannot be written either
                log.warning("could not renew delivery leases", exc_info=True)


class Relay:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        deliverers: Mapping[str, Deliverer],
        *,
        policy: RetryPolicy,
        batch_size: int = 64,
        concurrency: int = 16,
        lease_seconds: float = 60.0,
        paused: Callable[[], bool] = lambda: False,
        peers: Mapping[str, Callable[[Claimed], str]] | None = None,
        rates: PeerRates | None = None,
        systems: Mapping[str, Callable[[], int]] | None = None,
    ) -> None:
        """`peers`: for a destination served by several systems (the one-stop systems of the routing table), which
        one a message goes to — a peer found down is paused alone, its destination's other systems served;
        `systems`: how many systems such a destination has now (each keeps a pace of its own)."""
        self.sessions = sessions
        self.deliverers = dict(deliverers)
        self.peers = dict(peers or {})
        self.policy = policy
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self.paused = paused  # maintenance mode: claim nothing while it says so
        self.rates = rates  # how fast messages may go to each peer (HUB_PEER_RATE_LIMITS; None: as fast as they can)
        self.systems = dict(systems or {})
        self._counted: dict[str, tuple[float, int]] = {}  # destination -> (monotonic time counted, its systems)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="relay")
        # each peer's part of a batch (its probe, then the rest) beside the others': a peer that hangs until its
        # timeout holds its own messages, not the portal's in the same batch
        self._peers_pool = ThreadPoolExecutor(max_workers=PEER_GROUPS, thread_name_prefix="relay-peer")
        # by peer: a destination's name, or for one served by several systems (self.peers) the system's own
        self._down_until: dict[str, float] = {}  # peer -> monotonic time until which it is not tried
        self._streak: dict[str, int] = {}  # peer -> consecutive batches that found it down
        self._asked_until: dict[str, float] = {}  # peer -> monotonic time its Retry-After runs to
        self._swept = float("-inf")  # monotonic time expired leases were last released
        self._leases = LeaseKeeper(sessions, lease_seconds)
        # delivered batches whose outcomes the database refused: (claim token, outcomes, exchange rows)
        self._held: list[tuple[str, list[Outcome], list[dict[str, Any]]]] = []
        self._held_lock = threading.Lock()

    def close(self) -> None:
        self._peers_pool.shutdown(wait=True)
        self._pool.shutdown(wait=True)
        self._leases.close()

    def drain_step(self) -> tuple[int, bool]:
        """Claim one batch, deliver it, record the outcomes. Returns how many rows were claimed, and whether more
        may be due at once (the batch was full, or a paced peer's part of it was and went): the caller drains
        again."""
        self._record_held()  # raises while the database still refuses writes: nothing new is claimed meanwhile
        if self.paused():
            return 0, False
        now = time.monotonic()
        destinations = [d for d in self.deliverers if self._down_until.get(d, 0.0) <= now]
        if not destinations:
            return 0, False
        # A destination held to a pace (HUB_PEER_RATE_LIMITS) gets what its systems can take in this batch, claimed
        # first, and at most an equal share of it (half with one paced destination, a third each with two…); the
        # rest of the batch goes to the others. A full batch of it would go back in line mostly untried, and a fast
        # pace would take every batch while its backlog lasts.
        budgets = {d: n for d in destinations if (n := self._budget(d)) is not None}
        share = max(1, self.batch_size // (len(budgets) + 1))
        token = str(uuid.uuid4())  # one per batch
        paced_full: set[str] = set()  # paced destinations of which more is due than this batch took
        with self.sessions.begin() as session:
            if now - self._swept >= min(self.lease_seconds / 4, 5.0):  # now and then, not on every claim
                self._swept = now
                if released := outbox.release_expired(session):
                    log.warning("leases expired, rows back in line", extra={"rows": released})
            batch: list[Claimed] = []
            for d, budget in budgets.items():
                n = min(budget, self.batch_size - len(batch), share)
                got = outbox.claim(session, n, self.lease_seconds, [d], token=token)
                if len(got) >= n > 0:
                    paced_full.add(d)
                    if self.rates is not None:
                        self.rates.held(d, d)
                batch.extend(got)
            n = self.batch_size - len(batch)
            rest = [d for d in destinations if d not in budgets]
            got = outbox.claim(session, n, self.lease_seconds, rest, token=token)
            full = len(got) >= n > 0
            batch.extend(got)
        if not batch:
            return 0, False
        self._leases.hold(token)
        try:
            outcomes, exchanges = self._deliver(batch)
        except BaseException:
            self._leases.release(token)
            raise
        self._record(token, outcomes, exchanges)
        # A paced destination whose every message went back in line (its pace taken by other workers for longer
        # than a wait) is not claimed again at once: that would claim and put back its backlog in a loop.
        went = {o.claimed.destination for o in outcomes if o.kind != "released"}
        return len(batch), full or bool(paced_full & went)

    def _budget(self, destination: str) -> int | None:
        """How many of `destination`'s messages a batch can deliver at its pace: a system's share of the batch, times
        its systems for one served by several (the one-stop systems; an upper bound when its messages go to some of
        them only). None when it has no pace, or its systems cannot be counted."""
        if self.rates is None:
            return None
        try:
            budget = self.rates.budget(destination)
            if budget is None or destination not in self.peers:
                return budget
            count = self.systems.get(destination)
            if count is None:
                return None
            now = time.monotonic()
            at, systems = self._counted.get(destination, (float("-inf"), 1))
            if now - at >= SYSTEMS_FOR:
                systems = max(1, count())
                self._counted[destination] = (now, systems)
            return budget * systems
        except Exception:  # the claim's size is a refinement: claim a full batch
            log.warning("could not size a paced destination's claim", exc_info=True)
            return None

    def peer_of(self, c: Claimed) -> str:
        """The system a message goes to: its destination, or the one of its destination's systems it is routed to."""
        which = self.peers.get(c.destination)
        return c.destination if which is None else which(c)

    def _deliver(self, batch: list[Claimed]) -> tuple[list[Outcome], list[dict[str, Any]]]:
        down: dict[str, PeerError] = {}  # peers found down in this batch
        lock = threading.Lock()
        exchanges: list[dict[str, Any]] = []

        def hook(rec: ExchangeRecord, outbox_id: int) -> None:
            with lock:
                exchanges.append(exchange_row(rec, outbox_id))

        def deliver(c: Claimed) -> Outcome:
            peer = self.peer_of(c)
            if peer in down:  # the peer is down: do not hammer it, release untried
                return Outcome(c, "released", retry_at=utcnow() + self._pause(peer))
            if self.rates is not None:
                later = self.rates.turn(c.destination, peer)
                if later is not None:  # its turn is further off than a wait here: back in line, due then, untried
                    return Outcome(c, "released", retry_at=utcnow() + timedelta(seconds=later))
            token = correlation_id.set(c.correlation_id)  # the request's id follows the message into the logs
            where = {
                "outbox_id": c.id,
                "destination": c.destination,
                "operation": c.operation,
                "attempt": c.attempts + 1,
                "correlation_id": c.correlation_id,
            }
            try:
                try:
                    reply = self.deliverers[c.destination](c, lambda rec: hook(rec, c.id))
                except PeerError as exc:
                    if exc.peer_down:
                        with lock:
                            down.setdefault(peer, exc)
                    log.warning("delivery failed", extra=where | {"error_code": exc.code})
                    return self._failed(c, exc)
                except Exception as exc:  # a bug must not lose the message: retry it and say so loudly
                    log.exception("unexpected error delivering outbox %s", c.id)
                    return self._failed(
                        c, PeerError(c.destination, f"{exc.__class__.__name__}: {exc}", code="internal_error")
                    )
                log.info("delivered", extra=where)
                return Outcome(c, "delivered", reply=reply)
            finally:
                correlation_id.reset(token)

        by_peer: dict[str, list[Claimed]] = {}
        outcomes: list[Outcome] = []
        now = time.monotonic()
        for c in batch:
            peer = self.peer_of(c)
            paused = self._down_until.get(peer, 0.0) - now
            if paused > 0:  # one of a destination's systems, found down in an earlier batch: its pause runs
                outcomes.append(Outcome(c, "released", retry_at=utcnow() + timedelta(seconds=paused)))
                continue
            by_peer.setdefault(peer, []).append(c)

        def to_peer(peer: str, rows: list[Claimed]) -> list[Outcome]:
            # The first message probes the peer; only if it is up do the others go, concurrently. A peer that is
            # down costs one attempt of one message per pause, not one attempt of every message.
            done = [deliver(rows[0])]
            if peer in down:
                self._streak[peer] = self._streak.get(peer, 0) + 1
                asked = down[peer].retry_after
                if asked:  # the peer said when to come back (a rate limit, a maintenance window): not before
                    self._asked_until[peer] = time.monotonic() + asked
                pause = self._pause(peer)
                self._down_until[peer] = time.monotonic() + pause.total_seconds()
                log.warning(
                    "peer down, pausing deliveries",
                    extra={"peer": peer, "pause_s": pause.total_seconds(), "retry_after_s": asked},
                )
            else:
                self._streak.pop(peer, None)
                self._asked_until.pop(peer, None)
            done.extend(self._pool.map(deliver, rows[1:]))
            return done

        if len(by_peer) == 1:  # (the common batch: one peer, no hand-over to another thread)
            [(peer, rows)] = by_peer.items()
            outcomes.extend(to_peer(peer, rows))
        else:
            for done in self._peers_pool.map(lambda group: to_peer(*group), by_peer.items()):
                outcomes.extend(done)
        return outcomes, exchanges

    def _record(self, token: str, outcomes: list[Outcome], exchanges: list[dict[str, Any]]) -> None:
        """Write a delivered batch's outcomes and let its lease go. When the database refuses the write (down, its
        disk full), the outcomes are held in memory with the lease and written first thing on the next drain — what
        the peers acknowledged is recorded as soon as the database takes writes again, not sent a second time
        after the lease runs out. A process that dies meanwhile leaves the lease to expire: sent again, once in
        effect (the idempotency key)."""
        try:
            self._write(outcomes, exchanges)
        except Exception:
            with self._held_lock:
                self._held.append((token, outcomes, exchanges))
            raise
        self._leases.release(token)
        self._tell_dead(outcomes)

    def _record_held(self) -> None:
        with self._held_lock:
            held, self._held = self._held, []
        for i, (token, outcomes, exchanges) in enumerate(held):
            try:
                self._write(outcomes, exchanges)
            except Exception:
                with self._held_lock:
                    self._held[:0] = held[i:]
                raise
            self._leases.release(token)
            log.warning("outcomes held while the database refused writes are recorded", extra={"rows": len(outcomes)})
            self._tell_dead(outcomes)

    @staticmethod
    def _tell_dead(outcomes: list[Outcome]) -> None:
        for o in outcomes:
            if o.kind == "dead":
                log.warning(
                    "dead letter",
                    extra={
                        "outbox_id": o.claimed.id,
                        "error_code": o.error_code,
                        "correlation_id": o.claimed.correlation_id,
                    },
                )

    def _write(self, outcomes: list[Outcome], exchanges: list[dict[str, Any]]) -> None:
        """The database dropping the connection meanwhile (a restart, a fail-over) is tried again at once: the pool
        has replaced its connections (compare-and-set on the claim token: a repeat changes nothing)."""
        for attempt in range(1, 4):
            try:
                with self.sessions.begin() as session:
                    outbox.record(session, outcomes, exchanges)
                return
            except DBAPIError as exc:
                if not exc.connection_invalidated or attempt == 3:
                    raise
                log.warning("recording deliveries: database connection lost, trying again", extra={"attempt": attempt})
                time.sleep(0.1 * attempt)

    def _pause(self, peer: str) -> timedelta:
        """How long a peer found down is left alone: the backoff of its streak, or what it asked for (Retry-After)
        if that is longer."""
        streak = max(1, self._streak.get(peer, 1))
        cap = min(self.policy.cap_seconds, PEER_DOWN_PAUSE_CAP)
        asked = self._asked_until.get(peer, 0.0) - time.monotonic()
        return timedelta(seconds=max(min(cap, self.policy.base_seconds * 2.0 ** (streak - 1)), asked))

    def _failed(self, c: Claimed, exc: PeerError) -> Outcome:
        attempts = c.attempts + 1
        reply = exc.reply if isinstance(exc.reply, dict | list | str | None) else str(exc.reply)
        if exc.peer_down:  # not the message's fault: only its age ends it, however many probes it took
            give_up = self.policy.too_old((utcnow() - c.created_at).total_seconds())
        else:
            give_up = not exc.retryable or self.policy.exhausted(attempts)
        if give_up:
            return Outcome(c, "dead", error_code=exc.code, error=exc.detail[:2000], reply=reply)
        # not before the peer said it would take calls again (its Retry-After), whichever worker takes it next
        wait = max(self.policy.delay(attempts), exc.retry_after or 0.0)
        retry_at = utcnow() + timedelta(seconds=wait)
        return Outcome(c, "retry", error_code=exc.code, error=exc.detail[:2000], reply=reply, retry_at=retry_at)

    def drain(self, max_batches: int | None = None) -> int:
        """Drain until nothing is due (or `max_batches`). Returns rows claimed."""
        total, batches = 0, 0
        while max_batches is None or batches < max_batches:
            n, more = self.drain_step()
            total += n
            batches += 1
            if not more:
                break
        return total
