"""A short-lived cache of population-database replies, shared by every process through the database: encrypted
with AES-GCM under a key derived from hub's secret (the row key, an HMAC of the query, is the associated data,
so a ciphertext cannot be moved to another citizen's row), keyed by an HMAC — never the personal ID in clear.

Each process also keeps the ciphertexts it read or wrote in memory (bounded, same expiry), so a repeated read
costs no database round trip; the database stays the cache every process shares."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import bindparam, delete, select
from sqlalchemy.orm import Session, sessionmaker

from hub.domain.dates import utcnow
from hub.domain.privacy import derive_key
from hub.store.db import RawTransaction, prebuilt, reading
from hub.store.models import PopulationCacheEntry, table

TABLE = table(PopulationCacheEntry)
READ = select(PopulationCacheEntry.ciphertext, PopulationCacheEntry.fetched_at, PopulationCacheEntry.expires_at).where(
    PopulationCacheEntry.key == bindparam("key")
)


LOCAL_ENTRIES = 5_000  # ciphertexts kept in each process's memory at most (1-2 kB each)


class PopulationCache:
    def __init__(
        self, sessions: sessionmaker[Session], secret_key: bytes, ttl: timedelta, *, local_entries: int = LOCAL_ENTRIES
    ) -> None:
        self.sessions = sessions
        self.ttl = ttl
        self._aead = AESGCM(derive_key(secret_key, "population-cache"))
        self._index_key = derive_key(secret_key, "population-cache-index")
        self._local: OrderedDict[str, tuple[bytes, datetime, datetime]] = OrderedDict()
        self._local_lock = threading.Lock()
        self._local_entries = local_entries

    def _remember(self, key: str, ciphertext: bytes, fetched_at: datetime, expires_at: datetime) -> None:
        """Keep a copy; the oldest go first — when over the bound, and when expired (copies are added in about
        the order they expire, so the expired ones are at the front)."""
        now = utcnow()
        with self._local_lock:
            self._local[key] = (ciphertext, fetched_at, expires_at)
            self._local.move_to_end(key)
            while self._local and (
                len(self._local) > self._local_entries or next(iter(self._local.values()))[2] <= now
            ):
                self._local.popitem(last=False)

    def forget_local(self) -> None:
        """Drop this process's in-memory copies (the database keeps the shared cache)."""
        with self._local_lock:
            self._local.clear()

    @property
    def enabled(self) -> bool:
        return self.ttl.total_seconds() > 0

    def key(self, personal_id: str, name: str | None, birth_date: str | None, client: str) -> str:
        """The index of a reply: the question asked (ID, name, birth date) and the client system that asked it."""
        material = json.dumps([personal_id, (name or "").casefold(), birth_date or "", client]).encode()
        return hmac.new(self._index_key, material, hashlib.sha256).hexdigest()

    def get(self, key: str, *, local_only: bool = False) -> tuple[dict[str, Any] | None, datetime] | None:
        """(record or None for a cached 'not found', when it was fetched), or None on a miss. `local_only`: look
        at this process's copies only (no I/O: safe on an event loop); None then means "ask the database"."""
        if not self.enabled:
            return None
        now = utcnow()
        with self._local_lock:
            held = self._local.get(key)
        if held is not None and held[2] > now:
            ciphertext, fetched_at, expires_at = held
        elif local_only:
            return None
        else:
            with reading(self.sessions.kw["bind"]) as conn:
                row = conn.execute(READ, {"key": key}).first()
            if row is None or row.expires_at <= now:
                return None
            ciphertext, fetched_at, expires_at = row.ciphertext, row.fetched_at, row.expires_at
        try:
            plain = self._aead.decrypt(ciphertext[:12], ciphertext[12:], key.encode())
        except InvalidTag:
            return None  # tampered with, or written under another key: a miss, never a wrong answer
        if held is None or held[0] is not ciphertext:
            self._remember(key, ciphertext, fetched_at, expires_at)
        record: dict[str, Any] | None = json.loads(plain)
        return record, fetched_at

    def seal(self, key: str, record: dict[str, Any] | None, fetched_at: datetime) -> dict[str, Any]:
        """The row that keeps a reply: encrypted under a fresh nonce, bound to its key."""
        nonce = os.urandom(12)
        blob = nonce + self._aead.encrypt(nonce, json.dumps(record, ensure_ascii=False).encode(), key.encode())
        return {"key": key, "ciphertext": blob, "fetched_at": fetched_at, "expires_at": fetched_at + self.ttl}

    def put_many(self, tx: RawTransaction, entries: Sequence[tuple[str, dict[str, Any] | None, datetime]]) -> None:
        """Keep replies inside the caller's transaction, in the order given (give them in key order, so that two
        transactions never lock rows crosswise). An upsert: two requests that fetched the same citizen at once
        both succeed, the later reply wins. One executemany, as prebuilt SQL."""
        if not self.enabled or not entries:
            return
        rows = [self.seal(key, record, fetched_at) for key, record, fetched_at in entries]
        prebuilt(self._upsert(tx.dialect.name), TABLE, tx.dialect, list(rows[0])).executemany(tx, rows)
        for row in rows:  # if this transaction rolls back, the copy is still a reply the register gave
            self._remember(row["key"], row["ciphertext"], row["fetched_at"], row["expires_at"])

    @staticmethod
    @cache
    def _upsert(dialect: str) -> Any:
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as upsert
        else:
            from sqlalchemy.dialects.sqlite import insert as upsert  # type: ignore[assignment]
        stmt = upsert(TABLE)
        changed = {name: stmt.excluded[name] for name in ("ciphertext", "fetched_at", "expires_at")}
        return stmt.on_conflict_do_update(index_elements=["key"], set_=changed)

    def sweep(self) -> int:
        with self.sessions.begin() as s:
            result = s.execute(delete(PopulationCacheEntry).where(PopulationCacheEntry.expires_at <= utcnow()))
        return int(result.rowcount)  # type: ignore[attr-defined]
