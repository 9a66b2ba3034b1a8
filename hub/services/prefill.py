"""Pre-fill e-forms from the population database (the once-only principle, Decree 42/2022).

Given a personal ID, a procedure and a purpose, read the citizen's record (and, where the form needs them, the
records of the spouse or parents the record links to), fill the procedure's form template, and say where every
value came from. Only the fields the form needs leave hub. Every read — allowed, refused, not found or failed —
is appended to the hash-chained access log, one entry per person whose data was read."""

from __future__ import annotations

import itertools
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cache, cached_property
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from hub.adapters.bulkheads import Bulkheads, PeerBusy
from hub.adapters.errors import PeerError, wait_asked
from hub.adapters.exchange import ExchangeRecord
from hub.adapters.population import CitizenLookup, PopulationDatabase
from hub.adapters.population.base import PEER as POPULATION
from hub.domain import identifiers, provinces
from hub.domain.dates import VN_TZ, instant, local_iso, utcnow
from hub.domain.errors import Conflict, DomainError, Forbidden, InvalidDate, NotFound, TooManyRequests
from hub.domain.privacy import same_text, subject_hmac, subject_hmacs
from hub.logs import spent
from hub.services.audit import ACCESS_LOG_INQUIRY, DATA_SUBJECT_ACCESS, Access, AccessLog
from hub.services.population_cache import PopulationCache
from hub.services.quota import Quota, citizen_turn, retry_after
from hub.services.schemas import NulFree
from hub.settings import ClientSystem
from hub.store import db
from hub.store.db import RawTransaction, reading
from hub.store.group_commit import GroupCommit
from hub.store.models import Consent, Document, Exchange, table

log = logging.getLogger(__name__)
SOURCE_SYSTEM = "csdlqg_dan_cu"  # the population database, as named in provenance
RELATIVES = {"spouse": "VoChong", "father": "Cha", "mother": "Me"}
SEX = {"1": "Nam", "2": "Nữ"}
MARITAL = {"1": "Chưa kết hôn", "2": "Đã kết hôn", "3": "Đã ly hôn", "4": "Góa"}
NATIONALITY = {"VN": "Việt Nam"}


class PeerFailed(DomainError):
    """The population database is down or failing: try again later."""

    code = "population_unavailable"
    status = 503


class PeerRefused(DomainError):
    """The population database refused hub's request (a contract or authorization problem on our side)."""

    code = "population_refused"
    status = 502


# -- form templates ------------------------------------------------------------------------------------------


class SourceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str = Field(pattern=r"^(subject|spouse|father|mother)(\.[A-Za-z]+)+$")
    if_: dict[str, str] = Field(default_factory=dict, alias="if")

    @cached_property
    def person(self) -> str:
        return self.path.split(".", 1)[0]

    @cached_property
    def steps(self) -> list[str]:
        """The path inside the person's record."""
        return self.path.split(".")[1:]


class FieldSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    label: str
    type: Literal["text", "name", "date", "address", "sex", "marital_status", "nationality", "personal_id"]
    required: bool
    source: list[SourceSpec] = Field(default_factory=list)


class DocumentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: str
    label: str


class FormTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    form: str
    procedures: list[str]
    title: str
    legal_basis: str
    subject: str
    fields: list[FieldSpec]
    documents: list[DocumentSpec]


