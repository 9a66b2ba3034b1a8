"""Sandbox of the inter-agency document exchange platform (contracts/document_exchange): it takes edXML envelopes
(contracts/edxml/edxml.xsd) only when signed by the sending agency — it verifies each one against the trust
anchors it was given, with revocation, as a real platform would — and keeps what it received (readable over
HTTP). A repeated Idempotency-Key gets the first reply. Fault knobs as every sandbox.

Status notices (contracts/document_exchange/status_list.schema.json): each receiver's system says "01 arrived" when
a document is accepted; later statuses (accepted, being handled, done, refused …) are made on demand with
`POST /_sandbox/documents/{document_id}/status`, signed as the receiver with the `notary` key; anything at all can
be queued with `POST /_sandbox/notices` (forged, unsigned, garbage: what a hostile or broken platform sends). The
sender takes them with `POST /api/edoc/status/list` and acknowledges with `POST /api/edoc/status/ack`; what it has not
acknowledged is offered again."""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from cryptography import x509
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool

from hub.sandbox.common import PeerState, add_control_routes, apply_faults
from hub.signing import edxml
from hub.signing.revocation import RevocationSource
from hub.signing.sign import Signer
from hub.signing.verify import Verifier
from hub.signing.xml import UnsafeXml, parse_untrusted

MAX_ENVELOPE = 20 * 1024 * 1024


@dataclass
class ExchangeState(PeerState):
    api_keys: set[str] = field(default_factory=set)
    receivers: set[str] | None = None  # agency codes the platform knows; None: any
    documents: list[dict[str, Any]] = field(default_factory=list)
    notices: list[dict[str, Any]] = field(default_factory=list)  # {id, key, envelope (bytes)}, oldest first
    acknowledged: set[str] = field(default_factory=set)
    notary: Signer | None = None  # the receivers' key: signs their status notices
    last_status: dict[tuple[str, str], str] = field(default_factory=dict)  # (document id, receiver) -> code
    recalls: list[dict[str, Any]] = field(default_factory=list)
    auto_arrived: bool = True  # each receiver says "01 Đã đến" when a document is accepted

    def queue(self, key: str, envelope: bytes, wire: str | None = None) -> str:
        notice_id = uuid.uuid4().hex
        with self.lock:
            self.notices.append({"id": notice_id, "key": key, "envelope": envelope, "wire": wire})
        return notice_id

    def notice(self, document: dict[str, Any], receiver: dict[str, str], status: str, **more: Any) -> str:
        """Sign and queue `receiver`'s status notice about `document` (as it was received)."""
        if self.notary is None:
            raise RuntimeError("the sandbox has no key to sign status notices with")
        header = document["header"]
        when = more.pop("at", None) or datetime.now().astimezone()
        notice = edxml.StatusNotice(
            sender=header["from"]["id"],
            document_code=header["code"],
            promulgation_date=date.fromisoformat(header["promulgation_date"]),
            document_id=header["document_id"],
            author=edxml.Organ(receiver["id"], receiver["name"]),
            status=status,
            at=when,
            **more,
        )
        signed = edxml.sign_status(notice, self.notary)
        with self.lock:
            self.last_status[(header["document_id"], receiver["id"])] = status
        return self.queue(document["key"], signed)


