"""PAdES: the signatures of a PDF (a result issued as a signed PDF, an extract, a scan signed by an officer), judged
with the same anchors, paths and revocation evidence as XML signatures, in the same report — and a PDF changed
after it was signed fails, whatever its signature value says."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pytest

from hub.sandbox.pdf import blank_pdf, sign_pdf_with
from hub.signing.pdf import verify_pdf
from tests.api_helpers import as_documented
from tests.conftest import HubFactory
from tests.pki_helpers import Trust
from tests.test_signing import HUB_BIN, tsa_url, verdict


def signed_pdf(trust: Trust, who: str, *, pdf: bytes | None = None, timestamped: bool = False) -> bytes:
    return sign_pdf_with(trust.pki, who, pdf=pdf, tsa_url=tsa_url(trust) if timestamped else None)


@pytest.mark.parametrize(("who", "timestamped"), [("official", False), ("citizen", False), ("official", True)])
def test_a_signed_pdf_passes_with_chain_and_revocation(trust: Trust, who: str, timestamped: bool) -> None:
    report = verify_pdf(trust.verifier(), signed_pdf(trust, who, timestamped=timestamped))
    assert verdict(report) == ("TOTAL-PASSED", None), report.detail
    assert report.signature_format == ("PAdES-B-T" if timestamped else "PAdES-B-B")
    assert report.signer and report.signer["subject"] == trust.pki.issued[who].cert.subject.rfc4514_string()
    assert len(report.chain) == 3 and {r["status"] for r in report.revocation} == {"good"}
    assert report.signed_references[0]["coverage"] == "ENTIRE_FILE"
    if timestamped:
        assert report.timestamp and report.timestamp["status"] == "valid"


def test_a_pdf_changed_after_it_was_signed_fails(trust: Trust) -> None:
    signed = signed_pdf(trust, "official")
    i = signed.index(b"595")  # the page's size, inside the signed bytes
    tampered = signed[:i] + b"596" + signed[i + 3 :]
    assert verdict(verify_pdf(trust.verifier(), tampered))[0] == "TOTAL-FAILED"
    # an update appended after the signature that turns the page (as an editor saving the file would): not covered
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

    w = IncrementalPdfFileWriter(io.BytesIO(signed))
    page = w.root["/Pages"]["/Kids"][0].get_object()
    page[generic.NameObject("/Rotate")] = generic.NumberObject(90)
    w.update_container(page)
    out = io.BytesIO()
    w.write(out)
    report = verify_pdf(trust.verifier(), out.getvalue())
    assert verdict(report) == ("TOTAL-FAILED", "HASH_FAILURE"), report.detail
    assert "changed after it was signed" in (report.detail or "")
    # a second signature added after the first changes nothing else: both pass
    twice = signed_pdf(trust, "citizen", pdf=signed)
    assert verdict(verify_pdf(trust.verifier(), twice)) == ("TOTAL-PASSED", None)


@pytest.mark.parametrize(
    ("who", "expected"),
    [("revoked", ("TOTAL-FAILED", "REVOKED")), ("untrusted", ("INDETERMINATE", "NO_CERTIFICATE_CHAIN_FOUND")),
     ("expired", ("TOTAL-FAILED", "EXPIRED"))],
)  # fmt: skip
def test_bad_signers_of_a_pdf(trust: Trust, who: str, expected: tuple[str, str]) -> None:
    assert verdict(verify_pdf(trust.verifier(), signed_pdf(trust, who))) == expected


@pytest.mark.parametrize(
    "payload", [blank_pdf(), b"%PDF-1.7\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF", b"%PDF-" + b"\x00" * 5000]
)
def test_unsigned_or_broken_pdfs_are_a_format_failure(trust: Trust, payload: bytes) -> None:
    assert verdict(verify_pdf(trust.verifier(), payload)) == ("TOTAL-FAILED", "FORMAT_FAILURE")


def test_the_api_and_the_cli_verify_a_pdf(hub_factory: HubFactory, trust: Trust, tmp_path: Path) -> None:
    shutil.copytree(trust.dir, tmp_path / "sandbox-pki", dirs_exist_ok=True)  # the dev default: the sandbox PKI
    hub = hub_factory()
    signed = signed_pdf(trust, "official", timestamped=True)
    r = hub.http.post("/v1/signatures/verify", content=signed, headers={"Content-Type": "application/pdf"})
    assert r.status_code == 200 and r.json()["indication"] == "TOTAL-PASSED", r.text
    assert r.json()["signature_format"] == "PAdES-B-T"
    as_documented(hub.http.get("/openapi.json").json(), "post", "/v1/signatures/verify", r)
    path = tmp_path / "trich-luc.pdf"
    path.write_bytes(signed)
    run = subprocess.run(
        [HUB_BIN, "sign", "verify", str(path), "--trust", str(trust.dir / "gov_root.pem")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0 and "PAdES-B-T" in run.stdout, run.stdout + run.stderr


def test_a_pdf_whose_streams_expand_without_bound_is_not_read(trust: Trust) -> None:
    """A compression bomb inside the size limit: 200 MiB of zeros deflate to ~200 kB. Refused before any parsing."""
    import zlib

    bomb = zlib.compress(b"\0" * (200 << 20), 9)
    signed = signed_pdf(trust, "official")
    stream = b"9 0 obj <</Filter /FlateDecode>> stream\n" + bomb + b"\nendstream endobj\n%%EOF"
    report = verify_pdf(trust.verifier(), signed.replace(b"%%EOF", stream, 1))
    assert verdict(report) == ("TOTAL-FAILED", "FORMAT_FAILURE") and "expand past 64 MiB" in (report.detail or "")


def test_a_scan_whose_images_expand_a_few_times_is_read(trust: Trust) -> None:
    """A legitimate scan: a Flate image expanding ~3 times (noise compresses badly) — under the cap, verified."""
    import os
    import zlib

    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.writer import PdfFileWriter

    noise = os.urandom(1 << 20)
    w = PdfFileWriter()
    image = generic.StreamObject(
        {generic.NameObject("/Type"): generic.NameObject("/XObject"),
         generic.NameObject("/Subtype"): generic.NameObject("/Image"),
         generic.NameObject("/Filter"): generic.NameObject("/FlateDecode")},
        encoded_data=zlib.compress(noise * 3, 1),  # 3 MiB of noise repeated: it expands about 3 times
    )  # fmt: skip
    size = [generic.NumberObject(n) for n in (0, 0, 595, 842)]
    resources = generic.DictionaryObject({generic.NameObject("/XObject"): generic.DictionaryObject(
        {generic.NameObject("/Scan"): w.add_object(image)})})  # fmt: skip
    w.insert_page(generic.DictionaryObject({generic.NameObject("/Type"): generic.NameObject("/Page"),
                                            generic.NameObject("/MediaBox"): generic.ArrayObject(size),
                                            generic.NameObject("/Resources"): resources}))  # fmt: skip
    out = io.BytesIO()
    w.write(out)
    signed = signed_pdf(trust, "official", pdf=out.getvalue())
    assert len(signed) > 1 << 20 and verdict(verify_pdf(trust.verifier(), signed)) == ("TOTAL-PASSED", None)


def test_mutated_pdfs_are_judged_never_raised_on(trust: Trust) -> None:
    """A seeded mutation run over a signed PDF (bytes changed, files cut short): every one gets a report — one of
    them once raised out of path building (a certificate whose issuer did not parse) — and none whose signed bytes
    changed passes."""
    import random

    signed = signed_pdf(trust, "official")
    verifier = trust.verifier()
    start, length = _signed_contents(signed)
    rng = random.Random(20261204)
    for i in range(200):
        mutated = bytearray(signed)
        if i % 2:  # anywhere in the file
            positions = [rng.randrange(len(mutated)) for _ in range(rng.randint(1, 8))]
            for pos in positions:
                mutated[pos] = rng.randrange(256)
        else:  # inside the signature's CMS blob (hex digits for hex digits): certificates, attributes, the value
            used = start + len(signed[start : start + length].rstrip(b"0"))  # the DER, without the zero padding
            positions = [rng.randrange(start, used) for _ in range(rng.randint(1, 4))]
            for pos in positions:
                mutated[pos] = rng.choice(b"0123456789abcdef")
        if rng.random() < 0.2:
            mutated = mutated[: rng.randrange(len(mutated))]
        report = verify_pdf(verifier, bytes(mutated))  # never raises
        outside_contents = any(not start <= p < start + length for p in positions)
        if report.indication == "TOTAL-PASSED":
            assert not outside_contents or bytes(mutated) == signed, positions


def _signed_contents(pdf: bytes) -> tuple[int, int]:
    """Where the signature's /Contents hex string lies (the only bytes a signature does not cover)."""
    i = pdf.index(b"/Contents <") + len(b"/Contents <")
    return i, pdf.index(b">", i) - i


def test_a_certificate_that_does_not_parse_is_refused_when_read(trust: Trust) -> None:
    """cryptography reads a certificate's fields when first asked: a PDF carrying a CA certificate whose issuer does
    not parse is a FORMAT_FAILURE, not an exception from deep inside path building (a 500 at the API)."""
    from cryptography.hazmat.primitives import serialization

    signed = signed_pdf(trust, "official")
    cert = trust.pki.issued["gov_ca"].cert  # carried beside the signer's, for path building
    der = cert.public_bytes(serialization.Encoding.DER)
    broken = bytearray(der)
    issuer = cert.issuer.public_bytes()
    broken[der.index(issuer) + issuer.index(b"\x0c")] = 0x01  # the issuer's first UTF8String becomes a BOOLEAN
    case = next(c for c in (str.lower, str.upper) if c(der.hex()).encode() in signed)
    hostile = signed.replace(case(der.hex()).encode(), case(bytes(broken).hex()).encode())
    assert hostile != signed
    report = verify_pdf(trust.verifier(), hostile)
    assert verdict(report) == ("TOTAL-FAILED", "FORMAT_FAILURE") and "does not parse" in (report.detail or "")
