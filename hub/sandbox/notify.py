"""Sandboxes for citizen notifications: a real SMTP server on loopback (aiosmtpd) that keeps what it receives,
and an SMS gateway (contracts/sms_gateway) with an API key, idempotency by `Idempotency-Key` and fault knobs."""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import socket
import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from typing import Any

from aiosmtpd.controller import Controller
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline

from hub.adapters.http import parse_json
from hub.sandbox import contracts
from hub.sandbox.common import PeerState, add_control_routes, apply_faults


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        msg = message_from_bytes(envelope.content, policy=policy.default)
        with self.lock:
            self.messages.append(
                {
                    "from": envelope.mail_from,
                    "to": list(envelope.rcpt_tos),
                    "subject": str(msg["Subject"]),
                    "message_id": str(msg["Message-ID"]),
                    "body": msg.get_body(preferencelist=("plain",)).get_content(),  # type: ignore[union-attr]
                }
            )
        return "250 OK"


class SmtpSink:
    """A real SMTP server on 127.0.0.1 (any free port) that keeps every message it accepts. `credentials`: the
    user names and passwords it takes (AUTH PLAIN/LOGIN, over plain loopback), and then it requires them, as a
    province's mail relay does."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, credentials: dict[str, str] | None = None) -> None:
        logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs addresses at INFO
        if port == 0:
            with socket.socket() as s:
                s.bind((host, 0))
                port = int(s.getsockname()[1])
        self.inbox = _Inbox()
        auth: dict[str, Any] = {}
        if credentials is not None:
            from aiosmtpd.smtp import AuthResult, LoginPassword

            def authenticator(_server: Any, _session: Any, _envelope: Any, _mechanism: str, data: Any) -> Any:
                ok = isinstance(data, LoginPassword) and secrets.compare_digest(
                    credentials.get(data.login.decode(errors="replace"), "\0").encode(), bytes(data.password)
                )
                return AuthResult(success=ok, handled=False)

            auth = {"authenticator": authenticator, "auth_required": True, "auth_require_tls": False}
        self.controller = Controller(self.inbox, hostname=host, port=port, **auth)
        self.host, self.port = host, port

    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    @property
    def messages(self) -> list[dict[str, Any]]:
        with self.inbox.lock:
            return list(self.inbox.messages)

    def clear(self) -> None:
        with self.inbox.lock:
            self.inbox.messages.clear()


@dataclass
class SmsState(PeerState):
    api_keys: set[str] = field(default_factory=set)
    sent: list[dict[str, Any]] = field(default_factory=list)


def create_sms_app(api_keys: set[str], state: SmsState | None = None, mail: SmtpSink | None = None) -> FastAPI:
    """The SMS gateway; with `mail`, it also shows what the SMTP sandbox received (`GET /_sandbox/mail`)."""
    st = state or SmsState()
    st.api_keys.update(api_keys)
    app = FastAPIOffline(redoc_url=None, title="Sandbox: SMS gateway", docs_url="/_sandbox/docs")
    app.state.peer = st
    add_control_routes(app, st, extra_reset=st.sent.clear)

    @app.post("/api/sms")
    async def send(request: Request) -> Response:
        fault = await apply_faults(st)
        if fault is not None:
            return fault
        if request.headers.get("X-API-Key") not in st.api_keys:
            return JSONResponse({"error_code": 1, "message": "API key không hợp lệ"}, status_code=401)
        try:
            body = parse_json(await request.body())
        except ValueError:
            body = None
        problems = ["not JSON"] if body is None else contracts.errors("sms_gateway/send.schema.json", body)
        if problems:
            return JSONResponse({"error_code": 3, "message": "; ".join(problems)})
        if st.faults.refuse_text and st.faults.refuse_text in str(body.get("message")):
            reply = {"error_code": 3, "message": "Nội dung không khớp mẫu tin nhắn đã đăng ký"}
            st.record("sms", request.headers.get("Idempotency-Key"), body, "rejected", reply)
            return JSONResponse(reply)
        key = request.headers.get("Idempotency-Key")
        digest = hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        with st.lock:
            if key is not None and key in st.replies_by_key:
                st.record("sms", key, body, "duplicate", st.replies_by_key[key][1])
                return JSONResponse(st.replies_by_key[key][1])
            reply = {"error_code": 0, "message": "Đã gửi", "message_id": secrets.token_hex(8)}
            if key is not None:
                st.replies_by_key[key] = (digest, reply)
            st.sent.append(body)
            st.record("sms", key, body, "applied", reply)
        return JSONResponse(reply)

    @app.get("/_sandbox/sms")
    def sms() -> dict[str, Any]:
        return {"count": len(st.sent), "items": st.sent}

    if mail is not None:

        @app.get("/_sandbox/mail")
        def mails() -> dict[str, Any]:
            items = mail.messages
            return {"count": len(items), "items": items}

    return app
