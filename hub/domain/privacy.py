"""Keyed digests that let hub match a citizen's records without keeping the personal ID in clear."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence


def subject_hmac(secret: bytes, personal_id: str) -> str:
    """HMAC-SHA256 of a personal ID under hub's secret key: the same citizen always maps to the same value."""
    return hmac.new(secret, personal_id.encode(), hashlib.sha256).hexdigest()


def subject_hmacs(secrets: Sequence[bytes], personal_id: str) -> list[str]:
    """The personal ID's HMAC under each of hub's secret keys (the current one first): what finds a citizen's
    records written before a rotation of the key as well as after."""
    return [subject_hmac(secret, personal_id) for secret in secrets]


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A separate key per purpose (e.g. the audit chain), so one key's use never reveals another's."""
    return hmac.new(secret, f"hub/{purpose}".encode(), hashlib.sha256).digest()


def same_text(given: str, expected: str) -> bool:
    """Constant-time equality of a code or secret that came from outside with the one hub computed. Any text:
    `hmac.compare_digest` refuses str with non-ASCII characters (TypeError) and `.encode()` a lone surrogate,
    which a JSON body may carry ("\\ud800") — neither may turn a forged value into a crash."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))
