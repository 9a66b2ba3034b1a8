"""Adapters for fee-payment platforms: the national portal's DVC payment platform (and, behind the same
Protocol, other gateways)."""

from hub.adapters.payment.base import Callback, CallbackRejected, Created, PaymentPlatform, QueryResult, StatementLine
from hub.adapters.payment.dvc import DvcPaymentClient

__all__ = [
    "Callback",
    "CallbackRejected",
    "Created",
    "DvcPaymentClient",
    "PaymentPlatform",
    "QueryResult",
    "StatementLine",
]
