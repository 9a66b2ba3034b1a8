"""Signing: keys come through one `Signer` protocol (PEM or PKCS#12 files now; a PKCS#11 token would implement the
same three members), and documents are signed enveloped with exclusive C14N and RSA-SHA256 or ECDSA-SHA256,
as plain XMLDSig, XAdES-B-B (signing time and signing certificate as signed properties) or XAdES-B-T (with an
RFC 3161 signature time-stamp from a TSA)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from lxml import etree
from signxml import methods
from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod
from signxml.signer import XMLSigner
from signxml.xades.xades import XAdESSigner

from hub.adapters.exchange import ExchangeHook
from hub.signing.timestamp import TimestampError, add_signature_timestamp
from hub.signing.xml import parse_untrusted

XADES_NS = "http://uri.etsi.org/01903/v1.3.2#"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"


class SigningError(ValueError):
    """The key or certificate cannot be used to sign (wrong type, weak, mismatched), or the time-stamping
    authority could not be asked (code tsa_unavailable / tsa_refused)."""

    def __init__(self, detail: str, code: str = "signing_failed") -> None:
        super().__init__(detail)
        self.code = code

    @property
    def passed_on(self) -> bool:
        """Whether a caller is told this error's own code: the TSA, the token or the PKI did not serve (503 with
        it). Any other — the key itself cannot sign — is hub's key being unusable (`signing_key_unusable`)."""
        return self.code.startswith(PASSED_ON)


PASSED_ON = ("tsa_", "token_", "validation_data")  # SigningError codes an API answer names as they are


class Signer(Protocol):
    @property
    def key(self) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey: ...

    @property
    def certificate(self) -> x509.Certificate: ...

    @property
    def chain(self) -> list[x509.Certificate]:
        """Intermediate certificates to include after the signing certificate."""
        ...


class HeldKey:
    """The `Signer` members over `_key`, `_cert` and `_chain`, which a signer sets up."""

    _key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    _cert: x509.Certificate
    _chain: list[x509.Certificate]

    @property
    def key(self) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
        return self._key

    @property
    def certificate(self) -> x509.Certificate:
        return self._cert

    @property
    def chain(self) -> list[x509.Certificate]:
        return self._chain


class FileSigner(HeldKey):
    """A key and certificate from PEM files, or both from a PKCS#12 file (password from configuration)."""

    def __init__(self, key: Any, certificate: x509.Certificate, chain: list[x509.Certificate] | None = None) -> None:
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise SigningError("only RSA and EC keys can sign")
        if isinstance(key, rsa.RSAPrivateKey) and key.key_size < 2048:
            raise SigningError("RSA keys under 2048 bits are refused")
        if key.public_key() != certificate.public_key():
            raise SigningError("the key does not belong to the certificate")
        self._key = key
        self._cert = certificate
        self._chain = chain or []

    @classmethod
    def from_pem(cls, key_path: Path, cert_path: Path, password: bytes | None = None) -> FileSigner:
        """The key and certificate in PEM files; SigningError, naming the file, when one cannot be read as such."""
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=password)
        except OSError as exc:
            raise SigningError(f"key file {key_path}: {exc.strerror or exc}") from None
        except (ValueError, TypeError):  # not a PEM key; encrypted and no or a wrong password; a password it needs not
            raise SigningError(f"key file {key_path}: not a PEM private key, or its password is wrong") from None
        try:
            certs = x509.load_pem_x509_certificates(cert_path.read_bytes())
        except OSError as exc:
            raise SigningError(f"certificate file {cert_path}: {exc.strerror or exc}") from None
        except ValueError:
            raise SigningError(f"certificate file {cert_path}: not a PEM certificate") from None
        return cls(key, certs[0], certs[1:])

    @classmethod
    def from_pkcs12(cls, path: Path, password: bytes | None) -> FileSigner:
        try:
            key, cert, extra = pkcs12.load_key_and_certificates(path.read_bytes(), password)
        except OSError as exc:
            raise SigningError(f"PKCS#12 file {path}: {exc.strerror or exc}") from None
        except (ValueError, TypeError):
            raise SigningError(f"PKCS#12 file {path}: not a PKCS#12 file, or its password is wrong") from None
        if key is None or cert is None:
            raise SigningError(f"PKCS#12 file {path} holds no key and certificate")
        return cls(key, cert, list(extra))