@cache
def templates() -> dict[str, FormTemplate]:
    """procedure code (MaTTHC) -> its form template, from the JSON files in hub/services/forms/."""
    found: dict[str, FormTemplate] = {}
    for entry in sorted(resources.files("hub.services").joinpath("forms").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            template = FormTemplate.model_validate(json.loads(entry.read_text(encoding="utf-8")))
            for code in template.procedures:
                found[identifiers.procedure_code(code)] = template
    return found


# -- blank forms ---------------------------------------------------------------------------------------------


class FormField(BaseModel):
    """A field of an e-form as hub answers it: its name (dotted groups), label, type and required mark."""

    model_config = ConfigDict(extra="forbid")
    name: str
    label: str = Field(description="the field's label on the Vietnamese form")
    type: str
    required: bool


class BlankField(FormField):
    filled_from: list[SourceSpec] = Field(
        description="where a pre-fill takes the value from, the first that holds one: a path in the population "
        "record of the subject or of the person it links to (spouse, father, mother), under its condition (`if`); "
        "empty: always left for the citizen"
    )


class FormOut(BaseModel):
    """A procedure's e-form without anyone's data: what a portal renders before (or instead of) a pre-fill."""

    model_config = ConfigDict(extra="forbid")
    procedure: str
    form: str
    title: str
    legal_basis: str
    subject: str = Field(description="who the form's subject is (the applicant)")
    fields: list[BlankField]
    documents: list[DocumentSpec] = Field(description="earlier documents a pre-fill may offer for reuse (consent)")
    prefill_purposes: list[str] = Field(
        description="the purposes this client may pre-fill the form for (empty: it may not pre-fill it)"
    )


class FormListed(BaseModel):
    model_config = ConfigDict(extra="forbid")
    procedure: str
    form: str
    title: str
    prefill_purposes: list[str]


def _purposes(client: ClientSystem, procedure: str) -> list[str]:
    return [p for p in client.prefill_purposes if client.may_prefill(procedure, p)]


def blank_form(client: ClientSystem, procedure: str) -> dict[str, Any]:
    """The e-form of a procedure (MaTTHC) with its fields' sources and no personal data: nothing is read, nothing
    is logged. 422 `invalid_procedure_code`, 404 `unknown_form`."""
    template_for(procedure)
    return {
        "procedure": procedure,
        **_blank(procedure),
        "prefill_purposes": _purposes(client, procedure),
    }


@cache
def _blank(procedure: str) -> dict[str, Any]:
    template = templates()[procedure]
    return {
        "form": template.form,
        "title": template.title,
        "legal_basis": template.legal_basis,
        "subject": template.subject,
        "fields": [
            {
                "name": f.name,
                "label": f.label,
                "type": f.type,
                "required": f.required,
                "filled_from": [s.model_dump(by_alias=True, exclude_defaults=True) for s in f.source],
            }
            for f in template.fields
        ],
        "documents": [d.model_dump() for d in template.documents],
    }


_VALUE_SCHEMAS: dict[str, dict[str, Any]] = {  # what a pre-fill writes in a field of each type, and a citizen may
    "text": {"type": "string", "minLength": 1},
    "name": {"type": "string", "minLength": 1},
    "address": {"type": "string", "minLength": 1},
    "nationality": {"type": "string", "minLength": 1},
    "date": {"type": "string", "format": "date", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
    "sex": {"enum": list(SEX.values())},
    "marital_status": {"enum": list(MARITAL.values())},
    "personal_id": {"type": "string", "pattern": "^[0-9]{12}$"},
}


def form_schema(procedure: str) -> dict[str, Any]:
    """The e-form of a procedure as a JSON Schema (draft 2020-12) of the data it collects: the dotted field names as
    nested objects, each value's type with its Vietnamese label as `title`, the required ones `required`. A pre-filled
    form's values satisfy it; a portal renders and checks the citizen's input with any JSON Schema tool.
    422 `invalid_procedure_code`, 404 `unknown_form`."""
    template_for(procedure)
    return _schema(procedure)


@cache
def _schema(procedure: str) -> dict[str, Any]:
    template = templates()[procedure]
    root: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:hub:form:{template.form}",
        "title": template.title,
        "description": template.legal_basis,
        "type": "object",
        "properties": {},
    }
    for spec in template.fields:
        *groups, leaf = spec.name.split(".")
        node, chain = root, [root]
        for group in groups:
            node = node["properties"].setdefault(group, {"type": "object", "properties": {}})
            chain.append(node)
        node["properties"][leaf] = {"title": spec.label, **_VALUE_SCHEMAS[spec.type]}
        if spec.required:  # the field, and each group on its way, is required where it stands
            for parent, name in zip(chain, [*groups, leaf], strict=True):
                if name not in parent.setdefault("required", []):
                    parent["required"].append(name)
    return root


def forms(client: ClientSystem) -> list[dict[str, Any]]:
    """Every procedure with an e-form, in code order, and what this client may pre-fill it for."""
    return [
        {"procedure": code, "form": t.form, "title": t.title, "prefill_purposes": _purposes(client, code)}
        for code, t in sorted(templates().items())
    ]


def template_for(procedure: str) -> FormTemplate:
    """The form template of a procedure code (MaTTHC): 422 `invalid_procedure_code`, 404 `unknown_form`."""
    template = templates().get(identifiers.procedure_code(procedure))
    if template is None:
        raise NotFound(f"no e-form template for procedure {procedure}", code="unknown_form")
    return template


# -- requests ------------------------------------------------------------------------------------------------


class RequestedBy(NulFree):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    officer: str = Field(min_length=1, max_length=100, description="officer or end user (MaCanBo) behind the call")
    agency: str = Field(description="agency code the request is made for", examples=["000.00.17.H56"])

    @field_validator("agency")
    @classmethod
    def _agency(cls, value: str) -> str:
        return identifiers.agency_code(value)


class PrefillIn(NulFree):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    procedure: str = Field(description="MaTTHC", examples=["1.001193"])
    subject_id: str = Field(description="the citizen's 12-digit personal ID", examples=["001090012345"])
    purpose: str = Field(min_length=1, max_length=100, examples=["civil_status_registration"])
    consent_ref: str | None = Field(default=None, max_length=64, description="consent to reuse earlier documents")
    requested_by: RequestedBy
    subject_name: str | None = Field(default=None, max_length=100, description="HoVaTen, matched if given")
    subject_birth_date: date | None = Field(default=None, description="matched if given")

    @field_validator("procedure")
    @classmethod
    def _procedure(cls, value: str) -> str:
        return identifiers.procedure_code(value)


class FieldSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    system: Literal["csdlqg_dan_cu"] = Field(description="the population database (CSDLQG về dân cư)")
    record: Literal["subject", "spouse", "father", "mother"] = Field(description="whose record the value is from")
    request_id: str = Field(description="MaYeuCau of the look-up (also in the access log)")
    cached: bool = Field(description="served from hub's short-lived encrypted cache of the register's reply")


class ProvinceRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(description="two digits, e.g. 48")
    name: str = Field(description="e.g. Thành phố Đà Nẵng")


class AdministrativeUnits(BaseModel):
    """Where a filled address lies in the provinces since 1 July 2025 (Resolution 202/2025/QH15: 63 provinces became
    34, districts abolished). The value stays as the register wrote it; a form should ask the citizen to check an
    address written in the old units — its district and ward may no longer exist."""

    model_config = ConfigDict(extra="forbid")
    province: ProvinceRef = Field(description="the province the address is in now")
    recorded_before_reorganisation: bool = Field(
        description="the register wrote the address in the units before 1 July 2025 (it names a district, or a "
        "province merged since): for the citizen to check and, where needed, correct"
    )
    province_recorded: ProvinceRef | None = Field(
        default=None, description="the former province the register's address names, when it was merged into another"
    )


class FilledField(FormField):
    value: str | None = Field(description="null: not in the register; left for the citizen")
    source: FieldSource | None = None
    fetched_at: str | None = None
    valid_until: str | None = None
    administrative_units: AdministrativeUnits | None = Field(
        default=None, description="an address's province now, and whether the register wrote it in the old units"
    )


class OfferedDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str
    title: str
    number: str
    issuer: str
    dossier_code: str | None
    issued_at: str
    valid_until: str | None
    reference: str | None


class PrefillOut(BaseModel):
    """A procedure's e-form filled from the population database: each value with where it came from."""

    model_config = ConfigDict(extra="forbid")
    procedure: str
    form: str
    title: str
    subject: str = Field(description="who the form's subject is (the applicant)")
    fields: list[FilledField] = Field(description="only the form's fields leave hub (data minimisation)")
    missing_required: list[str] = Field(description="required fields still empty: for the citizen to fill")
    documents: list[OfferedDocument] = Field(description="earlier documents still valid, offered with a consent")
    documents_offered: bool = Field(description="whether a live consent allowed offering documents")


class SubjectIn(NulFree):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    subject_id: str = Field(description="the citizen's 12-digit personal ID (in the body, never in a URL)")
    requested_by: RequestedBy | None = Field(
        default=None, description="the officer (inspector, data-protection officer) and agency behind the inquiry"
    )


class ConsentIn(NulFree):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    subject_id: str = Field(description="the citizen's 12-digit personal ID")
    purpose: str = Field(min_length=1, max_length=100)
    scope: list[Literal["documents"]] = Field(min_length=1)
    expires_at: datetime | None = None


class CitizenConsentIn(NulFree):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    client: str = Field(min_length=1, max_length=64, description="the client system given the consent (its name)")
    purpose: str = Field(min_length=1, max_length=100)
    scope: list[Literal["documents"]] = Field(min_length=1)
    expires_at: datetime | None = None


class DocumentIn(NulFree):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    holder_id: str = Field(description="personal ID of the citizen the document was issued to")
    kind: str = Field(pattern=r"^[a-z_]{3,64}$", examples=["giay_chung_nhan_ket_hon"])
    title: str = Field(min_length=1, max_length=300)
    number: str = Field(min_length=1, max_length=100, description="số hiệu")
    issuer: str = Field(description="agency code of the issuer")
    dossier_code: str | None = Field(default=None, description="MaHoSo of the dossier it was the result of")
    issued_at: datetime
    valid_until: datetime | None = None
    reference: str = Field(
        min_length=1,
        max_length=500,
        description="where the document can be fetched: an http(s) address, a URN, "
        "`dossier:MaHoSo` or a plain identifier (portals show it to the citizen as a link)",
    )

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        return identifiers.agency_code(value)

    @field_validator("reference")
    @classmethod
    def _reference(cls, value: str) -> str:
        if not identifiers.usable_link(value):
            raise ValueError("a reference is an http(s) address, a URN, dossier:MaHoSo or a plain identifier")
        return value


# -- the service ---------------------------------------------------------------------------------------------


class _WouldBlock(Exception):
    """Raised by a non-blocking attempt at the first step that needs I/O."""


@dataclass(frozen=True, slots=True)
class _Journal:
    """What one pre-fill request must leave on record: access-log entries and exchange records."""

    accesses: list[Access]
    exchanges: list[ExchangeRecord]
    cache: list[tuple[str, dict[str, Any], datetime]] = field(default_factory=list)  # replies to keep


@dataclass(frozen=True, slots=True)
class _Read:
    role: str
    record: dict[str, Any]
    request_id: str
    subject: str  # HMAC
    fetched_at: datetime
    cached: bool = False


def _get(record: dict[str, Any] | None, path: list[str]) -> Any:
    value: Any = record
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _format(kind: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if kind == "name":
        if isinstance(value, dict):
            joined = " ".join(str(value[k]) for k in ("Ho", "ChuDem", "Ten") if value.get(k))
            return joined or None
        return str(value)
    if kind == "date":
        # the register writes a birth date as NgayThangNamSinh{NgayThangNam, Nam}: the whole date fills a date
        # field, the year alone (the day not known) leaves it to the citizen
        text = str(value.get("NgayThangNam") or "") if isinstance(value, dict) else str(value)
        return f"{text[0:4]}-{text[4:6]}-{text[6:8]}" if len(text) == 8 and text.isascii() and text.isdigit() else None
    if kind == "address":
        return str(value.get("ChiTiet")) if isinstance(value, dict) and value.get("ChiTiet") else None
    if kind == "sex":
        return SEX.get(str(value))
    if kind == "marital_status":
        return MARITAL.get(str(value))
    if kind == "nationality":
        return NATIONALITY.get(str(value), str(value))
    return str(value)


def _units(address: Any) -> dict[str, Any] | None:
    """An address's `AdministrativeUnits`, as the answer carries them; None when its province code is unknown."""
    units = provinces.address_units(address)
    if units is None:
        return None
    out: dict[str, Any] = {
        "province": {"code": units.province.code, "name": units.province.title},
        "recorded_before_reorganisation": units.recorded_before,
    }
    if (then := units.province_recorded) is not None:
        out["province_recorded"] = {"code": then.code, "name": then.title}
    return out


def _aware(value: datetime | None) -> datetime | None:
    return None if value is None else instant(value)


def _expiry(value: datetime | None) -> datetime | None:
    """A consent's expiry as given (aware), refused when it has passed already: recorded, the consent would be
    refused at its first use."""
    expires = _aware(value)
    if expires is not None and expires <= utcnow():
        raise InvalidDate(f"expires_at {expires.isoformat()} has passed already", code="consent_expires_in_past")
    return expires


ISSUE_CLOCK_SKEW = timedelta(hours=1)  # a document's issue time ahead of hub's clock by up to this is the clocks


class PrefillService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        population: PopulationDatabase,
        *,
        secret_key: bytes,
        validity: timedelta,
        cache: PopulationCache | None = None,
        quota: Quota | None = None,
        inline: db.InlineWriter | None = None,
        previous_keys: Sequence[bytes] = (),
        bulkheads: Bulkheads | None = None,
        pace: Callable[[], None] | None = None,
    ) -> None:
        """`inline`: on SQLite, the event loop appends a lone access entry itself when the write lock is free.
        `previous_keys`: hub's secret keys before `secret_key` (a rotation), newest first: what was written under
        them — consents, documents, access-log entries — is still found by the citizen's ID. `bulkheads`: where
        the API's pre-fills that ask the register wait for it (the population's compartment, ADR 0046); without,
        anyio's shared threadpool. `pace`: waits for a look-up's turn in the register's rate (HUB_PEER_RATE_LIMITS,
        ADR 0049), or raises PeerUnavailable when it is too far off — the look-up not sent, the pre-fill answered 503
        with that wait as Retry-After."""
        self.bulkheads = bulkheads
        self.pace = pace
        self.sessions = sessions
        self._inline = inline
        self.quota = quota
        self.population = population
        self._secret = secret_key
        self._secrets = [secret_key, *previous_keys]
        self.validity = validity
        self.access_log = AccessLog(secret_key, previous_keys)
        self.cache = cache
        # journals are written as prebuilt SQL on a pooled connection, without SQLAlchemy's per-statement work
        # (ADR 0018): those with exchange records and replies to cache (a register look-up) in one group commit,
        # those of access-log entries alone (a pre-fill from the cache, a refusal) in another
        engine = sessions.kw["bind"]
        self._journals: GroupCommit[RawTransaction, _Journal, None] = GroupCommit(
            lambda: db.raw_transaction(engine), self._write_journals
        )
        self._accesses: GroupCommit[RawTransaction, _Journal, None] = GroupCommit(
            lambda: db.raw_transaction(engine), self._write_journals
        )

    def subject_hmac(self, personal_id: str) -> str:
        """What hub writes for a citizen: the personal ID's HMAC under the current key."""
        return subject_hmac(self._secret, personal_id)

    def subject_hmacs(self, personal_id: str) -> list[str]:
        """What finds a citizen's records: the HMAC under each key, the current one first."""
        return subject_hmacs(self._secrets, personal_id)

    # -- consents and documents -------------------------------------------------------------------------------

    def grant_consent(self, client: ClientSystem, body: ConsentIn) -> dict[str, Any]:
        identifiers.personal_id(body.subject_id)
        expires = _expiry(body.expires_at)
        ref = f"cs-{uuid.uuid4().hex}"
        with self.sessions.begin() as s:
            s.add(
                Consent(
                    ref=ref,
                    subject=self.subject_hmac(body.subject_id),
                    client=client.name,
                    purpose=body.purpose,
                    scope=list(body.scope),
                    granted_at=utcnow(),
                    expires_at=expires,
                    revoked_at=None,
                    granted_by="client",
                )
            )
        return {"consent_ref": ref, "purpose": body.purpose, "scope": list(body.scope), "expires_at": expires}

    def consent_of_citizen(
        self, personal_id: str, to: ClientSystem, body: CitizenConsentIn, *, per_minute: int | None = None
    ) -> dict[str, Any]:
        """The citizen, signed in, gives a client system their consent themselves (the data subject's own act,
        Decree 13/2023 art. 11: verifiable, not a client's word for it): `to` may then offer their documents for
        `purpose`, with the consent's reference, until it expires or they withdraw it."""
        self._citizen_turn(self.subject_hmac(personal_id), per_minute)
        if body.purpose not in to.prefill_purposes:
            raise Forbidden(
                f"{to.name} does not pre-fill forms for {body.purpose!r}: a consent to it would never be used",
                code="consent_purpose_not_allowed",
            )
        expires = _expiry(body.expires_at)
        ref = f"cs-{uuid.uuid4().hex}"
        now = utcnow()
        with self.sessions.begin() as s:
            s.add(
                Consent(
                    ref=ref, subject=self.subject_hmac(personal_id), client=to.name, purpose=body.purpose,
                    scope=list(body.scope), granted_at=now, expires_at=expires, revoked_at=None, granted_by="citizen",
                )
            )  # fmt: skip
        log.info("consent given by the citizen", extra={"consent_ref": ref, "client": to.name})
        return {
            "consent_ref": ref, "client": to.name, "purpose": body.purpose, "scope": list(body.scope),
            "granted_at": local_iso(now), "expires_at": local_iso(expires), "revoked_at": None, "state": "active",
            "granted_by": "citizen",
        }  # fmt: skip

    def revoke_consent(self, client: ClientSystem, ref: str) -> dict[str, Any]:
        with self.sessions.begin() as s:
            consent = s.get(Consent, ref)
            if consent is None or consent.client != client.name:
                raise NotFound(f"no consent {ref!r} recorded by this client", code="unknown_consent")
            if consent.revoked_at is None:
                consent.revoked_at = utcnow()
            return {"consent_ref": ref, "revoked_at": consent.revoked_at.isoformat()}

    def _citizen_turn(self, subject: str, per_minute: int | None) -> None:
        citizen_turn(self.quota, subject, per_minute)

    def consents_of(self, personal_id: str, *, per_minute: int | None = None) -> list[dict[str, Any]]:
        """A citizen's consents, newest first, as the citizen sees them (signed in): who holds each, for what,
        until when, and whether it still counts (active, expired, withdrawn)."""
        self._citizen_turn(self.subject_hmac(personal_id), per_minute)
        now = utcnow()
        with self.sessions() as s:
            rows = s.scalars(
                select(Consent)
                .where(Consent.subject.in_(self.subject_hmacs(personal_id)))
                .order_by(Consent.granted_at.desc(), Consent.ref)
            ).all()

            def state(c: Consent) -> str:
                if c.revoked_at is not None:
                    return "withdrawn"
                return "expired" if c.expires_at is not None and c.expires_at <= now else "active"

            return [
                {
                    "consent_ref": c.ref,
                    "client": c.client,
                    "purpose": c.purpose,
                    "scope": list(c.scope),
                    "granted_at": local_iso(c.granted_at),
                    "expires_at": local_iso(c.expires_at),
                    "revoked_at": local_iso(c.revoked_at),
                    "state": state(c),
                    "granted_by": c.granted_by or "client",
                }
                for c in rows
            ]

    def withdraw_consent(self, personal_id: str, ref: str, *, per_minute: int | None = None) -> dict[str, Any]:
        """The citizen withdraws one of their own consents (the data subject's right, Decree 13/2023 art. 12): from
        now on no pre-fill may use it — checked at the moment of use, as a revocation by the client system is. A
        consent of someone else's is answered as unknown, never confirmed."""
        self._citizen_turn(self.subject_hmac(personal_id), per_minute)
        with self.sessions.begin() as s:
            consent = s.get(Consent, ref)
            if consent is None or not any(same_text(consent.subject, h) for h in self.subject_hmacs(personal_id)):
                raise NotFound(f"you have no consent {ref[:80]!r}", code="unknown_consent")
            if consent.revoked_at is None:
                consent.revoked_at = utcnow()
                log.info("consent withdrawn by the citizen", extra={"consent_ref": ref, "client": consent.client})
            return {"consent_ref": ref, "revoked_at": local_iso(consent.revoked_at), "state": "withdrawn"}

    def register_document(self, client: ClientSystem, body: DocumentIn) -> dict[str, Any]:
        identifiers.personal_id(body.holder_id)
        if not client.may_act_for(body.issuer):
            raise Forbidden(f"client may not act for issuer {body.issuer}", code="agency_not_allowed")
        if body.dossier_code is not None:
            identifiers.dossier_code(body.dossier_code)
        issued, valid_until = _aware(body.issued_at) or body.issued_at, _aware(body.valid_until)
        if valid_until is not None and valid_until < issued:
            raise InvalidDate(
                f"valid_until {valid_until.isoformat()} is before issued_at {issued.isoformat()}",
                code="document_validity_invalid",
            )
        if issued > utcnow() + ISSUE_CLOCK_SKEW:  # offered for reuse as issued, it would be a document to come
            raise InvalidDate(f"issued_at {issued.isoformat()} is in the future", code="document_issued_in_future")
        subject = self.subject_hmac(body.holder_id)
        try:
            return self._register_document(body, subject, issued, valid_until)
        except IntegrityError:  # the same document registered by a request at the same moment: it is there now
            return self._register_document(body, subject, issued, valid_until)

    def _register_document(
        self, body: DocumentIn, subject: str, issued: datetime, valid_until: datetime | None
    ) -> dict[str, Any]:
        with self.sessions.begin() as s:
            existing = s.scalar(select(Document).where(Document.issuer == body.issuer, Document.number == body.number))
            if existing is not None:
                if not any(same_text(existing.subject, h) for h in self.subject_hmacs(body.holder_id)):
                    # a number is its issuer's once: another citizen's document, or a typo in the number
                    raise Conflict(
                        f"{body.issuer} already issued a document numbered {body.number!r} to someone else",
                        code="document_number_taken",
                    )
                return {"document_id": existing.id, "created": False}
            doc = Document(
                subject=subject,
                kind=body.kind,
                title=body.title,
                number=body.number,
                issuer=body.issuer,
                dossier_code=body.dossier_code,
                issued_at=issued,
                valid_until=valid_until,
                reference=body.reference,
                created_at=utcnow(),
            )
            s.add(doc)
            s.flush()
            return {"document_id": doc.id, "created": True}

    # -- pre-fill ---------------------------------------------------------------------------------------------

    def prefill(self, client: ClientSystem, body: PrefillIn, *, correlation_id: str) -> dict[str, Any]:
        """Fill the form. The access-log entries, exchange records and cached replies of the request are
        committed at the end, whatever the outcome, before anything is returned; if that write fails, nothing
        is. Concurrent requests share that commit (group commit: one chain lock and one flush per batch)."""
        limit, quota = client.prefill_per_minute, self.quota
        wait = quota.take(client.name, limit) if quota is not None and limit is not None else None
        return self._prefill_recorded(client, body, correlation_id, wait)

    def _prefill_recorded(
        self, client: ClientSystem, body: PrefillIn, correlation_id: str, over_quota: float | None = None
    ) -> dict[str, Any]:
        """`_prefill`, its journal committed by this thread (or the batch it joins) before it returns or raises."""
        journal = _Journal([], [])
        try:
            return self._prefill(client, body, correlation_id, journal, over_quota=over_quota)
        finally:
            group = self._group_for(journal)
            if group is not None:
                with spent("journal"):
                    group.submit(journal)

    def _group_for(self, journal: _Journal) -> GroupCommit[RawTransaction, _Journal, None] | None:
        """Which group commit writes a journal: one with exchange records or replies to cache (a register
        look-up), or one of access entries alone — the common kind, never behind the other's larger batches."""
        if journal.exchanges or journal.cache:
            return self._journals
        return self._accesses if journal.accesses else None

    def record(self, *accesses: Access) -> None:
        """Commit access-log entries of a read that is not a pre-fill (`Access.inquiry`) before the caller answers
        — in the pre-fills' own group commit, so they share its chain lock and its flushes."""
        if accesses:
            self._accesses.submit(_Journal(list(accesses), []))

    def data_usage(self, client: ClientSystem, body: SubjectIn, *, correlation_id: str) -> list[dict[str, Any]]:
        """Who used a citizen's data, newest first, for a client with the auditor role. The inquiry is itself a
        use of the citizen's data: it is logged, allowed or refused, before anything is answered."""
        identifiers.personal_id(body.subject_id)
        subject, by = self.subject_hmac(body.subject_id), body.requested_by

        def entry(outcome: str, reason: str | None = None) -> Access:
            return Access.inquiry(
                ACCESS_LOG_INQUIRY,
                client=client.name,
                agency=by.agency if by else "-",
                officer=by.officer if by else "-",
                subject=subject,
                correlation_id=correlation_id,
                outcome=outcome,
                reason=reason,
                fields=["access_log"] if outcome == "allowed" else [],
            )

        refused: DomainError | None = None
        if "auditor" not in client.roles:
            refused = Forbidden("this client may not read the access log", code="forbidden_role")
        elif by is not None and not client.may_act_for(by.agency):
            refused = Forbidden(f"client may not act for agency {by.agency}", code="agency_not_allowed")
        if refused is not None:
            self.record(entry("refused", refused.detail))
            raise refused
        with db.reading_session(self.sessions) as s:
            items = list(self.access_log.usage(s, self.subject_hmacs(body.subject_id)))
        self.record(entry("allowed"))
        return items

    def own_data_usage(
        self, personal_id: str, *, limit: int, correlation_id: str, per_minute: int | None = None
    ) -> list[dict[str, Any]]:
        """The citizen's own view of who used their data (signed in: `personal_id` from their ID token), newest
        first; the view is logged too, so the next one shows it. Past `per_minute` views (a bucket per citizen,
        keyed by the ID's HMAC): 429, nothing read and nothing logged."""
        subject = self.subject_hmac(personal_id)
        self._citizen_turn(subject, per_minute)
        with db.reading_session(self.sessions) as s:
            found = self.access_log.usage(s, self.subject_hmacs(personal_id), tz=VN_TZ)  # as the citizen reads time
            items = list(itertools.islice(found, limit))
        self.record(
            Access.inquiry(
                DATA_SUBJECT_ACCESS,
                client="citizen",
                agency="-",
                officer="self",
                subject=subject,
                correlation_id=correlation_id,
                fields=["access_log"],
            )
        )
        return items

    async def prefill_async(self, client: ClientSystem, body: PrefillIn, *, correlation_id: str) -> dict[str, Any]:
        """`prefill` for the API's event loop. A request that needs no I/O but its commit — every person in this
        process's cache, no consent to check — is answered on the loop, and waits for its commit without a
        thread; any other is done again from the start in a worker thread (the register, the database), which
        also commits its journal (no hand-back to the loop and on to the committer thread), its first attempt
        leaving nothing behind."""
        import anyio.to_thread

        journal = _Journal([], [])
        limit, quota = client.prefill_per_minute, self.quota
        wait = await quota.take_async(client.name, limit) if quota is not None and limit is not None else None
        try:
            try:
                return self._prefill(client, body, correlation_id, journal, blocking=False, over_quota=wait)
            except _WouldBlock:  # (not over the quota: that is decided before anything could block)
                journal = _Journal([], [])
                if self.bulkheads is None:
                    return await anyio.to_thread.run_sync(self._prefill_recorded, client, body, correlation_id)
                try:
                    return await self.bulkheads.run(POPULATION, self._prefill_recorded, client, body, correlation_id)
                except PeerBusy as busy:  # nothing read: logged as failed (peer_busy), the register not asked
                    journal = _Journal([], [])
                    if quota is not None and limit is not None and wait is None:  # nothing read: its token back
                        await quota.give_back_async(client.name, limit)
                    return self._prefill(client, body, correlation_id, journal, blocking=False, busy=busy)
        finally:
            group = self._group_for(journal)
            if group is not None:
                with spent("journal"):  # the access log made durable (inline on the loop, or its group commit)
                    if not (group is self._accesses and self._appended_inline(journal)):
                        await group.submit_async(journal)

    def _appended_inline(self, journal: _Journal) -> bool:
        """Append the journal's entries on this thread if that shares no commit and waits for no one (ADR 0018)."""
        if self._inline is None or not self._accesses.idle:
            return False
        return self._inline.try_write(lambda tx: self.access_log.append(tx, *journal.accesses))

    def _write_journals(self, tx: RawTransaction, journals: Sequence[_Journal]) -> list[None]:
        from hub.sync.outbox import INSERT_EXCHANGE, exchange_row

        exchanges = [exchange_row(record) for j in journals for record in j.exchanges]
        if exchanges:
            db.prebuilt(INSERT_EXCHANGE, table(Exchange), tx.dialect, list(exchanges[0])).executemany(tx, exchanges)
        if self.cache is not None:
            latest: dict[str, tuple[dict[str, Any], datetime]] = {}
            for key, payload, fetched in (entry for j in journals for entry in j.cache):
                if key not in latest or fetched >= latest[key][1]:
                    latest[key] = (payload, fetched)
            # in key order: two batches never lock rows crosswise
            self.cache.put_many(tx, [(key, *latest[key]) for key in sorted(latest)])
        # last: the chain's lock is held from here to the commit, so batches queue on it as briefly as can be
        self.access_log.append(tx, *(access for j in journals for access in j.accesses))
        return [None] * len(journals)

    def _prefill(
        self,
        client: ClientSystem,
        body: PrefillIn,
        correlation_id: str,
        journal: _Journal,
        blocking: bool = True,
        over_quota: float | None = None,
        busy: PeerBusy | None = None,
    ) -> dict[str, Any]:
        """`blocking=False`: raise _WouldBlock instead of doing I/O (a database read, a register look-up).
        `over_quota`: the client has used up its reads for now (the seconds until it has one again). `busy`: no
        place came free to wait on the register (ADR 0046): refused as such."""
        # a birth date given whose year is not the ID's (its digits 5–6 are the birth year): one of the two is
        # mistyped — said at once, the register not asked (it would only answer "no such person")
        identifiers.personal_id(body.subject_id, birth_date=body.subject_birth_date)
        template = template_for(body.procedure)
        subject = self.subject_hmac(body.subject_id)

        def access(role: str, who: str, request_id: str, outcome: str, reason: str | None, fields: list[str]) -> Access:
            return Access(
                client=client.name,
                agency=body.requested_by.agency,
                officer=body.requested_by.officer,
                subject=who,
                subject_role=role,
                procedure=body.procedure,
                purpose=body.purpose,
                legal_basis=template.legal_basis[:200],
                consent_ref=body.consent_ref,
                request_id=request_id,
                correlation_id=correlation_id,
                outcome=outcome,
                reason=reason,
                fields=fields,
            )

        def refuse(error: DomainError) -> DomainError:
            journal.accesses.append(access("subject", subject, "-", "refused", error.detail[:500], []))
            return error

        if not client.may_act_for(body.requested_by.agency):
            raise refuse(
                Forbidden(f"client may not act for agency {body.requested_by.agency}", code="agency_not_allowed")
            )
        if not client.may_prefill(body.procedure, body.purpose):
            raise refuse(
                Forbidden(
                    f"client may not read personal data for procedure {body.procedure} and purpose {body.purpose!r}",
                    code="prefill_not_allowed",
                )
            )
        if over_quota is not None:
            raise refuse(
                TooManyRequests(
                    f"client {client.name} has made its {client.prefill_per_minute} pre-fills of the minute",
                    retry_after=retry_after(over_quota),
                )
            )
        if busy is not None:
            # not hub's refusal of this client (no authorization, quota or consent said no): the register could not
            # be asked, as when it does not answer — logged as a failed access, with nothing read. A refusal counts
            # towards HubPersonalDataRefusals ("a misconfigured or probing client"); an overload has HubPeerBusy.
            journal.accesses.append(access("subject", subject, "-", "failed", busy.code, []))
            raise busy
        documents_allowed, subjects = False, [subject]
        if body.consent_ref is not None:
            if not blocking:
                raise _WouldBlock
            subjects = self.subject_hmacs(body.subject_id)  # the consent and documents may predate a key rotation
            problem = self._check_consent(body.consent_ref, subjects, body.purpose, client.name)
            if problem is not None:
                raise refuse(problem)
            documents_allowed = True

        reads: dict[str, _Read] = {}
        first = self._read(
            body, "subject", body.subject_id, subject, correlation_id, access, journal, client.name, blocking=blocking
        )
        reads["subject"] = first
        wanted = {src.person for f in template.fields for src in f.source if src.person != "subject"}
        for role in sorted(wanted):
            if not any(
                self._condition_holds(src, reads) for f in template.fields for src in f.source if src.person == role
            ):
                continue
            link = first.record.get(RELATIVES[role]) or {}
            relative_id = link.get("SoDinhDanh")
            if not relative_id:
                continue
            try:
                identifiers.personal_id(relative_id)
            except DomainError:
                continue  # a malformed link in the register: leave the relative's fields for the citizen
            rel = self._read(
                body,
                role,
                relative_id,
                self.subject_hmac(relative_id),
                correlation_id,
                access,
                journal,
                client.name,
                optional=True,
                blocking=blocking,
            )
            if rel is not None:
                reads[role] = rel

        out_fields: list[dict[str, Any]] = []
        used: dict[str, list[str]] = {role: [] for role in reads}
        stamps = {
            role: (read.fetched_at.isoformat(), (read.fetched_at + self.validity).isoformat())
            for role, read in reads.items()
        }
        for spec in template.fields:
            item: dict[str, Any] = {
                "name": spec.name,
                "label": spec.label,
                "type": spec.type,
                "required": spec.required,
                "value": None,
            }
            for src in spec.source:
                read = reads.get(src.person)
                if read is None or not self._condition_holds(src, reads):
                    continue
                raw = _get(read.record, src.steps)
                value = _format(spec.type, raw)
                if value is None:
                    continue
                item["value"] = value
                item["source"] = {
                    "system": SOURCE_SYSTEM,
                    "record": src.person,
                    "request_id": read.request_id,
                    "cached": read.cached,
                }
                item["fetched_at"], item["valid_until"] = stamps[src.person]
                if spec.type == "address" and (units := _units(raw)) is not None:
                    item["administrative_units"] = units
                used[src.person].append(spec.name)
                break
            out_fields.append(item)

        documents: list[dict[str, Any]] = []
        if documents_allowed and template.documents and body.consent_ref is not None:
            # the consent again, now: one the citizen withdrew while the register was being asked (seconds; its
            # timeout at worst) is refused as one withdrawn before would have been — no document is offered under it
            problem = self._check_consent(body.consent_ref, subjects, body.purpose, client.name)
            if problem is not None:
                raise refuse(problem)
            with self.sessions() as s:
                documents = self._documents(s, subjects, [d.kind for d in template.documents])
        for role, read in reads.items():
            offered = [f"documents:{d['kind']}" for d in documents] if role == "subject" else []
            journal.accesses.append(
                access(
                    role,
                    read.subject,
                    read.request_id,
                    "allowed",
                    "served from the cache" if read.cached else None,
                    used[role] + offered,
                )
            )
        missing = [f["name"] for f in out_fields if f["required"] and f["value"] is None]
        return {
            "procedure": body.procedure,
            "form": template.form,
            "title": template.title,
            "subject": template.subject,
            "fields": out_fields,
            "missing_required": missing,
            "documents": documents,
            "documents_offered": documents_allowed,
        }

    @staticmethod
    def _condition_holds(src: SourceSpec, reads: dict[str, _Read]) -> bool:
        for path, want in src.if_.items():
            person, *rest = path.split(".")
            read = reads.get(person)
            if read is None or str(_get(read.record, rest)) != want:
                return False
        return True

    def _read(
        self,
        body: PrefillIn,
        role: str,
        personal_id: str,
        who: str,
        correlation_id: str,
        access: Any,
        journal: _Journal,
        client: str,
        *,
        optional: bool = False,
        blocking: bool = True,
    ) -> Any:
        name = body.subject_name if role == "subject" else None
        birth = body.subject_birth_date.strftime("%Y%m%d") if role == "subject" and body.subject_birth_date else None
        # the cache is the client system's own: another client learns nothing from it (that someone read this
        # citizen a minute ago, when, under which request id) and waits for the register as that one did
        cache_key = self.cache.key(personal_id, name, birth, client) if self.cache is not None else None
        if self.cache is not None and cache_key is not None:
            hit = self.cache.get(cache_key, local_only=not blocking)
            cached = hit[0] if hit is not None else None
            if hit is not None and cached is not None:
                return _Read(role, cached["record"], str(cached["request_id"]), who, hit[1], cached=True)
        if not blocking:
            raise _WouldBlock
        request_id = uuid.uuid4().hex
        query = CitizenLookup(
            personal_id=personal_id,
            request_id=request_id,
            officer=body.requested_by.officer,
            service=body.procedure,
            full_name=body.subject_name if role == "subject" else None,
            birth_date=body.subject_birth_date.strftime("%Y%m%d")
            if role == "subject" and body.subject_birth_date
            else None,
            agency=body.requested_by.agency,
        )
        try:
            if self.pace is not None:  # the register's quota at the data-exchange platform
                self.pace()
            with spent("register"):  # the population database's own time, as hub waits for it
                record = self.population.look_up(
                    query, correlation_id=correlation_id, on_exchange=journal.exchanges.append
                )
        except PeerError as exc:
            journal.accesses.append(access(role, who, request_id, "failed", exc.code, []))
            if optional:
                return None
            if exc.retryable:
                raise PeerFailed(
                    "the population database did not answer; try again later", peer_error=exc.code, **wait_asked(exc)
                ) from None
            raise PeerRefused("the population database refused the request", peer_error=exc.code) from None
        if record is None:
            journal.accesses.append(access(role, who, request_id, "not_found", None, []))
            if optional:
                return None
            raise NotFound(
                "no citizen matches this personal ID (and name/birth date, if given)", code="subject_not_found"
            )
        fetched_at = utcnow()
        if self.cache is not None and cache_key is not None:
            journal.cache.append((cache_key, {"record": record, "request_id": request_id}, fetched_at))
        return _Read(role, record, request_id, who, fetched_at)

    def _check_consent(self, ref: str, subjects: list[str], purpose: str, client: str) -> DomainError | None:
        """Whether the consent lets `client` offer the citizen's documents for `purpose` now. A consent is given to
        one client system (the one that collected it, or the one the citizen named): another cannot use it."""
        with reading(self.sessions.kw["bind"]) as conn:
            consent = conn.execute(select(Consent).where(Consent.ref == ref)).first()
        if consent is None or consent.subject not in subjects or consent.client != client:
            return Forbidden("the consent reference is unknown for this citizen", code="consent_unknown")
        if consent.revoked_at is not None:
            return Forbidden("the citizen revoked this consent", code="consent_revoked")
        if consent.expires_at is not None and consent.expires_at <= utcnow():
            return Forbidden("this consent has expired", code="consent_expired")
        if consent.purpose != purpose or "documents" not in consent.scope:
            return Forbidden("this consent does not cover this purpose", code="consent_out_of_scope")
        return None

    @staticmethod
    def _documents(s: Session, subjects: list[str], kinds: list[str]) -> list[dict[str, Any]]:
        now = utcnow()
        rows = s.scalars(
            select(Document)
            .where(Document.subject.in_(subjects), Document.kind.in_(kinds))
            .order_by(Document.issued_at.desc())
        ).all()
        return [
            {
                "kind": d.kind,
                "title": d.title,
                "number": d.number,
                "issuer": d.issuer,
                "dossier_code": d.dossier_code,
                "issued_at": d.issued_at.isoformat(),
                "valid_until": d.valid_until.isoformat() if d.valid_until else None,
                "reference": d.reference,
            }
            for d in rows
            if d.valid_until is None or d.valid_until > now
        ]
