"""Message builders for tests (realistic civil-status dossiers, progress steps)."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx

from hub.sandbox.one_stop import make_dossier, make_progress
from tests.conftest import AGENCY, Hub, HubFactory

_rng = random.Random(42)


def dossier(seq: int = 1, *, status: int = 2, agency: str = AGENCY, **fields: Any) -> dict[str, Any]:
    d = make_dossier(agency, seq, _rng, status=status)
    d.update(fields)
    return d


def step(code: str, status: int, note: str = "Xử lý hồ sơ") -> dict[str, Any]:
    return make_progress(code, status, note)


def as_one_stop_writes_it(d: dict[str, Any]) -> dict[str, Any]:
    """A dossier as OpenCPS builds it: the portal's codes as strings, "" where it has no value, fields of its own."""
    return {
        **d,
        "TrangThaiHoSo": str(d["TrangThaiHoSo"]),
        "KenhThucHien": str(d["KenhThucHien"]),
        "LoaiDoiTuong": str(d["LoaiDoiTuong"]),
        "HinhThuc": "0",
        "NgayTra": "",
        "ThongTinTra": "",
        "NgayKetThucXuLy": "",
        "MaDoiTuong": "",
        "Fax": "",
        "ThongTinKhac": "",
        "DanhSachTepDinhKemKhac": [],
    }


def exchanges(hub: Hub, peer: str) -> list[tuple[str, str, str, str | None, bool]]:
    """The exchange record's rows with `peer`: (operation, correlation id, outcome, error code, answer digested)."""
    from sqlalchemy import select

    from hub.store.models import Exchange

    with hub.runtime.sessions() as s:
        rows = s.scalars(select(Exchange).where(Exchange.peer == peer).order_by(Exchange.id)).all()
        return [(r.operation, r.correlation_id, r.outcome, r.error_code, r.response_digest is not None) for r in rows]


def waiting_out_a_backoff(hub_factory: HubFactory, portal: httpx.Client) -> tuple[Hub, dict[str, Any]]:
    """A dossier whose first delivery the portal answered HTTP 500: it waits two minutes for its next attempt."""
    portal.post("/_sandbox/faults", json={"storm_5xx": 1}).raise_for_status()
    hub = hub_factory(relay_backoff_base=120.0, relay_backoff_cap=600.0)
    d = dossier(7)
    assert hub.http.post("/v1/dossiers", json=d).status_code == 202
    deadline = time.monotonic() + 15
    while True:
        job = hub.http.get(f"/v1/dossiers/{d['MaHoSo']}").json()["events"][0]["deliveries"][0]
        if job["attempts"] == 1 and job["state"] == "pending":
            return hub, d
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def console_as(hub: Hub, user: str, role: str) -> httpx.Client:
    """An operator account of that role, signed in to hub's console (an HTTP client holding the session)."""
    import re
    import secrets

    from hub.console.auth import Operators

    password = secrets.token_urlsafe(16)
    Operators(hub.runtime.sessions).add(user, password, role)
    console = httpx.Client(base_url=str(hub.http.base_url))
    csrf = re.search(r'name="csrf" value="([^"]+)"', console.get("/ops/login").text)
    assert csrf is not None
    login = {"csrf": csrf.group(1), "username": user, "password": password}
    assert console.post("/ops/login", data=login).status_code == 303
    return console


def console_search(console: httpx.Client, q: str) -> httpx.Response:
    """The console's dossier search as its form sends it (a POST with the page's CSRF token): a personal ID stays
    out of URLs."""
    import re

    csrf = re.search(r'name="csrf" value="([^"]+)"', console.get("/ops/dossiers").text)
    assert csrf is not None
    return console.post("/ops/dossiers", data={"csrf": csrf.group(1), "q": q})


@contextmanager
def dropping_peer(drops: int, content_type: bytes, body: bytes) -> Iterator[tuple[str, list[bytes]]]:
    """A peer on loopback that closes its first `drops` connections without a word once it has read the request
    (as a kept-alive connection closed under its client ends), then answers `body`; it takes two connections at
    most. Yields its base URL and the requests it read (head and body, whole)."""
    listener = socket.create_server(("127.0.0.1", 0))
    requests: list[bytes] = []

    def read_request(conn: socket.socket) -> bytes:
        got = b""
        while b"\r\n\r\n" not in got and (chunk := conn.recv(65536)):
            got += chunk
        head, _, rest = got.partition(b"\r\n\r\n")
        sizes = [line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
        length = int(sizes[0]) if sizes else 0
        while len(rest) < length and (chunk := conn.recv(65536)):
            rest += chunk
        return head + b"\r\n\r\n" + rest

    def serve() -> None:
        for _ in range(2):
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                requests.append(read_request(conn))
                if len(requests) <= drops:
                    continue  # closed without a response
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type + b"\r\nContent-Length: "
                             + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)  # fmt: skip

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", requests
    finally:
        listener.close()
        server.join(timeout=5)


def portal_cli_env(hub: Hub, var_dir: Path) -> dict[str, str]:
    """The environment a `hub` command (`hub reconcile`, `hub poll`) runs in beside this hub: its database, and the
    portal with its credentials."""
    settings = hub.settings
    password = settings.national_portal_password.get_secret_value() if settings.national_portal_password else ""
    return {
        "HUB_DATABASE_URL": settings.effective_database_url,
        "HUB_VAR_DIR": str(var_dir),
        "HUB_NATIONAL_PORTAL_URL": settings.national_portal_url,
        "HUB_NATIONAL_PORTAL_USERNAME": settings.national_portal_username,
        "HUB_NATIONAL_PORTAL_PASSWORD": password,
    }


@contextmanager
def outage(sandbox: httpx.Client, seconds: float = 30) -> Iterator[None]:
    """A sandbox peer down for the block (every call answered 503, as its `outage_seconds` knob does), back after."""
    sandbox.post("/_sandbox/faults", json={"outage_seconds": seconds}).raise_for_status()
    try:
        yield
    finally:
        sandbox.post("/_sandbox/faults", json={"outage_seconds": 0}).raise_for_status()


def a_failed_poll(hub: Hub, portal: httpx.Client) -> None:
    """The scheduled poll of the portal run while the portal is down: a failed run, recorded as such."""
    from hub.adapters.errors import PeerError

    with outage(portal), suppress(PeerError):  # failed either way: raised, or done with the errors counted
        hub.runtime.poll_portal()
