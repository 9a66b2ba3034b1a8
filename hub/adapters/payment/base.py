"""A payment platform as hub needs it. Money is integer đồng everywhere (VND has no minor unit)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class PaymentOrder:
    reference: str  # our unique reference (MaThamChieu)
    amount: int  # đồng
    dossier_code: str
    procedure_code: str
    fees: list[dict[str, Any]]  # [{TenPhiLePhi, MaPhiLePhi?, SoTien}]
    payer_name: str | None
    description: str
    callback_url: str
    client_ip: str


@dataclass(frozen=True, slots=True)
class Created:
    pay_url: str


@dataclass(frozen=True, slots=True)
class Callback:
    """A callback whose signature was verified: what the platform says happened."""

    reference: str
    success: bool
    amount: int
    currency: str
    transaction_id: str
    bank: str | None
    at: datetime
    error_code: str


class CallbackRejected(Exception):
    """The callback cannot be trusted or does not parse; `answer_code` is what the platform expects back."""

    def __init__(self, answer_code: str, reason: str) -> None:
        super().__init__(reason)
        self.answer_code = answer_code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class QueryResult:
    status: str  # pending | paid | failed | unknown
    amount: int | None
    transaction_id: str | None
    at: datetime | None


@dataclass(frozen=True, slots=True)
class StatementLine:
    transaction_id: str
    reference: str
    amount: int
    currency: str
    at: datetime


class PaymentPlatform(Protocol):
    name: str

    def create(self, order: PaymentOrder, *, correlation_id: str) -> Created: ...

    def parse_callback(self, body: bytes, content_type: str | None, query: dict[str, str]) -> Callback:
        """Verify the callback's signature first; raise CallbackRejected if it is forged or malformed."""
        ...

    def answer(self, code: str, message: str) -> tuple[int, dict[str, Any]]:
        """The HTTP status and body the platform expects for an answer code."""
        ...

    def query(self, reference: str, *, correlation_id: str) -> QueryResult: ...

    def receipt(self, reference: str, *, correlation_id: str) -> bytes: ...

    def statement(self, day: date, *, correlation_id: str) -> list[StatementLine]: ...

    def close(self) -> None: ...
