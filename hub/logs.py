"""Structured JSON logs on stderr, with the correlation id of the current request."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

_STD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
# The id of the request (or of the message being delivered) that the current code works for.
correlation_id: contextvars.ContextVar[str] = contextvars.ContextVar("correlation_id", default="-")
# Where the current request's time went besides hub's own work (the register, the durable journal), in seconds by
# part: the API reports it in its Server-Timing header beside `app`, the whole.
timings: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar("timings", default=None)


class spent:  # noqa: N801 - used as a context manager, like a function
    """`with spent("register"): ...` adds the block's time to the current request's part of that name."""

    __slots__ = ("name", "started")

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = 0.0

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        parts = timings.get()
        if parts is not None:
            parts[self.name] = parts.get(self.name, 0.0) + time.perf_counter() - self.started


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        cid = correlation_id.get()
        if cid != "-":
            out["correlation_id"] = cid
        out.update({k: v for k, v in vars(record).items() if k not in _STD and not k.startswith("_")})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "uvicorn.access", "alembic.runtime.plugins", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # pyHanko logs each certificate it could not validate and each signature it skips, with a traceback; the
    # validation report says it
    logging.getLogger("pyhanko").setLevel(logging.ERROR)


class Outage:
    """A dependency that stops answering (the database, the broker), as a log says it: once when it starts and
    then once a minute while it lasts, and once when it is back — not on every retry of a loop that ticks each
    second. Thread-safe enough for its use: one loop per instance."""

    def __init__(self, logger: logging.Logger, what: str, *, every: float = 60.0) -> None:
        self._log, self._what, self._every = logger, what, every
        self._since: float | None = None
        self._said = 0.0

    def failed(self, reason: object) -> None:
        now = time.monotonic()
        if self._since is None:
            self._since = now
        elif now - self._said < self._every:
            return
        self._said = now
        self._log.warning("%s unavailable, retrying: %s", self._what, str(reason).strip()[:300])

    def ok(self) -> None:
        if self._since is not None:
            self._log.warning(
                "%s back", self._what, extra={"unavailable_seconds": round(time.monotonic() - self._since, 1)}
            )
            self._since = None
