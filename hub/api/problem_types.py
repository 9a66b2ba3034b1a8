"""Every stable `code` hub answers a problem (RFC 9457, application/problem+json) with: what it means and what the
caller does about it. A problem's `type` is `/problems/{code}`, a reference hub itself serves (`GET /problems`,
`GET /problems/{code}`: this catalogue, as JSON or, for a browser, as a page), so the type a client reads is also
where its explanation is, on every deployment alike (ADR 0050). `tests/test_problem_types.py` holds the catalogue
and the code to each other: every code hub can answer with is here, and nothing here is a code it never answers.

`remedy`, for a client's code to branch on:
- `fix_request`: the request itself is refused; sent again unchanged it gets the same answer;
- `retry_later`: hub or a system behind it cannot serve it now; the same request later (the same Idempotency-Key,
  after Retry-After when given) can succeed;
- `authenticate`: the credentials are missing, unknown or expired;
- `ask_operators`: hub is not set up for it (configuration, a key, a peer refusing hub): the province's operators
  must act before it can succeed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Remedy = Literal["fix_request", "retry_later", "authenticate", "ask_operators"]
REMEDIES: tuple[Remedy, ...] = ("fix_request", "retry_later", "authenticate", "ask_operators")
CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}\Z")
HTTP_FALLBACK = re.compile(r"^http_(\d{3})\Z")  # an HTTP error no other code names (problems.STATUS_CODES)


@dataclass(frozen=True, slots=True)
class ProblemType:
    statuses: tuple[int, ...]  # the HTTP statuses it comes with (most codes: one)
    title: str
    meaning: str
    remedy: Remedy
    action: str  # what the caller does, in a sentence

    def as_json(self, code: str) -> dict[str, object]:
        return {
            "code": code,
            "type": type_uri(code),
            "statuses": list(self.statuses),
            "title": self.title,
            "meaning": self.meaning,
            "remedy": self.remedy,
            "retry": self.remedy == "retry_later",
            "action": self.action,
        }


def type_uri(code: str) -> str:
    """A problem's `type`: a reference relative to hub's own address, the same string on every deployment."""
    return f"/problems/{code}"


FIX: Remedy = "fix_request"
RETRY: Remedy = "retry_later"
AUTH: Remedy = "authenticate"
ASK: Remedy = "ask_operators"

SAME_KEY = "Send the same request again later, with the same Idempotency-Key (after Retry-After, when given)."
CORRECT = "Correct the request as `detail` (and `errors`) say; sent unchanged it is refused again."

PROBLEM_TYPES: dict[str, ProblemType] = {
    # -- the request as HTTP -----------------------------------------------------------------------------------
    "malformed_json": ProblemType((400,), "Malformed JSON", "The body is not valid JSON (or nests or counts past what "
        "a JSON parser takes).", FIX, CORRECT),
    "nul_in_url": ProblemType((400,), "Bad Request", "The URL holds a NUL character (raw or %00), which no "
        "identifier hub knows contains.", FIX, CORRECT),
    "unauthenticated": ProblemType((401,), "Unauthorized", "No credentials were sent: a client system sends its API "
        "key in X-API-Key or its access token as a bearer token; a citizen sends the ID token of their sign-in.",
        AUTH, "Send the credentials the operation asks for (the OpenAPI document names them)."),
    "invalid_api_key": ProblemType((401,), "Unauthorized", "The API key is not one of a configured client system "
        "(HUB_CLIENTS): mistyped, or replaced when the keys were rotated.", AUTH,
        "Use the key the province's operators issued for this client system."),
    "invalid_token": ProblemType((401,), "Invalid token", "The bearer token does not hold: its signature, issuer, "
        "audience, lifetime or type is not what the configured identity provider or authorization server issues, "
        "or it has expired.", AUTH, "Get a new token from the identity provider or authorization server and send it."),
    "forbidden": ProblemType((403,), "Forbidden", "The caller is known but may not do this.", FIX,
        "Do it as a caller allowed to, or ask the operators for the right."),
    "agency_not_allowed": ProblemType((403,), "Forbidden", "The client system may not act for this agency: the "
        "agency codes it may act for are set in its HUB_CLIENTS entry.", FIX,
        "Send it for one of the client's agencies, or ask the operators to add this agency to the client."),
    "insufficient_scope": ProblemType((403,), "Insufficient scope", "The access token's scopes do not cover the "
        "operation (hub:dossiers, hub:prefill, hub:audit, hub:payments, hub:signatures; RFC 6750 §3.1).", AUTH,
        "Ask the authorization server for a token with the scope named in WWW-Authenticate."),
    "role_not_allowed": ProblemType((403,), "Forbidden", "The client system lacks the role the operation needs "
        "(e.g. `national_portal` to push dossiers filed on the portal).", ASK,
        "Ask the operators to give the client the role, if it should have it."),
    "forbidden_role": ProblemType((403,), "Forbidden", "Only client systems with the `auditor` role may read who "
        "used a citizen's data.", ASK, "Ask the operators for the `auditor` role, if the client should have it."),
    "not_found": ProblemType((404,), "Not found", "No such resource (or no such path).", FIX,
        "Check the path and the identifier in it."),
    "method_not_allowed": ProblemType((405,), "Method Not Allowed", "The path does not take this HTTP method; the "
        "Allow header lists those it takes.", FIX, "Use a method the Allow header names."),
    "body_too_large": ProblemType((413,), "Content Too Large", "The body is larger than hub takes "
        "(HUB_MAX_BODY_BYTES, 1 MiB; HUB_MAX_DOCUMENT_BYTES, 10 MiB, for documents and signatures to verify).", FIX,
        "Send a smaller body (a batch in parts; a document's files within the limit the detail names)."),
    "unsupported_media_type": ProblemType((415,), "Unsupported Media Type", "The body is not sent as JSON "
        "(Content-Type: application/json) where JSON is expected.", FIX, "Send the body as JSON with that header."),
    "unsupported_content_encoding": ProblemType((415,), "Unsupported Media Type", "The body is compressed "
        "(Content-Encoding gzip, br…); hub takes bodies as they are.", FIX, "Send the body uncompressed."),
    "too_many_requests": ProblemType((429,), "Too Many Requests", "Too many requests.", RETRY, SAME_KEY),
    "internal_error": ProblemType((500,), "Internal error", "Something in hub failed that should not have; it is "
        "logged with the request's correlation id (X-Correlation-ID).", RETRY,
        "Try again later; if it persists, give the operators the correlation id."),
    # -- the body's content ------------------------------------------------------------------------------------
    "validation_error": ProblemType((422,), "Invalid request", "Parts of the request do not have the type, form "
        "or range the OpenAPI document gives; `errors` lists each with where it is.", FIX, CORRECT),
    "missing_field": ProblemType((422,), "Invalid request", "Required fields are missing; `errors` names them.",
        FIX, CORRECT),
    "invalid_identifier": ProblemType((422,), "Invalid identifier", "An identifier is not of its form.", FIX, CORRECT),
    "invalid_dossier_code": ProblemType((422,), "Invalid identifier", "MaHoSo (the dossier code) is not "
        "{agency code}-{yyMMdd}-{nnnn}, e.g. 000.00.17.H56-241015-0007, with a real date and a sequence from 0001.",
        FIX, CORRECT),
    "invalid_agency_code": ProblemType((422,), "Invalid identifier", "An agency code (mã định danh cơ quan) is not "
        "of the form 000.00.00.X00.", FIX, CORRECT),
    "invalid_procedure_code": ProblemType((422,), "Invalid identifier", "MaTTHC is not a national catalogue code "
        "such as 1.001193.", FIX, CORRECT),
    "invalid_personal_id": ProblemType((422,), "Invalid identifier", "The personal ID (số định danh cá nhân) is not "
        "12 digits, or its province-of-birth or century digits are impossible. The ID is not echoed back.", FIX,
        CORRECT),
    "invalid_date": ProblemType((422,), "Invalid date", "A date is not yyyyMMddHHmmss (Asia/Ho_Chi_Minh) or is not "
        "a real date.", FIX, CORRECT),
    "date_in_future": ProblemType((422,), "Invalid date", "A date that records something done (received, returned, "
        "a step) lies in the future.", FIX, CORRECT),
    "date_before_receipt": ProblemType((422,), "Invalid date", "A date of the dossier lies a day or more before "
        "NgayTiepNhan, when it was received.", FIX, CORRECT),
    "unsupported_query": ProblemType((422,), "Unprocessable Entity", "The query parameters do not name one listing "
        "(overdue=true, or delivery=waiting|dead|undelivered), or combine what does not go together.", FIX, CORRECT),
    "invalid_period": ProblemType((422,), "Unprocessable Entity", "A report's period ends before it starts, spans "
        "more days than a report covers, or lies outside the years a report takes.", FIX, CORRECT),
    "domain_error": ProblemType((422,), "Unprocessable Entity", "A rule of the domain was broken; `detail` says "
        "which.", FIX, CORRECT),
    # -- dossiers and their status (TrangThaiHoSo) -------------------------------------------------------------
    "invalid_status": ProblemType((409, 422), "Status transition not allowed", "TrangThaiHoSo (or a step's "
        "TrangThai) is not a status 1–10.", FIX, CORRECT),
    "invalid_transition": ProblemType((409,), "Status transition not allowed", "The dossier cannot move from its "
        "current status to the one sent (the transition table: e.g. 5→4 after a supplement, 6→4 after payment; "
        "3, 7, 8 and 10 are final). `current` and `requested` say which.", FIX,
        "Send the statuses in the order they happened; read the dossier (GET /v1/dossiers/{MaHoSo}) for its status."),
    "invalid_initial_status": ProblemType((409,), "Status transition not allowed", "A dossier hub has not seen must "
        "start in status 1 or 2; one already in progress before it was connected to hub is taken at its status when "
        "sent with isUpdating=true (ADR 0041).", FIX, "Send it with isUpdating=true, or from its first status."),
    "dossier_not_found": ProblemType((404,), "Not found", "hub holds no dossier with this MaHoSo for the caller (a "
        "client's other agencies' dossiers, and a citizen's others', are answered alike).", FIX,
        "Check the MaHoSo; file the dossier (POST /v1/dossiers) before its steps."),
    "dossier_code_mismatch": ProblemType((409,), "Conflict", "The MaHoSo in the body differs from the dossier in "
        "the path.", FIX, CORRECT),
    "procedure_changed": ProblemType((409,), "Conflict", "A dossier's procedure (MaTTHC) cannot change once filed.",
        FIX, "File a new dossier for the other procedure."),
    "unknown_procedure": ProblemType((422,), "Unprocessable Entity", "The MaTTHC is not in hub's procedure "
        "catalogue (kept from the portal's LayDanhSachTTHC).", ASK,
        "Check the code; if it is new at the portal, ask the operators to refresh the catalogue (hub catalogue sync)."),
    "concurrent_update": ProblemType((409,), "Conflict", "Another request changed the same dossier at the same "
        "moment; this one changed nothing.", RETRY, "Send the same request again."),
    "conflict": ProblemType((409,), "Conflict", "The request conflicts with what hub holds now.", FIX, CORRECT),
    "idempotency_key_reused": ProblemType((409,), "Conflict", "This Idempotency-Key was used for a different "
        "request; a key names one request, and repeating it repeats that request's answer.", FIX,
        "Use a new key for a new request; resend exactly the first request to get its answer."),
    "invalid_idempotency_key": ProblemType((422,), "Invalid request", "The Idempotency-Key header is empty, longer "
        "than 200 characters or holds characters other than printable ASCII; nothing was done.", FIX,
        "Send a key of your own for each request (a UUID, say), the same one when you repeat that request."),
    # -- documents to other agencies (edXML) -------------------------------------------------------------------
    "invalid_edxml": ProblemType((422,), "Unprocessable Entity", "The document's envelope cannot be built as "
        "contracts/edxml/edxml.xsd requires (a field too long, a receiver code malformed…).", FIX, CORRECT),
    "document_not_found": ProblemType((404,), "Not found", "The dossier sent no document with this id.", FIX,
        "Use a document_id from the dossier's `documents`."),
    "recall_already_requested": ProblemType((409,), "Conflict", "This document was recalled already; the receivers' "
        "answers to the recall show with the document.", FIX, "Read the dossier for the recall's progress."),
    "document_exchange_not_configured": ProblemType((503,), "Service Unavailable", "No document exchange platform "
        "is configured (HUB_DOCUMENT_EXCHANGE_URL).", ASK, "Ask the operators to configure it."),
    "signing_unavailable": ProblemType((503,), "Service Unavailable", "hub cannot sign or send a document now.",
        RETRY, SAME_KEY),
    "signing_not_configured": ProblemType((503,), "Service Unavailable", "hub has no signing key for what it must "
        "sign (HUB_SIGNING_KEY/_CERT, a PKCS#12 file or a key on a token).", ASK,
        "Ask the operators to configure one."),
    "signing_key_unusable": ProblemType((503,), "Service Unavailable", "hub's signing key or certificate cannot sign "
        "(unreadable, wrong password, expired or not matching).", ASK, "Ask the operators to check hub's key."),
    "tsa_unavailable": ProblemType((503,), "Service Unavailable", "The time-stamping authority (RFC 3161) did not "
        "answer; hub signs time-stamped or not at all.", RETRY, SAME_KEY),
    "tsa_refused": ProblemType((503,), "Service Unavailable", "The time-stamping authority refused hub's request.",
        ASK, "Ask the operators to check hub's time-stamping account."),
    "tsa_not_configured": ProblemType((503,), "Service Unavailable", "A long-term signature (XAdES-B-LT) needs a "
        "time-stamp, and no time-stamping authority is configured (HUB_SIGNING_TSA_URL).", ASK,
        "Ask the operators to configure one."),
    "validation_data_unavailable": ProblemType((503,), "Service Unavailable", "hub's own signature does not "
        "validate now (its CA's CRL/OCSP cannot be had), so it cannot carry its validation data (XAdES-B-LT).",
        RETRY, SAME_KEY),
    "token_unavailable": ProblemType((503,), "Service Unavailable", "The token (PKCS#11) holding hub's key is not "
        "there or not usable by this process.", ASK, "Ask the operators to check the token."),
    "token_pin_refused": ProblemType((503,), "Service Unavailable", "The token refused the PIN hub is configured "
        "with; hub does not try it again (the token would lock).", ASK, "Ask the operators to set the right PIN."),
    "token_key_not_found": ProblemType((503,), "Service Unavailable", "The token holds no private key with the "
        "configured label.", ASK, "Ask the operators to check HUB_SIGNING_PKCS11_KEY."),
    "token_key_ambiguous": ProblemType((503,), "Service Unavailable", "The token holds several private keys with "
        "the configured label.", ASK, "Ask the operators to give the key a label of its own."),
    "token_key_not_extractable": ProblemType((503,), "Service Unavailable", "An operation needed the key's bytes, "
        "which a key on a token never gives.", ASK, "Ask the operators."),
    "token_certificate_not_found": ProblemType((503,), "Service Unavailable", "The token holds no certificate for "
        "hub's key, and none is configured beside it.", ASK, "Ask the operators to put the certificate on the token."),
    "token_failed": ProblemType((503,), "Service Unavailable", "The token did not sign (no mechanism for the key's "
        "type, or a device error).", ASK, "Ask the operators to check the token."),
    # -- signatures sent to be verified or extended ------------------------------------------------------------
    "not_time_stamped": ProblemType((422,), "Unprocessable Entity", "Only a time-stamped signature (XAdES-B-T) can be "
        "extended to XAdES-B-LT.", FIX, "Send a time-stamped signature."),
    "signature_not_valid": ProblemType((422,), "Unprocessable Entity", "The signature does not validate; "
        "`indication` and `sub_indication` say why (ETSI EN 319 102-1).", FIX,
        "Verify it (POST /v1/signatures/verify) for the full report."),
    "revocation_unavailable": ProblemType((503,), "Service Unavailable", "The certificates' revocation status "
        "(CRL/OCSP) cannot be had now (sub_indication TRY_LATER).", RETRY, SAME_KEY),
    # -- pre-fill, consents and the access log -----------------------------------------------------------------
    "prefill_not_allowed": ProblemType((403,), "Forbidden", "The client may not read personal data for this "
        "procedure and purpose: its agency's allowed procedures and purposes are configured (HUB_CLIENTS). The "
        "refusal is in the access log.", FIX, "Ask for a procedure and purpose the client is allowed."),
    "unknown_form": ProblemType((404,), "Not found", "hub has no e-form template for this procedure.", FIX,
        "GET /v1/forms lists the procedures with a form."),
    "subject_not_found": ProblemType((404,), "Not found", "The population database holds no citizen with this "
        "personal ID (and name and birth date, when given). The access is logged.", FIX,
        "Check the ID with the citizen."),
    "population_unavailable": ProblemType((503,), "Service Unavailable", "The population database is down, slow or "
        "failing, or asked hub to wait; nothing was read.", RETRY, SAME_KEY),
    "population_refused": ProblemType((502,), "Bad Gateway", "The population database refused hub's request (its "
        "contract or hub's authorization there).", ASK, "Ask the operators; `peer_error` names the refusal."),
    "peer_busy": ProblemType((503,), "Service Unavailable", "hub already waits on that system for as many requests "
        "as it lets wait at once (the system is slow); this one was not sent.", RETRY, SAME_KEY),
    "rate_limited": ProblemType((429,), "Too many requests", "The client went past its quota (e.g. pre-fills a "
        "minute); Retry-After says when it may go on.", RETRY, SAME_KEY),
    "consent_unknown": ProblemType((403,), "Forbidden", "The consent reference is unknown for this citizen and "
        "client; documents are not offered for reuse without one.", FIX, "Send the citizen's consent reference."),
    "consent_revoked": ProblemType((403,), "Forbidden", "The citizen withdrew this consent.", FIX,
        "Ask the citizen for a new consent, or pre-fill without documents."),
    "consent_expired": ProblemType((403,), "Forbidden", "This consent has expired.", FIX,
        "Ask the citizen for a new consent, or pre-fill without documents."),
    "consent_out_of_scope": ProblemType((403,), "Forbidden", "This consent does not cover this purpose.", FIX,
        "Ask the citizen for a consent to this purpose."),
    "consent_purpose_not_allowed": ProblemType((403,), "Forbidden", "The client does not pre-fill for this purpose, "
        "so a consent to it would never be used.", FIX, "Record consents for the purposes the client pre-fills for."),
    "consent_expires_in_past": ProblemType((422,), "Invalid date", "The consent's expires_at has passed already.",
        FIX, CORRECT),
    "unknown_consent": ProblemType((404,), "Not found", "No consent with this reference was recorded by this client "
        "(or, for a citizen, is theirs).", FIX, "Check the reference."),
    "unknown_client": ProblemType((422,), "Unknown client system", "A citizen named a client system hub does not "
        "know.", FIX, "Name a client system hub knows."),
    "document_issued_in_future": ProblemType((422,), "Invalid date", "A document's issued_at lies in the future.",
        FIX, CORRECT),
    "document_validity_invalid": ProblemType((422,), "Invalid date", "A document's valid_until is before its "
        "issued_at.", FIX, CORRECT),
    "document_number_taken": ProblemType((409,), "Conflict", "The issuer already issued a document with this number "
        "to someone else.", FIX, "Check the number and the issuer."),
    "citizen_sign_in_unavailable": ProblemType((503,), "Service Unavailable", "Citizens' sign-in is not configured "
        "at hub (HUB_CITIZEN_IDP_ISSUER).", ASK, "Ask the operators to configure it."),
    "identity_provider_unavailable": ProblemType((503,), "Service Unavailable", "The citizens' identity provider "
        "could not be reached to check the ID token.", RETRY, "Try again shortly."),
    "authorization_server_unavailable": ProblemType((503,), "Service Unavailable", "Access tokens cannot be checked "
        "now: the authorization server's keys cannot be fetched.", RETRY, "Try again shortly."),
    "reports_busy": ProblemType((429,), "Too many requests", "As many reports as hub makes at once are being made.",
        RETRY, "Ask again shortly."),
    # -- payments ----------------------------------------------------------------------------------------------
    "payment_not_requested": ProblemType((409,), "Conflict", "The dossier is not in status 6 (payment requested).",
        FIX, "Create the payment once the dossier asks for one."),
    "nothing_to_pay": ProblemType((422,), "Unprocessable Entity", "The dossier lists no fee (DanhSachLePhi).", FIX,
        "Send the dossier's fees first."),
    "fees_mismatch": ProblemType((422,), "Unprocessable Entity", "The fees sent differ from the dossier's "
        "DanhSachLePhi.", FIX, CORRECT),
    "fee_not_in_catalogue": ProblemType((422,), "Unprocessable Entity", "A fee is not among the procedure's fees in "
        "the catalogue.", FIX, "Check the fee against the procedure (LayThuTuc)."),
    "invalid_amount": ProblemType((422,), "Unprocessable Entity", "An amount is not a whole number of đồng.", FIX,
        CORRECT),
    "payment_exists": ProblemType((409,), "Conflict", "The dossier has a payment for another amount already.", FIX,
        "Use that payment (GET /v1/payments/{reference}), or wait until it expires — or, the fee corrected, have an "
        "operator give its pay link up (hub payments give-up, or the console)."),
    "payment_not_pending": ProblemType((409,), "Conflict", "Only a pending payment can be given up (it is paid, "
        "failed or expired already, or being created right now).", FIX, "Look at the payment's state."),
    "payment_not_found": ProblemType((404,), "Not found", "No payment with this reference for the caller.", FIX,
        "Check the reference."),
    "payment_not_paid": ProblemType((409,), "Conflict", "A receipt exists only for a paid payment.", FIX,
        "Ask for the receipt once the payment is paid."),
    "receipt_not_offered": ProblemType((409,), "Conflict", "This payment platform issues no receipt document.", FIX,
        "Show the payment's details instead."),
    "unknown_platform": ProblemType((404,), "Not found", "No payment platform of this name is configured.", FIX,
        "Use the platform hub names (HUB_PAYMENT_PLATFORMS)."),
    "payment_platform_unavailable": ProblemType((503,), "Service Unavailable", "The payment platform did not answer "
        "or failed; no payment was created.", RETRY, SAME_KEY),
    # -- the database under hub ----------------------------------------------------------------------------------
    "database_unavailable": ProblemType((503,), "Database unavailable", "hub's database did not answer; the request "
        "may not have been recorded.", RETRY, SAME_KEY),
    "storage_full": ProblemType((503,), "Storage full", "hub's database has no disk space left; nothing was "
        "recorded.", RETRY, SAME_KEY),
    # -- operators' accounts (hub operators add…) --------------------------------------------------------------
    "invalid_username": ProblemType((422,), "Unprocessable Entity", "User names are letters, digits, '.' and '-'.",
        FIX, CORRECT),
    "invalid_role": ProblemType((422,), "Unprocessable Entity", "The role is not one of the console's roles.", FIX,
        CORRECT),
    "weak_password": ProblemType((422,), "Unprocessable Entity", "Passwords have at least 10 characters.", FIX,
        CORRECT),
    "operator_exists": ProblemType((409,), "Conflict", "An operator with this name exists.", FIX,
        "Choose another name, or change that operator."),
    "operator_not_found": ProblemType((404,), "Not found", "No operator with this name.", FIX, "Check the name."),
    # -- down-flow routing (hub routes add…) ---------------------------------------------------------------------
    "invalid_route_pattern": ProblemType((422,), "Unprocessable Entity", "A route's pattern is neither an agency "
        "code nor a prefix ending in '*'.", FIX, CORRECT),
    "invalid_route_endpoint": ProblemType((422,), "Unprocessable Entity", "A route's endpoint is not an http(s) URL.",
        FIX, CORRECT),
}  # fmt: skip


def lookup(code: str) -> ProblemType | None:
    """The catalogue's entry for `code`; an HTTP error no other code names (`http_NNN`) is described by its status."""
    found = PROBLEM_TYPES.get(code)
    if found is not None:
        return found
    m = HTTP_FALLBACK.match(code)
    if m is None or not 400 <= int(m.group(1)) <= 599:
        return None
    status = int(m.group(1))
    from http import HTTPStatus

    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = f"HTTP {status}"
    remedy: Remedy = RETRY if status >= 500 or status == 429 else FIX
    return ProblemType((status,), phrase, f"HTTP {status} ({phrase}), which no other code names.", remedy,
                       SAME_KEY if remedy == RETRY else CORRECT)  # fmt: skip


