"""Ingest of dossiers and progress from client systems: validate, authorize, and write state + event + outbox
in one transaction; replay the stored answer for a repeated Idempotency-Key."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, bindparam, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from hub.domain.calendar import WorkingCalendar
from hub.domain.dates import VN_TZ, format_national, parse_national, utcnow
from hub.domain.errors import Conflict, DomainError, Forbidden, InvalidDate, NotFound
from hub.domain.identifiers import DossierCode, dossier_code
from hub.domain.privacy import subject_hmac
from hub.domain.status import NOT_READY, VIETNAMESE_NAMES, DossierStatus, check_transition, parse_status
from hub.services import routes
from hub.services.catalogue import known_procedure
from hub.services.schemas import DossierIn, ProgressIn
from hub.settings import ClientSystem
from hub.store.db import reading, reading_session
from hub.store.group_commit import GroupCommit
from hub.store.models import Dossier, IdempotencyRecord, OutboxMessage, Procedure, StatusEvent, table
from hub.sync.outbox import DEAD, IN_FLIGHT, PENDING, SET_ASIDE, set_aside_note

NATIONAL_PORTAL = "national_portal"
ONE_STOP = "one_stop"
DOCUMENT_EXCHANGE = "document_exchange"  # signed edXML envelopes to other agencies
# what a listing of dossiers with messages not delivered asks for (GET /v1/dossiers?delivery=…)
UNDELIVERED_STATES = {"waiting": (PENDING, IN_FLIGHT), "dead": (DEAD,), "undelivered": (PENDING, IN_FLIGHT, DEAD)}
SEND_DOCUMENT, SEND_STATUS = "send_edoc", "send_edoc_status"  # its operations: a document, hub's recall of one
SYNC, PROGRESS, DOWNFLOW = "dossier.sync", "dossier.progress", "dossier.downflow"
# Facts in a dossier's history that are not a change of its status (not relayed to the portal): a pay link given
# up unpaid; a payment credited while the dossier was not waiting for one (withdrawn, stopped, or moved on another
# way meanwhile): a refund may be owed
PAYMENT_EXPIRED = "payment.expired"
PAYMENT_NOT_AWAITED = "payment.not_awaited"
REPEAT = "_repeat"  # in `apply`'s answer: the request was the dossier's latest change again (nothing written)
DOSSIERS = table(Dossier)
EVENTS = table(StatusEvent)
OUTBOX = table(OutboxMessage)
KEYS = table(IdempotencyRecord)

# Statements built once: executing a prebuilt construct with parameters skips SQLAlchemy's construction and
# cache-key work on every request (the hot path of ingest).
SELECT_KEY = select(KEYS.c.request_hash, KEYS.c.status_code, KEYS.c.response).where(
    KEYS.c.client == bindparam("client"), KEYS.c.key == bindparam("key")
)
SELECT_KEYS = select(KEYS.c.key, KEYS.c.request_hash, KEYS.c.status_code, KEYS.c.response).where(
    KEYS.c.client == bindparam("client"), KEYS.c.key.in_(bindparam("keys", expanding=True))
)
_DOSSIER_COLUMNS = (DOSSIERS.c.id, DOSSIERS.c.status, DOSSIERS.c.last_seq, DOSSIERS.c.procedure_code, DOSSIERS.c.data)
SELECT_DOSSIER = select(*_DOSSIER_COLUMNS).where(DOSSIERS.c.code == bindparam("code")).with_for_update()
# A batch's dossiers locked in one statement, in code order (LockRows above the sort): two batches in two processes
# lock their common dossiers in the same order and never wait on each other crosswise.
SELECT_DOSSIERS = (
    select(DOSSIERS.c.code, *_DOSSIER_COLUMNS)
    .where(DOSSIERS.c.code.in_(bindparam("codes", expanding=True)))
    .order_by(DOSSIERS.c.code)
    .with_for_update()
)
INSERT_DOSSIERS = insert(DOSSIERS).returning(DOSSIERS.c.id, sort_by_parameter_order=True)
UPDATE_DOSSIER = update(DOSSIERS).where(DOSSIERS.c.id == bindparam("dossier_id"))
INSERT_EVENT = insert(EVENTS).inline()  # inline: no RETURNING of the new id, nobody reads it
INSERT_OUTBOX = insert(OUTBOX).inline()
INSERT_KEY = insert(KEYS).inline()
SELECT_LIMIT = select(Procedure.limit_working_days).where(Procedure.code == bindparam("code"))
SELECT_EVENT = select(
    EVENTS.c.event_id, EVENTS.c.kind, EVENTS.c.status, EVENTS.c.previous_status, EVENTS.c.payload, EVENTS.c.client
).where(EVENTS.c.dossier_id == bindparam("dossier_id"), EVENTS.c.seq == bindparam("seq"))


@dataclass(frozen=True, slots=True)
class Answer:
    status_code: int
    body: dict[str, Any]
    replayed: bool = False


def _outbox_row(
    event_id: str,
    dossier_id: int,
    seq: int,
    destination: str,
    operation: str,
    payload: dict[str, Any],
    correlation_id: str,
    now: datetime,
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "dossier_id": dossier_id,
        "seq": seq,
        "destination": destination,
        "operation": operation,
        "payload": payload,
        "idempotency_key": f"{event_id}:{destination}",
        "correlation_id": correlation_id,
        "state": PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "last_error_code": None,
        "last_error": None,
    }


def _latest_document(
    session: Session, code: str, dossier_id: int, client: str, request_hash: str
) -> dict[str, Any] | None:
    """The answer to the dossier's latest document request, when it was this client's and this very request. Only
    the three fields are read, not the payload: it holds the signed envelope, attachments and all."""
    payload = OUTBOX.c.payload
    row = session.execute(
        select(
            OUTBOX.c.event_id,
            OUTBOX.c.seq,
            payload["document_id"].as_string(),
            payload["client"].as_string(),
            payload["request_hash"].as_string(),
        )
        .where(OUTBOX.c.dossier_id == dossier_id, OUTBOX.c.destination == DOCUMENT_EXCHANGE)
        .order_by(OUTBOX.c.seq.desc())
        .limit(1)
    ).first()
    if row is None or (row[3], row[4]) != (client, request_hash):
        return None
    return {"event_id": row.event_id, "MaHoSo": code, "document_id": row[2], "seq": row.seq}


def _acting_for(client: ClientSystem, code: str) -> DossierCode:
    """The parsed MaHoSo, when `client` may act for its agency (403 `agency_not_allowed` otherwise)."""
    parsed = dossier_code(code)
    if not client.may_act_for(parsed.agency):
        raise Forbidden(f"client {client.name!r} may not act for agency {parsed.agency}", code="agency_not_allowed")
    return parsed


def _answered_before(session: Session, client: ClientSystem, key: str | None) -> bool:
    """Whether `client` has had an answer for this Idempotency-Key (a repeat: the first answer is given again)."""
    return key is not None and session.execute(SELECT_KEY, {"client": client.name, "key": key}).first() is not None


def _next_document_seq(session: Session, dossier_id: int) -> int:
    """The place of the dossier's next message to the document exchange (documents and recalls in one order)."""
    last = session.execute(
        select(func.max(OUTBOX.c.seq)).where(
            OUTBOX.c.dossier_id == dossier_id, OUTBOX.c.destination == DOCUMENT_EXCHANGE
        )
    ).scalar()
    return int(last or 0) + 1


