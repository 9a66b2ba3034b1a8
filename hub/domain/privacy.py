"""Keyed digests that let hub match a citizen's records without keeping the personal ID in clear."""

from __future__ import annotations

import hashlib
import hmac


def subject_hmac(secret: bytes, personal_id: str) -> str:
    """HMAC-SHA256 of a personal ID under hub's secret key: the same citizen always maps to the same value."""
    return hmac.new(secret, personal_id.encode(), hashlib.sha256).hexdigest()


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A separate key per purpose (e.g. the audit chain), so one key's use never reveals another's."""
    return hmac.new(secret, f"hub/{purpose}".encode(), hashlib.sha256).digest()
