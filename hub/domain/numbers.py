"""Numbers as Vietnamese e-government systems write them: often as text (ADR 0039)."""

from __future__ import annotations

from typing import Any


def whole_number(value: Any, digits: int) -> int | None:
    """`value` as a whole number when it is one: a JSON integer (not `true`, which Python counts as 1), or up to
    `digits` ASCII digits in a string ("2", "00", "8000") — the portal, the one-stop systems and the payment
    platform write codes and amounts so. None for anything else: 1.5, "2.0", " 2", "", non-ASCII digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and 0 < len(value) <= digits and value.isascii() and value.isdigit():
        return int(value)
    return None