# -- the peers' errors -------------------------------------------------------------------------------------------
# What hub records of a call to another system that failed: a delivery's `last_error_code` (GET /v1/dossiers/
# {MaHoSo}, GET /v1/dossiers?delivery=…, the console, `hub jobs`), a problem's `peer_error`, the exchange record.
# Served at /peer-errors/{code}. `retried`: hub tries again by itself — a delivery waits (an outage uses up no
# attempt, ADR 0006); otherwise the peer refused the message for good: the delivery is a dead letter at once, its
# dossier's later messages wait behind it until an operator replays or sets it aside (ADR 0032).


@dataclass(frozen=True, slots=True)
class PeerErrorType:
    peer: str  # the system it comes from ("any": hub's adapters of every peer)
    meaning: str
    retried: bool
    action: str  # what an operator (or the client's officer) does

    @property
    def outcome(self) -> str:
        """`retried` in words, as the pages and `hub jobs show` say it."""
        return "hub tries again by itself" if self.retried else "refused for good"

    def as_json(self, code: str) -> dict[str, object]:
        return {"code": code, "peer": self.peer, "meaning": self.meaning, "retried": self.retried,
                "action": self.action}  # fmt: skip


WAITS = "Nothing: hub tries again, with backoff, until the system answers (operators see it on the console)."
DEAD = "Correct the cause, then an operator replays the message (hub jobs replay) or sets it aside."
OPERATORS = "hub's operators must fix hub's configuration or credentials there; the messages wait meanwhile."

