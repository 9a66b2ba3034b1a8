"""What every sandbox peer shares: runtime fault knobs, an idempotency store, a record of what was received,
and running a server on loopback in a background thread."""

from __future__ import annotations

import asyncio
import errno
import math
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response


@dataclass
class Faults:
    """Fault-injection knobs, changed at runtime with POST /_sandbox/faults."""

    latency_ms: float = 0.0  # added to every call
    error_rate: float = 0.0  # fraction of calls answered 503
    storm_5xx: int = 0  # the next N calls are answered 500
    outage_seconds: float = 0.0  # set: every call is answered 503 for this long from now
    outage_until: float = 0.0
    timeout_rate: float = 0.0  # fraction of calls that hang for hang_seconds (past the client's timeout)
    hang_seconds: float = 30.0
    fail_after_apply_rate: float = 0.0  # fraction of calls applied but answered 500 (tests exactly-once)
    malformed_rate: float = 0.0  # fraction of replies that are not JSON
    session_ttl: float = 3600.0  # national portal: lifetime of a session
    rate_limit_seconds: float = 0.0  # set: every call is answered 429 with Retry-After for this long from now
    rate_limit_until: float = 0.0
    rate_limited: int = 0  # calls answered 429 since the last reset (read it back with GET /_sandbox/faults)
    string_error_codes: bool = False  # replies' error_code written as two digits, "00", as deployed portals do
    catalogue_as_portal: bool = False  # national portal: LayDanhSachTTHC in `result`, upper-case names (LayThuTuc's)
    # SMS gateway: texts containing this are refused for good (error_code 3), as a brandname gateway refuses a text
    # that matches no template registered with the carriers
    refuse_text: str = ""

    def update(self, changes: dict[str, Any]) -> None:
        for key, value in changes.items():
            if key == "outage_seconds":
                self.outage_until = time.time() + float(value)
            if key == "rate_limit_seconds":
                self.rate_limit_until = time.time() + float(value)
            if hasattr(self, key):
                setattr(self, key, type(getattr(self, key))(value))


@dataclass
class Received:
    at: float
    operation: str
    idempotency_key: str | None
    body: Any
    outcome: str  # applied | duplicate | rejected | fault
    reply: Any


@dataclass
class PeerState:
    faults: Faults = field(default_factory=Faults)
    received: list[Received] = field(default_factory=list)
    replies_by_key: dict[str, tuple[str, Any]] = field(default_factory=dict)  # key -> (body digest, reply)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, operation: str, key: str | None, body: Any, outcome: str, reply: Any) -> None:
        self.received.append(Received(time.time(), operation, key, body, outcome, reply))


def rate_limited(state: PeerState) -> str | None:
    """While the `rate_limit_seconds` knob runs: this call is counted as refused, and the Retry-After to answer it
    with (whole seconds left, rounded up) is returned; None otherwise. Each sandbox words its own 429."""
    left = state.faults.rate_limit_until - time.time()
    if left <= 0:
        return None
    with state.lock:
        state.faults.rate_limited += 1
    return str(math.ceil(left))


async def apply_faults(state: PeerState) -> Response | None:
    """Sleep or fail as the knobs say; None means go on and handle the call."""
    f = state.faults
    if f.latency_ms:
        await asyncio.sleep(f.latency_ms / 1000)
    if f.outage_until > time.time():
        return JSONResponse({"error_code": 99, "message": "sandbox outage"}, status_code=503)
    if (wait := rate_limited(state)) is not None:
        return JSONResponse(
            {"error_code": 99, "message": "sandbox rate limit"}, status_code=429, headers={"Retry-After": wait}
        )
    with state.lock:
        if f.storm_5xx > 0:
            f.storm_5xx -= 1
            return JSONResponse({"error_code": 99, "message": "sandbox 5xx storm"}, status_code=500)
    if f.error_rate and random.random() < f.error_rate:
        return JSONResponse({"error_code": 99, "message": "sandbox injected error"}, status_code=503)
    if f.timeout_rate and random.random() < f.timeout_rate:
        await asyncio.sleep(f.hang_seconds)
    if f.malformed_rate and random.random() < f.malformed_rate:
        return Response(b"<html>502 Bad Gateway</html>", status_code=200, media_type="application/json")
    return None