def create_app(
    anchors: list[x509.Certificate],
    api_keys: set[str],
    state: ExchangeState | None = None,
    *,
    notary: Signer | None = None,
) -> FastAPI:
    st = state or ExchangeState()
    st.notary = notary or st.notary
    st.api_keys.update(api_keys)
    verifier = Verifier(anchors, revocation=RevocationSource(read_timeout=5))
    app = FastAPIOffline(redoc_url=None, title="Sandbox: document exchange platform (edXML)", docs_url="/_sandbox/docs")
    app.state.peer = st

    def forget() -> None:
        st.documents.clear()
        st.notices.clear()
        st.acknowledged.clear()
        st.last_status.clear()
        st.recalls.clear()

    add_control_routes(app, st, extra_reset=forget)

    def answer(code: int, message: str, **extra: Any) -> dict[str, Any]:
        return {"error_code": code, "message": message, **extra}

    @app.post("/api/edoc/send")
    async def send(request: Request) -> Response:
        fault = await apply_faults(st)
        if fault is not None:
            return fault
        if request.headers.get("X-API-Key") not in st.api_keys:
            return JSONResponse(answer(5, "API key không hợp lệ"))
        body = await request.body()
        key = request.headers.get("Idempotency-Key")
        digest = hashlib.sha256(body).hexdigest()
        with st.lock:
            if key is not None and key in st.replies_by_key:
                st.record("send_edoc", key, digest, "duplicate", st.replies_by_key[key][1])
                return JSONResponse(st.replies_by_key[key][1])
        reply = await _judge(body, request.headers["X-API-Key"])
        with st.lock:
            if key is not None and reply["error_code"] == 0:
                st.replies_by_key[key] = (digest, reply)
            st.record("send_edoc", key, digest, "applied" if reply["error_code"] == 0 else "rejected", reply)
        return JSONResponse(reply)

    async def _judge(body: bytes, api_key: str) -> dict[str, Any]:
        if len(body) > MAX_ENVELOPE:
            return answer(3, "envelope too large")
        try:
            root = parse_untrusted(body)
        except UnsafeXml as exc:
            return answer(3, f"not an edXML envelope: {exc}")
        if root.find(f".//{{{edxml.DS}}}Signature") is None:
            return answer(1, "văn bản chưa được ký số (the envelope is not signed)")
        if root.find("edXML:edXMLEnvelope/edXML:edXMLHeader/edXML:Status", edxml.NS) is not None:
            return await _judge_status(body, api_key)
        received = await run_in_threadpool(edxml.read, body, verifier.verify)
        report = received.report
        if received.header is None:
            code = 3 if report.sub_indication == "FORMAT_FAILURE" and report.signer is not None else 2
            return answer(code, f"chữ ký số không hợp lệ: {report.indication}/{report.sub_indication}: {report.detail}")
        receivers = {t["id"] for t in received.header["to"]}
        if st.receivers is not None and not receivers <= st.receivers:
            return answer(4, f"unknown receiver {sorted(receivers - st.receivers)}")
        signer = (report.signer or {}).get("subject", "")
        document = {
            "header": received.header,
            "signature_format": report.signature_format,
            "signer": signer,
            "timestamp": (report.timestamp or {}).get("time"),
            "key": api_key,
        }
        with st.lock:
            st.documents.append(document)
        if st.auto_arrived and st.notary is not None:
            for receiver in received.header["to"]:
                await run_in_threadpool(st.notice, document, receiver, "01", description="Văn bản đã đến")
        return answer(0, "Đã tiếp nhận", status="01", document_id=received.header["document_id"], signer=signer)

    async def _judge_status(body: bytes, api_key: str) -> dict[str, Any]:
        """A status package from a sender: only a recall (13) of a document it sent, signed by it. Each receiver's
        system answers at once: 15 (agreed), or 16 (refused) when it has finished with the document (06)."""
        received = await run_in_threadpool(edxml.read_status, body, verifier.verify)
        report, notice = received.report, received.notice
        if notice is None:
            code = 3 if report.sub_indication == "FORMAT_FAILURE" and report.signer is not None else 2
            return answer(code, f"chữ ký số không hợp lệ: {report.indication}/{report.sub_indication}: {report.detail}")
        with st.lock:
            found = [
                d for d in st.documents
                if d["header"]["document_id"] == notice.document_id and d["key"] == api_key
                and d["header"]["from"]["id"] == notice.sender == notice.author.id
            ]  # fmt: skip
        if not found:
            return answer(4, f"unknown document {notice.document_id} from {notice.author.id}")
        if notice.status != "13":
            return answer(3, f"a sender may only recall (13) a document, not send status {notice.status}")
        document = found[-1]
        with st.lock:
            st.recalls.append({"document_id": notice.document_id, "reason": notice.description})
        for receiver in document["header"]["to"] if st.notary is not None else []:  # no key: no receiver answers
            done = st.last_status.get((notice.document_id, receiver["id"])) == "06"
            answer_code, said = ("16", "Đã xử lý xong, không thể lấy lại") if done else ("15", "Đồng ý trả lại văn bản")
            await run_in_threadpool(st.notice, document, receiver, answer_code, description=said)
        return answer(0, "Đã tiếp nhận", status="13", document_id=notice.document_id)

    @app.get("/_sandbox/recalls")
    def recalls() -> dict[str, Any]:
        return {"count": len(st.recalls), "items": st.recalls}

    @app.get("/_sandbox/documents")
    def documents() -> dict[str, Any]:
        return {"count": len(st.documents), "items": [{k: v for k, v in d.items() if k != "key"} for d in st.documents]}

    # -- status notices ------------------------------------------------------------------------------------------

    async def caller(request: Request) -> tuple[Response | None, str, dict[str, Any]]:
        """(an answer already — a fault, a refused key —, the caller's key, its JSON body or {})."""
        fault = await apply_faults(st)
        if fault is not None:
            return fault, "", {}
        key = request.headers.get("X-API-Key", "")
        if key not in st.api_keys:
            return JSONResponse(answer(5, "API key không hợp lệ")), key, {}
        try:
            asked = await request.json()
        except ValueError:
            asked = {}
        return None, key, asked if isinstance(asked, dict) else {}

    @app.post("/api/edoc/status/list")
    async def status_list(request: Request) -> Response:
        done, key, asked = await caller(request)
        if done is not None:
            return done
        limit = asked.get("limit", 100)
        limit = max(1, min(limit if isinstance(limit, int) else 100, 500))
        with st.lock:
            waiting = [n for n in st.notices if n["key"] == key and n["id"] not in st.acknowledged][:limit]
        items = [
            {"id": n["id"], "envelope": n.get("wire") or base64.b64encode(n["envelope"]).decode()} for n in waiting
        ]
        return JSONResponse(answer(0, "", items=items))

    @app.post("/api/edoc/status/ack")
    async def status_ack(request: Request) -> Response:
        done, key, asked = await caller(request)
        if done is not None:
            return done
        ids = asked.get("ids", [])
        ids = ids if isinstance(ids, list) else []
        with st.lock:
            mine = {n["id"] for n in st.notices if n["key"] == key}
            taken = [i for i in ids if isinstance(i, str) and i in mine and i not in st.acknowledged]
            st.acknowledged.update(taken)
        return JSONResponse(answer(0, "", acknowledged=len(taken)))

    @app.post("/_sandbox/documents/{document_id}/status")
    async def make_status(document_id: str, request: Request) -> Response:
        """A receiver's system says what became of a document: {"status": "03", "receiver": "000.00.01.G01"
        (default: the first), "description", "staff", "department", "at" (ISO 8601, default now)}."""
        asked = await request.json()
        with st.lock:
            found = [d for d in st.documents if d["header"]["document_id"] == document_id]
        if not found:
            return JSONResponse({"detail": "unknown document"}, status_code=404)
        document = found[-1]
        receivers = document["header"]["to"]
        receiver = next((r for r in receivers if r["id"] == asked.get("receiver", receivers[0]["id"])), None)
        if receiver is None:
            return JSONResponse({"detail": "not a receiver of that document"}, status_code=422)
        more = {k: asked[k] for k in ("description", "staff", "department") if k in asked}
        try:
            if "at" in asked:
                more["at"] = datetime.fromisoformat(asked["at"])
            notice_id = await run_in_threadpool(st.notice, document, receiver, str(asked["status"]), **more)
        except (ValueError, KeyError) as exc:  # EdxmlError is a ValueError: a code the contract does not have
            return JSONResponse({"detail": str(exc)}, status_code=422)
        return JSONResponse({"id": notice_id}, status_code=201)

    @app.post("/_sandbox/notices")
    async def queue_raw(request: Request) -> Response:
        """Queue anything as a notice for the sender with API key `key`: {"key", "envelope" (base64)}, or
        {"key", "wire"}: the text to send as the notice's `envelope` field as it is (not even base64)."""
        asked = await request.json()
        wire = str(asked["wire"]) if "wire" in asked else None
        notice_id = st.queue(asked["key"], base64.b64decode(asked.get("envelope", "")), wire)
        return JSONResponse({"id": notice_id}, status_code=201)

    return app
