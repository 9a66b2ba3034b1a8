"""Amounts of money as read in Vietnam: whole đồng, thousands separated by dots (8.000; 1.250.000)."""

from __future__ import annotations


def dong(amount: int) -> str:
    """8000 -> "8.000"."""
    return f"{amount:,}".replace(",", ".")
