"""edXML (QCVN 102:2016): the envelope for documents sent between agencies. hub builds one from a header and its
attachments, signs it enveloped (the ds:Signature in edXMLHeader, covering the whole document — header, manifest
and every attachment), and reads a received one: verify first, then return only what the signature covers.

Layout (contracts/edxml/edxml.xsd):
  edXML
    edXML:edXMLEnvelope
      edXML:edXMLHeader: MessageHeader (From, To…, DocumentId, Code, PromulgationInfo, DocumentType, Subject…),
                         TraceHeaderList, ds:Signature
      edXML:edXMLBody: edXMLManifest (one Reference per attachment: ContentId, ContentType, AttachmentName)
    AttachmentEncoded: Attachment (ContentId, AttachmentName, ContentType, ContentTransferEncoded = base64)

A status notice (what a receiving agency says became of a document: arrived, accepted, being handled, done, …) is
the same envelope with a Status in edXMLHeader instead of the MessageHeader, no body, signed by the receiver.
Its codes and their meanings: contracts/document_exchange/status_codes.json."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cache
from typing import Any

from lxml import etree

from hub.adapters.exchange import ExchangeHook
from hub.signing.report import Report
from hub.signing.sign import Signer, sign_document
from hub.signing.xml import parse_untrusted

EDXML = "http://www.mic.gov.vn/TBT/QCVN_102_2016"
DS = "http://www.w3.org/2000/09/xmldsig#"
NS = {"edXML": EDXML, "ds": DS}


class EdxmlError(ValueError):
    """The envelope breaks contracts/edxml/edxml.xsd, or what was received is not a signed edXML envelope."""


@dataclass(frozen=True)
class Organ:
    id: str  # agency code, e.g. 000.00.17.H56
    name: str


@dataclass(frozen=True)
class Attachment:
    name: str
    content_type: str
    data: bytes
    description: str = ""


@dataclass
class Header:
    sender: Organ
    receivers: list[Organ]
    code_number: str  # số văn bản
    code_notation: str  # ký hiệu, e.g. QĐ-UBND
    place: str
    promulgation_date: date
    type: int
    type_name: str  # e.g. Quyết định, Công văn
    subject: str
    content: str = ""
    signer_name: str = ""
    signer_position: str = ""
    document_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    due_date: date | None = None


@cache
def schema() -> Any:
    from hub.sandbox.contracts import contracts_dir

    return etree.XMLSchema(etree.parse(str(contracts_dir() / "edxml" / "edxml.xsd")))


def _el(parent: Any, name: str, text: str | None = None) -> Any:
    el = etree.SubElement(parent, f"{{{EDXML}}}{name}")
    if text is not None:
        el.text = text
    return el


def _organ(parent: Any, name: str, organ: Organ) -> None:
    el = _el(parent, name)
    _el(el, "OrganId", organ.id)
    _el(el, "OrganName", organ.name)


def build(header: Header, attachments: list[Attachment], *, sent_at: datetime, signature_place: bool = False) -> bytes:
    """The unsigned envelope, checked against the contract; with `signature_place`, the place of the signature to
    come is held in edXMLHeader (signxml's placeholder)."""
    root = etree.Element(f"{{{EDXML}}}edXML", nsmap={"edXML": EDXML})
    envelope = _el(root, "edXMLEnvelope")
    head = _el(envelope, "edXMLHeader")
    msg = _el(head, "MessageHeader")
    _organ(msg, "From", header.sender)
    for receiver in header.receivers:
        _organ(msg, "To", receiver)
    _el(msg, "DocumentId", header.document_id)
    code = _el(msg, "Code")
    _el(code, "CodeNumber", header.code_number)
    _el(code, "CodeNotation", header.code_notation)
    promulgation = _el(msg, "PromulgationInfo")
    _el(promulgation, "Place", header.place)
    _el(promulgation, "PromulgationDate", header.promulgation_date.isoformat())
    kind = _el(msg, "DocumentType")
    _el(kind, "Type", str(header.type))
    _el(kind, "TypeName", header.type_name)
    _el(msg, "Subject", header.subject)
    if header.content:
        _el(msg, "Content", header.content)
    if header.signer_name:
        signer = _el(msg, "SignerInfo")
        if header.signer_position:
            _el(signer, "Position", header.signer_position)
        _el(signer, "FullName", header.signer_name)
    if header.due_date is not None:
        _el(msg, "DueDate", header.due_date.isoformat())
    trace = _el(_el(head, "TraceHeaderList"), "TraceHeader")
    _el(trace, "OrganId", header.sender.id)
    _el(trace, "Timestamp", sent_at.isoformat(timespec="seconds"))
    if signature_place:
        etree.SubElement(head, f"{{{DS}}}Signature", Id="placeholder", nsmap={"ds": DS})
    manifest = _el(_el(envelope, "edXMLBody"), "edXMLManifest")
    encoded = etree.SubElement(root, "AttachmentEncoded") if attachments else None
    for i, a in enumerate(attachments, start=1):
        cid = f"cid:{i}"
        ref = _el(manifest, "Reference")
        _el(ref, "ContentId", cid)
        _el(ref, "ContentType", a.content_type)
        _el(ref, "AttachmentName", a.name)
        if a.description:
            _el(ref, "Description", a.description)
        att = etree.SubElement(encoded, "Attachment")
        for name, text in (("ContentId", cid), ("AttachmentName", a.name), ("ContentType", a.content_type)):
            etree.SubElement(att, name).text = text
        etree.SubElement(att, "ContentTransferEncoded").text = base64.b64encode(a.data).decode()
    _check(root, signed=False)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def _check(root: Any, *, signed: bool) -> None:
    check = root
    if not signed:  # the placeholder is not a signature yet: validate without it
        check = etree.fromstring(etree.tostring(root))
        for ph in check.findall(".//ds:Signature", NS):
            ph.getparent().remove(ph)
    if not schema().validate(check):
        errors = "; ".join(f"line {e.line}: {e.message}" for e in list(schema().error_log)[:5])
        raise EdxmlError(f"the envelope breaks contracts/edxml/edxml.xsd: {errors}")


def sign(
    header: Header,
    attachments: list[Attachment],
    signer: Signer,
    *,
    sent_at: datetime,
    xades: bool = True,
    tsa_url: str | None = None,
    tsa_timeout: float = 10.0,
    on_exchange: ExchangeHook | None = None,
) -> bytes:
    """Build and sign an envelope as the sending agency (XAdES-B-B, or B-T with a TSA)."""
    envelope = build(header, attachments, sent_at=sent_at, signature_place=True)
    return sign_document(
        envelope, signer, xades=xades, tsa_url=tsa_url, tsa_timeout=tsa_timeout, on_exchange=on_exchange
    )


@dataclass
class Received:
    report: Report
    header: dict[str, Any] | None = None
    attachments: list[Attachment] = field(default_factory=list)


def read(data: bytes, verify: Any) -> Received:
    """Verify a received envelope (`verify`: bytes -> Report) and, only when the signature passed and covers the
    whole document, return its header and attachments. Otherwise the report alone says why."""
    report: Report = verify(data)
    if report.indication != "TOTAL-PASSED":
        return Received(report)
    refs = report.signed_references
    if len(refs) != 1 or refs[0].get("uri") != "" or refs[0].get("kind") != "document":
        report.indication, report.sub_indication = "TOTAL-FAILED", "FORMAT_FAILURE"
        report.detail = 'an edXML envelope must be signed as a whole (one reference, URI="")'
        return Received(report)
    root = parse_untrusted(data)  # the same bytes the signature was verified over, all of it covered
    if root.tag != f"{{{EDXML}}}edXML" or not schema().validate(root):
        report.indication, report.sub_indication = "TOTAL-FAILED", "FORMAT_FAILURE"
        report.detail = "a valid signature, but not over an edXML envelope (contracts/edxml/edxml.xsd)"
        return Received(report)
    msg = root.find("edXML:edXMLEnvelope/edXML:edXMLHeader/edXML:MessageHeader", NS)
    if msg is None:
        report.indication, report.sub_indication = "TOTAL-FAILED", "FORMAT_FAILURE"
        report.detail = "a status notice, not a document (no MessageHeader)"
        return Received(report)

    def text(path: str) -> str:
        return str(msg.findtext(path, default="", namespaces=NS))

    header = {
        "from": {"id": text("edXML:From/edXML:OrganId"), "name": text("edXML:From/edXML:OrganName")},
        "to": [
            {"id": t.findtext("edXML:OrganId", "", NS), "name": t.findtext("edXML:OrganName", "", NS)}
            for t in msg.findall("edXML:To", NS)
        ],
        "document_id": text("edXML:DocumentId"),
        "code": f"{text('edXML:Code/edXML:CodeNumber')}/{text('edXML:Code/edXML:CodeNotation')}",
        "place": text("edXML:PromulgationInfo/edXML:Place"),
        "promulgation_date": text("edXML:PromulgationInfo/edXML:PromulgationDate"),
        "type": text("edXML:DocumentType/edXML:TypeName"),
        "subject": text("edXML:Subject"),
        "signer": text("edXML:SignerInfo/edXML:FullName") or None,
    }
    listed = {
        r.findtext("edXML:ContentId", "", NS): r
        for r in root.findall("edXML:edXMLEnvelope/edXML:edXMLBody/edXML:edXMLManifest/edXML:Reference", NS)
    }
    out: list[Attachment] = []
    for att in root.findall("AttachmentEncoded/Attachment"):
        cid = att.findtext("ContentId", "")
        if cid not in listed:
            report.indication, report.sub_indication = "TOTAL-FAILED", "FORMAT_FAILURE"
            report.detail = f"attachment {cid} is not in the manifest"
            return Received(report)
        payload = base64.b64decode("".join(att.findtext("ContentTransferEncoded", "").split()))
        out.append(Attachment(att.findtext("AttachmentName", ""), att.findtext("ContentType", ""), payload))
    if len(out) != len(listed):
        report.indication, report.sub_indication = "TOTAL-FAILED", "FORMAT_FAILURE"
        report.detail = "the manifest lists attachments the envelope does not carry"
        return Received(report)
    header["attachments"] = [
        {
            "name": a.name,
            "content_type": a.content_type,
            "bytes": len(a.data),
            "sha256": hashlib.sha256(a.data).hexdigest(),
        }
        for a in out
    ]
    return Received(report, header, out)


# -- status notices ---------------------------------------------------------------------------------------------


@cache
def status_codes() -> dict[str, dict[str, Any]]:
    """code -> {vi, en, final}: contracts/document_exchange/status_codes.json."""
    from hub.sandbox.contracts import contracts_dir

    data = json.loads((contracts_dir() / "document_exchange" / "status_codes.json").read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("$")}


@dataclass(frozen=True)
class StatusNotice:
    """What `author` says of the document `document_id` that `sender` sent (its code and date): a receiver
    telling what became of it, or the sender recalling it (13)."""

    sender: str  # agency code of the document's sender
    document_code: str  # e.g. 57/TLKS-UBND
    promulgation_date: date
    document_id: str
    author: Organ  # From: who says it
    status: str  # a code of contracts/document_exchange/status_codes.json
    at: datetime  # when the receiver says it happened (aware)
    description: str = ""
    staff: str = ""
    department: str = ""


def build_status(notice: StatusNotice, *, signature_place: bool = False) -> bytes:
    """The unsigned status envelope, checked against the contract."""
    if notice.at.tzinfo is None:
        raise EdxmlError("a status notice's time must say its offset")
    root = etree.Element(f"{{{EDXML}}}edXML", nsmap={"edXML": EDXML})
    head = _el(_el(root, "edXMLEnvelope"), "edXMLHeader")
    status = _el(head, "Status")
    about = _el(status, "ResponseFor")
    _el(about, "OrganId", notice.sender)
    _el(about, "Code", notice.document_code)
    _el(about, "PromulgationDate", notice.promulgation_date.isoformat())
    _el(about, "DocumentId", notice.document_id)
    _organ(status, "From", notice.author)
    if notice.staff or notice.department:
        staff = _el(status, "StaffInfo")
        if notice.department:
            _el(staff, "Department", notice.department)
        if notice.staff:
            _el(staff, "Staff", notice.staff)
    _el(status, "StatusCode", notice.status)
    if notice.description:
        _el(status, "Description", notice.description)
    _el(status, "Timestamp", notice.at.isoformat(timespec="seconds"))
    if signature_place:
        etree.SubElement(head, f"{{{DS}}}Signature", Id="placeholder", nsmap={"ds": DS})
    _check(root, signed=False)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def sign_status(notice: StatusNotice, signer: Signer, *, xades: bool = True) -> bytes:
    """A status notice signed as its author (a receiving agency; hub itself for a recall)."""
    return sign_document(build_status(notice, signature_place=True), signer, xades=xades)


@dataclass
class ReceivedStatus:
    report: Report
    notice: StatusNotice | None = None


def read_status(data: bytes, verify: Any) -> ReceivedStatus:
    """Verify a status notice (`verify`: bytes -> Report) and, only when its signature passed over the whole
    envelope, return what it says. Otherwise the report alone says why."""
    report: Report = verify(data)
    if report.indication != "TOTAL-PASSED":
        return ReceivedStatus(report)

    def refuse(detail: str) -> ReceivedStatus:
        report.indication, report.sub_indication, report.detail = "TOTAL-FAILED", "FORMAT_FAILURE", detail
        return ReceivedStatus(report)

    refs = report.signed_references
    if len(refs) != 1 or refs[0].get("uri") != "" or refs[0].get("kind") != "document":
        return refuse('a status notice must be signed as a whole (one reference, URI="")')
    root = parse_untrusted(data)
    if root.tag != f"{{{EDXML}}}edXML" or not schema().validate(root):
        return refuse("a valid signature, but not over an edXML envelope (contracts/edxml/edxml.xsd)")
    status = root.find("edXML:edXMLEnvelope/edXML:edXMLHeader/edXML:Status", NS)
    if status is None:
        return refuse("a document, not a status notice (no Status)")

    def text(path: str) -> str:
        return str(status.findtext(path, default="", namespaces=NS)).strip()

    try:
        at = datetime.fromisoformat(text("edXML:Timestamp"))
        promulgated = date.fromisoformat(text("edXML:ResponseFor/edXML:PromulgationDate"))
    except ValueError as exc:  # what XSD allows and Python does not read (years past 9999, a dated zone)
        return refuse(f"a status notice's dates do not read: {exc}")
    if at.tzinfo is None:  # a local time without its offset: Vietnam's (the national standard's habit)
        from hub.domain.dates import VN_TZ

        at = at.replace(tzinfo=VN_TZ)
    notice = StatusNotice(
        sender=text("edXML:ResponseFor/edXML:OrganId"),
        document_code=text("edXML:ResponseFor/edXML:Code"),
        promulgation_date=promulgated,
        document_id=text("edXML:ResponseFor/edXML:DocumentId"),
        author=Organ(text("edXML:From/edXML:OrganId"), text("edXML:From/edXML:OrganName")),
        status=text("edXML:StatusCode"),
        at=at,
        description=text("edXML:Description"),
        staff=text("edXML:StaffInfo/edXML:Staff"),
        department=text("edXML:StaffInfo/edXML:Department"),
    )
    return ReceivedStatus(report, notice)