def sign_document(
    data: bytes,
    signer: Signer,
    *,
    xades: bool = False,
    signing_time: datetime | None = None,
    tsa_url: str | None = None,
    tsa_timeout: float = 10.0,
    on_exchange: ExchangeHook | None = None,
) -> bytes:
    """Sign `data` (an XML document) enveloped; returns the signed document's bytes. With `tsa_url` (XAdES only),
    the signature is time-stamped by that RFC 3161 authority: XAdES-B-T (the request reported to `on_exchange`)."""
    if tsa_url and not xades:
        raise SigningError("a signature time-stamp (XAdES-B-T) needs a XAdES signature")
    root = parse_untrusted(data)
    method = (
        SignatureMethod.ECDSA_SHA256
        if isinstance(signer.key, ec.EllipticCurvePrivateKey)
        else SignatureMethod.RSA_SHA256
    )
    common: dict[str, Any] = {
        "method": methods.enveloped,
        "signature_algorithm": method,
        "digest_algorithm": DigestAlgorithm.SHA256,
        "c14n_algorithm": CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    }
    certs = [signer.certificate, *signer.chain]
    if xades:
        # signxml 5.2 computes the SignedProperties digest inconsistently under exclusive C14N (its own verifier
        # then reports a digest mismatch), so XAdES signatures use its default, inclusive C14N 1.1
        common["c14n_algorithm"] = CanonicalizationMethod.CANONICAL_XML_1_1
        xs = _XAdES(signing_time=signing_time or datetime.now(UTC), **common)
        signed = xs.sign(root, key=signer.key, cert=certs, always_add_key_value=False)
        if tsa_url:
            signature = signed if signed.tag == f"{{{DS_NS}}}Signature" else signed.find(f".//{{{DS_NS}}}Signature")
            try:
                add_signature_timestamp(signature, tsa_url, timeout=tsa_timeout, on_exchange=on_exchange)
            except TimestampError as exc:
                raise SigningError(str(exc), code=exc.code) from None
    else:
        signed = XMLSigner(**common).sign(root, key=signer.key, cert=certs, always_add_key_value=False)
    return bytes(etree.tostring(signed, xml_declaration=True, encoding="UTF-8"))


class _XAdES(XAdESSigner):
    """XAdESSigner with the signing time chosen by the caller (signxml always uses "now")."""

    def __init__(self, *, signing_time: datetime, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._signing_time = signing_time.astimezone(UTC)

    def add_signing_time(self, signed_signature_properties: Any, sig_root: Any, signing_settings: Any) -> None:
        el = etree.SubElement(signed_signature_properties, f"{{{XADES_NS}}}SigningTime", nsmap=self.namespaces)
        el.text = self._signing_time.isoformat(timespec="seconds")


def add_validation_data(
    signed: bytes, certificates: list[x509.Certificate], crls: list[bytes], ocsps: list[bytes]
) -> bytes:
    """Make a XAdES-B-T signature XAdES-B-LT: its unsigned signature properties get the certificates of the
    signer's and the TSA's paths (CertificateValues) and the CRLs / OCSP responses that showed them unrevoked
    (RevocationValues), so that it can be validated when those services are gone. Nothing signed changes. A
    signature that carries some already keeps them, with what is new beside them (no value twice)."""
    import base64

    root = parse_untrusted(signed)
    props = root.find(f".//{{{XADES_NS}}}UnsignedSignatureProperties")
    if props is None or props.find(f"{{{XADES_NS}}}SignatureTimeStamp") is None:
        raise SigningError("only a time-stamped XAdES signature (B-T) can carry validation data (B-LT)")

    def child(parent: Any, name: str) -> Any:  # the one already there (a signature extended before), or a new one
        found = parent.find(f"{{{XADES_NS}}}{name}")
        return found if found is not None else etree.SubElement(parent, f"{{{XADES_NS}}}{name}")

    def add(parent: Any, name: str, values: list[bytes]) -> None:
        held = {"".join((e.text or "").split()) for e in parent.findall(f"{{{XADES_NS}}}{name}")}
        for value in values:
            text = base64.b64encode(value).decode()
            if text not in held:
                held.add(text)
                etree.SubElement(parent, f"{{{XADES_NS}}}{name}").text = text

    ders = [cert.public_bytes(serialization.Encoding.DER) for cert in certificates]
    add(child(props, "CertificateValues"), "EncapsulatedX509Certificate", ders)
    revocation = child(props, "RevocationValues")
    if crls:
        add(child(revocation, "CRLValues"), "EncapsulatedCRLValue", crls)
    if ocsps:
        add(child(revocation, "OCSPValues"), "EncapsulatedOCSPValue", ocsps)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))
