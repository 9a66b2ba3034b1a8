"""What became of the documents hub sent to other agencies: the receivers' status notices (edXML Status, signed by
the receiving agency), taken from the document exchange platform, verified, matched to the document hub sent, and
recorded — every one, applied or not, with hub's verdict — then acknowledged to the platform.

A notice is taken once (by the platform's id, whatever it offers again). One whose signature cannot be judged now
(the CA's revocation services unreachable: TRY_LATER), or that hub itself failed to judge, is left on the
platform's list for the next poll rather than recorded as refused; the others in the same list are taken meanwhile.
Codes and meanings: contracts/document_exchange/status_codes.json."""

from __future__ import annotations

import base64
import binascii
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from hub.adapters.errors import PeerError
from hub.adapters.exchange import ExchangeHook
from hub.adapters.http import REPLY_TOO_LARGE
from hub.domain.dates import utcnow
from hub.domain.errors import DomainError
from hub.services.dossiers import DOCUMENT_EXCHANGE, SEND_DOCUMENT, SEND_STATUS
from hub.signing import edxml
from hub.signing.report import Report
from hub.store.db import reading_session
from hub.store.models import EdocNotice, EdocSent

log = logging.getLogger(__name__)

MAX_NOTICE_BYTES = 1024 * 1024  # a status notice is a few kB with its certificates
APPLIED = "applied"


def record_sent(
    session: Session,
    *,
    document_id: str,
    event_id: str,
    dossier_code: str,
    agency: str,
    promulgation_date: str,
    request: dict[str, Any],
) -> None:
    """In the transaction that puts a document in the outbox: what its receivers' notices will be matched to."""
    session.execute(
        insert(EdocSent),
        [
            {
                "document_id": document_id,
                "event_id": event_id,
                "dossier_code": dossier_code,
                "agency": agency,
                "sender_name": request["sender_name"],
                "receivers": [{"id": t["id"], "name": t["name"]} for t in request["to"]],
                "code": f"{request['code_number']}/{request['code_notation']}",
                "promulgation_date": promulgation_date,
                "subject": request["subject"],
                "created_at": utcnow(),
                "recall_requested_at": None,
                "recall_reason": None,
            }
        ],
    )


