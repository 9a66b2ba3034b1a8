"""Signature benchmark: hub's verify (signxml + certificate path to a configured anchor + cached OCSP evidence)
and sign, for 5 KB and 200 KB documents, beside python-xmlsec (libxmlsec1) verifying (with the chain, through
its key manager) and signing the same documents in the same run.

    .venv/bin/python bench/signing.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import xmlsec
from lxml import etree

from hub.sandbox import pki
from hub.sandbox.common import ServerThread
from hub.signing.revocation import RevocationSource
from hub.signing.sign import FileSigner, sign_document
from hub.signing.verify import Verifier

DS = "http://www.w3.org/2000/09/xmldsig#"


def document(size: int) -> bytes:
    rows, i, length = [], 0, 60
    while length < size:
        row = f"<GiayTo><Ten>Bản sao giấy tờ số {i}</Ten><Trang>{i % 7}</Trang></GiayTo>"
        rows.append(row)
        length += len(row.encode())
        i += 1
    body = "".join(rows)
    return f'<HoSo xmlns="urn:vn:hub:bench"><DanhSach>{body}</DanhSach></HoSo>'.encode()


def rate(fn: Callable[[], Any], seconds: float) -> float:
    fn()  # warm up (and fill caches)
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - started)


def xmlsec_template(data: bytes) -> Any:
    root = etree.fromstring(data)
    sig = xmlsec.template.create(root, xmlsec.constants.TransformExclC14N, xmlsec.constants.TransformRsaSha256)
    root.append(sig)
    ref = xmlsec.template.add_reference(sig, xmlsec.constants.TransformSha256, uri="")
    xmlsec.template.add_transform(ref, xmlsec.constants.TransformEnveloped)
    xmlsec.template.add_transform(ref, xmlsec.constants.TransformExclC14N)
    ki = xmlsec.template.ensure_key_info(sig)
    xmlsec.template.add_x509_data(ki)
    return root


def main() -> None:
    import logging

    logging.getLogger("pyhanko.sign.validation.generic_cms").setLevel(logging.ERROR)  # as hub.logs does
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()

    state = pki.PkiState()
    server = ServerThread(pki.create_app(state)).start()
    state.pki = the_pki = pki.TestPki(server.url)
    tmp = Path(tempfile.mkdtemp())
    d = the_pki.write(tmp)
    citizen, ca, root = the_pki.issued["citizen"], the_pki.issued["public_ca"], the_pki.issued["national_root"]
    signer = FileSigner(citizen.key, citizen.cert, [ca.cert])
    source = RevocationSource()
    cached_paths = Verifier([root.cert], revocation=source)
    every_path = Verifier([root.cert], revocation=source, path_cache_seconds=0)

    manager = xmlsec.KeysManager()
    manager.load_cert(
        str(d / "national_root.pem"), xmlsec.constants.KeyDataFormatPem, xmlsec.constants.KeyDataTypeTrusted
    )
    key = xmlsec.Key.from_file(str(d / "citizen.key"), xmlsec.constants.KeyDataFormatPem)
    key.load_cert_from_file(str(d / "citizen.pem"), xmlsec.constants.KeyDataFormatPem)

    rows = []
    for label, size in (("5 KB", 5 * 1024), ("200 KB", 200 * 1024)):
        data = document(size)
        signed = sign_document(data, signer)
        assert cached_paths.verify(signed).indication == "TOTAL-PASSED"

        def xs_verify(signed: bytes = signed) -> None:
            tree = etree.fromstring(signed)
            ctx = xmlsec.SignatureContext(manager)
            ctx.verify(tree.find(f".//{{{DS}}}Signature"))

        def xs_sign(data: bytes = data) -> None:
            tree = xmlsec_template(data)
            ctx = xmlsec.SignatureContext()
            ctx.key = key
            ctx.sign(tree.find(f".//{{{DS}}}Signature"))

        xs_verify()
        hub_v = rate(lambda signed=signed: cached_paths.verify(signed), args.seconds)
        hub_v_full = rate(lambda signed=signed: every_path.verify(signed), args.seconds)
        xs_v = rate(xs_verify, args.seconds)
        hub_s = rate(lambda data=data: sign_document(data, signer), args.seconds)
        xs_s = rate(xs_sign, args.seconds)
        rows.append((label, len(data), hub_v, hub_v_full, xs_v, hub_s, xs_s))
    source.close()

    print(f"{'document':8} {'bytes':>8} | {'verify/s hub':>12} {'(path each time)':>16} {'xmlsec':>8} {'ratio':>6} "
          f"| {'sign/s hub':>10} {'xmlsec':>8} {'ratio':>6}")  # fmt: skip
    for label, n, hv, hvf, xv, hs, xs in rows:
        print(f"{label:8} {n:>8} | {hv:>12.0f} {hvf:>16.0f} {xv:>8.0f} {hv / xv:>6.2f} | {hs:>10.0f} {xs:>8.0f} "
              f"{hs / xs:>6.2f}")  # fmt: skip
    print(f"revocation fetches over the whole run: {source.fetches} (evidence cached until nextUpdate)")
    long_term_rows(state, the_pki, f"{server.url}/pki/tsa", args.seconds)
    pdf_rows(the_pki, args.seconds)
    server.stop()
    token_rows(the_pki, tmp, args.seconds)


def long_term_rows(state: pki.PkiState, the_pki: pki.TestPki, tsa: str, seconds: float) -> None:
    """Verifying a XAdES-B-LT signature with the CA's services down (judged with the evidence it carries, as of its
    time-stamp) beside verifying the same signature's B-T form with the services up (OCSP cached), same run."""
    from hub.signing.sign import add_validation_data

    official, gov_ca, gov_root = (the_pki.issued[n] for n in ("official", "gov_ca", "gov_root"))
    signer = FileSigner(official.key, official.cert, [gov_ca.cert])
    data = document(5 * 1024)
    b_t = sign_document(data, signer, xades=True, tsa_url=tsa)
    online = Verifier([gov_root.cert], revocation=RevocationSource())
    b_lt = add_validation_data(b_t, *online.validation_data(b_t))
    assert online.verify(b_t).indication == "TOTAL-PASSED"
    state.faults.update({"outage_seconds": 3600})
    offline = Verifier([gov_root.cert], revocation=RevocationSource(), path_cache_seconds=0)
    later = datetime.now(UTC) + timedelta(days=3)  # what it carries is past its nextUpdate: judged as of the stamp
    report = offline.verify(b_lt, at=later)
    assert report.indication == "TOTAL-PASSED", report.detail
    lt_rate = rate(lambda: offline.verify(b_lt, at=later), seconds)
    state.faults.update({"outage_seconds": 0})
    bt_rate = rate(lambda: online.verify(b_t), seconds)
    print(f"\n{'5 KB, XAdES, time-stamped':26} | {'verify/s':>8} | beside")
    print(f"{'B-LT, CA services down':26} | {lt_rate:>8.0f} | B-T with them up (cached OCSP) {bt_rate:.0f}/s: "
          f"{lt_rate / bt_rate:.2f}; {len(b_lt) - len(b_t)} bytes of validation data")  # fmt: skip


