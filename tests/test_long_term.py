"""XAdES-B-LT: a time-stamped signature that carries the certificates and the CRL / OCSP evidence it was validated
with, so it can still be validated once the CA's services cannot be reached (an archive's network, a responder
retired). The evidence is unsigned: hub checks each item as if it had fetched it."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from lxml import etree

from hub.signing.sign import SigningError, add_validation_data, sign_document
from hub.signing.verify import Verifier
from tests.api_helpers import assert_problem
from tests.conftest import HubFactory
from tests.pki_helpers import Trust
from tests.test_signing import DOC, HUB_BIN, tsa_url, verdict, xmlsec1_verify

XADES = "{http://uri.etsi.org/01903/v1.3.2#}"


def long_term(trust: Trust, who: str = "hub") -> tuple[bytes, bytes]:
    """(B-T, the same made B-LT) signed by `who` — the evidence gathered by a verifier that reaches the PKI."""
    signed = sign_document(DOC, trust.signer(who), xades=True, tsa_url=tsa_url(trust))
    verifier = trust.verifier()
    certificates, crls, ocsps = verifier.validation_data(signed)
    return signed, add_validation_data(signed, certificates, crls, ocsps)


def offline(trust: Trust) -> Verifier:
    """A verifier whose CRL and OCSP fetches all fail (the PKI's services are down), with a fresh cache."""
    trust.state.faults.update({"outage_seconds": 60})
    return trust.verifier()


@pytest.fixture(autouse=True)
def _pki_back(trust: Trust) -> object:
    yield None
    trust.state.faults.update({"outage_seconds": 0})


@pytest.mark.parametrize("who", ["hub", "official"])  # RSA and EC signers (both under the government CA)
def test_a_long_term_signature_validates_when_the_pki_cannot_be_reached(trust: Trust, who: str) -> None:
    b_t, b_lt = long_term(trust, who)
    report = trust.verifier().verify(b_lt)
    assert verdict(report) == ("TOTAL-PASSED", None), report.detail
    assert report.signature_format == "XAdES-B-LT"
    props = etree.fromstring(b_lt).find(f".//{XADES}UnsignedSignatureProperties")
    assert props is not None and len(props.findall(f"{XADES}CertificateValues/{XADES}EncapsulatedX509Certificate")) >= 3
    assert props.findall(f"{XADES}RevocationValues/{XADES}OCSPValues/{XADES}EncapsulatedOCSPValue")
    # the CA's services down: the plain time-stamped signature cannot be judged, the long-term one can
    cut_off = offline(trust)
    assert verdict(cut_off.verify(b_t)) == ("INDETERMINATE", "TRY_LATER")
    report = cut_off.verify(b_lt)  # what it carries is still fresh
    assert verdict(report) == ("TOTAL-PASSED", None), report.detail
    assert any(r["source"] == "carried" for r in report.revocation)
    # days later, what it carries is long past its nextUpdate: it speaks for the time of the time-stamp
    later = datetime.now(UTC) + timedelta(days=3)
    assert verdict(cut_off.verify(b_t, at=later)) == ("INDETERMINATE", "TRY_LATER")
    report = cut_off.verify(b_lt, at=later)
    assert verdict(report) == ("TOTAL-PASSED", None), report.detail
    assert "carries, as of its time-stamp" in (report.detail or "") and report.timestamp
    assert report.timestamp["status"] == "valid"


def test_carried_evidence_is_checked_not_trusted(trust: Trust) -> None:
    """The validation data is unsigned: replaced by evidence about other certificates, or by garbage, it proves
    nothing — the signature is then as undecidable offline as a plain B-T one, never passed on its say-so."""
    _, b_lt = long_term(trust)
    _, other = long_term(trust, "official")  # genuine evidence, about another signer's path
    tree, theirs = etree.fromstring(b_lt), etree.fromstring(other)
    mine = tree.find(f".//{XADES}RevocationValues")
    mine.getparent().replace(mine, theirs.find(f".//{XADES}RevocationValues"))
    swapped = etree.tostring(tree, xml_declaration=True, encoding="UTF-8")
    assert verdict(trust.verifier().verify(swapped)) == ("TOTAL-PASSED", None)  # online: fetched evidence decides
    assert verdict(offline(trust).verify(swapped)) == ("INDETERMINATE", "TRY_LATER")
    for el in tree.iter(f"{XADES}EncapsulatedOCSPValue"):
        el.text = base64.b64encode(b"not an OCSP response").decode()
    garbage = etree.tostring(tree, xml_declaration=True, encoding="UTF-8")
    assert verdict(offline(trust).verify(garbage))[0] == "INDETERMINATE"
    tree.find(f".//{XADES}EncapsulatedX509Certificate").text = "%%%"
    broken = etree.tostring(tree, xml_declaration=True, encoding="UTF-8")
    assert verdict(trust.verifier().verify(broken)) == ("TOTAL-FAILED", "FORMAT_FAILURE")


def test_no_validation_data_is_gathered_for_a_signature_that_does_not_pass(trust: Trust) -> None:
    """A revoked signer's signature gets no long-term form: the evidence would only say it was revoked."""
    with pytest.raises(ValueError, match="REVOKED"):
        long_term(trust, "revoked")


def test_only_a_time_stamped_xades_signature_can_carry_validation_data(trust: Trust) -> None:
    with pytest.raises(SigningError, match="B-T"):
        add_validation_data(sign_document(DOC, trust.signer("hub"), xades=True), [], [], [])


def test_xmlsec1_still_verifies_a_long_term_signature(trust: Trust, tmp_path: Path) -> None:
    path = tmp_path / "b-lt.xml"
    path.write_bytes(long_term(trust)[1])
    result = xmlsec1_verify(path, trust.dir)
    assert result.returncode == 0, result.stderr


def test_cli_makes_a_long_term_signature(trust: Trust, tmp_path: Path) -> None:
    d = trust.dir
    doc = tmp_path / "doc.xml"
    doc.write_bytes(DOC)
    base = [HUB_BIN, "sign", "sign", str(doc), "--key", str(d / "official.key"), "--cert",
            str(d / "official-chain.pem"), "--tsa", tsa_url(trust), "--long-term"]  # fmt: skip
    usage = subprocess.run(base, capture_output=True, text=True, timeout=60, check=False)
    assert usage.returncode == 2 and "--trust" in usage.stderr
    out = tmp_path / "b-lt.xml"
    made = subprocess.run(
        [*base, "--trust", str(d / "gov_root.pem"), "--out", str(out)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    checked = subprocess.run(
        [HUB_BIN, "sign", "verify", str(out), "--trust", str(d / "gov_root.pem"), "--format", "json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    report = json.loads(checked.stdout)
    assert checked.returncode == 0 and report["signature_format"] == "XAdES-B-LT", checked.stdout
    # a signer the PKI revoked: no long-term form (exit 3), nothing written
    refused = subprocess.run(
        [HUB_BIN, "sign", "sign", str(doc), "--key", str(d / "revoked.key"), "--cert", str(d / "revoked-chain.pem"),
         "--tsa", tsa_url(trust), "--long-term", "--trust", str(d / "national_root.pem"), "--trust",
         str(d / "gov_root.pem"), "--out", str(tmp_path / "no.xml")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode == 3 and "REVOKED" in refused.stderr and not (tmp_path / "no.xml").exists()


def test_cli_extends_a_time_stamped_signature_someone_else_made(trust: Trust, tmp_path: Path) -> None:
    """An archive takes in a B-T document (signed by a citizen, a public CA's certificate) and extends it to B-LT."""
    d = trust.dir
    b_t = tmp_path / "b-t.xml"
    b_t.write_bytes(sign_document(DOC, trust.signer("citizen"), xades=True, tsa_url=tsa_url(trust)))
    anchors = ["--trust", str(d / "national_root.pem"), "--trust", str(d / "gov_root.pem")]
    out = tmp_path / "b-lt.xml"
    run = subprocess.run(
        [HUB_BIN, "sign", "extend", str(b_t), *anchors, "--out", str(out)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    trust.state.faults.update({"outage_seconds": 60})
    report = trust.verifier().verify(out.read_bytes(), at=datetime.now(UTC) + timedelta(days=3))
    assert verdict(report) == ("TOTAL-PASSED", None) and report.signature_format == "XAdES-B-LT", report.detail
    plain = tmp_path / "b-b.xml"
    plain.write_bytes(sign_document(DOC, trust.signer("citizen"), xades=True))
    run = subprocess.run(
        [HUB_BIN, "sign", "extend", str(plain), *anchors], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 2 and "not a time-stamped" in run.stderr


def test_api_extends_a_signature_and_says_why_it_cannot(hub_factory: HubFactory, trust: Trust, tmp_path: Path) -> None:
    """POST /v1/signatures/extend: a B-T document back as B-LT (application/xml); problems with stable codes."""
    shutil.copytree(trust.dir, tmp_path / "sandbox-pki", dirs_exist_ok=True)  # the dev default: the sandbox PKI
    hub = hub_factory()
    xml = {"Content-Type": "application/xml"}

    def extend(doc: bytes) -> httpx.Response:
        return hub.http.post("/v1/signatures/extend", content=doc, headers=xml)

    b_t = sign_document(DOC, trust.signer("citizen"), xades=True, tsa_url=tsa_url(trust))
    r = extend(b_t)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml"), r.text
    report = hub.http.post("/v1/signatures/verify", content=r.content, headers=xml).json()
    assert report["signature_format"] == "XAdES-B-LT" and report["indication"] == "TOTAL-PASSED"
    assert_problem(extend(sign_document(DOC, trust.signer("citizen"), xades=True)), 422, "not_time_stamped")
    revoked = sign_document(DOC, trust.signer("revoked"), xades=True, tsa_url=tsa_url(trust))
    assert assert_problem(extend(revoked), 422, "signature_not_valid")["sub_indication"] == "REVOKED"
    assert_problem(extend(b"<not-signed/>"), 422, "signature_not_valid")
    official = sign_document(DOC, trust.signer("official"), xades=True, tsa_url=tsa_url(trust))
    trust.state.faults.update({"outage_seconds": 60})  # the CA's services down: this signer was never looked up
    assert_problem(extend(official), 503, "revocation_unavailable")


def test_extending_again_adds_only_what_is_new(trust: Trust) -> None:
    """Days on, an archive extends a B-LT signature again: the fresh evidence goes beside what it carried, once."""
    _, b_lt = long_term(trust)
    verifier = trust.verifier()
    again = add_validation_data(b_lt, *verifier.validation_data(b_lt))
    props = etree.fromstring(again).find(f".//{XADES}UnsignedSignatureProperties")
    assert props is not None
    assert len(props.findall(f"{XADES}CertificateValues")) == len(props.findall(f"{XADES}RevocationValues")) == 1
    certs = [e.text for e in props.iter(f"{XADES}EncapsulatedX509Certificate")]
    assert len(certs) == len(set(certs)) and again == add_validation_data(again, *verifier.validation_data(again))
    assert verdict(offline(trust).verify(again)) == ("TOTAL-PASSED", None)
