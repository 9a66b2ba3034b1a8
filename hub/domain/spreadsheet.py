"""Rows written for a spreadsheet (CSV exports of the access log, a payment platform's reconciliation)."""

from __future__ import annotations

from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(row: dict[str, Any]) -> dict[str, Any]:
    """A CSV row for a spreadsheet: a text that a spreadsheet would run as a formula (an officer's name sent by a
    client system as '=HYPERLINK(…)', a transaction id in a platform's statement) is written with a leading
    apostrophe, as OWASP advises — read as text, shown as written."""
    return {k: f"'{v}" if isinstance(v, str) and v.startswith(FORMULA_STARTS) else v for k, v in row.items()}