PEER_ERRORS: dict[str, PeerErrorType] = {
    # -- any system, as HTTP and as a connection ----------------------------------------------------------------
    "peer_unavailable": PeerErrorType("any", "The system did not take the call: connection refused, 502/503/504 or "
        "an outage.", True, WAITS),
    "peer_http_unavailable": PeerErrorType("any", "The system answered 429 or 503 (busy, or asking hub to wait: "
        "hub obeys its Retry-After).", True, WAITS),
    "peer_timeout": PeerErrorType("any", "The system did not answer within hub's timeout; the call may have taken "
        "effect, and the next attempt carries the same idempotency key.", True, WAITS),
    "peer_rate_limited": PeerErrorType("any", "Not sent: the system's agreed pace (HUB_PEER_RATE_LIMITS) has no "
        "slot free soon enough.", True, WAITS),
    "peer_http_5xx": PeerErrorType("any", "The system answered with an HTTP 5xx error.", True, WAITS),
    "peer_http_4xx": PeerErrorType("any", "The system refused the call with an HTTP 4xx status.", False, DEAD),
    "peer_error": PeerErrorType("any", "The system reported a failure it may recover from.", True, WAITS),
    "peer_rejected": PeerErrorType("any", "The system refused the message itself (its contract or a rule of "
        "its own).", False, DEAD),
    "peer_malformed_reply": PeerErrorType("any", "The system answered something that is not its contract (not JSON, "
        "fields missing or of the wrong type).", True, WAITS),
    "peer_reply_too_large": PeerErrorType("any", "The system's answer was larger than hub reads.", True, WAITS),
    "peer_auth_failed": PeerErrorType("any", "The system refused hub's credentials.", True, OPERATORS),
    "internal_error": PeerErrorType("any", "hub failed while delivering (logged with the message's id); the message "
        "is kept and tried again.", True, "Give the operators the message's id from the log if it goes on."),
    # -- the national public-service portal (DVCQG) --------------------------------------------------------------
    "portal_auth_failed": PeerErrorType("national_portal", "The portal refused hub's user name, password or unit "
        "code (dstcode).", True, OPERATORS),
    "portal_session_invalid": PeerErrorType("national_portal", "The portal's session stayed invalid after hub signed "
        "in again.", True, WAITS),
    "portal_invalid_data": PeerErrorType("national_portal", "The portal found the message invalid (error_code 3): a "
        "field it requires or a value it does not take.", False, DEAD),
    "portal_invalid_transition": PeerErrorType("national_portal", "The portal refused the status change (error_code "
        "4): it holds the dossier at a status from which this one is not allowed.", False,
        "Compare the dossier at the portal (hub reconcile) with the one-stop system's; correct it there, then an "
        "operator replays the message or sets it aside."),
    "portal_unknown_dossier": PeerErrorType("national_portal", "The portal holds no dossier with this MaHoSo "
        "(error_code 5).", False, DEAD),
    "portal_idempotency_key_reused": PeerErrorType("national_portal", "The portal saw this idempotency key with "
        "another message (error_code 6).", False, DEAD),
    "portal_dossier_exists": PeerErrorType("national_portal", "The portal holds this dossier already (error_code "
        "7) and hub could not send it as an update.", False, DEAD),
    "portal_internal_error": PeerErrorType("national_portal", "The portal reported an internal error (error_code "
        "99).", True, WAITS),
    "portal_error": PeerErrorType("national_portal", "The portal answered an error_code hub does not know.", False,
        DEAD),
    # -- provincial one-stop systems (down-flow) -----------------------------------------------------------------
    "onestop_invalid_data": PeerErrorType("one_stop", "The one-stop system found the dossier invalid.", False, DEAD),
    "onestop_unknown_dossier": PeerErrorType("one_stop", "The one-stop system holds no such dossier.", False, DEAD),
    "onestop_idempotency_key_reused": PeerErrorType("one_stop", "The one-stop system saw this idempotency key with "
        "another message.", False, DEAD),
    "onestop_error": PeerErrorType("one_stop", "The one-stop system reported another failure.", True, WAITS),
    "unroutable_agency": PeerErrorType("one_stop", "No route names the one-stop system of the dossier's agency.",
        False, "An operator adds the route (hub routes add), then replays the message."),
    # -- the document exchange platform (edXML) ------------------------------------------------------------------
    "edoc_not_signed": PeerErrorType("document_exchange", "The platform found the envelope unsigned.", False, DEAD),
    "edoc_signature_invalid": PeerErrorType("document_exchange", "The platform did not accept the envelope's "
        "signature (hub's key or certificate, or its chain).", False, DEAD),
    "edoc_invalid_envelope": PeerErrorType("document_exchange", "The platform found the envelope malformed.", False,
        DEAD),
    "edoc_unknown_receiver": PeerErrorType("document_exchange", "The platform knows no agency of a receiver's "
        "code.", False, DEAD),
    "edoc_auth_failed": PeerErrorType("document_exchange", "The platform refused hub's key "
        "(HUB_DOCUMENT_EXCHANGE_API_KEY).", True, OPERATORS),
    "edoc_error": PeerErrorType("document_exchange", "The platform reported another failure.", True, WAITS),
    # -- citizens' notifications -----------------------------------------------------------------------------------
    "sms_invalid": PeerErrorType("sms", "The SMS gateway refused the message (a number or text it does not take).",
        False, DEAD),
    "sms_failed": PeerErrorType("sms", "The SMS gateway failed to take the message.", True, WAITS),
    "email_recipient_invalid": PeerErrorType("email", "The address is not one an email can go to.", False, DEAD),
    "email_recipient_refused": PeerErrorType("email", "The mail server refused the recipient.", False, DEAD),
    "email_rejected": PeerErrorType("email", "The mail server refused the message.", False, DEAD),
    "email_failed": PeerErrorType("email", "The mail server failed to take the message.", True, WAITS),
    "channel_not_configured": PeerErrorType("any", "The notification's channel (HUB_SMTP_HOST, "
        "HUB_SMS_GATEWAY_URL) is not configured: the notification is not sent.", False,
        "The operators configure the channel, then replay the notification if it should still go."),
    # -- the population database -----------------------------------------------------------------------------------
    "population_not_authorized": PeerErrorType("population", "The population database refused hub's account or "
        "signature.", True, OPERATORS),
    "population_invalid_request": PeerErrorType("population", "The population database refused the request as "
        "invalid.", False, "The pre-fill is refused (population_refused); the operators check hub's requests."),
    "population_fault": PeerErrorType("population", "The population database answered a SOAP fault.", True, WAITS),
    # -- payment platforms -------------------------------------------------------------------------------------------
    "payment_init_refused": PeerErrorType("payment", "The payment platform refused to create the payment.", False,
        "The payment is not made; `detail` and the exchange record say why."),
    "payment_pay_url_invalid": PeerErrorType("payment", "The platform's pay link is not a web address.", False,
        "The payment is not offered; the operators ask the platform."),
    "payment_reply_forged": PeerErrorType("payment", "The platform's answer does not carry a valid MAC "
        "(MaXacThuc, vnp_SecureHash): it is not taken.", True,
        "The operators check the partner secret; nothing is credited on such an answer."),
    "receipt_not_offered": PeerErrorType("payment", "This platform issues no receipt document.", False,
        "Show the payment's details instead."),
}  # fmt: skip
