"""The access log of personal data: append one entry per access (allowed or refused) to a hash chain, verify the
chain, and answer "who used this citizen's data".

Each entry's `chain_hash` is HMAC-SHA256(audit key, prev_hash | canonical JSON of the entry). The audit key is
derived from hub's secret key, so someone who can write to the database but does not hold the key cannot forge
a consistent chain after editing or deleting an entry. Appends are serialized (an advisory lock on PostgreSQL;
SQLite serializes writers) so the chain never forks."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from hub.domain.dates import utcnow
from hub.domain.privacy import derive_key, same_text
from hub.store.db import Compiled, Prebuilt, RawTransaction, compiled, prebuilt
from hub.store.models import AccessLogEntry, table

GENESIS = "0" * 64
ALTERED = "this entry was altered"
RETIRED = "this entry was chained under a key retired before an earlier entry's, outside a rotation"
# while the processes switch to a new secret key one by one (a rolling restart), entries chained under the old one
# may still follow the first under the new one, for this long; and no entry is dated earlier than its predecessor
# by more than the machines' clocks may disagree
ROTATION_GRACE = timedelta(minutes=15)
CLOCK_SKEW = timedelta(minutes=5)
ADVISORY_LOCK_ID = 0x4855_4241_5544  # "HUBAUD": serializes appends to the chain on PostgreSQL
CHAINED = (
    "at", "client", "agency", "officer", "subject", "subject_role", "procedure", "purpose", "legal_basis",
    "consent_ref", "request_id", "correlation_id", "outcome", "reason", "fields",
)  # fmt: skip


# Reads of personal data that are not pre-fills, each logged like one: learning whose data was used, or which
# dossiers a personal ID has, is itself processing of that citizen's personal data.
ACCESS_LOG_INQUIRY = "access_log_inquiry"  # an auditor (client with the auditor role, `hub audit usage`)
DATA_SUBJECT_ACCESS = "data_subject_access"  # the citizen, signed in, reading who used their data
OPERATOR_SEARCH = "operator_search"  # an operator's console search of dossiers by personal ID
LEGAL_BASES = {
    ACCESS_LOG_INQUIRY: "Luật Bảo vệ dữ liệu cá nhân 2025; Nghị định 13/2023/NĐ-CP: kiểm tra, giám sát việc xử lý "
    "dữ liệu cá nhân (nhật ký truy cập)",
    DATA_SUBJECT_ACCESS: "Luật Bảo vệ dữ liệu cá nhân 2025; Nghị định 13/2023/NĐ-CP: quyền được biết, quyền truy cập "
    "của chủ thể dữ liệu",
    OPERATOR_SEARCH: "Luật Dữ liệu 2024; Nghị định 13/2023/NĐ-CP: vận hành hệ thống, tra cứu hồ sơ theo số định danh",
}


@dataclass(frozen=True, slots=True)
class Access:
    client: str
    agency: str
    officer: str
    subject: str  # HMAC of the personal ID
    subject_role: str
    procedure: str
    purpose: str
    legal_basis: str
    consent_ref: str | None
    request_id: str
    correlation_id: str
    outcome: str
    reason: str | None = None
    fields: list[str] = field(default_factory=list)

    @classmethod
    def inquiry(
        cls,
        purpose: str,
        *,
        client: str,
        agency: str,
        officer: str,
        subject: str,
        correlation_id: str,
        fields: list[str],
        outcome: str = "allowed",
        reason: str | None = None,
    ) -> Access:
        """An entry for a read that is not a pre-fill (`purpose`: one of LEGAL_BASES): no procedure, no request
        to the register (its request id is hub's own), the legal basis the purpose's."""
        return cls(
            client=client[:64],
            agency=agency[:32] or "-",
            officer=officer[:100] or "-",
            subject=subject,
            subject_role="subject",
            procedure="-",
            purpose=purpose,
            legal_basis=LEGAL_BASES[purpose][:200],
            consent_ref=None,
            request_id=uuid.uuid4().hex,
            correlation_id=correlation_id[:64] or "-",
            outcome=outcome,
            reason=reason[:500] if reason else None,
            fields=fields,
        )


def _canonical(values: dict[str, Any]) -> bytes:
    def norm(v: Any) -> Any:
        return v.isoformat(timespec="microseconds") if isinstance(v, datetime) else v

    return json.dumps({k: norm(values[k]) for k in CHAINED}, sort_keys=True, ensure_ascii=False).encode()


def _link(key: bytes, prev_hash: str, values: dict[str, Any]) -> str:
    return hmac.new(key, prev_hash.encode() + b"|" + _canonical(values), hashlib.sha256).hexdigest()


HEAD = select(AccessLogEntry.chain_hash).order_by(AccessLogEntry.id.desc()).limit(1)
LOCK = text("SELECT pg_advisory_xact_lock(:id)")
INSERT = insert(table(AccessLogEntry))
ROW_KEYS = [*CHAINED, "prev_hash", "chain_hash"]


@dataclass(frozen=True, slots=True)
class _RawStatements:
    """The append's statements compiled for one dialect (the insert with the columns' bind processors)."""

    head: Compiled
    lock: Compiled | None
    insert: Prebuilt

    @classmethod
    def build(cls, dialect: Any) -> _RawStatements:
        return cls(
            head=compiled(HEAD, dialect),
            lock=compiled(LOCK, dialect) if dialect.name == "postgresql" else None,
            insert=prebuilt(INSERT, table(AccessLogEntry), dialect, ROW_KEYS),
        )


class AccessLog:
    def __init__(self, secret_key: bytes, previous_keys: Sequence[bytes] = ()) -> None:
        """`previous_keys`: hub's secret keys before this one, newest first (ADR 0034). New entries are chained
        under the current key; entries written before a rotation verify under the key they were written with, and an
        older key may follow a newer one along the chain only while the processes switch (`_KeyOrder`)."""
        self._keys = [derive_key(k, "audit-chain") for k in (secret_key, *previous_keys)]
        self._key = self._keys[0]
        self._raw: dict[str, _RawStatements] = {}

    def append(self, tx: RawTransaction, *accesses: Access) -> list[str]:
        """Add entries, in order, inside the caller's transaction; returns their chain hashes. On PostgreSQL the
        chain is serialized by a transaction-scoped advisory lock, taken here: append last in the transaction and
        commit promptly (the lock is held until then). One read of the head and one multi-row insert per call, as
        prebuilt SQL (ADR 0018: SQLAlchemy's work per statement cost more than the database's)."""
        if not accesses:
            return []
        raw = self._raw.get(tx.dialect.name)
        if raw is None:
            raw = self._raw[tx.dialect.name] = _RawStatements.build(tx.dialect)
        if raw.lock is not None:
            tx.execute(raw.lock.sql, raw.lock.params({"id": ADVISORY_LOCK_ID}))
        head = tx.execute(raw.head.sql, raw.head.params()).fetchall()
        rows = self._rows(head[0][0] if head else GENESIS, accesses)
        raw.insert.executemany(tx, rows)
        return [r["chain_hash"] for r in rows]

    def _rows(self, prev_hash: str, accesses: Iterable[Access]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for access in accesses:
            values: dict[str, Any] = {name: getattr(access, name) for name in CHAINED if name != "at"}
            values["at"] = utcnow()
            values["fields"] = sorted(access.fields)
            chain_hash = _link(self._key, prev_hash, values)
            rows.append({**values, "prev_hash": prev_hash, "chain_hash": chain_hash})
            prev_hash = chain_hash
        return rows

    def verify(self, session: Session, *, anchors: frozenset[str] = frozenset(), batch: int = 5000) -> VerifyResult:
        """Walk the whole chain in id order; report the first entry where it breaks (edited, deleted, inserted).
        `anchors`: heads noted earlier (`head` of a previous run); each must still be in the chain, which also
        catches entries cut off the end."""
        checked, prev_hash, last_id, keys = 0, GENESIS, 0, _KeyOrder(self._keys)
        missing = set(anchors)
        while True:
            rows = session.scalars(
                select(AccessLogEntry).where(AccessLogEntry.id > last_id).order_by(AccessLogEntry.id).limit(batch)
            ).all()
            if not rows:
                if missing:
                    problem = "entries up to a noted head are gone (cut off the end, or the log replaced)"
                    return VerifyResult(False, checked, None, problem, prev_hash, frozenset(missing))
                return VerifyResult(True, checked, None, None, prev_hash)
            for row in rows:
                values = {name: getattr(row, name) for name in CHAINED}
                if row.prev_hash != prev_hash:
                    problem = "an entry before this one was removed or altered"
                    return VerifyResult(False, checked, row.id, problem, prev_hash)
                if (wrong := keys.judge(prev_hash, values, row.chain_hash, row.at)) is not None:
                    return VerifyResult(False, checked, row.id, wrong, prev_hash)
                prev_hash, last_id = row.chain_hash, row.id
                missing.discard(prev_hash)
                checked += 1

    def last_key(self, session: Session) -> int | None:
        """Which of hub's keys chained the log's last entry (0: the current one, 1: the newest previous one, …);
        -1 for an empty log, None when none of them did (a rotated key left out of HUB_PREVIOUS_SECRET_KEYS, or an
        edited entry)."""
        row = session.scalars(select(AccessLogEntry).order_by(AccessLogEntry.id.desc()).limit(1)).first()
        if row is None:
            return -1
        values = {name: getattr(row, name) for name in CHAINED}
        found = (i for i, key in enumerate(self._keys) if same_text(row.chain_hash, _link(key, row.prev_hash, values)))
        return next(found, None)

    def export(
        self,
        session: Session,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        agency: str | None = None,
        client: str | None = None,
        batch: int = 5000,
    ) -> Iterator[dict[str, Any]]:
        """Entries in chain order, as exported for an inspection or an archive: every chained field, the subject
        as its HMAC (never the ID), and both hashes, so each entry can be checked on its own (`check_export`)."""
        last_id = 0
        while True:
            query = select(AccessLogEntry).where(AccessLogEntry.id > last_id)
            if since is not None:
                query = query.where(AccessLogEntry.at >= since)
            if until is not None:
                query = query.where(AccessLogEntry.at < until)
            if agency is not None:
                query = query.where(AccessLogEntry.agency == agency)
            if client is not None:
                query = query.where(AccessLogEntry.client == client)
            rows = session.scalars(query.order_by(AccessLogEntry.id).limit(batch)).all()
            if not rows:
                return
            for row in rows:
                item: dict[str, Any] = {"id": row.id}
                for name in CHAINED:
                    value = getattr(row, name)
                    item[name] = value.isoformat(timespec="microseconds") if isinstance(value, datetime) else value
                item["prev_hash"], item["chain_hash"] = row.prev_hash, row.chain_hash
                yield item
            last_id = rows[-1].id

    def check_export(self, items: Iterable[dict[str, Any]]) -> VerifyResult:
        """Check exported entries without the database: each entry's hash against its content and its
        predecessor's hash, and, where two entries are consecutive in the chain, that they link. A filtered
        export (one agency, one period) is checked entry by entry; a whole one, link by link from the first."""
        checked, previous, keys = 0, None, _KeyOrder(self._keys)
        for item in items:
            try:
                values = {name: item[name] for name in CHAINED}
                entry_id, prev_hash, chain_hash = int(item["id"]), str(item["prev_hash"]), str(item["chain_hash"])
                at = datetime.fromisoformat(str(item["at"]))
            except (KeyError, TypeError, ValueError):
                return VerifyResult(False, checked, None, "an exported entry lacks a chained field", "")
            if previous is not None and entry_id == previous[0] + 1 and prev_hash != previous[1]:
                return VerifyResult(False, checked, entry_id, "an entry before this one was altered", previous[1])
            if previous is None and entry_id == 1 and prev_hash != GENESIS:
                return VerifyResult(False, checked, entry_id, "the first entry does not start the chain", GENESIS)
            if (wrong := keys.judge(prev_hash, values, chain_hash, at)) is not None:
                return VerifyResult(False, checked, entry_id, wrong, prev_hash)
            previous = (entry_id, chain_hash)
            checked += 1
        return VerifyResult(True, checked, None, None, previous[1] if previous else GENESIS)

    def usage(self, session: Session, subjects: Sequence[str], *, tz: tzinfo = UTC) -> Iterator[dict[str, Any]]:
        """Who used this citizen's data, newest first (what a citizen or an auditor is shown). `subjects`: the
        personal ID's HMAC under each of hub's keys (`subject_hmacs`): entries from before a key rotation too.
        `tz`: the times' offset (the citizen reads Vietnam's time, as in their other views)."""
        if isinstance(subjects, str):  # one HMAC, not a list of its characters
            raise TypeError("usage() takes the list of a personal ID's HMACs (subject_hmacs)")
        where = AccessLogEntry.subject.in_(subjects) if len(subjects) > 1 else AccessLogEntry.subject == subjects[0]
        rows = session.scalars(select(AccessLogEntry).where(where).order_by(AccessLogEntry.id.desc()))
        for row in rows:
            yield {
                "at": row.at.astimezone(tz).isoformat(),
                "client": row.client,
                "agency": row.agency,
                "officer": row.officer,
                "as": row.subject_role,
                "procedure": row.procedure,
                "purpose": row.purpose,
                "legal_basis": row.legal_basis,
                "consent_ref": row.consent_ref,
                "outcome": row.outcome,
                "reason": row.reason,
                "fields": row.fields,
            }


class _KeyOrder:
    """Which of hub's keys chained each entry along the chain (the current one first, then the previous ones, newest
    first), and whether that key may be there: an entry chained under a key older than an earlier entry's is one
    that someone holding a retired key could have forged — accepted only while the processes switched keys (within
    ROTATION_GRACE of the first entry under the newer one) and not dated before its predecessor (beyond
    CLOCK_SKEW). With one key, one HMAC per entry, as before."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        self.keys = keys
        self.newest = len(keys)  # the newest key seen so far along the chain (its index); none yet
        self.since: datetime | None = None  # when the chain first used it
        self.prev_at: datetime | None = None

    def judge(self, prev_hash: str, values: dict[str, Any], chain_hash: str, at: datetime) -> str | None:
        """None if the entry holds; else what is wrong with it."""
        index = next(
            (i for i, key in enumerate(self.keys) if same_text(chain_hash, _link(key, prev_hash, values))), None
        )
        if index is None:
            return ALTERED
        if index < self.newest:
            self.newest, self.since = index, at
        elif index > self.newest and self.since is not None:
            late = at > self.since + ROTATION_GRACE
            if late or (self.prev_at is not None and at < self.prev_at - CLOCK_SKEW):
                return RETIRED
        self.prev_at = at
        return None