class EdocStatus:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        exchange: Any,  # DocumentExchangeClient: statuses(), acknowledge()
        verify: Callable[[bytes], Report],
        *,
        on_exchange: ExchangeHook | None = None,
    ) -> None:
        self.sessions, self.exchange, self.verify, self.on_exchange = sessions, exchange, verify, on_exchange

    def poll(self, *, correlation_id: str, limit: int = 100, rounds: int = 20) -> dict[str, int]:
        """Take the notices waiting at the platform: counts by verdict (`later`: left for the next poll;
        `duplicate`: taken before; `unusable`: an item without an id, which cannot be acknowledged). Each list is
        judged, then recorded in one transaction, then acknowledged."""
        counts: Counter[str] = Counter()
        deferred: set[str] = set()  # left for the next poll: not judged again in this one
        for _ in range(rounds):
            items, limit = self._waiting(limit, correlation_id)
            usable = [(i, e) for i, e in items if i and len(i) <= 64 and i not in deferred]
            counts["unusable"] += sum(1 for i, _ in items if not i or len(i) > 64)
            with reading_session(self.sessions) as s:
                seen = set(
                    s.scalars(select(EdocNotice.notice_id).where(EdocNotice.notice_id.in_([i for i, _ in usable])))
                )
            taken, rows = [], []
            for notice_id, encoded in dict(usable).items():  # an id listed twice in one answer is judged once
                if notice_id in seen:
                    counts["duplicate"] += 1
                    taken.append(notice_id)
                    continue
                row = self._judge(notice_id, encoded)
                if row is None:
                    counts["later"] += 1
                    deferred.add(notice_id)
                    continue
                rows.append(row)
                taken.append(notice_id)
            self._match(rows)
            for row in self._record(rows):
                counts[row["verdict"]] += 1
            if taken:
                self.exchange.acknowledge(taken, correlation_id=correlation_id, on_exchange=self.on_exchange)
            if len(items) < limit or not taken:  # all there was, or nothing but what waits for the next poll
                break
        if counts["unusable"]:
            log.warning("the document exchange offered status notices without an id", extra=dict(counts))
        return {k: n for k, n in counts.items() if n}

    def _waiting(self, limit: int, correlation_id: str) -> tuple[list[tuple[str, str]], int]:
        """The notices waiting, at most `limit`; a list too large for hub to read (large notices: B-LT ones carry
        their certificates and revocation evidence) is asked again for half as many, down to one."""
        while True:
            try:
                return self.exchange.statuses(
                    limit=limit, correlation_id=correlation_id, on_exchange=self.on_exchange
                ), limit
            except PeerError as exc:
                if exc.code != REPLY_TOO_LARGE or limit == 1:
                    raise
                limit = max(1, limit // 2)

    def _match(self, rows: list[dict[str, Any]]) -> None:
        """A verified notice counts only about a document hub sent, from one of that document's receivers."""
        verified = [r for r in rows if r["verdict"] == APPLIED]
        if not verified:
            return
        with reading_session(self.sessions) as s:
            sent = {
                d.document_id: d
                for d in s.scalars(
                    select(EdocSent).where(EdocSent.document_id.in_({r["document_id"] for r in verified}))
                )
            }
        for row in verified:
            doc = sent.get(row["document_id"])
            if doc is None or doc.agency != row.pop("_sender"):
                row |= {"verdict": "unknown_document", "detail": "hub sent no document with that id and sender"}
            elif row["receiver"] not in {r["id"] for r in doc.receivers}:
                row |= {"verdict": "not_a_receiver", "detail": f"{row['receiver']} was not sent the document"}
        for row in rows:
            row.pop("_sender", None)

    def _record(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Write the judged notices (one transaction; one by one if another worker took some meanwhile) and say
        what they were; those another worker took first are counted as duplicates."""
        if not rows:
            return []
        try:
            with self.sessions.begin() as s:
                s.execute(insert(EdocNotice), rows)
            written = rows
        except IntegrityError:
            written = []
            for row in rows:
                try:
                    with self.sessions.begin() as s:
                        s.execute(insert(EdocNotice), [row])
                    written.append(row)
                except IntegrityError:
                    written.append(row | {"verdict": "duplicate"})
        for row in written:
            fields = {"notice_id": row["notice_id"], "document_id": row["document_id"], "edoc_status": row["status"]}
            if row["verdict"] == "duplicate":
                continue
            if row["verdict"] != APPLIED:
                log.warning("a status notice was refused", extra=fields | {"verdict": row["verdict"]})
            elif row["status"] == "02":
                log.warning(
                    "a receiving agency refused a document hub sent", extra=fields | {"receiver": row["receiver"]}
                )
            else:
                log.info("status notice applied", extra=fields)
        return written

    def _judge(self, notice_id: str, encoded: str) -> dict[str, Any] | None:
        row: dict[str, Any] = {
            "notice_id": notice_id,
            "document_id": None,
            "receiver": None,
            "receiver_name": None,
            "status": None,
            "description": None,
            "staff": None,
            "stated_at": None,
            "received_at": utcnow(),
            "verdict": "rejected",
            "detail": None,
            "signer": None,
            "envelope": None,
        }
        if len(encoded) > MAX_NOTICE_BYTES * 4 // 3 + 4:
            return row | {"detail": f"larger than {MAX_NOTICE_BYTES} bytes"}
        try:
            data = base64.b64decode("".join(encoded.split()), validate=True)  # lines folded at 76 are fine
        except (binascii.Error, ValueError):
            return row | {"detail": "the envelope is not base64"}
        row["envelope"] = data
        try:
            received = edxml.read_status(data, self.verify)
        except DomainError:  # hub cannot verify at all (no trust anchors): nothing taken, the notices wait
            raise
        except Exception:  # hub's own failure, not the notice's: judged again at the next poll, never refused for
            # it; the notices after it in the list are taken meanwhile
            log.exception("a status notice could not be judged now", extra={"notice_id": notice_id})
            return None
        report = received.report
        row["signer"] = ((report.signer or {}).get("subject") or "")[:500] or None
        if received.notice is None:
            if report.indication == "INDETERMINATE" and report.sub_indication == "TRY_LATER":
                return None  # the signature may well pass once the CA's services answer: asked again next poll
            return row | {"detail": f"{report.indication}/{report.sub_indication}: {report.detail}"[:2000]}
        n = received.notice
        row |= {
            "document_id": n.document_id[:64],
            "receiver": n.author.id,
            "receiver_name": n.author.name[:500],
            "status": n.status,
            "description": n.description or None,
            "staff": ", ".join(x for x in (n.staff, n.department) if x)[:500] or None,
            "stated_at": n.at,
        }
        return row | {"verdict": APPLIED, "_sender": n.sender}  # verified; `_match` says whether it is about ours


HAS_DOCUMENTS = select(EdocSent.id).where(EdocSent.dossier_code == bindparam("code")).limit(1)


def documents_sent(session: Session, dossier_id: int, code: str) -> list[dict[str, Any]]:
    """The documents hub sent for a dossier to other agencies, oldest first — what the API's dossier and the console's
    dossier page both show: each as filed (`edocs_sent`, kept however old), its delivery to the exchange platform
    (its outbox row; a delivered row purged since reads as delivered), the recall hub sent of it, and what each
    receiver reported (their status notices)."""
    from hub.store.models import OutboxMessage

    sent = list(session.scalars(select(EdocSent).where(EdocSent.dossier_code == code).order_by(EdocSent.id)))
    if not sent:
        return []
    rows = session.execute(
        select(
            OutboxMessage.id,
            OutboxMessage.event_id,
            OutboxMessage.operation,
            OutboxMessage.seq,
            OutboxMessage.state,
            OutboxMessage.attempts,
            OutboxMessage.delivered_at,
            OutboxMessage.last_error_code,
            OutboxMessage.peer_reply,
            OutboxMessage.payload["document_id"].as_string().label("document_id"),  # not the signed envelope
        ).where(OutboxMessage.dossier_id == dossier_id, OutboxMessage.destination == DOCUMENT_EXCHANGE)
    ).all()
    deliveries = {r.event_id: r for r in rows if r.operation == SEND_DOCUMENT}
    recalls = {r.document_id: r for r in rows if r.operation == SEND_STATUS}
    said = receivers_say(session, [(x.document_id, x.receivers) for x in sent])

    def delivery(r: Any) -> dict[str, Any]:
        if r is None:  # purged (`hub jobs purge` takes delivered rows only)
            return {"outbox_id": None, "state": "delivered", "attempts": None, "delivered_at": None,
                    "last_error_code": None}  # fmt: skip
        return {
            "outbox_id": r.id,
            "state": r.state,
            "attempts": r.attempts,
            "delivered_at": r.delivered_at.isoformat() if r.delivered_at else None,
            "last_error_code": r.last_error_code,
        }

    out = []
    for x in sent:
        d = deliveries.get(x.event_id)
        out.append(
            {
                "document_id": x.document_id,
                "code": x.code,
                "subject": x.subject,
                "promulgation_date": x.promulgation_date,
                "filed_at": x.created_at.isoformat(),
                "to": x.receivers,
                "seq": d.seq if d is not None else None,
                **delivery(d),
                "platform_status": ((d.peer_reply if d is not None else None) or {}).get("status"),
                "receivers": said.get(x.document_id, []),
                "recall": {
                    "requested_at": x.recall_requested_at.isoformat(),
                    "reason": x.recall_reason,
                    "delivery": delivery(recalls.get(x.document_id)),
                }
                if x.recall_requested_at is not None
                else None,
            }
        )
    return out


def receivers_say(session: Session, documents: list[tuple[str, list[dict[str, Any]]]]) -> dict[str, list[Any]]:
    """For each (document id, its receivers [{id, name}]): per receiver, the latest status it reported (by the
    time it gives) with every applied notice before it — what a dossier's page shows of its documents."""
    codes = edxml.status_codes()
    ids = [d for d, _ in documents]
    notices = list(
        session.scalars(
            select(EdocNotice)
            .where(EdocNotice.document_id.in_(ids), EdocNotice.verdict == APPLIED)
            .order_by(EdocNotice.stated_at, EdocNotice.id)
        )
    ) if ids else []  # fmt: skip
    out: dict[str, list[Any]] = {}
    for document_id, receivers in documents:
        said = []
        for r in receivers:
            history = [
                {
                    "status": n.status,
                    "meaning": codes.get(n.status or "", {}).get("en"),
                    "meaning_vi": codes.get(n.status or "", {}).get("vi"),
                    "at": n.stated_at.isoformat() if n.stated_at else None,
                    "description": n.description,
                    "staff": n.staff,
                    "signer": n.signer,
                    "received_at": n.received_at.isoformat(),
                }
                for n in notices
                if n.document_id == document_id and n.receiver == r.get("id")
            ]
            latest = history[-1] if history else {}
            said.append(
                {
                    "id": r.get("id"),
                    "name": r.get("name"),
                    "status": latest.get("status"),
                    "meaning": latest.get("meaning"),
                    "meaning_vi": latest.get("meaning_vi"),
                    "at": latest.get("at"),
                    "final": bool(codes.get(latest.get("status") or "", {}).get("final")),
                    "history": history,
                }
            )
        out[document_id] = said
    return out


def attention(session: Session, *, limit: int = 100) -> dict[str, list[dict[str, Any]]]:
    """What an operator looks at: documents a receiver refused (02) or would not give back (16), newest first, and
    the notices hub refused (forged, unsigned, about documents it did not send, from agencies it did not send to)."""
    codes = edxml.status_codes()
    answers = session.execute(
        select(EdocNotice, EdocSent)
        .join(EdocSent, EdocSent.document_id == EdocNotice.document_id)
        .where(EdocNotice.verdict == APPLIED, EdocNotice.status.in_(("02", "16")))
        .order_by(EdocNotice.id.desc())
        .limit(limit)
    ).all()
    refused_by_receivers = [
        {
            "dossier_code": sent.dossier_code,
            "code": sent.code,
            "subject": sent.subject,
            "receiver": n.receiver,
            "receiver_name": n.receiver_name,
            "status": n.status,
            "meaning_vi": codes.get(n.status or "", {}).get("vi"),
            "meaning": codes.get(n.status or "", {}).get("en"),
            "description": n.description,
            "at": n.stated_at,
        }
        for n, sent in answers
    ]
    refused_notices = [
        {
            "notice_id": n.notice_id,
            "received_at": n.received_at,
            "verdict": n.verdict,
            "detail": n.detail,
            "signer": n.signer,
            "receiver": n.receiver,
            "document_id": n.document_id,
            "status": n.status,
        }
        for n in session.scalars(
            select(EdocNotice).where(EdocNotice.verdict != APPLIED).order_by(EdocNotice.id.desc()).limit(limit)
        )
    ]
    return {"refused_by_receivers": refused_by_receivers, "refused_notices": refused_notices}
