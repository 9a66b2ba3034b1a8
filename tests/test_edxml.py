"""edXML (QCVN 102:2016) envelopes between agencies: built against contracts/edxml/edxml.xsd, signed as the sending
agency (XAdES, time-stamped), read back only when the signature covers all of it; xmlsec1 verifies them too."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from lxml import etree

from hub.signing import edxml
from tests.pki_helpers import Trust
from tests.test_signing import HUB_BIN, tsa_url, verdict, xmlsec1_verify

PDF = b"%PDF-1.4\n% Quyet dinh cap ban sao trich luc khai sinh\n" + bytes(range(256)) * 40


def header(**changes: object) -> edxml.Header:
    h = edxml.Header(
        sender=edxml.Organ("000.00.17.H56", "UBND phường Bến Nghé"),
        receivers=[edxml.Organ("000.00.00.G22", "Văn phòng Chính phủ"), edxml.Organ("000.00.17.H29", "Sở Tư pháp")],
        code_number="123",
        code_notation="QĐ-UBND",
        place="Thành phố Hồ Chí Minh",
        promulgation_date=date(2026, 12, 1),
        type=1,
        type_name="Quyết định",
        subject="Về việc cấp bản sao trích lục khai sinh cho công dân Nguyễn Văn An",
        signer_name="Trần Thị Bình",
        signer_position="Chủ tịch",
    )
    for k, v in changes.items():
        setattr(h, k, v)
    return h


def signed_envelope(trust: Trust, *, stamped: bool = True) -> bytes:
    attachments = [edxml.Attachment("quyet-dinh-123.pdf", "application/pdf", PDF, "Quyết định (bản ký số)")]
    return edxml.sign(
        header(), attachments, trust.signer("official"), sent_at=datetime.now(UTC),
        tsa_url=tsa_url(trust) if stamped else None,
    )  # fmt: skip


def test_an_envelope_is_signed_read_back_and_keeps_its_attachments(trust: Trust) -> None:
    data = signed_envelope(trust)
    root = etree.fromstring(data)
    assert root.find("edXML:edXMLEnvelope/edXML:edXMLHeader/ds:Signature", edxml.NS) is not None  # in the header
    assert edxml.schema().validate(root)
    received = edxml.read(data, trust.verifier().verify)
    assert verdict(received.report) == ("TOTAL-PASSED", None), received.report.detail
    assert received.report.signature_format == "XAdES-B-T"
    h = received.header
    assert h is not None and h["code"] == "123/QĐ-UBND" and h["from"]["id"] == "000.00.17.H56"
    assert [t["name"] for t in h["to"]] == ["Văn phòng Chính phủ", "Sở Tư pháp"]
    assert [(a.name, a.content_type, a.data) for a in received.attachments] == [
        ("quyet-dinh-123.pdf", "application/pdf", PDF)
    ]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"<edXML:CodeNumber>123<", b"<edXML:CodeNumber>124<"),  # the document number
        (b"Tr\xe1\xba\xa7n Th\xe1\xbb\x8b B\xc3\xacnh", b"Tr\xe1\xba\xa7n V\xc4\x83n B\xc3\xacnh"),  # who signed
    ],
)
def test_a_changed_header_fails(trust: Trust, old: bytes, new: bytes) -> None:
    data = signed_envelope(trust, stamped=False)
    assert old in data
    received = edxml.read(data.replace(old, new, 1), trust.verifier().verify)
    assert verdict(received.report) == ("TOTAL-FAILED", "HASH_FAILURE") and received.header is None


def test_a_swapped_attachment_fails(trust: Trust) -> None:
    data = signed_envelope(trust, stamped=False)
    root = etree.fromstring(data)
    encoded = root.find("AttachmentEncoded/Attachment/ContentTransferEncoded")
    encoded.text = "JVBERi0xLjQKJSBmb3JnZWQ="  # another PDF
    received = edxml.read(etree.tostring(root), trust.verifier().verify)
    assert verdict(received.report) == ("TOTAL-FAILED", "HASH_FAILURE") and received.attachments == []


def test_a_signed_document_that_is_not_an_envelope_is_refused(trust: Trust) -> None:
    from hub.signing.sign import sign_document

    other = sign_document(b'<HoSo xmlns="urn:x"><MaHoSo>1</MaHoSo></HoSo>', trust.signer("official"))
    received = edxml.read(other, trust.verifier().verify)
    assert verdict(received.report) == ("TOTAL-FAILED", "FORMAT_FAILURE") and received.header is None


def test_a_header_that_breaks_the_contract_is_not_built(trust: Trust) -> None:
    with pytest.raises(edxml.EdxmlError, match="OrganId"):
        edxml.build(header(sender=edxml.Organ("H56", "UBND")), [], sent_at=datetime.now(UTC))
    with pytest.raises(edxml.EdxmlError):
        edxml.build(header(subject=""), [], sent_at=datetime.now(UTC))


def test_xmlsec1_verifies_an_envelope_hub_signed(trust: Trust, tmp_path: Path) -> None:
    path = tmp_path / "envelope.xml"
    path.write_bytes(signed_envelope(trust))
    result = xmlsec1_verify(path, trust.dir)
    assert result.returncode == 0, result.stderr


def test_attachments_are_saved_under_their_bare_names_and_never_over_another(tmp_path: Path) -> None:
    from hub.cli import _save_new

    (tmp_path / "x.pdf").write_bytes(b"kept")
    names = ["../x.pdf", "sub\\x.pdf", "/etc/x.pdf", "..", "a\tb.pdf"]
    saved = [_save_new(tmp_path, n, f"attachment-{i}", n.encode()) for i, n in enumerate(names, start=1)]
    assert [p.name for p in saved] == ["x (2).pdf", "x (3).pdf", "x (4).pdf", "attachment-4", "ab.pdf"]
    assert all(p.parent == tmp_path for p in saved) and (tmp_path / "x.pdf").read_bytes() == b"kept"


def test_cli_builds_signs_and_reads_an_envelope(trust: Trust, tmp_path: Path) -> None:
    d = trust.dir
    spec = {
        "from": {"id": "000.00.17.H56", "name": "UBND phường Bến Nghé"},
        "to": [{"id": "000.00.17.H29", "name": "Sở Tư pháp"}],
        "code_number": "45", "code_notation": "CV-UBND", "place": "TP. Hồ Chí Minh",
        "promulgation_date": "2026-12-01", "type": 2, "type_name": "Công văn",
        "subject": "Đề nghị xác minh thông tin hộ tịch",
    }  # fmt: skip
    (tmp_path / "header.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "cong-van.pdf").write_bytes(PDF)
    out = tmp_path / "envelope.xml"
    made = subprocess.run(
        [HUB_BIN, "sign", "edxml", str(tmp_path / "header.json"), "--attach", str(tmp_path / "cong-van.pdf"),
         "--key", str(d / "official.key"), "--cert", str(d / "official-chain.pem"), "--tsa", tsa_url(trust),
         "--out", str(out)],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    read = subprocess.run(
        [HUB_BIN, "sign", "edxml-read", str(out), "--trust", str(d / "gov_root.pem"), "--save", str(tmp_path / "in"),
         "--format", "json"],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert read.returncode == 0, read.stdout + read.stderr
    body = json.loads(read.stdout)
    assert body["header"]["code"] == "45/CV-UBND" and body["report"]["signature_format"] == "XAdES-B-T"
    assert (tmp_path / "in" / "cong-van.pdf").read_bytes() == PDF
    # read again into the same folder: what is there is kept, the new copy gets a name of its own
    again = subprocess.run(read.args, check=False, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["cong-van (2).pdf", "cong-van.pdf"]
    assert (tmp_path / "in" / "cong-van (2).pdf").read_bytes() == PDF
    bad = dict(spec, promulgation_date="01/12/2026")
    (tmp_path / "bad.json").write_text(json.dumps(bad), encoding="utf-8")
    refused = subprocess.run(
        [HUB_BIN, "sign", "edxml", str(tmp_path / "bad.json"), "--key", str(d / "official.key"), "--cert",
         str(d / "official-chain.pem")],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
