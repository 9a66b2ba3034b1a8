"""Signed PDFs from the sandbox PKI (pyHanko as the signer): what a one-stop system's officer signs as a result, for
the tests and bench/signing.py of hub's PAdES verification."""

from __future__ import annotations

import io

from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import serialization

from hub.sandbox.pki import TestPki


def blank_pdf(text: str = "Trích lục khai sinh") -> bytes:
    """A one-page PDF (pyHanko's writer), with `text` in its metadata."""
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.writer import PdfFileWriter

    w = PdfFileWriter()
    size = [generic.NumberObject(n) for n in (0, 0, 595, 842)]
    w.insert_page(generic.DictionaryObject({generic.NameObject("/Type"): generic.NameObject("/Page"),
                                            generic.NameObject("/MediaBox"): generic.ArrayObject(size)}))  # fmt: skip
    w.set_info(generic.DictionaryObject({generic.NameObject("/Title"): generic.TextStringObject(text)}))
    out = io.BytesIO()
    w.write(out)
    return out.getvalue()


def sign_pdf_with(pki: TestPki, who: str, *, pdf: bytes | None = None, tsa_url: str | None = None) -> bytes:
    """`pdf` (default: a blank page) signed as `who` of the sandbox PKI, with pyHanko; time-stamped by `tsa_url`."""
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import signers, timestamps
    from pyhanko.sign.signers.pdf_signer import PdfSignatureMetadata
    from pyhanko_certvalidator.registry import SimpleCertificateStore

    item = pki.issued[who]
    issuer = pki.issued[item.issuer or who]

    def der(cert: object) -> asn1_x509.Certificate:
        return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))  # type: ignore[attr-defined]

    key = item.key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())  # fmt: skip
    signer = signers.SimpleSigner(
        signing_cert=der(item.cert), signing_key=asn1_keys.PrivateKeyInfo.load(key),
        cert_registry=SimpleCertificateStore.from_certs([der(issuer.cert)]),
    )  # fmt: skip
    stamper = timestamps.HTTPTimeStamper(tsa_url) if tsa_url else None
    field = f"Sig{len(pdf or b'')}"  # another field for each signature of the same file
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf or blank_pdf()))
    signed = signers.sign_pdf(writer, PdfSignatureMetadata(field_name=field), signer=signer, timestamper=stamper)
    return bytes(signed.getvalue())
