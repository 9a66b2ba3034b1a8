"""XML signatures against a PKI generated for this run (fresh keys), with its CRL and OCSP endpoints on loopback:
good RSA and EC signatures, every way a signature must fail, hostile documents, interoperability with the
xmlsec1 command-line tool both ways, the CLI's exit codes and the API."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from lxml import etree

from hub.adapters.exchange import ExchangeRecord
from hub.sandbox import pki
from hub.signing.report import Report
from hub.signing.revocation import RevocationSource
from hub.signing.sign import FileSigner, SigningError, sign_document
from hub.signing.verify import Verifier
from tests.api_helpers import assert_problem
from tests.conftest import Hub, HubFactory
from tests.helpers import exchanges
from tests.pki_helpers import Trust

HUB_BIN = str(Path(sys.executable).with_name("hub"))
XMLSEC1 = shutil.which("xmlsec1")
DOC = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<HoSo xmlns="urn:vn:hub:test"><MaHoSo>000.00.17.H56-241015-0007</MaHoSo>'
    "<ChuHoSo>Nguyễn Văn An</ChuHoSo><TrichYeu>Đăng ký khai sinh cho Nguyễn Thị Bình</TrichYeu></HoSo>"
).encode()


@pytest.fixture
def verifier(trust: Trust) -> Iterator[Verifier]:
    v = trust.verifier()
    yield v
    if v.revocation is not None:
        v.revocation.close()


def verdict(report: Report) -> tuple[str, str | None]:
    return report.indication, report.sub_indication


# -- good signatures ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("who", "xades"), [("citizen", False), ("official", False), ("citizen", True), ("hub", True)])
def test_good_signatures_pass_with_chain_and_revocation(
    trust: Trust, verifier: Verifier, who: str, xades: bool
) -> None:
    signed = sign_document(DOC, trust.signer(who), xades=xades)
    report = verifier.verify(signed)
    assert verdict(report) == ("TOTAL-PASSED", None), report.detail
    assert report.signature_format == ("XAdES-B-B" if xades else "XMLDSig")
    assert report.signer is not None and report.signer["subject"] == trust.pki.issued[who].cert.subject.rfc4514_string()
    assert len(report.chain) == 3  # leaf, CA, root
    assert {r["source"] for r in report.revocation} == {"ocsp"} and {r["status"] for r in report.revocation} == {"good"}
    assert report.algorithms["signature"].endswith("rsa-sha256" if who != "official" else "ecdsa-sha256")
    if xades:
        assert report.signing_time is not None
    [ref] = report.signed_references
    assert "Nguyễn Văn An" in ref["content"] and "<ds:Signature" not in ref["content"]


def test_a_signature_verifies_from_code_running_an_event_loop(trust: Trust, verifier: Verifier) -> None:
    """An async caller (an ASGI handler that does not hand the work to a thread, a test driving a browser) calls the
    verifier and the signer with a time-stamp: pyHanko's coroutines get a loop of their own instead of failing with
    "asyncio.run() cannot be called from a running event loop"."""
    import asyncio

    async def caller() -> Report:
        signed = sign_document(DOC, trust.signer("citizen"), xades=True, tsa_url=tsa_url(trust))
        return verifier.verify(signed)

    report = asyncio.run(caller())
    assert verdict(report) == ("TOTAL-PASSED", None), report.detail
    assert report.timestamp is not None and report.timestamp["status"] == "valid"
    assert {r["status"] for r in report.revocation} == {"good"}


def test_revocation_evidence_is_cached(trust: Trust, verifier: Verifier) -> None:
    signed = sign_document(DOC, trust.signer("citizen"))
    assert verifier.verify(signed).indication == "TOTAL-PASSED"
    assert verifier.revocation is not None
    fetched = verifier.revocation.fetches
    second = Verifier(verifier.anchors, revocation=verifier.revocation).verify(signed)  # a new path cache
    assert second.indication == "TOTAL-PASSED" and verifier.revocation.fetches == fetched
    assert all(r["cached"] for r in second.revocation)


# -- signatures that must fail -----------------------------------------------------------------------------------


def test_tampered_content_is_a_hash_failure(trust: Trust, verifier: Verifier) -> None:
    signed = sign_document(DOC, trust.signer("citizen"))
    tampered = signed.replace("Nguyễn Thị Bình".encode(), "Trần Văn Cường".encode())
    assert verdict(verifier.verify(tampered)) == ("TOTAL-FAILED", "HASH_FAILURE")


def test_tampered_signature_value_is_a_crypto_failure(trust: Trust, verifier: Verifier) -> None:
    root = etree.fromstring(sign_document(DOC, trust.signer("citizen")))
    value = root.find(".//{http://www.w3.org/2000/09/xmldsig#}SignatureValue")
    raw = bytearray(base64.b64decode(value.text))
    raw[10] ^= 0xFF
    value.text = base64.b64encode(bytes(raw)).decode()
    assert verdict(verifier.verify(etree.tostring(root))) == ("TOTAL-FAILED", "SIG_CRYPTO_FAILURE")


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("expired", ("TOTAL-FAILED", "EXPIRED")),
        ("not_yet_valid", ("TOTAL-FAILED", "NOT_YET_VALID")),
        ("revoked", ("TOTAL-FAILED", "REVOKED")),
        ("revoked_ocsp_only", ("TOTAL-FAILED", "REVOKED")),
        ("wrong_usage", ("INDETERMINATE", "CHAIN_CONSTRAINTS_FAILURE")),
        ("untrusted", ("INDETERMINATE", "NO_CERTIFICATE_CHAIN_FOUND")),
    ],
)
def test_bad_signers(trust: Trust, verifier: Verifier, who: str, expected: tuple[str, str]) -> None:
    signed = sign_document(DOC, trust.signer(who))
    assert verdict(verifier.verify(signed)) == expected


def test_revoked_by_crl_alone(trust: Trust) -> None:
    """No fetching: the CRL given by the caller is the only evidence, and it lists the signer."""
    signed = sign_document(DOC, trust.signer("revoked"))
    anchors = [trust.pki.issued["national_root"].cert]
    crl = trust.pki.crl("public_ca")
    ca_crl = trust.pki.crl("national_root")
    report = Verifier(anchors, extra_crls=[crl, ca_crl]).verify(signed)
    assert verdict(report) == ("TOTAL-FAILED", "REVOKED")
    good = Verifier(anchors, extra_crls=[crl, ca_crl]).verify(sign_document(DOC, trust.signer("citizen")))
    assert verdict(good) == ("TOTAL-PASSED", None)


def test_unreachable_revocation_is_indeterminate_try_later(trust: Trust) -> None:
    """The CA's OCSP responder and CRL server down: TRY_LATER. The verifications right after it do not ask them
    again (each would wait out the timeouts of a responder that hangs) until `down_seconds` have passed."""
    verifier = trust.verifier()
    assert verifier.revocation is not None
    verifier.revocation.down_seconds = 1.0
    signed = sign_document(DOC, trust.signer("citizen"))
    trust.state.faults.update({"outage_seconds": 30})
    try:
        report = verifier.verify(signed)
        fetched = verifier.revocation.fetches
        again = verifier.verify(signed)
    finally:
        trust.state.faults.update({"outage_seconds": 0})
    assert verdict(report) == verdict(again) == ("INDETERMINATE", "TRY_LATER")
    assert fetched >= 1 and verifier.revocation.fetches == fetched  # not asked again
    assert "did not answer a moment ago" in (again.detail or "")
    time.sleep(1.1)
    assert verdict(verifier.verify(signed)) == ("TOTAL-PASSED", None)  # back: asked again


def test_weak_keys_are_refused_by_policy(trust: Trust, verifier: Verifier) -> None:
    from signxml import methods
    from signxml.algorithms import SignatureMethod
    from signxml.signer import XMLSigner

    item = trust.pki.issued["weak_rsa"]
    with pytest.raises(SigningError):
        FileSigner(item.key, item.cert)  # hub will not sign with it either
    signed = XMLSigner(method=methods.enveloped, signature_algorithm=SignatureMethod.RSA_SHA256).sign(
        etree.fromstring(DOC), key=item.key, cert=[item.cert, trust.pki.issued["public_ca"].cert]
    )
    assert verdict(verifier.verify(etree.tostring(signed))) == ("INDETERMINATE", "CRYPTO_CONSTRAINTS_FAILURE")


# -- hostile and malformed documents -----------------------------------------------------------------------------

BOMB = b"""<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">
<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<HoSo>&lol3;</HoSo>"""
XXE = b"""<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><HoSo>&xxe;</HoSo>"""


@pytest.mark.parametrize(
    "payload",
    [BOMB, XXE, b"not xml at all", b"", DOC, b"<a>" * 300 + b"</a>" * 300, b"<HoSo>" + b"x" * (11 * 1024 * 1024)],
)
def test_hostile_or_unsigned_documents_fail_with_format_failure(verifier: Verifier, payload: bytes) -> None:
    report = verifier.verify(payload)
    assert verdict(report) == ("TOTAL-FAILED", "FORMAT_FAILURE")
    assert "root:" not in (report.detail or "")


def test_signature_wrapping_is_defeated(trust: Trust, verifier: Verifier) -> None:
    signed = sign_document(DOC, trust.signer("citizen"))
    signed_root = etree.fromstring(signed)
    # 1. the signed document wrapped inside an evil one: the signature covers the document it sits in
    evil = etree.Element("{urn:vn:hub:test}HoSo")
    etree.SubElement(evil, "{urn:vn:hub:test}ChuHoSo").text = "Kẻ Mạo Danh"
    evil.append(signed_root)
    assert verdict(verifier.verify(etree.tostring(evil))) == ("TOTAL-FAILED", "HASH_FAILURE")
    # 2. unsigned content slipped in beside the signature
    slipped = etree.fromstring(signed)
    etree.SubElement(slipped, "{urn:vn:hub:test}SoTien").text = "999999999"
    assert verdict(verifier.verify(etree.tostring(slipped))) == ("TOTAL-FAILED", "HASH_FAILURE")
    # 3. a second signature (copied) to confuse which one is checked
    doubled = etree.fromstring(signed)
    doubled.append(etree.fromstring(etree.tostring(doubled.find("{http://www.w3.org/2000/09/xmldsig#}Signature"))))
    assert verdict(verifier.verify(etree.tostring(doubled))) == ("TOTAL-FAILED", "FORMAT_FAILURE")
    # 4. a reference to an element by Id, with a decoy element carrying the same Id
    from signxml import methods
    from signxml.signer import XMLSigner

    item = trust.pki.issued["citizen"]
    doc = etree.fromstring(b'<Goi xmlns="urn:vn:hub:test"><HoSo Id="hs1"><SoTien>100000</SoTien></HoSo></Goi>')
    by_id = XMLSigner(method=methods.enveloped).sign(
        doc, key=item.key, cert=[item.cert, trust.pki.issued["public_ca"].cert], reference_uri="#hs1"
    )
    report = verifier.verify(etree.tostring(by_id))
    assert verdict(report) == ("TOTAL-PASSED", None)
    [ref] = report.signed_references  # only the referenced element is handed out, not the envelope around it
    assert ref["uri"] == "#hs1" and ref["kind"] == "element" and "100000" in ref["content"]
    assert "<Goi" not in ref["content"]
    decoy = etree.fromstring(etree.tostring(by_id))
    fake = etree.SubElement(decoy, "{urn:vn:hub:test}HoSo", Id="hs1")
    etree.SubElement(fake, "{urn:vn:hub:test}SoTien").text = "999999999"
    report = verifier.verify(etree.tostring(decoy))
    assert report.indication != "TOTAL-PASSED"
    assert all("999999999" not in (r.get("content") or "") for r in report.signed_references)


def test_signatures_with_too_many_references_or_transforms_are_refused_before_any_digest(
    trust: Trust, verifier: Verifier
) -> None:
    """Each reference is canonicalized and digested before the signer is judged: anyone's key could sign thousands
    of references to a large document and cost minutes of CPU. Up to 30 references of up to 5 transforms are
    checked ("secure validation", as Apache Santuario's); more is refused at once."""
    from signxml import methods
    from signxml.signer import XMLSigner

    item = trust.pki.issued["citizen"]
    chain = [item.cert, trust.pki.issued["public_ca"].cert]

    def signed_parts(n: int) -> bytes:
        doc = etree.fromstring(b'<Goi xmlns="urn:vn:hub:test"/>')
        for i in range(n):
            etree.SubElement(doc, "{urn:vn:hub:test}Phan", Id=f"p{i}").text = "x" * 1000
        refs = [f"#p{i}" for i in range(n)]
        return etree.tostring(
            XMLSigner(method=methods.enveloped).sign(doc, key=item.key, cert=chain, reference_uri=refs)
        )

    assert verdict(verifier.verify(signed_parts(12))) == ("TOTAL-PASSED", None)  # a dossier's parts: fine
    report = verifier.verify(signed_parts(31))  # refused before any digest, signer or revocation look-up
    assert verdict(report) == ("TOTAL-FAILED", "FORMAT_FAILURE") and "31 references" in (report.detail or "")
    assert report.signer is None and report.revocation == []
    chained = etree.fromstring(sign_document(DOC, trust.signer("citizen")))
    transforms = chained.find(".//{http://www.w3.org/2000/09/xmldsig#}Transforms")
    for _ in range(6):
        etree.SubElement(transforms, "{http://www.w3.org/2000/09/xmldsig#}Transform",
                         Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#")  # fmt: skip
    report = verifier.verify(etree.tostring(chained))
    assert verdict(report) == ("TOTAL-FAILED", "FORMAT_FAILURE") and "transforms" in (report.detail or "")


def test_large_documents_sign_and_verify(trust: Trust, verifier: Verifier) -> None:
    rows = "".join(f"<GiayTo><Ten>Bản sao giấy tờ số {i}</Ten><Trang>{i % 7}</Trang></GiayTo>" for i in range(4000))
    big = f'<HoSo xmlns="urn:vn:hub:test"><DanhSach>{rows}</DanhSach></HoSo>'.encode()
    assert len(big) >= 200 * 1024
    report = verifier.verify(sign_document(big, trust.signer("official"), xades=True))
    assert verdict(report) == ("TOTAL-PASSED", None)
    assert report.signed_references[0]["bytes"] >= 200 * 1024


# -- XAdES-T: RFC 3161 signature time-stamps --------------------------------------------------------------------

XADES_NS = {"xades": "http://uri.etsi.org/01903/v1.3.2#", "ds": "http://www.w3.org/2000/09/xmldsig#"}


def tsa_url(trust: Trust) -> str:
    return f"{trust.server.url}/pki/tsa"


def _token(signed: bytes) -> str:
    found = etree.fromstring(signed).findtext(".//xades:EncapsulatedTimeStamp", namespaces=XADES_NS)
    assert found
    return found


@pytest.mark.parametrize("who", ["citizen", "official"])
def test_time_stamped_signatures_pass_and_say_when(trust: Trust, verifier: Verifier, who: str) -> None:
    signed = sign_document(DOC, trust.signer(who), xades=True, tsa_url=tsa_url(trust))
    report = verifier.verify(signed)
    assert verdict(report) == ("TOTAL-PASSED", None), report.detail
    assert report.signature_format == "XAdES-B-T"
    ts = report.timestamp
    assert ts is not None and ts["status"] == "valid"
    assert "dấu thời gian" in ts["tsa"]["subject"] and len(ts["chain"]) == 3  # TSA, government CA, its root
    stamped = datetime.fromisoformat(ts["time"])
    assert abs((datetime.now(UTC) - stamped).total_seconds()) < 60


def test_a_time_stamp_from_another_signature_is_a_hash_failure(trust: Trust, verifier: Verifier) -> None:
    one = sign_document(DOC, trust.signer("citizen"), xades=True, tsa_url=tsa_url(trust))
    other = sign_document(DOC, trust.signer("citizen"), xades=True, tsa_url=tsa_url(trust))
    swapped = one.replace(_token(one).encode(), _token(other).encode())
    report = verifier.verify(swapped)
    assert verdict(report) == ("TOTAL-FAILED", "HASH_FAILURE") and "time-stamp" in (report.detail or "")
    garbage = one.replace(_token(one).encode(), base64.b64encode(b"not a token"))
    assert verdict(verifier.verify(garbage)) == ("TOTAL-FAILED", "FORMAT_FAILURE")


def test_a_time_stamp_from_an_untrusted_tsa_is_indeterminate(trust: Trust) -> None:
    signed = sign_document(DOC, trust.signer("citizen"), xades=True, tsa_url=tsa_url(trust))
    # the citizen chains to the national root; the sandbox TSA only to the government root, not configured here
    only_national = Verifier([trust.pki.issued["national_root"].cert], revocation=RevocationSource(read_timeout=2))
    report = only_national.verify(signed)
    assert verdict(report) == ("INDETERMINATE", "NO_CERTIFICATE_CHAIN_FOUND") and "TSA" in (report.detail or "")


def test_the_time_stamp_proves_the_signature_predates_a_later_revocation(trust: Trust) -> None:
    """Key compromise reported after signing: a time-stamped signature still passes, an unstamped one does not."""
    p = trust.pki
    p._leaf("later_revoked", "Trịnh Văn Sau", "public_ca", pki._rsa())
    stamped = sign_document(DOC, trust.signer("later_revoked"), xades=True, tsa_url=tsa_url(trust))
    plain = sign_document(DOC, trust.signer("later_revoked"), xades=True)
    time.sleep(2.5)  # revocation times have whole seconds and validation a 1 s tolerance: revoke clearly later
    p.revoked.setdefault("public_ca", {})[p.issued["later_revoked"].cert.serial_number] = datetime.now(UTC)
    fresh = trust.verifier()
    assert verdict(fresh.verify(plain)) == ("TOTAL-FAILED", "REVOKED")
    report = fresh.verify(stamped)
    assert verdict(report) == ("TOTAL-PASSED", None), report.detail
    assert "valid at the time-stamp" in (report.detail or "")
    # revoked before the time-stamp (in the CRL; or known to OCSP alone): the time-stamp does not help
    for who in ("revoked", "revoked_ocsp_only"):
        late = sign_document(DOC, trust.signer(who), xades=True, tsa_url=tsa_url(trust))
        assert verdict(fresh.verify(late)) == ("TOTAL-FAILED", "REVOKED"), who


def test_a_tsa_reply_padded_to_megabytes_is_not_read_whole(trust: Trust) -> None:
    """A time-stamping authority (or a proxy before it) that answers with megabytes: hub reads a reply up to
    256 kB and says the TSA could not be asked; it does not wait for, hold, or take what follows a real token."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from hub.sandbox.common import ServerThread

    async def padded(request: Request) -> Response:
        query = {"Content-Type": "application/timestamp-query"}
        real = httpx.post(tsa_url(trust), content=await request.body(), headers=query)
        return Response(real.content + b"\0" * 4_000_000, media_type="application/timestamp-reply")

    app = Starlette(routes=[Route("/tsa", padded, methods=["POST"])])
    server = ServerThread(app).start()
    try:
        with pytest.raises(SigningError) as exc:
            sign_document(DOC, trust.signer("citizen"), xades=True, tsa_url=f"{server.url}/tsa", tsa_timeout=5)
        assert exc.value.code == "tsa_unavailable" and "larger than" in str(exc.value)
    finally:
        server.stop()


def test_signing_says_when_the_tsa_is_down(trust: Trust) -> None:
    httpx.post(f"{trust.server.url}/_sandbox/faults", json={"outage_seconds": 5}).raise_for_status()
    reported: list[ExchangeRecord] = []
    try:
        with pytest.raises(SigningError) as exc:
            sign_document(
                DOC, trust.signer("citizen"), xades=True, tsa_url=tsa_url(trust), tsa_timeout=3,
                on_exchange=reported.append,
            )  # fmt: skip
        assert exc.value.code == "tsa_unavailable"
        # the exchange record says how the request failed, in the TSA's own terms
        [record] = reported
        assert (record.peer, record.operation, record.outcome, record.error_code) == (
            "tsa", "timestamp", "retryable", "tsa_unavailable"
        )  # fmt: skip
    finally:
        httpx.post(f"{trust.server.url}/_sandbox/faults", json={"outage_seconds": 0}).raise_for_status()
    with pytest.raises(SigningError):
        sign_document(DOC, trust.signer("citizen"), xades=False, tsa_url=tsa_url(trust))  # B-T needs XAdES
    refused = httpx.post(tsa_url(trust), content=b"garbage", headers={"Content-Type": "application/timestamp-query"})
    from asn1crypto import tsp

    assert tsp.PKIStatusInfo.load(refused.content[2:])["status"].native == "rejection"  # the reply's one field


# -- interoperability with xmlsec1 -------------------------------------------------------------------------------

TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
<HoSo xmlns="urn:vn:hub:test"><MaHoSo>000.00.17.H56-241015-0008</MaHoSo><ChuHoSo>Lê Thị Cúc</ChuHoSo>
<Signature xmlns="http://www.w3.org/2000/09/xmldsig#"><SignedInfo>
<CanonicalizationMethod Algorithm="{c14n}"/><SignatureMethod Algorithm="{sig}"/>
<Reference URI=""><Transforms><Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>
<Transform Algorithm="{c14n}"/></Transforms><DigestMethod Algorithm="{digest}"/><DigestValue/></Reference>
</SignedInfo><SignatureValue/><KeyInfo><X509Data/></KeyInfo></Signature></HoSo>"""
EXC = "http://www.w3.org/2001/10/xml-exc-c14n#"
INCL = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
RSA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"


def _xmlsec1() -> str:
    assert XMLSEC1 is not None, "xmlsec1 must be installed (.ci/run installs the Debian package)"
    return XMLSEC1


def xmlsec1_verify(path: Path, pki_dir: Path, *, xades: bool = True) -> subprocess.CompletedProcess[str]:
    """xmlsec1 verifying a document hub signed as an agency: trusting the government root, the CA beside it."""
    id_attr = ["--id-attr:Id", "http://uri.etsi.org/01903/v1.3.2#:SignedProperties"] if xades else []
    return subprocess.run(
        [_xmlsec1(), "--verify", "--trusted-pem", str(pki_dir / "gov_root.pem"), "--untrusted-pem",
         str(pki_dir / "gov_ca.pem"), *id_attr, str(path)],
        check=False, capture_output=True, text=True,
    )  # fmt: skip


@pytest.mark.parametrize("c14n", [EXC, INCL])
def test_documents_signed_by_xmlsec1_verify_in_hub(trust: Trust, verifier: Verifier, tmp_path: Path, c14n: str) -> None:
    template = tmp_path / "template.xml"
    template.write_text(TEMPLATE.format(c14n=c14n, sig=RSA256, digest=SHA256), encoding="utf-8")
    out = tmp_path / "signed.xml"
    d = trust.dir
    subprocess.run(
        [_xmlsec1(), "--sign", "--privkey-pem", f"{d / 'citizen.key'},{d / 'citizen.pem'},{d / 'public_ca.pem'}",
         "--output", str(out), str(template)],
        check=True, capture_output=True,
    )  # fmt: skip
    report = verifier.verify(out.read_bytes())
    assert verdict(report) == ("TOTAL-PASSED", None), report.detail
    assert "Lê Thị Cúc" in report.signed_references[0]["content"]


def test_sha1_signatures_from_xmlsec1_are_refused(trust: Trust, verifier: Verifier, tmp_path: Path) -> None:
    template = tmp_path / "template.xml"
    template.write_text(
        TEMPLATE.format(
            c14n=EXC, sig="http://www.w3.org/2000/09/xmldsig#rsa-sha1", digest="http://www.w3.org/2000/09/xmldsig#sha1"
        ),
        encoding="utf-8",
    )
    out = tmp_path / "signed.xml"
    d = trust.dir
    subprocess.run(
        [_xmlsec1(), "--sign", "--privkey-pem", f"{d / 'citizen.key'},{d / 'citizen.pem'}", "--output", str(out),
         str(template)],
        check=True, capture_output=True,
    )  # fmt: skip
    assert verdict(verifier.verify(out.read_bytes())) == ("INDETERMINATE", "CRYPTO_CONSTRAINTS_FAILURE")


@pytest.mark.parametrize(
    ("who", "xades", "stamped"), [("citizen", False, False), ("official", False, False), ("hub", True, False),
                                  ("hub", True, True)]
)  # fmt: skip
def test_documents_hub_signs_verify_in_xmlsec1(
    trust: Trust, tmp_path: Path, who: str, xades: bool, stamped: bool
) -> None:
    signed = tmp_path / "signed.xml"
    signed.write_bytes(sign_document(DOC, trust.signer(who), xades=xades, tsa_url=tsa_url(trust) if stamped else None))
    d = trust.dir
    ca = "public_ca" if trust.pki.issued[who].issuer == "public_ca" else "gov_ca"
    root = trust.pki.issued[ca].issuer
    args = [_xmlsec1(), "--verify", "--trusted-pem", str(d / f"{root}.pem"), "--untrusted-pem", str(d / f"{ca}.pem")]
    if xades:
        args += ["--id-attr:Id", "http://uri.etsi.org/01903/v1.3.2#:SignedProperties"]
    result = subprocess.run([*args, str(signed)], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stderr + result.stdout


# -- CLI and API -------------------------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HUB_BIN, "sign", *args], check=False, capture_output=True, text=True, timeout=60)


def test_cli_sign_and_verify_exit_codes(trust: Trust, tmp_path: Path) -> None:
    d = trust.dir
    doc = tmp_path / "doc.xml"
    doc.write_bytes(DOC)
    signed = tmp_path / "signed.xml"
    made = _cli("sign", str(doc), "--key", str(d / "official.key"), "--cert", str(d / "official-chain.pem"),
                "--xades", "--out", str(signed))  # fmt: skip
    assert made.returncode == 0, made.stderr
    trust_args = ["--trust", str(d / "national_root.pem"), "--trust", str(d / "gov_root.pem")]
    ok = _cli("verify", str(signed), *trust_args, "--format", "json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["indication"] == "TOTAL-PASSED"
    tampered = tmp_path / "tampered.xml"
    tampered.write_bytes(signed.read_bytes().replace("Nguyễn Văn An".encode(), "Nguyễn Văn Ba".encode()))
    failed = _cli("verify", str(tampered), *trust_args)
    assert failed.returncode == 1 and "HASH_FAILURE" in failed.stdout
    untrusted = _cli("verify", str(signed), "--trust", str(d / "untrusted_root.pem"))
    assert untrusted.returncode == 3 and "NO_CERTIFICATE_CHAIN_FOUND" in untrusted.stdout
    hostile = tmp_path / "bomb.xml"
    hostile.write_bytes(BOMB)
    bomb = _cli("verify", str(hostile), *trust_args, "--format", "json")
    assert bomb.returncode == 1 and json.loads(bomb.stdout)["sub_indication"] == "FORMAT_FAILURE"
    assert "Traceback" not in bomb.stderr
    assert _cli("verify", str(signed)).returncode == 2  # no trust anchor given
    assert _cli("verify", str(tmp_path / "missing.xml"), *trust_args).returncode == 2
    assert _cli("verify", str(signed), *trust_args, "--at", "yesterday").returncode == 2
    assert _cli("verify", str(signed), *trust_args, "--format", "yaml").returncode == 2
    # a file in the wrong place is named, not left to the parser's words: a document given as the anchor, a
    # certificate given as the key
    wrong_anchor = _cli("verify", str(signed), "--trust", str(doc))
    assert wrong_anchor.returncode == 2 and f"--trust {doc}: not a certificate" in wrong_anchor.stderr
    wrong_key = _cli("sign", str(doc), "--key", str(d / "official-chain.pem"), "--cert", str(d / "official-chain.pem"))
    assert (
        wrong_key.returncode == 2 and f"key file {d / 'official-chain.pem'}: not a PEM private key" in wrong_key.stderr
    )
    assert "Traceback" not in wrong_anchor.stderr + wrong_key.stderr


def test_cli_verify_at_a_past_time(trust: Trust, tmp_path: Path) -> None:
    """An expired certificate's signature, validated as of a time the certificate was valid, with a CRL given."""
    d = trust.dir
    signed = tmp_path / "signed.xml"
    signed.write_bytes(sign_document(DOC, trust.signer("expired")))
    crl = tmp_path / "public_ca.crl"
    crl.write_bytes(trust.pki.crl("public_ca"))
    root_crl = tmp_path / "root.crl"
    root_crl.write_bytes(trust.pki.crl("national_root"))
    when = trust.pki.issued["expired"].cert.not_valid_after_utc.replace(microsecond=0)
    args = ["--trust", str(d / "national_root.pem"), "--crl", str(crl), "--crl", str(root_crl), "--no-fetch"]
    now = _cli("verify", str(signed), *args)
    assert now.returncode == 1 and "EXPIRED" in now.stdout
    then = _cli("verify", str(signed), *args, "--at", (when - timedelta(days=2)).isoformat(), "--format", "json")
    assert then.returncode == 0, then.stdout
    assert json.loads(then.stdout)["validation_time"].startswith(str((when - timedelta(days=2)).date()))
    revoked = tmp_path / "revoked.xml"
    revoked.write_bytes(sign_document(DOC, trust.signer("revoked")))
    # revoked (key compromise) after that time: without proof of when it signed, still not accepted
    before = trust.pki.revoked["public_ca"][trust.pki.issued["revoked"].cert.serial_number] - timedelta(hours=1)
    assert _cli("verify", str(revoked), *args, "--at", before.isoformat()).returncode != 0
    assert _cli("verify", str(revoked), *args).returncode == 1


@pytest.fixture
def signing_hub(hub_factory: HubFactory, trust: Trust, tmp_path: Path) -> Hub:
    shutil.copytree(trust.dir, tmp_path / "sandbox-pki", dirs_exist_ok=True)  # the dev default: the sandbox PKI
    return hub_factory()


def test_api_verifies_and_reports(signing_hub: Hub, trust: Trust) -> None:
    signed = sign_document(DOC, trust.signer("official"), xades=True)
    r = signing_hub.http.post("/v1/signatures/verify", content=signed, headers={"Content-Type": "application/xml"})
    assert r.status_code == 200 and r.json()["indication"] == "TOTAL-PASSED"
    assert r.json()["signed_references"][0]["content"].count("Nguyễn Văn An") == 1
    # the revocation evidence fetched for it is in the exchange record, under the request's correlation id
    fetched = exchanges(signing_hub, "pki")
    assert fetched and {op for op, *_ in fetched} <= {"ocsp", "crl"}, fetched
    assert all(
        cid == r.headers["x-correlation-id"] and outcome == "ok" and answered
        for _, cid, outcome, _e, answered in fetched
    )
    bad = signing_hub.http.post("/v1/signatures/verify", content=XXE, headers={"Content-Type": "application/xml"})
    assert bad.status_code == 200 and bad.json()["sub_indication"] == "FORMAT_FAILURE"
    metrics = signing_hub.http.get("/metrics").text
    assert 'hub_signature_verifications_total{indication="TOTAL-PASSED",sub_indication=""} 1.0' in metrics
    assert 'hub_signature_verifications_total{indication="TOTAL-FAILED",sub_indication="FORMAT_FAILURE"} 1.0' in metrics
    naive = signing_hub.http.post("/v1/signatures/verify?at=2026-01-01T00:00:00", content=signed)
    assert naive.status_code == 422 and naive.json()["code"] == "invalid_date"
    assert httpx.post(f"{signing_hub.server.url}/v1/signatures/verify", content=signed).status_code == 401
    # a signed dossier carrying its files is megabytes: past a JSON message's 1 MiB, within the document limit
    import base64
    import os

    scan = base64.b64encode(os.urandom(2 * 1024 * 1024)).decode()
    big = DOC.replace(b"</HoSo>", f"<TepDinhKem>{scan}</TepDinhKem></HoSo>".encode())
    heavy = sign_document(big, trust.signer("official"), xades=True)
    assert len(heavy) > signing_hub.settings.max_body_bytes
    r = signing_hub.http.post("/v1/signatures/verify", content=heavy, headers={"Content-Type": "application/xml"})
    assert r.status_code == 200 and r.json()["indication"] == "TOTAL-PASSED", r.text[:300]


def test_cli_signs_with_a_time_stamp(trust: Trust, tmp_path: Path) -> None:
    d = trust.dir
    doc = tmp_path / "doc.xml"
    doc.write_bytes(DOC)
    signed = tmp_path / "signed.xml"
    key_args = ["--key", str(d / "official.key"), "--cert", str(d / "official-chain.pem")]
    made = _cli("sign", str(doc), *key_args, "--tsa", tsa_url(trust), "--out", str(signed))
    assert made.returncode == 0, made.stderr
    trust_args = ["--trust", str(d / "national_root.pem"), "--trust", str(d / "gov_root.pem")]
    ok = _cli("verify", str(signed), *trust_args, "--format", "json")
    report = json.loads(ok.stdout)
    assert ok.returncode == 0 and report["signature_format"] == "XAdES-B-T" and report["timestamp"]["time"]
    down = _cli("sign", str(doc), *key_args, "--tsa", "http://127.0.0.1:9/pki/tsa", "--out", str(tmp_path / "x"))
    assert down.returncode == 4 and "time-stamping authority" in down.stderr


# -- public interoperability vectors (signxml's test suite) ---------------------------------------------------------

VECTORS = Path(__file__).parent / "vectors" / "signxml-interop"


def _vector_anchor(data: bytes) -> x509.Certificate:
    text = etree.fromstring(data).findtext(".//{http://www.w3.org/2000/09/xmldsig#}X509Certificate")
    assert text
    return x509.load_der_x509_certificate(base64.b64decode("".join(text.split())))


@pytest.mark.parametrize("name", ["enveloped-sha256-rsa-sha256-test-1.xml", "enveloped-sha256-rsa-sha256-test-2.xml"])
def test_interop_vectors_verify_and_their_tampered_copies_do_not(trust: Trust, name: str) -> None:
    data = (VECTORS / name).read_bytes()
    verifier = Verifier([_vector_anchor(data)])
    report = verifier.verify(data)
    # the signature and its reference verify (made by another implementation); the v1 certificate without a
    # keyUsage extension is then refused by hub's policy, after the cryptography
    assert verdict(report) == ("INDETERMINATE", "CHAIN_CONSTRAINTS_FAILURE"), report.detail
    assert report.signed_references and report.signed_references[0]["uri"] == "#parent"
    assert 'ID="othersibling"' in report.signed_references[0]["content"]
    tampered = data.replace(b'ID="othersibling"', b'ID="anothersibling"')
    assert verdict(verifier.verify(tampered)) == ("TOTAL-FAILED", "HASH_FAILURE")
    # trusted only where it chains: against other anchors there is no path
    others = Verifier([trust.pki.issued["national_root"].cert])
    assert verdict(others.verify(data)) == ("INDETERMINATE", "NO_CERTIFICATE_CHAIN_FOUND")


def test_interop_vector_with_a_misapplied_enveloped_transform_fails() -> None:
    data = (VECTORS / "invalid_enveloped_transform.xml").read_bytes()
    report = Verifier([_vector_anchor(data)]).verify(data)
    assert report.indication == "TOTAL-FAILED"


def test_a_carried_certificate_that_does_not_parse_is_a_format_failure(trust: Trust, verifier: Verifier) -> None:
    """A CA certificate in KeyInfo whose issuer does not parse (cryptography reads fields when first asked): the
    verdict is FORMAT_FAILURE, not an exception out of path building (a 500 at the API)."""
    from cryptography.hazmat.primitives import serialization

    signed = sign_document(DOC, trust.signer("official"))  # KeyInfo: the official's certificate, then gov_ca's
    cert = trust.pki.issued["gov_ca"].cert
    der = cert.public_bytes(serialization.Encoding.DER)
    broken = bytearray(der)
    issuer = cert.issuer.public_bytes()
    broken[der.index(issuer) + issuer.index(b"\x0c")] = 0x01  # the issuer's first UTF8String becomes a BOOLEAN
    tree = etree.fromstring(signed)
    [carried] = [
        e
        for e in tree.iter("{http://www.w3.org/2000/09/xmldsig#}X509Certificate")
        if base64.b64decode(e.text or "") == der
    ]
    carried.text = base64.b64encode(bytes(broken)).decode()
    report = verifier.verify(etree.tostring(tree))
    assert verdict(report) == ("TOTAL-FAILED", "FORMAT_FAILURE") and "not a certificate" in (report.detail or "")


def test_trust_anchors_that_do_not_load_stop_hub_at_start_or_answer_503_later(
    hub_factory: HubFactory, trust: Trust, tmp_path: Path
) -> None:
    """HUB_SIGNING_TRUST_ANCHORS (or _INTERMEDIATES) naming a file that holds no certificate, or none at all: hub
    does not start, and says which setting and file. One changed after the start (a deploy that wrote the wrong
    file): a verification is answered 503 `signing_not_configured` naming the file — not a 500."""
    from pydantic import ValidationError

    from hub.settings import Settings

    junk = tmp_path / "anchors.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n", encoding="utf-8")
    for setting, value, said in (
        ("signing_trust_anchors", [junk], "HUB_SIGNING_TRUST_ANCHORS"),
        ("signing_intermediates", [tmp_path / "missing.pem"], "HUB_SIGNING_INTERMEDIATES"),
    ):
        with pytest.raises(ValidationError, match=said) as refused:
            Settings(var_dir=tmp_path, **{setting: value})
        assert str(value[0]) in str(refused.value)
    anchors = tmp_path / "national_root.pem"
    shutil.copy(trust.dir / "national_root.pem", anchors)
    hub = hub_factory(signing_trust_anchors=[anchors])
    anchors.write_bytes(junk.read_bytes())  # before the first verification, which loads them
    signed = sign_document(DOC, trust.signer("official"), xades=True)
    r = hub.http.post("/v1/signatures/verify", content=signed, headers={"Content-Type": "application/xml"})
    body = assert_problem(r, 503, "signing_not_configured")
    assert str(anchors) in body["detail"]