def _due_at(data: dict[str, Any]) -> datetime | None:
    value = data.get("NgayHenTra")
    return parse_national(value) if value else None


def mask_id(value: str | None) -> str | None:
    if not value:
        return value
    return "*" * max(0, len(value) - 3) + value[-3:]


def masked(data: dict[str, Any]) -> dict[str, Any]:
    """A dossier's fields as hub shows them to a client: the owner's ID number masked (its last three digits)."""
    shown = dict(data)
    if isinstance(shown.get("SoGiayToChuHoSo"), str):
        shown["SoGiayToChuHoSo"] = mask_id(shown["SoGiayToChuHoSo"])
    return shown


@dataclass(slots=True)
class _Row:
    """A dossier's row as the transaction sees it, its own writes included. `id` is a `_NewId` until the row,
    created in this transaction, is inserted."""

    id: Any
    status: int
    last_seq: int
    procedure_code: str
    data: dict[str, Any]


class _NewId:
    """The id of a dossier created in this transaction, known once `_Writes.flush` has inserted it."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: int | None = None


class _Writes:
    """A transaction's dossier writes, gathered while its commands are decided and then sent as one statement per
    table (executemany: one round trip each on PostgreSQL, psycopg pipelines them) — instead of five or six round
    trips per command, which made the group commit's leader wait on the database for most of a batch.

    Reads come first and in bulk: the batch's dossiers locked in code order, its Idempotency-Keys looked up. Each
    command then sees the effects of the commands before it in the batch (`dossiers`, `keys` are updated as they
    are decided); a dossier created and changed in the same batch is inserted once, as it ends."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.dossiers: dict[str, _Row | None] = {}
        self.keys: dict[tuple[str, str], tuple[str, int, dict[str, Any]]] = {}
        self._new: dict[_NewId, dict[str, Any]] = {}
        self._updates: dict[int, dict[str, Any]] = {}
        self._events: list[dict[str, Any]] = []
        self._outbox: list[dict[str, Any]] = []
        self._new_keys: list[dict[str, Any]] = []
        self._latest: dict[str, dict[str, Any]] = {}  # a dossier's event added in this batch, by code

    def latest_event(self, code: str, row: _Row) -> dict[str, Any] | None:
        """The dossier's latest event (`row`: the dossier as this transaction sees it), this batch's included."""
        if code in self._latest:
            return self._latest[code]
        found = self.conn.execute(SELECT_EVENT, {"dossier_id": row.id, "seq": row.last_seq}).first()
        return None if found is None else {"seq": row.last_seq, **found._asdict()}

    def lock(self, codes: Sequence[str]) -> None:
        """Read and lock these dossiers (absent ones are remembered as absent)."""
        wanted = sorted(set(codes) - self.dossiers.keys())
        if not wanted:
            return
        for code in wanted:
            self.dossiers[code] = None
        for r in self.conn.execute(SELECT_DOSSIERS, {"codes": wanted}):
            self.dossiers[r.code] = _Row(r.id, r.status, r.last_seq, r.procedure_code, r.data)

    def know(self, code: str, row: Any) -> None:
        """`row`: the dossier as SELECT_DOSSIER read (and locked) it in this transaction."""
        self.dossiers[code] = _Row(row.id, row.status, row.last_seq, row.procedure_code, row.data)

    def current(self, code: str) -> _Row | None:
        if code not in self.dossiers:
            self.lock([code])
        return self.dossiers[code]

    def look_up_keys(self, client: str, keys: Sequence[str]) -> None:
        for r in self.conn.execute(SELECT_KEYS, {"client": client, "keys": sorted(set(keys))}):
            self.keys[(client, r.key)] = (r.request_hash, r.status_code, r.response)

    def remember_key(self, client: str, key: str, request_hash: str, body: dict[str, Any]) -> None:
        self.keys[(client, key)] = (request_hash, 202, body)
        self._new_keys.append(
            {
                "client": client,
                "key": key,
                "request_hash": request_hash,
                "status_code": 202,
                "response": body,
                "created_at": utcnow(),
            }
        )

    def insert_dossier(self, code: str, values: dict[str, Any]) -> _NewId:
        new = _NewId()
        self._new[new] = {"code": code, **values}
        return new

    def update_dossier(self, dossier_id: Any, values: dict[str, Any]) -> None:
        if isinstance(dossier_id, _NewId):  # created in this batch: inserted as it ends
            self._new[dossier_id].update(values)
        else:  # only the last state of a dossier changed twice in the batch is written
            self._updates[dossier_id] = {"dossier_id": dossier_id, **values}

    def add_event(self, code: str, row: dict[str, Any]) -> None:
        self._events.append(row)
        self._latest[code] = row

    def add_outbox(self, rows: Sequence[dict[str, Any]]) -> None:
        self._outbox.extend(rows)

    def flush(self) -> None:
        conn = self.conn
        if self._new:
            ids = conn.execute(INSERT_DOSSIERS, list(self._new.values())).scalars().all()
            for new, dossier_id in zip(self._new, ids, strict=True):
                new.value = dossier_id
            for row in (*self._events, *self._outbox):
                if isinstance(row["dossier_id"], _NewId):
                    row["dossier_id"] = row["dossier_id"].value
        for statement, rows in (
            (UPDATE_DOSSIER, list(self._updates.values())),
            (INSERT_EVENT, self._events),
            (INSERT_OUTBOX, self._outbox),
            (INSERT_KEY, self._new_keys),
        ):
            if rows:
                conn.execute(statement, rows[0] if len(rows) == 1 else rows)  # one row: execute, not executemany
        self._new, self._updates, self._events, self._outbox, self._new_keys = {}, {}, [], [], []
        self._latest = {}


@dataclass(frozen=True, slots=True)
class _Command:
    """One idempotent write request: its client and key, the hash of what it asks, its dossier, its work."""

    client: ClientSystem
    key: str | None
    request_hash: str
    code: str
    work: Callable[[Session, _Writes], dict[str, Any]]