def pdf_rows(the_pki: pki.TestPki, seconds: float) -> None:
    """A signed PDF verified by hub (path to the anchor, OCSP evidence cached, pyHanko's difference analysis, the
    report) beside pyHanko validating the same signature with the same evidence and no report, same run."""
    import asyncio

    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import async_validate_pdf_signature

    from hub.sandbox.pdf import sign_pdf_with
    from hub.signing.pdf import _context, verify_pdf

    signed = sign_pdf_with(the_pki, "official")
    verifier = Verifier([the_pki.issued["gov_root"].cert], revocation=RevocationSource())
    assert verify_pdf(verifier, signed).indication == "TOTAL-PASSED"
    path = [the_pki.issued[n].cert for n in ("official", "gov_ca", "gov_root")]
    assert verifier.revocation is not None
    context = _context(verifier, path, verifier.revocation.collect(path), None)

    def bare() -> None:
        [sig] = PdfFileReader(io.BytesIO(signed)).embedded_signatures
        assert asyncio.run(async_validate_pdf_signature(sig, signer_validation_context=context)).bottom_line

    hub_rate = rate(lambda: verify_pdf(verifier, signed), seconds)
    bare_rate = rate(bare, seconds)
    print(f"\n{'PDF, PAdES-B-B':22} | {'verify/s hub':>12} {'pyHanko':>8} {'ratio':>6}")
    print(f"{len(signed):>15} bytes | {hub_rate:>12.0f} {bare_rate:>8.0f} {hub_rate / bare_rate:>6.2f}")


def token_rows(the_pki: pki.TestPki, tmp: Path, seconds: float) -> None:
    """Signing 5 KB with a key on a PKCS#11 token (SoftHSM: the token's own cost, without a USB bus or an HSM's
    network) beside the same kind of key (RSA 2048, EC P-256) from a file, in the same run."""
    from hub.sandbox.token import make_token
    from hub.signing.pkcs11 import TokenSigner

    try:
        token = make_token(tmp / "token", the_pki)
    except FileNotFoundError as exc:
        print(f"token signing: skipped ({exc})")
        return
    data = document(5 * 1024)
    print(f"\n{'5 KB, XMLDSig':22} | {'sign/s token':>12} {'sign/s file':>11} {'ratio':>6}")
    for label, key, leaf in (("RSA 2048", "hub-rsa", "hub"), ("EC P-256", "hub-ec", "official")):
        on_token = TokenSigner(token.config(key))
        item, ca = the_pki.issued[leaf], the_pki.issued["gov_ca"]
        in_file = FileSigner(item.key, item.cert, [ca.cert])
        t = rate(lambda s=on_token: sign_document(data, s), seconds)
        f = rate(lambda s=in_file: sign_document(data, s), seconds)
        print(f"{label:22} | {t:>12.0f} {f:>11.0f} {t / f:>6.2f}")


if __name__ == "__main__":
    main()
