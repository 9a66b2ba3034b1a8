"""The inbound message shapes (DongBoHoSoMC dossier, CapNhatTienDoHoSoMC step), mirroring contracts/national_portal."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from hub.domain import identifiers
from hub.domain.dates import parse_national
from hub.domain.numbers import whole_number
from hub.domain.status import VIETNAMESE_NAMES, DossierStatus


def _text(item: str) -> str:
    if "\x00" in item:
        raise ValueError("strings must not contain the NUL character")
    if item.isascii():
        return item
    try:
        item.encode()
    except UnicodeEncodeError:  # JSON lets "\ud800" through; no database or peer takes it as text
        raise ValueError("strings must be Unicode text: an unpaired surrogate is not a character") from None
    return item if unicodedata.is_normalized("NFC", item) else unicodedata.normalize("NFC", item)


def _reject_nul(value: Any) -> Any:
    """Every string of a request, however deep: refused if it holds U+0000 or an unpaired surrogate (PostgreSQL
    text and JSONB cannot hold them; no legitimate field carries them), and put in Unicode NFC — precomposed, as
    TCVN 6909:2001 (mandatory for state agencies' systems, Circular 39/2017/TT-BTTTT) writes Vietnamese. Text
    typed on some systems arrives decomposed ("Nguyễn" as "Nguyê" + U+0303): the same name in other bytes, which
    the portal and the register would take for another name. Containers are normalized in place, iteratively
    (no recursion limit)."""
    if isinstance(value, str):
        return _text(value)
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        slots: Iterable[tuple[Any, Any]]
        if isinstance(item, dict):
            for key in [k for k in item if isinstance(k, str) and _text(k) is not k]:
                item[_text(key)] = item.pop(key)
            slots = list(item.items())
        elif isinstance(item, list):
            slots = enumerate(item)
        else:
            continue
        for where, inner in slots:
            if isinstance(inner, str):
                clean = _text(inner)
                if clean is not inner:
                    item[where] = clean
            elif isinstance(inner, dict | list):
                stack.append(inner)
    return value


class NulFree(BaseModel):
    """Base of request models: every field, once validated, is refused if it holds the NUL character, and its
    text is put in NFC."""

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return _reject_nul(value)


def _national_date(value: str) -> str:
    parse_national(value)  # raises InvalidDate (a ValueError subclass is not needed: pydantic wraps it)
    return value


def _dossier_code(value: str) -> str:
    return identifiers.dossier_code(value).value


def _as_number(digits: int) -> Callable[[Any], Any]:
    """A code or an amount written as digits in a string ("2", "02", "8000") is that number: one-stop systems in
    service send the portal's codes so (OpenCPS writes TrangThaiHoSo, LoaiDoiTuong and HinhThuc as strings), and
    the portal takes them. Anything else — `true`, "2.0", " 2", "hai" — is left to strict validation, which
    refuses it."""

    def read(value: Any) -> Any:
        number = whole_number(value, digits) if isinstance(value, str) else None
        return value if number is None else number

    return read


def _absent(value: Any) -> Any:
    """An optional field sent empty ("", or only spaces) is a field not sent: one-stop systems write every field
    of the message and leave the unknown ones "" (a return date not yet set, no fax). Left empty, an optional
    date would be refused as a malformed date and an optional code as no number."""
    if isinstance(value, str) and not value.strip():
        return None
    return value


_code = _as_number(3)

Code = Annotated[int, BeforeValidator(_code)]
OptionalCode = Annotated[int | None, BeforeValidator(lambda value: _code(_absent(value)))]
Amount = Annotated[int, BeforeValidator(_as_number(12))]  # whole đồng

NationalDate = Annotated[
    str, Field(pattern=r"^[0-9]{14}$", examples=["20241015083000"]), AfterValidator(_national_date)
]
DossierCodeStr = Annotated[
    str, Field(max_length=64, examples=["000.00.17.H56-241015-0007"]), AfterValidator(_dossier_code)
]
ProcedureCodeStr = Annotated[str, Field(pattern=r"^[0-9]\.[0-9]{6}$", examples=["1.001193"])]
OptionalDate = Annotated[NationalDate | None, BeforeValidator(_absent)]
OptionalText = Annotated[str | None, BeforeValidator(_absent)]


class Fee(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    TenPhiLePhi: str = Field(max_length=500)
    MaPhiLePhi: OptionalText = Field(default=None, max_length=50)
    HinhThucThu: OptionalCode = None
    Gia: Amount = Field(ge=0, le=10_000_000_000, description="amount in whole đồng (VND has no minor unit)")
    LoaiPhiLePhi: OptionalCode = None


Trimmed = Annotated[str, StringConstraints(strip_whitespace=True)]
OptionalTrimmed = Annotated[Trimmed | None, BeforeValidator(_absent)]
Items = Annotated[list[dict[str, Any]] | None, BeforeValidator(_absent)]


class DossierIn(BaseModel):
    """A dossier in the national portal's DongBoHoSoMC shape. Unknown fields are dropped, never forwarded. As the
    portal reads them, a code or an amount may come as digits in a string ("2") and an optional field left empty
    ("") is one not sent; hub relays the contract's form (numbers, no empty fields)."""

    # strict: `true` is not status 1, nor 2.0 status 2; a code or an amount may come as digits in a string ("2"),
    # and an optional field empty ("") is one not sent, as the portal reads them (`_code`, `_absent`)
    model_config = ConfigDict(extra="ignore", strict=True)

    _no_nul = model_validator(mode="before")(_reject_nul)

    MaHoSo: DossierCodeStr
    MaTTHC: ProcedureCodeStr
    TenTTHC: str = Field(min_length=1, max_length=500)
    MaLinhVuc: OptionalText = Field(default=None, max_length=50)
    TenLinhVuc: OptionalText = Field(default=None, max_length=500)
    KenhThucHien: Code = Field(ge=1, le=3, description="1 in person, 2 online, 3 postal")
    ChuHoSo: str = Field(min_length=1, max_length=200)
    # The owner's ID number, phone and e-mail are matched and used as keys (the ID by its HMAC, for the citizen's
    # own view and the console's search; the phone and address for notices): the spaces or line end a form left
    # around them are no part of them.
    SoGiayToChuHoSo: OptionalTrimmed = Field(default=None, max_length=20)
    LoaiDoiTuong: Code = Field(ge=1, le=4, description="1 citizen, 2 business, 3 agency, 4 other")
    MaDoiTuong: OptionalText = Field(default=None, max_length=50)
    Email: OptionalTrimmed = Field(default=None, max_length=200)
    SoDienThoai: OptionalTrimmed = Field(default=None, max_length=20)
    TrichYeuHoSo: OptionalText = Field(default=None, max_length=2000)
    NgayTiepNhan: NationalDate
    NgayHenTra: OptionalDate = None
    TrangThaiHoSo: Code = Field(ge=1, le=10)
    NgayTra: OptionalDate = None
    ThongTinTra: OptionalText = Field(default=None, max_length=2000)
    HinhThuc: OptionalCode = Field(default=None, ge=0, le=3)
    NgayKetThucXuLy: OptionalDate = None
    DonViXuLy: OptionalText = Field(default=None, max_length=500)
    GhiChu: OptionalText = Field(default=None, max_length=2000)
    TaiLieuNop: Items = Field(default=None, max_length=200)
    DanhSachLePhi: Annotated[list[Fee] | None, BeforeValidator(_absent)] = Field(default=None, max_length=50)
    DanhSachHoSoBoSung: Items = Field(default=None, max_length=200)
    DanhSachGiayToKetQua: Items = Field(default=None, max_length=200)
    DinhDanhCHS: Items = Field(default=None, max_length=20)
    DuocThanhToanTrucTuyen: OptionalCode = Field(default=None, ge=0, le=2)

    def national(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class ProgressIn(BaseModel):
    """One processing step in the CapNhatTienDoHoSoMC shape (codes as digits in a string and empty optional
    fields taken as for a dossier)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    _no_nul = model_validator(mode="before")(_reject_nul)

    MaHoSo: DossierCodeStr
    NguoiXuLy: str = Field(min_length=1, max_length=200)
    ChucDanh: OptionalText = Field(default=None, max_length=200)
    ThoiDiemXuLy: NationalDate
    PhongBanXuLy: OptionalText = Field(default=None, max_length=500)
    NoiDungXuLy: OptionalText = Field(
        default=None,
        max_length=2000,
        description="what was done; sent empty or left out (a one-stop step with no note), the status's official "
        "name (e.g. Đang xử lý): the step still reaches the portal, described",
    )
    TrangThai: Code = Field(ge=1, le=10)
    NgayBatDau: OptionalDate = None
    NgayKetThucTheoQuyDinh: OptionalDate = None

    @model_validator(mode="after")
    def _described(self) -> ProgressIn:
        if self.NoiDungXuLy is None:  # OpenCPS sends its officer's note, "" when none was typed
            self.NoiDungXuLy = VIETNAMESE_NAMES[DossierStatus(self.TrangThai)]
        return self

    def national(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def _agency(value: str) -> str:
    return identifiers.agency_code(value)


class OrganIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: Annotated[str, AfterValidator(_agency)] = Field(description="agency code, e.g. 000.00.00.G22")
    name: str = Field(min_length=1, max_length=500)


class AttachmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=255)
    content_type: str = Field(default="application/pdf", pattern=r"^[\w.+-]+/[\w.+-]+$", max_length=100)
    data: str = Field(min_length=1, description="the file, base64")
    description: str = Field(default="", max_length=500)

    @field_validator("data")
    @classmethod
    def _base64(cls, value: str) -> str:
        import base64
        import binascii

        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("data must be base64") from None
        return value


class EdocIn(BaseModel):
    """A document of a dossier for other agencies, sent as a signed edXML envelope (QCVN 102:2016)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    _no_nul = model_validator(mode="before")(_reject_nul)

    sender_name: str = Field(
        min_length=1, max_length=500, description="the sending agency's name (its code is the dossier's)"
    )
    to: list[OrganIn] = Field(min_length=1, max_length=50)
    code_number: str = Field(min_length=1, max_length=50, description="số văn bản")
    code_notation: str = Field(min_length=1, max_length=100, description="ký hiệu, e.g. QĐ-UBND")
    place: str = Field(min_length=1, max_length=200)
    type: int = Field(ge=1, le=99)
    type_name: str = Field(min_length=1, max_length=200, description="e.g. Quyết định, Công văn")
    subject: str = Field(min_length=1, max_length=500)
    content: str = Field(default="", max_length=10_000)
    signer_name: str = Field(default="", max_length=200)
    signer_position: str = Field(default="", max_length=200)
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=20)


class Accepted(BaseModel):
    """The answer to an accepted status change (202): the event recorded, to be relayed in order. A repeat with the
    same Idempotency-Key gets this same answer, with the header `Idempotent-Replayed: true`."""

    model_config = ConfigDict(extra="forbid")  # documented exactly: additionalProperties false
    event_id: str | None = Field(
        description="the status event's id (a UUID); the peer's idempotency key derives from it. Null only when "
        "`unchanged`: nothing was recorded"
    )
    MaHoSo: str = Field(description="the dossier (mã hồ sơ)")
    seq: int = Field(description="the event's place in the dossier's history, from 1 (when `unchanged`: its latest)")
    TrangThaiHoSo: int = Field(description="the dossier's status after the event (1–10)")
    previous_status: int | None = Field(description="its status before (null for a new dossier)")
    unchanged: bool | None = Field(
        default=None,
        description="only in the national portal's push (`/v1/national/dossiers`), true when the dossier pushed is "
        "the one hub holds, status and fields alike (a poll that found what a push brought): no event, nothing relayed",
    )
    taken_over: bool | None = Field(
        default=None,
        description="true when hub took over a dossier already in progress (sent with isUpdating=true, unknown to "
        "hub): its history at hub starts at this status, and it is relayed to the portal as an update",
    )


MAX_BATCH = 200  # dossiers a batch may carry (about 1 KB each: within HUB_MAX_BODY_BYTES, 1 MiB)


class DossierBatchIn(BaseModel):
    """Many dossiers at once, in DongBoHoSoMC's own envelope (`data`: an array of dossiers) — what a one-stop system
    sends when it first connects to hub with its open dossiers, or re-syncs after an outage of its own."""

    model_config = ConfigDict(extra="forbid")
    data: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description="the dossiers, each as POST /v1/dossiers takes one; each item is taken or refused on its own",
        json_schema_extra={"items": {"$ref": "#/components/schemas/DossierIn"}},
    )
    isUpdating: bool | None = Field(  # noqa: N815 - the portal's own name
        default=None,
        description="true: these dossiers were synced to the portal before (or filed before the one-stop system was "
        "connected to hub) — one hub has not seen is taken over at whatever status it is in, instead of having to "
        "start in 1 or 2 (ADR 0041). Dossiers hub knows follow the transition table either way",
    )