def overdue_where(now: datetime) -> list[Any]:
    """The conditions of a dossier overdue at `now`: past its appointment (NgayHenTra), its result not ready. The
    statuses listed (not "not in the closed ones"): a seek per status on ix_dossiers_status_due_at, where NOT IN read
    every dossier ever filed (70 ms at a million, 0.1 ms now)."""
    return [Dossier.due_at < now, Dossier.status.in_([int(s) for s in sorted(NOT_READY)])]


def agencies_where(patterns: Iterable[str]) -> list[Any]:
    """The conditions limiting dossiers to a client's agencies — codes, or prefixes ending in `*`; `*` for every
    one —: none for every agency, and a condition no dossier meets for a client configured with none."""
    conds: list[Any] = []
    for p in patterns:
        if p == "*":
            return []
        conds.append(Dossier.agency.startswith(p[:-1], autoescape=True) if p.endswith("*") else Dossier.agency == p)
    return [or_(*conds)] if conds else [Dossier.id < 0]


class DossierService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        secret_key: bytes,
        destinations: Sequence[str] = (NATIONAL_PORTAL,),
        on_commit: Callable[[], None] = lambda: None,
        notify_channels: Sequence[str] = (),
        calendar: WorkingCalendar | None = None,
    ) -> None:
        self.sessions = sessions
        self._secret = secret_key
        self.destinations = tuple(destinations)
        self._on_commit = on_commit
        self.notify_channels = tuple(notify_channels)  # email, sms: the citizen is told of status changes
        self.calendar = calendar or WorkingCalendar()
        self._commands: GroupCommit[Session, _Command, Answer] = GroupCommit(
            sessions.begin, self._run_commands, order=lambda c: c.code
        )

    def subject_hmac(self, personal_id: str) -> str:
        return subject_hmac(self._secret, personal_id)

    def _owner_hmac(self, data: dict[str, Any]) -> str | None:
        """The HMAC of the dossier owner's ID number (SoGiayToChuHoSo), by which their dossiers are found."""
        owner = data.get("SoGiayToChuHoSo")
        return self.subject_hmac(str(owner)) if owner else None

    # -- commands --------------------------------------------------------------------------------------------

    def sync_dossier(
        self, client: ClientSystem, dossier: DossierIn, *, idempotency_key: str | None, correlation_id: str
    ) -> Answer:
        return self.run(
            self.sync_command(client, dossier, idempotency_key=idempotency_key, correlation_id=correlation_id)
        )

    def sync_command(
        self,
        client: ClientSystem,
        dossier: DossierIn,
        *,
        idempotency_key: str | None,
        correlation_id: str,
        updating: bool = False,
    ) -> _Command:
        """`updating`: DongBoHoSoMC's isUpdating — the sender says the dossier was synced before (to the portal,
        before hub): one hub has not seen is taken over at its status (ADR 0041)."""
        data = dossier.national()
        _dates_in_order(data)
        return self._command(
            client,
            "sync",
            data,
            idempotency_key,
            data["MaHoSo"],
            lambda s, w: self.apply(
                s,
                client,
                data["MaHoSo"],
                SYNC,
                data,
                correlation_id,
                writes=w,
                repeats=idempotency_key is None,
                taken_over=updating,
            ),
        )

    def push_from_portal(
        self, client: ClientSystem, dossier: DossierIn, *, idempotency_key: str | None, correlation_id: str
    ) -> Answer:
        return self.run(
            self.push_command(client, dossier, idempotency_key=idempotency_key, correlation_id=correlation_id)
        )

    def push_command(
        self, client: ClientSystem, dossier: DossierIn, *, idempotency_key: str | None, correlation_id: str
    ) -> _Command:
        """A dossier filed (or changed) on the national portal, pushed to hub for the provincial one-stop system."""
        if "national_portal" not in client.roles:
            raise Forbidden(
                f"client {client.name!r} may not push dossiers from the national portal", code="role_not_allowed"
            )
        data = dossier.national()

        def work(s: Session, writes: _Writes) -> dict[str, Any]:
            if not known_procedure(s, data["MaTTHC"]):
                raise DomainError(
                    f"procedure {data['MaTTHC']} is not in hub's catalogue (hub catalogue sync refreshes it)",
                    code="unknown_procedure",
                )
            return self.apply(s, client, data["MaHoSo"], DOWNFLOW, data, correlation_id, writes=writes)

        return self._command(client, "downflow", data, idempotency_key, data["MaHoSo"], work)

    def send_document(
        self,
        client: ClientSystem,
        code: str,
        request: dict[str, Any],
        sign: Callable[[str], tuple[str, bytes, str]],
        *,
        idempotency_key: str | None,
        correlation_id: str,
    ) -> Answer:
        """File a document of dossier `code` for other agencies: `sign(agency)` builds and signs the edXML
        envelope as that agency — its DocumentId, the signed bytes and its promulgation date — before the
        transaction (it may ask a time-stamping authority), and the signed bytes go into the outbox to the
        document exchange, after the dossier's earlier documents."""
        parsed = _acting_for(client, code)
        # the request hashed once (its attachments may be megabytes): the key's record and a repeat are matched on it
        replay = self._command(client, "edoc", request, idempotency_key, code, lambda _s, _w: {})
        asked = replay.request_hash
        with self.sessions() as s:
            found = s.execute(select(DOSSIERS.c.id).where(DOSSIERS.c.code == code)).first()
            if found is None:
                raise NotFound(f"dossier {code} is unknown to hub", code="dossier_not_found")
            seen = _answered_before(s, client, idempotency_key)
            again = _latest_document(s, code, found.id, client.name, asked) if idempotency_key is None else None
        if seen:  # a repeat is answered without signing (or time-stamping) again
            return self.run(replay)
        if again is not None:  # no key, but the dossier's latest document over again (ADR 0021): not sent twice
            return Answer(202, again, replayed=True)
        document_id, envelope, promulgated = sign(parsed.agency)

        def work(session: Session, _writes: _Writes) -> dict[str, Any]:
            current = session.execute(SELECT_DOSSIER, {"code": code}).first()  # locked: documents keep their order
            if current is None:
                raise NotFound(f"dossier {code} is unknown to hub", code="dossier_not_found")
            if idempotency_key is None and (same := _latest_document(session, code, current.id, client.name, asked)):
                return {**same, REPEAT: True}  # the same request, sent at once on another connection
            seq = _next_document_seq(session, current.id)
            event_id = str(uuid.uuid4())
            row = _outbox_row(
                event_id,
                current.id,
                seq,
                DOCUMENT_EXCHANGE,
                SEND_DOCUMENT,
                {
                    "document_id": document_id,
                    "to": request["to"],
                    "envelope": envelope.decode(),
                    "client": client.name,
                    "request_hash": asked,  # what a repeat without a key is recognised by
                },
                correlation_id,
                utcnow(),
            )
            session.execute(INSERT_OUTBOX, [row])
            from hub.services.edocs import record_sent

            record_sent(
                session,
                document_id=document_id,
                event_id=event_id,
                dossier_code=code,
                agency=parsed.agency,
                promulgation_date=promulgated,
                request=request,
            )
            return {"event_id": event_id, "MaHoSo": code, "document_id": document_id, "seq": seq}

        return self.run(replace(replay, work=work))

    def recall_document(
        self,
        client: ClientSystem,
        code: str,
        document_id: str,
        reason: str,
        sign: Callable[[dict[str, Any]], bytes],
        *,
        idempotency_key: str | None,
        correlation_id: str,
    ) -> Answer:
        """Ask the receivers of a document hub sent to give it back (edXML status 13, "Lấy lại"): `sign(sent)`
        builds and signs the notice as the sending agency, and it goes to the document exchange in the outbox —
        after the document itself, never before it. Each receiver answers 15 (agreed) or 16 (refused) in a status
        notice of its own. Once per document: a second request is 409 `recall_already_requested`."""
        from hub.store.models import EdocSent

        _acting_for(client, code)
        replay = self._command(client, "edoc_recall", {"document_id": document_id, "reason": reason},
                               idempotency_key, code, lambda _s, _w: {})  # fmt: skip

        def sent_one(s: Session) -> Any:
            found = s.scalar(select(EdocSent).where(EdocSent.document_id == document_id, EdocSent.dossier_code == code))
            if found is None:
                raise NotFound(f"dossier {code} sent no document {document_id!r}", code="document_not_found")
            return found

        with reading_session(self.sessions) as s:
            seen = _answered_before(s, client, idempotency_key)
            sent = None if seen else sent_one(s)
        if sent is None:  # a repeat of a key: the first answer (asked of the store, not signed again)
            return self.run(replay)
        if sent.recall_requested_at is not None:
            raise Conflict(f"document {document_id} was recalled already", code="recall_already_requested")
        about = {"document_id": sent.document_id, "code": sent.code, "promulgation_date": sent.promulgation_date,
                 "agency": sent.agency, "sender_name": sent.sender_name}  # fmt: skip
        envelope = sign(about)

        def work(session: Session, _writes: _Writes) -> dict[str, Any]:
            current = session.execute(SELECT_DOSSIER, {"code": code}).first()  # locked: the dossier's documents
            if current is None:
                raise NotFound(f"dossier {code} is unknown to hub", code="dossier_not_found")
            now = utcnow()
            taken = session.execute(
                update(EdocSent)
                .where(EdocSent.document_id == document_id, EdocSent.recall_requested_at.is_(None))
                .values(recall_requested_at=now, recall_reason=reason)
                .returning(EdocSent.id)
            ).first()
            if taken is None:  # asked at the same moment on another connection
                raise Conflict(f"document {document_id} was recalled already", code="recall_already_requested")
            seq = _next_document_seq(session, current.id)
            event_id = str(uuid.uuid4())
            payload = {"document_id": document_id, "status": "13", "envelope": envelope.decode(), "to": []}
            row = _outbox_row(event_id, current.id, seq, DOCUMENT_EXCHANGE, SEND_STATUS, payload, correlation_id, now)
            session.execute(INSERT_OUTBOX, [row])
            return {"event_id": event_id, "MaHoSo": code, "document_id": document_id, "status": "13", "seq": seq}

        return self.run(replace(replay, work=work))

    def add_progress(
        self,
        client: ClientSystem,
        code: str,
        step: ProgressIn,
        *,
        idempotency_key: str | None,
        correlation_id: str,
    ) -> Answer:
        return self.run(
            self.progress_command(client, code, step, idempotency_key=idempotency_key, correlation_id=correlation_id)
        )

    def progress_command(
        self,
        client: ClientSystem,
        code: str,
        step: ProgressIn,
        *,
        idempotency_key: str | None,
        correlation_id: str,
    ) -> _Command:
        data = step.national()
        if data["MaHoSo"] != code:
            raise Conflict("MaHoSo in the body differs from the dossier in the path", code="dossier_code_mismatch")
        return self._command(
            client,
            "progress",
            data,
            idempotency_key,
            code,
            lambda s, w: self.apply(
                s, client, code, PROGRESS, data, correlation_id, writes=w, repeats=idempotency_key is None
            ),
        )

    @staticmethod
    def _command(
        client: ClientSystem,
        op: str,
        data: dict[str, Any],
        key: str | None,
        code: str,
        work: Callable[[Session, _Writes], dict[str, Any]],
    ) -> _Command:
        request_hash = hashlib.sha256(json.dumps([op, data], sort_keys=True).encode()).hexdigest()
        return _Command(client, key, request_hash, code, work)

    def run(self, command: _Command) -> Answer:
        """Do a command once per Idempotency-Key. Requests arriving together share one transaction (group commit,
        ADR 0010); each is answered once its own rows are committed."""
        for attempt in (1, 2):
            try:
                answer = self._commands.submit(command)
            except IntegrityError as exc:
                self._concurrent(attempt, exc)
                continue
            return self._answered(answer)
        raise AssertionError("unreachable")

    async def run_async(self, command: _Command) -> Answer:
        """`run` for the API's event loop: the request waits for its commit without holding a thread."""
        for attempt in (1, 2):
            try:
                answer = await self._commands.submit_async(command)
            except IntegrityError as exc:
                self._concurrent(attempt, exc)
                continue
            return self._answered(answer)
        raise AssertionError("unreachable")

    async def sync_many(
        self,
        client: ClientSystem,
        items: Sequence[Any],
        *,
        idempotency_key: str | None,
        correlation_id: str,
        updating: bool = False,
    ) -> list[Answer | DomainError | ValidationError]:
        """A batch of dossiers (DongBoHoSoMC's `data` array, `updating` its isUpdating): see `_many`."""

        def command(item: Any, key: str | None) -> _Command:
            body = DossierIn.model_validate(item)
            _acting_for(client, body.MaHoSo)  # refused here, not by failing the transaction it would share
            return self.sync_command(
                client, body, idempotency_key=key, correlation_id=correlation_id, updating=updating
            )

        return await self._many("sync", items, idempotency_key, command)

    async def progress_many(
        self, client: ClientSystem, items: Sequence[Any], *, idempotency_key: str | None, correlation_id: str
    ) -> list[Answer | DomainError | ValidationError]:
        """A batch of processing steps (CapNhatTienDoHoSoMC's `data` array), each naming its dossier: see `_many`."""

        def command(item: Any, key: str | None) -> _Command:
            step = ProgressIn.model_validate(item)
            _acting_for(client, step.MaHoSo)
            return self.progress_command(client, step.MaHoSo, step, idempotency_key=key, correlation_id=correlation_id)

        return await self._many("progress", items, idempotency_key, command)

    async def _many(
        self,
        kind: str,
        items: Sequence[Any],
        idempotency_key: str | None,
        command: Callable[[Any, str | None], _Command],
    ) -> list[Answer | DomainError | ValidationError]:
        """Each item taken or refused on its own: what is wrong with one — its shape, its agency, its transition —
        refuses that item only (its outcome at its place). The items are queued in their order (a dossier's later
        change after its earlier one) and share the group commit's transactions. With an Idempotency-Key, each
        item is done once under a key of its own derived from the batch's, its kind and its place, so the same
        batch sent again is answered as before and creates nothing (ADR 0030)."""
        import asyncio

        outcomes: list[Answer | DomainError | ValidationError | None] = [None] * len(items)
        runs: list[tuple[int, _Command]] = []
        batch = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32] if idempotency_key is not None else None
        for i, item in enumerate(items):
            try:
                runs.append((i, command(item, f"batch:{kind}:{batch}:{i}" if batch is not None else None)))
            except (ValidationError, DomainError) as exc:
                outcomes[i] = exc
        done = await asyncio.gather(*(self.run_async(c) for _, c in runs), return_exceptions=True)
        for (i, _), outcome in zip(runs, done, strict=True):
            if isinstance(outcome, DomainError | Answer):
                outcomes[i] = outcome
            elif isinstance(outcome, BaseException):
                raise outcome  # not the item's fault (the database, a bug): the request fails as a whole
        answered = [o for o in outcomes if o is not None]
        if len(answered) != len(items):  # a bug: never answer an item in another's place
            raise RuntimeError(f"batch: {len(answered)} outcomes for {len(items)} items")
        return answered

    @staticmethod
    def _concurrent(attempt: int, exc: IntegrityError) -> None:
        """A concurrent request with the same key, or creating the same dossier: the second pass sees it."""
        if attempt == 2:
            raise Conflict("a concurrent request changed this dossier; retry", code="concurrent_update") from exc

    def _answered(self, answer: Answer) -> Answer:
        if not answer.replayed:
            self._on_commit()
        return answer

    def _run_commands(self, session: Session, commands: Sequence[_Command]) -> list[Answer]:
        """Commands in one transaction, in the order of their dossier (GroupCommit's `order`): their reads in bulk,
        each decided in turn, their writes sent together at the end (`_Writes`). A command that fails (a refused
        transition, an unknown dossier…) aborts the batch; its commands are then done one per transaction, so
        nothing of a refused command is ever committed and the others are unaffected."""
        writes = _Writes(session.connection())
        writes.lock([c.code for c in commands])
        by_client: dict[str, list[str]] = {}
        for c in commands:
            if c.key is not None:
                by_client.setdefault(c.client.name, []).append(c.key)
        for client, keys in by_client.items():
            writes.look_up_keys(client, keys)
        answers = [self._run_command(session, writes, c) for c in commands]
        writes.flush()
        return answers

    @staticmethod
    def _run_command(session: Session, writes: _Writes, c: _Command) -> Answer:
        if c.key is not None:
            seen = writes.keys.get((c.client.name, c.key))
            if seen is not None:
                request_hash, status_code, response = seen
                if request_hash != c.request_hash:
                    raise Conflict(
                        "this Idempotency-Key was used for a different request", code="idempotency_key_reused"
                    )
                return Answer(status_code, response, replayed=True)
        body = c.work(session, writes)
        if body.pop(REPEAT, False):
            return Answer(202, body, replayed=True)
        if c.key is not None:
            writes.remember_key(c.client.name, c.key, c.request_hash, body)
        return Answer(202, body)

    def apply(
        self,
        session: Session,
        client: ClientSystem,
        code: str,
        kind: str,
        data: dict[str, Any],
        correlation_id: str,
        notify: str | None = None,
        locked: Any = None,
        writes: _Writes | None = None,
        repeats: bool = False,
        taken_over: bool = False,
    ) -> dict[str, Any]:
        """The write path, in SQLAlchemy Core. `writes`: the batch this command belongs to (its writes are sent
        with the batch's); without one, they are sent before this returns. `locked`: the dossier's row as
        SELECT_DOSSIER read it in this transaction, when the caller already did. `repeats`: a request without an
        Idempotency-Key that is the dossier's latest change over again (same client, kind and message) is that
        change's answer, marked `REPEAT`, and creates nothing (ADR 0021). `taken_over`: the sender says the
        dossier was synced before (isUpdating): if hub has not seen it, it is taken at its status (ADR 0041)."""
        if writes is None:
            own = _Writes(session.connection())
            if locked is not None:
                own.know(code, locked)
            result = self.apply(
                session, client, code, kind, data, correlation_id, notify, writes=own, repeats=repeats,
                taken_over=taken_over,
            )  # fmt: skip
            own.flush()
            return result
        parsed = _acting_for(client, code)
        whole = kind in (SYNC, DOWNFLOW)  # a whole dossier (DongBoHoSoMC shape), not a progress step
        new_status = parse_status(data["TrangThaiHoSo"] if whole else data["TrangThai"])
        conn = writes.conn
        current = writes.current(code)
        if whole and not data.get("NgayHenTra"):
            # No appointment date given: derive it from the procedure's limit in working days, when known.
            limit = conn.execute(SELECT_LIMIT, {"code": data["MaTTHC"]}).scalar()
            if limit is not None:
                due = self.calendar.add_working_days(parse_national(data["NgayTiepNhan"]), int(limit))
                data = {**data, "NgayHenTra": format_national(due)}
        now = utcnow()
        if current is None:
            if not whole:
                raise NotFound(f"dossier {code} is unknown to hub: sync it first", code="dossier_not_found")
            check_transition(None, new_status, taken_over=taken_over)
            seq = 1
            dossier_id: Any = writes.insert_dossier(
                code,
                {
                    "agency": parsed.agency,
                    "procedure_code": data["MaTTHC"],
                    "status": int(new_status),
                    "last_seq": seq,
                    "subject_hmac": self._owner_hmac(data),
                    "data": data,
                    "due_at": _due_at(data),
                    "created_at": now,
                    "updated_at": now,
                },
            )
            procedure_code, stored = data["MaTTHC"], data
            previous = None
        else:
            dossier_id = current.id
            previous = DossierStatus(current.status)
            if kind == DOWNFLOW and previous == new_status and current.data == data:
                # The portal told us nothing new (a poll that found what a push already brought): no event.
                return {
                    "event_id": None,
                    "MaHoSo": code,
                    "seq": current.last_seq,
                    "TrangThaiHoSo": int(new_status),
                    "previous_status": int(previous),
                    "unchanged": True,
                }
            if repeats:
                last = writes.latest_event(code, current)
                if last is not None and (last["kind"], last["client"], last["payload"]) == (kind, client.name, data):
                    return {
                        "event_id": last["event_id"],
                        "MaHoSo": code,
                        "seq": last["seq"],
                        "TrangThaiHoSo": last["status"],
                        "previous_status": last["previous_status"],
                        REPEAT: True,
                    } | ({"taken_over": True} if last["previous_status"] is None and taken_over else {})
            check_transition(previous, new_status)
            if whole:
                if data["MaTTHC"] != current.procedure_code:
                    raise Conflict("a dossier's procedure (MaTTHC) cannot change", code="procedure_changed")
                stored = data
            else:
                stored = {**current.data, "TrangThaiHoSo": int(new_status)}
            seq = current.last_seq + 1
            procedure_code = current.procedure_code
            writes.update_dossier(
                dossier_id,
                {
                    "status": int(new_status),
                    "data": stored,
                    "last_seq": seq,
                    "due_at": _due_at(stored),
                    "updated_at": now,
                    # a corrected owner ID moves the dossier to its owner (the console's search, the citizen's own
                    # view); under the current key after a rotation
                    "subject_hmac": self._owner_hmac(stored),
                    "redacted_at": None,  # what came with this change is not redacted (hub.services.retention)
                },
            )
        writes.dossiers[code] = _Row(dossier_id, int(new_status), seq, procedure_code, stored)
        event_id = str(uuid.uuid4())
        writes.add_event(
            code,
            {
                "event_id": event_id,
                "dossier_id": dossier_id,
                "seq": seq,
                "kind": kind,
                "status": int(new_status),
                "previous_status": None if previous is None else int(previous),
                "payload": data,
                "client": client.name,
                "correlation_id": correlation_id,
                "created_at": now,
            },
        )
        rows = []
        if kind == DOWNFLOW:
            # Filed on the national portal: deliver to the province's one-stop system found by agency code. An
            # unroutable agency becomes a dead letter with its reason (never dropped); `hub routes add` + replay.
            endpoint = routes.resolve(session, parsed.agency)
            if previous is None:
                body: dict[str, Any] = {"data": data}
                operation = "createdossierfromdvcqg"
            else:
                body = {
                    "MaHoSo": code,
                    "TrangThaiHoSo": int(new_status),
                    "ThoiDiem": format_national(now),
                    "NoiDung": data.get("GhiChu") or VIETNAMESE_NAMES[new_status],
                }
                operation = "status"
            row = _outbox_row(
                event_id,
                dossier_id,
                seq,
                ONE_STOP,
                operation,
                {"endpoint": endpoint, "body": body},
                correlation_id,
                now,
            )
            if endpoint is None:
                row |= {
                    "state": DEAD,
                    "last_error_code": "unroutable_agency",
                    "last_error": f"no route for agency {parsed.agency}: add one with `hub routes add`",
                }
            rows.append(row)
        else:
            if kind == SYNC:
                # a dossier taken over was synced to the portal before hub: an update there too (the portal
                # client turns it into a first sync if the portal does not have it after all)
                updating = previous is not None or taken_over
                operation, payload = "DongBoHoSoMC", {"isUpdating": updating, "data": [data]}
            else:
                operation, payload = "CapNhatTienDoHoSoMC", {"data": [data]}
            rows = [
                _outbox_row(event_id, dossier_id, seq, d, operation, payload, correlation_id, now)
                for d in self.destinations
            ]
        # A dossier taken over (ADR 0041) reached its status before hub: whether its citizen was told then is not
        # hub's to know, and a go-live batch of thousands would tell them all again what they heard weeks ago —
        # "received", "result ready" for a result already collected. Its next changes are told as any others.
        if self.notify_channels and not (previous is None and taken_over):
            from hub.services.notifications import kind_for, outbox_payloads

            what = kind_for(None if previous is None else int(previous), int(new_status), notify)
            if what is not None:
                full = data if whole else stored
                note = None if whole else data.get("NoiDungXuLy")
                for destination, operation, payload in outbox_payloads(what, full, self.notify_channels, note):
                    rows.append(
                        _outbox_row(event_id, dossier_id, seq, destination, operation, payload, correlation_id, now)
                    )
        writes.add_outbox(rows)
        if whole and data.get("DanhSachGiayToKetQua"):
            self._index_documents(session, code, parsed.agency, data, now)
        return {
            "event_id": event_id,
            "MaHoSo": code,
            "seq": seq,
            "TrangThaiHoSo": int(new_status),
            "previous_status": None if previous is None else int(previous),
        } | ({"taken_over": True} if previous is None and taken_over else {})

    def payment_expired(
        self,
        session: Session,
        code: str,
        dossier: Any,
        *,
        client: str,
        reference: str,
        amount: int,
        tell_citizen: bool,
        correlation_id: str,
    ) -> str:
        """A pay link given up unpaid, as an event of the dossier (`dossier`: its row as SELECT_DOSSIER read and
        locked it in this transaction): its status does not change and nothing goes to the portal, but the history
        says so, and — `tell_citizen` — the citizen is told to pay again, by the channels they can be reached on,
        in the dossier's order of messages (after what they were told before, before what comes next). Returns
        the event's id."""
        payload = {"reference": reference, "amount": amount}
        event_id, seq, now, writes = self._fact(
            session, code, dossier, PAYMENT_EXPIRED, payload, client, correlation_id
        )
        if tell_citizen and self.notify_channels:
            from hub.services.notifications import outbox_payloads

            writes.add_outbox(
                [
                    _outbox_row(event_id, dossier.id, seq, destination, operation, payload, correlation_id, now)
                    for destination, operation, payload in outbox_payloads(
                        "payment_expired", dossier.data, self.notify_channels, amount=amount
                    )
                ]
            )
        writes.flush()
        return event_id

    def payment_not_awaited(
        self, session: Session, code: str, dossier: Any, payment: dict[str, Any], *, client: str, correlation_id: str
    ) -> str:
        """A payment credited while the dossier (its row locked in this transaction) was not waiting for one, as an
        event of its history: its status does not change and nothing goes to the portal or the citizen, but the
        agency sees on the dossier that a refund may be owed. Returns the event's id."""
        event_id, *_, writes = self._fact(session, code, dossier, PAYMENT_NOT_AWAITED, payment, client, correlation_id)
        writes.flush()
        return event_id

    def _fact(
        self,
        session: Session,
        code: str,
        dossier: Any,
        kind: str,
        payload: dict[str, Any],
        client: str,
        correlation_id: str,
    ) -> tuple[str, int, datetime, _Writes]:
        """An event of the dossier that keeps its status (`kind`: PAYMENT_EXPIRED…), its writes not yet flushed:
        (event id, seq, its time, the writes, for messages of the event to join)."""
        now = utcnow()
        seq = int(dossier.last_seq) + 1
        event_id = str(uuid.uuid4())
        writes = _Writes(session.connection())
        writes.update_dossier(dossier.id, {"last_seq": seq, "updated_at": now})
        writes.add_event(
            code,
            {
                "event_id": event_id,
                "dossier_id": dossier.id,
                "seq": seq,
                "kind": kind,
                "status": int(dossier.status),
                "previous_status": int(dossier.status),
                "payload": payload,
                "client": client,
                "correlation_id": correlation_id,
                "created_at": now,
            },
        )
        return event_id, seq, now, writes

    def _index_documents(self, session: Session, code: str, agency: str, data: dict[str, Any], now: datetime) -> None:
        """Result documents issued with the dossier, indexed for reuse under the owner's ID (as an HMAC). Items
        without kind, number or issue date, or a dossier without a valid owner ID, are left out."""
        from sqlalchemy import select

        from hub.domain.errors import DomainError
        from hub.domain.identifiers import personal_id
        from hub.store.models import Document

        owner = data.get("SoGiayToChuHoSo")
        try:
            personal_id(str(owner))
        except DomainError:
            return
        subject = self.subject_hmac(str(owner))
        for item in data["DanhSachGiayToKetQua"]:
            kind, number, issued = item.get("LoaiGiayTo"), item.get("SoHieu"), item.get("NgayCap")
            if not (isinstance(kind, str) and isinstance(number, str) and isinstance(issued, str)):
                continue
            issuer = str(item.get("CoQuanCap") or agency)[:32]
            try:
                issued_at = parse_national(issued)
                until = parse_national(item["HieuLucDen"]) if item.get("HieuLucDen") else None
            except (DomainError, ValueError):
                continue
            exists = session.scalar(
                select(Document.id).where(Document.issuer == issuer, Document.number == number[:100])
            )
            if exists is None:
                session.add(
                    Document(
                        subject=subject, kind=kind[:64], title=str(item.get("TenGiayTo") or kind)[:300],
                        number=number[:100], issuer=issuer, dossier_code=code, issued_at=issued_at,
                        valid_until=until, reference=_reference(item.get("DuongDanTaiLieu"), code),
                        created_at=now,
                    )
                )  # fmt: skip
        session.flush()

    # -- queries ---------------------------------------------------------------------------------------------

    def overdue(self, client: ClientSystem, *, limit: int = 100, offset: int = 0) -> dict[str, Any]:
        """Dossiers past their appointment date (NgayHenTra) whose result is not ready, for the client's agencies."""
        now = utcnow()
        cond = [*overdue_where(now), *agencies_where(client.agencies)]
        with reading_session(self.sessions, snapshot=True) as session:
            total = session.scalar(select(func.count()).select_from(Dossier).where(*cond)) or 0
            rows = session.execute(
                select(Dossier.code, Dossier.status, Dossier.due_at, Dossier.procedure_code)
                .where(*cond)
                .order_by(Dossier.due_at, Dossier.id)
                .limit(limit)
                .offset(offset)
            ).all()
        today = now.astimezone(VN_TZ).date()
        items = [
            {
                "MaHoSo": code,
                "MaTTHC": procedure,
                "TrangThaiHoSo": status,
                "NgayHenTra": format_national(due),
                "overdue_working_days": self.calendar.working_days_between(due.astimezone(VN_TZ).date(), today),
            }
            for code, status, due, procedure in rows
            if due is not None
        ]
        return {"total": int(total), "limit": limit, "offset": offset, "items": items}

    def undelivered(
        self,
        client: ClientSystem,
        *,
        delivery: str,
        destination: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> dict[str, Any]:
        """The client's dossiers with messages not delivered (`delivery`: `waiting` — in line or being sent —,
        `dead` — refused for good or out of attempts, holding the dossier's later messages back —, or
        `undelivered`, both), the longest waiting first: per destination, how many wait and how many are dead,
        since when, and the error of the first of them (the one the rest wait behind). Documents to other agencies
        are not counted here, as in a dossier's view (their receivers' answers are shown with them)."""
        to = [OutboxMessage.destination != DOCUMENT_EXCHANGE]
        if destination is not None:
            to.append(OutboxMessage.destination == destination)
        held = [*to, OutboxMessage.state.in_(UNDELIVERED_STATES["undelivered"])]  # what is shown of a dossier
        since = (
            select(OutboxMessage.dossier_id, func.min(OutboxMessage.created_at).label("since"))
            .where(*to, OutboxMessage.state.in_(UNDELIVERED_STATES[delivery]))  # which dossiers are listed
            .group_by(OutboxMessage.dossier_id)
            .subquery()
        )
        cond = agencies_where(client.agencies)
        with reading_session(self.sessions, snapshot=True) as session:
            total = session.scalar(
                select(func.count()).select_from(Dossier).join(since, since.c.dossier_id == Dossier.id).where(*cond)
            )
            rows = session.execute(
                select(Dossier.id, Dossier.code, Dossier.procedure_code, Dossier.status)
                .join(since, since.c.dossier_id == Dossier.id)
                .where(*cond)
                .order_by(since.c.since, Dossier.id)
                .limit(limit)
                .offset(offset)
            ).all()
            found: dict[int, dict[str, dict[str, Any]]] = {row.id: {} for row in rows}
            messages = session.execute(
                select(
                    OutboxMessage.dossier_id,
                    OutboxMessage.destination,
                    OutboxMessage.state,
                    OutboxMessage.created_at,
                    OutboxMessage.attempts,
                    OutboxMessage.last_error_code,
                    OutboxMessage.last_error,
                )
                .where(OutboxMessage.dossier_id.in_(list(found)), *held)
                .order_by(OutboxMessage.dossier_id, OutboxMessage.destination, OutboxMessage.seq)
            )
            for m in messages:
                shown = found[m.dossier_id].get(m.destination)
                if shown is None:  # the first in line to this destination: the one the others wait behind
                    shown = found[m.dossier_id][m.destination] = {
                        "destination": m.destination,
                        "waiting": 0,
                        "dead": 0,
                        "since": m.created_at.isoformat(),
                        "attempts": m.attempts,
                        "last_error_code": m.last_error_code,
                        "last_error": m.last_error,
                    }
                shown["dead" if m.state == DEAD else "waiting"] += 1
        items = [
            {
                "MaHoSo": row.code,
                "MaTTHC": row.procedure_code,
                "TrangThaiHoSo": row.status,
                "deliveries": list(found[row.id].values()),
            }
            for row in rows
        ]
        return {"total": int(total or 0), "limit": limit, "offset": offset, "items": items}

    def get(self, client: ClientSystem, code: str) -> dict[str, Any]:
        _acting_for(client, code)
        with reading(self.sessions.kw["bind"], snapshot=True) as conn:
            dossier = conn.execute(VIEW_DOSSIER, {"code": code}).first()
            if dossier is None:
                raise NotFound(f"dossier {code} is unknown to hub", code="dossier_not_found")
            return describe(conn, dossier)


AFTER_RECEIPT = {
    "NgayHenTra": "the appointment date for the result",
    "NgayTra": "the date the result was returned",
    "NgayKetThucXuLy": "the end of processing",
}


# what has happened cannot be dated later than now: a clock a day ahead (or local time written twice over UTC) is
# still taken, a year typed 2062 for 2026 is not
HAPPENED = {"NgayTiepNhan": "received", "NgayTra": "the result returned"}
CLOCK_SKEW = timedelta(days=1)


def _dates_in_order(data: dict[str, Any]) -> None:
    """A one-stop system's dossier whose appointment (or result, or end of processing) falls on a day before it
    was received: the citizen would be told a date already past, and the dossier counted late from its first day.
    Refused, saying which date; compared by day (a system that keeps dates without the hour writes 000000).
    A dossier received (or its result returned) in the future is refused too: the portal would show it filed on
    a day to come, and every count of days from its receipt would be off."""
    latest = format_national(utcnow() + CLOCK_SKEW)
    for field, what in HAPPENED.items():
        value = data.get(field)
        if value and str(value) > latest:
            raise InvalidDate(f"{field} ({what}) {value} is in the future", code="date_in_future")
    received = str(data["NgayTiepNhan"])
    for field, what in AFTER_RECEIPT.items():
        value = data.get(field)
        if value and str(value)[:8] < received[:8]:
            raise InvalidDate(
                f"{field} ({what}) {value} is a day before NgayTiepNhan (received) {received}",
                code="date_before_receipt",
            )


# A dossier's view, read with prebuilt statements: SQLAlchemy builds and caches each query once, not per request
# (an ORM query cost ~150 µs a read on SQLite, most of it building the statement; the view is 4 of them).
VIEW_DOSSIER = select(
    DOSSIERS.c.id, DOSSIERS.c.code, DOSSIERS.c.agency, DOSSIERS.c.procedure_code, DOSSIERS.c.status,
    DOSSIERS.c.data, DOSSIERS.c.updated_at, DOSSIERS.c.redacted_at,
).where(DOSSIERS.c.code == bindparam("code"))  # fmt: skip
VIEW_EVENTS = (
    select(
        EVENTS.c.event_id,
        EVENTS.c.seq,
        EVENTS.c.kind,
        EVENTS.c.status,
        EVENTS.c.previous_status,
        EVENTS.c.created_at,
        EVENTS.c.client,
        EVENTS.c.correlation_id,
    )
    .where(EVENTS.c.dossier_id == bindparam("dossier_id"))
    .order_by(EVENTS.c.seq)
)
VIEW_DELIVERIES = (
    select(
        OUTBOX.c.id,
        OUTBOX.c.event_id,
        OUTBOX.c.destination,
        OUTBOX.c.operation,
        OUTBOX.c.state,
        OUTBOX.c.attempts,
        OUTBOX.c.next_attempt_at,
        OUTBOX.c.delivered_at,
        OUTBOX.c.last_error_code,
        OUTBOX.c.last_error,
        OUTBOX.c.set_aside_at,
        OUTBOX.c.set_aside_by,
        OUTBOX.c.set_aside_reason,
        OUTBOX.c.peer_reply,
    )
    .where(OUTBOX.c.dossier_id == bindparam("dossier_id"), OUTBOX.c.destination != DOCUMENT_EXCHANGE)
    .order_by(OUTBOX.c.seq, OUTBOX.c.destination)
)


def describe(conn: Connection, dossier: Any) -> dict[str, Any]:
    """A dossier (its row as VIEW_DOSSIER reads it) with its status history and the delivery state of each event
    (personal ID masked)."""
    from hub.services.edocs import HAS_DOCUMENTS, documents_sent

    deliveries: dict[str, list[dict[str, Any]]] = {}
    for m in conn.execute(VIEW_DELIVERIES, {"dossier_id": dossier.id}):
        deliveries.setdefault(m.event_id, []).append(
            {
                "outbox_id": m.id,
                "destination": m.destination,
                "operation": m.operation,
                "state": m.state,
                "attempts": m.attempts,
                "next_attempt_at": m.next_attempt_at.isoformat() if m.state == PENDING else None,
                "delivered_at": m.delivered_at.isoformat() if m.delivered_at else None,
                "last_error_code": m.last_error_code,
                "last_error": m.last_error,
                **(set_aside_note(m) if m.state == SET_ASIDE else {}),
                # a citizen's notice done with unsent: what it asked for was no longer asked (hub.runtime)
                **(
                    {"not_sent": m.peer_reply["not_sent"]}
                    if isinstance(m.peer_reply, dict) and "not_sent" in m.peer_reply
                    else {}
                ),
            }
        )
    documents: list[dict[str, Any]] = []
    if conn.execute(HAS_DOCUMENTS, {"code": dossier.code}).first() is not None:
        with Session(bind=conn) as session:  # to other agencies, with what they said
            documents = documents_sent(session, dossier.id, dossier.code)
    data = masked(dossier.data)
    status = DossierStatus(dossier.status)
    return {
        "MaHoSo": dossier.code,
        "agency": dossier.agency,
        "MaTTHC": dossier.procedure_code,
        "TrangThaiHoSo": int(status),
        "status_name": VIETNAMESE_NAMES[status],
        "updated_at": dossier.updated_at.isoformat(),
        # closed past the retention period: its personal data removed then (hub.services.retention)
        "personal_data_removed_at": dossier.redacted_at.isoformat() if dossier.redacted_at else None,
        "dossier": data,
        "events": [
            {
                "event_id": e.event_id,
                "seq": e.seq,
                "kind": e.kind,
                "TrangThaiHoSo": e.status,
                "previous_status": e.previous_status,
                "at": e.created_at.isoformat(),
                "client": e.client,
                "correlation_id": e.correlation_id,
                "deliveries": deliveries.get(e.event_id, []),
            }
            for e in conn.execute(VIEW_EVENTS, {"dossier_id": dossier.id})
        ],
        "documents": documents,
    }


def _reference(link: Any, code: str) -> str:
    """Where a result document can be fetched, as a portal may show it: the dossier's link if it is a usable one,
    else the dossier itself."""
    from hub.domain.identifiers import usable_link

    text = str(link or "")[:500]
    return text if text and usable_link(text) else f"dossier:{code}"