def head(session: Session) -> tuple[int, str, datetime] | None:
    """The last entry's id, chain hash and time; None for an empty log."""
    row = session.execute(
        select(AccessLogEntry.id, AccessLogEntry.chain_hash, AccessLogEntry.at)
        .order_by(AccessLogEntry.id.desc())
        .limit(1)
    ).first()
    return None if row is None else (row.id, row.chain_hash, row.at)


def anchor(session: Session, path: Path) -> dict[str, Any] | None:
    """Note the chain's head in `path` (JSON lines, appended and synced), unless the last line there already holds
    it; returns what was noted. A head noted outside the database is what catches entries cut off the chain's end:
    someone who can delete rows (the triggers dropped) cannot reach this file — keep it on another volume, or ship
    the log line it also makes to the log server."""
    current = head(session)
    if current is None:
        return None
    entry_id, chain_hash, at = current
    last = last_anchor(path)
    if last is not None and last["chain_hash"] == chain_hash:
        return None
    line = {"id": entry_id, "chain_hash": chain_hash, "at": at.isoformat(), "noted_at": utcnow().isoformat()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return line


def read_anchors(path: Path) -> list[dict[str, Any]]:
    """The heads noted in `path` (none if it does not exist); a line that is not a noted head is skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [item for item in map(_noted_head, text.splitlines()) if item is not None]


def last_anchor(path: Path, tail: int = 4096) -> dict[str, Any] | None:
    """The last head noted in `path`, read from the file's end: the job that notes heads runs every few minutes
    for years, and the file only grows."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            while True:
                f.seek(max(0, size - tail))
                lines = f.read().decode("utf-8", errors="replace").splitlines()
                if tail < size:
                    lines = lines[1:]  # the first may be the end of a line cut by the seek
                for line in reversed(lines):
                    found = _noted_head(line)
                    if found is not None:
                        return found
                if tail >= size:
                    return None
                tail *= 4  # only lines that are not noted heads in the tail: look further back
    except FileNotFoundError:
        return None


def _noted_head(line: str) -> dict[str, Any] | None:
    from hub.adapters.http import parse_json

    try:
        item = parse_json(line)
    except ValueError:
        return None
    if isinstance(item, dict) and isinstance(item.get("chain_hash"), str) and isinstance(item.get("id"), int):
        return item
    return None


@dataclass(frozen=True, slots=True)
class VerifyResult:
    intact: bool
    checked: int
    broken_at: int | None
    problem: str | None
    head: str  # the last good chain hash: note it somewhere else and pass it back as an anchor later
    missing_anchors: frozenset[str] = frozenset()  # noted heads not found in the chain

    def as_dict(self) -> dict[str, Any]:
        return {
            "intact": self.intact,
            "checked": self.checked,
            "broken_at": self.broken_at,
            "problem": self.problem,
            "head": self.head,
        }