class ProgressBatchIn(BaseModel):
    """Many processing steps at once, in CapNhatTienDoHoSoMC's envelope (`data`: an array of steps, each naming its
    dossier) — what a one-stop system sends when it catches up after an outage of its own."""

    model_config = ConfigDict(extra="forbid")
    data: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description="the steps, each as POST /v1/dossiers/{MaHoSo}/progress takes one; a dossier's steps in order",
        json_schema_extra={"items": {"$ref": "#/components/schemas/ProgressIn"}},
    )


class BatchItem(BaseModel):
    """One item's outcome, at its place in the batch: accepted (202, with what POST /v1/dossiers answers), or
    refused with its problem (RFC 9457, the status and code that request alone would have got)."""

    model_config = ConfigDict(extra="forbid")
    index: int = Field(description="the item's place in `data`, from 0")
    status: int = Field(description="202, or the problem's status (403, 409, 422, …)")
    MaHoSo: str | None = Field(default=None, description="the dossier, when the item names one")
    event_id: str | None = None
    seq: int | None = None
    TrangThaiHoSo: int | None = None
    previous_status: int | None = None
    replayed: bool | None = Field(default=None, description="true: the answer given before to the same item")
    taken_over: bool | None = Field(
        default=None, description="true: a dossier in progress hub had not seen, taken over at its status (isUpdating)"
    )
    problem: dict[str, Any] | None = Field(default=None, description="why it was refused (problem+json)")


class BatchAccepted(BaseModel):
    """The batch's answer (200): how many items were accepted and refused, and each item's outcome in order."""

    model_config = ConfigDict(extra="forbid")
    accepted: int
    refused: int
    results: list[BatchItem]


class RecallIn(BaseModel):
    """Ask the receivers of a document to give it back (edXML status 13, "Lấy lại")."""

    model_config = ConfigDict(extra="forbid", strict=True)

    _no_nul = model_validator(mode="before")(_reject_nul)

    reason: str = Field(min_length=1, max_length=2000, description="why, as the receivers will read it")


class RecallAccepted(BaseModel):
    """The answer to a recall (202): signed, queued for the exchange platform after the document itself."""

    model_config = ConfigDict(extra="forbid")
    event_id: str
    MaHoSo: str
    document_id: str
    status: str = Field(description='"13": a recall')
    seq: int


class DocumentAccepted(BaseModel):
    """The answer to a document filed for other agencies (202): signed, queued for the exchange platform."""

    model_config = ConfigDict(extra="forbid")
    event_id: str
    MaHoSo: str
    document_id: str = Field(description="the edXML envelope's DocumentId")
    seq: int = Field(description="the document's place among the dossier's documents, from 1")
