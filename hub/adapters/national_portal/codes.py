"""The national portal's `error_code` values and how hub treats them (mirrors
contracts/national_portal/error_codes.json; a test keeps them equal)."""

from __future__ import annotations

OK = 0
AUTH_FAILED = 1
SESSION_INVALID = 2
INVALID_DATA = 3
INVALID_TRANSITION = 4
UNKNOWN_DOSSIER = 5
KEY_REUSED = 6
ALREADY_EXISTS = 7
INTERNAL = 99

# error_code -> (hub's stable error code, retryable)
MEANING: dict[int, tuple[str, bool]] = {
    AUTH_FAILED: ("portal_auth_failed", True),
    SESSION_INVALID: ("portal_session_invalid", True),
    INVALID_DATA: ("portal_invalid_data", False),
    INVALID_TRANSITION: ("portal_invalid_transition", False),
    UNKNOWN_DOSSIER: ("portal_unknown_dossier", False),
    KEY_REUSED: ("portal_idempotency_key_reused", False),
    ALREADY_EXISTS: ("portal_dossier_exists", False),
    INTERNAL: ("portal_internal_error", True),
}
