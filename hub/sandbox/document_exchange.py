"""Sandbox of the inter-agency document exchange platform (contracts/document_exchange): it takes edXML envelopes
(contracts/edxml/edxml.xsd) only when signed by the sending agency — it verifies each one against the trust
anchors it was given, with revocation, as a real platform would — and keeps what it received (readable over
HTTP). A repeated Idempotency-Key gets the first reply. Fault knobs as every sandbox."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline

from hub.sandbox.common import PeerState, add_control_routes, apply_faults
from hub.signing import edxml
from hub.signing.revocation import RevocationSource
from hub.signing.verify import Verifier
from hub.signing.xml import UnsafeXml, parse_untrusted

MAX_ENVELOPE = 20 * 1024 * 1024


@dataclass
class ExchangeState(PeerState):
    api_keys: set[str] = field(default_factory=set)
    receivers: set[str] | None = None  # agency codes the platform knows; None: any
    documents: list[dict[str, Any]] = field(default_factory=list)


def create_app(anchors: list[x509.Certificate], api_keys: set[str], state: ExchangeState | None = None) -> FastAPI:
    st = state or ExchangeState()
    st.api_keys.update(api_keys)
    verifier = Verifier(anchors, revocation=RevocationSource(read_timeout=5))
    app = FastAPIOffline(redoc_url=None, title="Sandbox: document exchange platform (edXML)", docs_url="/_sandbox/docs")
    app.state.peer = st
    add_control_routes(app, st, extra_reset=st.documents.clear)

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
        reply = await _judge(body)
        with st.lock:
            if key is not None and reply["error_code"] == 0:
                st.replies_by_key[key] = (digest, reply)
            st.record("send_edoc", key, digest, "applied" if reply["error_code"] == 0 else "rejected", reply)
        return JSONResponse(reply)

    async def _judge(body: bytes) -> dict[str, Any]:
        if len(body) > MAX_ENVELOPE:
            return answer(3, "envelope too large")
        try:
            root = parse_untrusted(body)
        except UnsafeXml as exc:
            return answer(3, f"not an edXML envelope: {exc}")
        if root.find(f".//{{{edxml.DS}}}Signature") is None:
            return answer(1, "văn bản chưa được ký số (the envelope is not signed)")
        from starlette.concurrency import run_in_threadpool

        received = await run_in_threadpool(edxml.read, body, verifier.verify)
        report = received.report
        if received.header is None:
            code = 3 if report.sub_indication == "FORMAT_FAILURE" and report.signer is not None else 2
            return answer(code, f"chữ ký số không hợp lệ: {report.indication}/{report.sub_indication}: {report.detail}")
        receivers = {t["id"] for t in received.header["to"]}
        if st.receivers is not None and not receivers <= st.receivers:
            return answer(4, f"unknown receiver {sorted(receivers - st.receivers)}")
        signer = (report.signer or {}).get("subject", "")
        with st.lock:
            st.documents.append(
                {
                    "header": received.header,
                    "signature_format": report.signature_format,
                    "signer": signer,
                    "timestamp": (report.timestamp or {}).get("time"),
                }
            )
        return answer(0, "Đã tiếp nhận", status="01", document_id=received.header["document_id"], signer=signer)

    @app.get("/_sandbox/documents")
    def documents() -> dict[str, Any]:
        return {"count": len(st.documents), "items": st.documents}

    return app