def add_control_routes(app: FastAPI, state: PeerState, extra_reset: Any = None) -> None:
    """GET /_sandbox/received, POST /_sandbox/faults, POST /_sandbox/reset. A request whose body the sandbox
    cannot take (not JSON, nested too deeply, a field missing or of the wrong type) is answered 400, not 500."""

    async def bad_input(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": "bad_request", "detail": f"{exc.__class__.__name__}: {exc}"[:300]}, 400)

    for kind in (ValueError, KeyError, TypeError, RecursionError):
        app.add_exception_handler(kind, bad_input)

    @app.get("/_sandbox/received")
    def received(operation: str | None = None, outcome: str | None = None, since: int = 0) -> dict[str, Any]:
        rows = [
            {"index": i, **asdict(r)}
            for i, r in enumerate(state.received[since:], start=since)
            if (operation is None or r.operation == operation) and (outcome is None or r.outcome == outcome)
        ]
        return {"count": len(rows), "items": rows}

    @app.get("/_sandbox/faults")
    def get_faults() -> dict[str, Any]:
        return asdict(state.faults)

    @app.post("/_sandbox/faults")
    async def set_faults(request: Request) -> dict[str, Any]:
        state.faults.update(await request.json())
        return asdict(state.faults)

    @app.post("/_sandbox/reset")
    def reset() -> dict[str, str]:
        with state.lock:
            state.faults = type(state.faults)()
            state.received.clear()
            state.replies_by_key.clear()
            if extra_reset is not None:
                extra_reset()
        return {"status": "reset"}


class PortsInUse(Exception):
    """Ports a server was asked to listen on that something else holds already (another `hub sandbox` or
    `hub serve`, usually): said before anything starts, so nothing is left half-running."""

    def __init__(self, host: str, taken: list[tuple[str, int]]) -> None:
        self.host, self.taken = host, taken
        super().__init__(", ".join(f"{name} {host}:{port}" for name, port in taken))


def ports_in_use(host: str, wanted: dict[str, int]) -> list[tuple[str, int]]:
    """Which of `wanted` (name → port; 0 = any, never taken) cannot be listened on now. The check binds as uvicorn
    will (SO_REUSEADDR), so a port left in TIME_WAIT by a server that just stopped counts as free."""
    taken: list[tuple[str, int]] = []
    for name, port in wanted.items():
        if not port:
            continue
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                taken.append((name, port))
    return taken


class ServerThread:
    """A uvicorn server on loopback in a daemon thread (for `hub sandbox`, the demo and tests)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, **tls: Any) -> None:
        """`tls`: uvicorn's ssl_* options (ssl_certfile, ssl_keyfile, ssl_ca_certs, ssl_cert_reqs): served over HTTPS,
        as a peer on the government's network is, with mutual TLS when client certificates are required."""
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off", **tls)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True, name=f"sandbox-{port}")
        self.host = host
        self.scheme = "https" if tls.get("ssl_certfile") else "http"

    def start(self, timeout: float = 10.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("sandbox server did not start")
            time.sleep(0.01)
        return self

    @property
    def port(self) -> int:
        sock = self.server.servers[0].sockets[0]
        return int(sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def stop(self, *, wait: bool = True) -> None:
        """Ask the server to exit; `wait`: until it has (uvicorn takes ~0.15 s: its main loop looks every 0.1 s,
        then it gives open connections 0.1 s)."""
        self.server.should_exit = True
        if wait:
            self.thread.join(timeout=10)


def send_copies(send: Callable[[], Any], copies: int, *, concurrent: bool) -> list[Any]:
    """Call `send` `copies` times, one after another or all at once (threads released together by a barrier),
    and return what each call answered: how the payment sandboxes replay a callback on demand."""
    if not concurrent:
        return [send() for _ in range(copies)]
    results: list[Any] = []
    lock = threading.Lock()
    barrier = threading.Barrier(copies)

    def one() -> None:
        barrier.wait()
        answer = send()
        with lock:
            results.append(answer)

    threads = [threading.Thread(target=one) for _ in range(copies)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results
