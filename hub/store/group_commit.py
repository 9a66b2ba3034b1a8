"""Group commit: many threads' small writes share one transaction, and each thread returns only once its own
write is committed.

A write that must be durable before its request is answered (an access-log entry before personal data leaves
hub) costs a commit — on PostgreSQL a WAL flush — and, for a hash chain, a lock held until that commit. One
transaction per request serializes those flushes: throughput is capped at one commit per flush time whatever
the number of threads. Here the first thread to find no batch in progress becomes the leader, takes every write
queued meanwhile (its own included), writes them in one transaction and wakes their threads; the threads that
queued while it wrote form the next batch. With one request at a time a batch is that one write (no added
latency, no extra thread); under load a batch grows with the load.

A batch that fails is retried one write per transaction, so a bad write fails its own request only.

Coroutines submit with `submit_async`: their writes are taken by whichever leader comes next — a thread's, or a
committer thread of the group's own that wakes when a coroutine queues — and the event loop waits for the result
without lending a thread to each request (no threadpool hop, no thread per waiting request)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

H = TypeVar("H")
T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger(__name__)


class GroupCommit(Generic[H, T, R]):
    def __init__(
        self,
        begin: Callable[[], AbstractContextManager[H]],
        write: Callable[[H, Sequence[T]], Sequence[R]],
        *,
        order: Callable[[T], Any] | None = None,
        max_batch: int = 200,
    ) -> None:
        """`begin()` opens a transaction and commits it on leaving (a sessionmaker's `begin`, or `db.raw_transaction`
        for a hot path); `write(handle, items)` does the items' work, in order, inside it (it must not commit) and
        returns one result per item. `order`: a batch is sorted by this key first (stable: items
        with the same key keep the order they came in), so that two batches — in two processes — take row locks
        in the same order and never wait on each other crosswise."""
        self._begin = begin
        self._write = write
        self._order = order
        self._max_batch = max_batch
        self._queue: list[tuple[T, Future[R]]] = []
        self._queue_lock = threading.Lock()
        self._leader = threading.Lock()  # held by the thread writing a batch
        self._queued = threading.Event()  # wakes the committer thread
        self._committer: threading.Thread | None = None
        self._committer_lock = threading.Lock()

    @property
    def idle(self) -> bool:
        """Nothing queued and no batch being written: a write done elsewhere now would share no commit."""
        return not self._queue and not self._leader.locked()

    def submit(self, item: T) -> R:
        """Return `item`'s result once it is committed; raise what writing it raised."""
        done: Future[R] = Future()
        with self._queue_lock:
            self._queue.append((item, done))
        while not done.done():
            with self._leader:
                if done.done():  # a leader wrote it while this thread waited
                    break
                with self._queue_lock:
                    batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                self._commit(batch)
        return done.result()

    async def submit_async(self, item: T) -> R:
        """`submit` for a coroutine: wait, without holding a thread, until `item` is committed."""
        done: Future[R] = Future()
        with self._queue_lock:
            self._queue.append((item, done))
        if self._committer is None:
            self._start_committer()
        self._queued.set()
        return await asyncio.wrap_future(done)

    def _start_committer(self) -> None:
        with self._committer_lock:
            if self._committer is None:
                self._committer = threading.Thread(target=self._commit_queued, name="hub-group-commit", daemon=True)
                self._committer.start()

    def _commit_queued(self) -> None:
        while True:
            self._queued.wait()
            self._queued.clear()  # what is queued from now on sets it again
            while True:
                with self._leader:
                    with self._queue_lock:
                        batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                    if not batch:
                        break
                    try:
                        self._commit(batch)
                    except BaseException as exc:  # this thread goes on; no waiter may wait for ever
                        log.exception("group commit failed")
                        for _, done in batch:
                            if not done.done():
                                _settle(done, exc=exc)

    def _commit(self, batch: list[tuple[T, Future[R]]]) -> None:
        if self._order is not None and len(batch) > 1:
            order = self._order
            batch = sorted(batch, key=lambda entry: order(entry[0]))
        try:
            with self._begin() as handle:
                results = self._write(handle, [item for item, _ in batch])
                if len(results) != len(batch):  # a bug in `write`: roll back rather than answer anyone wrongly
                    raise RuntimeError(f"group commit: {len(results)} results for {len(batch)} writes")
        except BaseException as exc:
            if not isinstance(exc, Exception):  # interrupted: no waiting thread may wait for ever
                for _, done in batch:
                    if not done.done():
                        _settle(done, exc=exc)
                raise
            if len(batch) == 1:
                _settle(batch[0][1], exc=exc)
                return
            log.info("group commit of %d writes failed (%s); writing them one by one", len(batch), exc)
            for entry in batch:
                self._commit([entry])
            return
        for (_, done), result in zip(batch, results, strict=True):
            _settle(done, result)


def _settle(done: Future[R], result: R | None = None, *, exc: BaseException | None = None) -> None:
    """Hand a write's outcome to its waiter — unless the waiter went away: a coroutine cancelled while it waited
    (its client hung up) cancels its future. Its write is committed all the same (a retry with the same
    Idempotency-Key gets the stored answer); the rest of the batch must still get theirs."""
    try:
        if exc is not None:
            done.set_exception(exc)
        else:
            done.set_result(result)  # type: ignore[arg-type]
    except InvalidStateError:
        pass
