"""Validated identifiers of Vietnamese e-government: CCCD, agency code, MaTTHC, MaHoSo.

Formats follow ../shared/REFERENCE.md; they are kept here, in one place, so a deployment can adjust them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from hub.domain import provinces
from hub.domain.errors import InvalidIdentifier

# Agency identifier code (mã định danh cơ quan): dotted groups, e.g. 000.00.00.G22, 000.00.17.H56.
AGENCY_CODE_RE = re.compile(r"^[0-9]{3}\.[0-9]{2}\.[0-9]{2}\.[A-Z][0-9]{2}\Z")
# Procedure code (MaTTHC): e.g. 1.001193, 2.000488.
PROCEDURE_CODE_RE = re.compile(r"^[0-9]\.[0-9]{6}\Z")
# Dossier code (MaHoSo): {agency}-{yyMMdd}-{nnnn}.
DOSSIER_CODE_RE = re.compile(
    r"^(?P<agency>[0-9]{3}\.[0-9]{2}\.[0-9]{2}\.[A-Z][0-9]{2})-(?P<day>[0-9]{6})-(?P<seq>[0-9]{4})\Z"
)
CCCD_RE = re.compile(r"^[0-9]{12}\Z")

# Province-of-birth codes that may appear in a CCCD: the 63 provinces before 1 July 2025 (the numbering a
# personal ID keeps for life; `provinces.now_of` says where such a province is now).
CCCD_PROVINCE_CODES = frozenset(int(code) for code in provinces.OLD)


def _shown(value: object) -> str:
    """A wrong identifier as an error message quotes it: its first 80 characters (the message is not an echo)."""
    text = repr(value[:80]) if isinstance(value, str) else repr(value)[:80]
    return text + ("…" if isinstance(value, str) and len(value) > 80 else "")


def agency_code(value: str) -> str:
    if not isinstance(value, str) or not AGENCY_CODE_RE.match(value):
        raise InvalidIdentifier(
            f"agency code {_shown(value)} is not of the form 000.00.00.X00", code="invalid_agency_code"
        )
    return value


def procedure_code(value: str) -> str:
    if not isinstance(value, str) or not PROCEDURE_CODE_RE.match(value):
        raise InvalidIdentifier(
            f"procedure code (MaTTHC) {_shown(value)} is not of the form 1.001193", code="invalid_procedure_code"
        )
    return value


@dataclass(frozen=True, slots=True)
class DossierCode:
    """A parsed MaHoSo (dossier code)."""

    value: str
    agency: str
    received_on: date
    daily_sequence: int

    def __str__(self) -> str:
        return self.value


def dossier_code(value: str) -> DossierCode:
    m = DOSSIER_CODE_RE.match(value) if isinstance(value, str) else None
    if m is None:
        raise InvalidIdentifier(
            f"dossier code (MaHoSo) {_shown(value)} is not of the form {{agency}}-{{yyMMdd}}-{{nnnn}}",
            code="invalid_dossier_code",
        )
    day = m.group("day")
    try:
        received = date(2000 + int(day[0:2]), int(day[2:4]), int(day[4:6]))
    except ValueError:
        raise InvalidIdentifier(
            f"dossier code (MaHoSo) {_shown(value)} has an impossible date", code="invalid_dossier_code"
        ) from None
    seq = int(m.group("seq"))
    if seq == 0:
        raise InvalidIdentifier(f"dossier code (MaHoSo) {_shown(value)} has sequence 0000", code="invalid_dossier_code")
    return DossierCode(value=value, agency=m.group("agency"), received_on=received, daily_sequence=seq)


@dataclass(frozen=True, slots=True)
class PersonalId:
    """A structurally valid 12-digit personal identification number (CCCD / số định danh cá nhân)."""

    value: str
    province_code: int
    male: bool
    birth_year: int

    def __repr__(self) -> str:  # never show the number in clear
        return f"PersonalId(***{self.value[-3:]})"

    __str__ = __repr__


def personal_id(value: str, *, birth_date: date | None = None, male: bool | None = None) -> PersonalId:
    """Validate CCCD structure: province (3) + century/sex (1) + birth year (2) + random (6); no check digit."""
    if not isinstance(value, str) or not CCCD_RE.match(value):
        raise InvalidIdentifier("personal ID must be exactly 12 digits", code="invalid_personal_id")
    province = int(value[0:3])
    if province not in CCCD_PROVINCE_CODES:
        raise InvalidIdentifier("personal ID has an unknown province-of-birth code", code="invalid_personal_id")
    gender_century = int(value[3])
    century = 1900 + (gender_century // 2) * 100
    if century > 2300:
        raise InvalidIdentifier("personal ID has an impossible century digit", code="invalid_personal_id")
    year = century + int(value[4:6])
    is_male = gender_century % 2 == 0
    if birth_date is not None and birth_date.year != year:
        raise InvalidIdentifier("personal ID does not match the birth year", code="invalid_personal_id")
    if male is not None and male != is_male:
        raise InvalidIdentifier("personal ID does not match the sex", code="invalid_personal_id")
    if year > date.today().year:  # noqa: DTZ011 - a calendar year, zone-insensitive within a day
        raise InvalidIdentifier("personal ID has a birth year in the future", code="invalid_personal_id")
    return PersonalId(value=value, province_code=province, male=is_male, birth_year=year)


LINK_SCHEMES = ("", "http", "https", "urn", "dossier")  # "dossier:MaHoSo": a result kept with the dossier


def usable_link(value: str) -> bool:
    """Whether a document's reference may be handed on to a portal that shows it as a link: a web address, a URN,
    `dossier:…`, or a plain identifier — never `javascript:`, `data:`, `file:`, however spaced or cased (browsers
    drop tabs and line breaks inside a URL, so the scheme is read the same way)."""
    from urllib.parse import urlsplit

    cleaned = "".join(c for c in value if c.isprintable() and not c.isspace())
    try:
        scheme = urlsplit(cleaned).scheme.lower()
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        return False
    return scheme in LINK_SCHEMES
