"""Verify an XML signature (enveloped or enveloping XMLDSig, XAdES B-B, B-T and B-LT) and answer an ETSI-style
report.

Order, failed before indeterminate: parse with the hardened parser (FORMAT_FAILURE) → find the one signature and
its signing certificate → cryptographic constraints of the policy (no SHA-1, RSA ≥ 2048, EC ≥ 256) → the
signature itself with signxml, pinned to that certificate (HASH_FAILURE / SIG_CRYPTO_FAILURE) → the certificate
path to a **configured** trust anchor with key usage and revocation (pyhanko-certvalidator, with CRL/OCSP
evidence hub fetched and cached: NO_CERTIFICATE_CHAIN_FOUND, REVOKED, EXPIRED, NOT_YET_VALID, TRY_LATER). A XAdES-T
signature time-stamp (RFC 3161) must cover the signature value and come from a trusted TSA; it is then the proof
that the signature existed at that time, so a signer certificate that expired or was revoked later still passes.
A XAdES-B-LT signature carries certificates and CRL/OCSP evidence (unsigned, so checked like fetched evidence): when
no revocation status can be had now, the signer and the TSA are judged with it as of the time-stamp. Callers
receive only what the signature's references cover (signed_references), which defeats wrapping."""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from lxml import etree
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator import errors as pv_errors
from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm
from signxml.exceptions import InvalidCertificate, InvalidDigest, InvalidInput, InvalidSignature, SignXMLException
from signxml.util import _remove_sig
from signxml.verifier import SignatureConfiguration, VerifyResult, XMLVerifier
from signxml.xades.xades import XAdESSignatureConfiguration, XAdESVerifier

from hub.signing import aio
from hub.signing.report import INDETERMINATE, SUB_INDICATIONS, Report
from hub.signing.revocation import RevocationSource
from hub.signing.timestamp import C14N_10, canonical
from hub.signing.xml import UnsafeXml, parse_untrusted, reparse

DS = "http://www.w3.org/2000/09/xmldsig#"
XADES = "http://uri.etsi.org/01903/v1.3.2#"
NS = {"ds": DS, "xades": XADES}
WEAK = ("sha1", "md5", "sha224")
MIN_RSA, MIN_EC = 2048, 256
MAX_SIGNED_CONTENT = 256 * 1024  # bytes of signed content returned in a report
# "Secure validation" (as Apache Santuario's): each reference is canonicalized and digested before the signer is
# judged, so a signature by anyone's key can make a request cost its references × the document (300 references
# over 9 MB: 4.4 s of CPU, linear). Documents, dossiers and edXML envelopes carry a handful.
MAX_REFERENCES = 30
MAX_TRANSFORMS = 5
MAX_VALIDATION_VALUES = 40  # certificates, CRLs and OCSP responses a XAdES-B-LT signature may carry (each)


@dataclass(frozen=True)
class Carried:
    """The validation data a XAdES-B-LT signature carries in its unsigned properties (CertificateValues,
    RevocationValues): certificates for path building, CRLs and OCSP responses as revocation evidence. Unsigned, so
    never trusted for itself — each item is checked as if it had been fetched (its own signature, its issuer)."""

    certificates: tuple[x509.Certificate, ...] = ()
    crls: tuple[bytes, ...] = ()
    ocsps: tuple[bytes, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.certificates or self.crls or self.ocsps)


def _carried_validation_data(signature: Any) -> Carried:
    """Read CertificateValues / RevocationValues (ValueError when malformed or too many)."""

    def values(path: str) -> list[bytes]:
        found = signature.findall(path, NS)
        if len(found) > MAX_VALIDATION_VALUES:
            raise ValueError(f"more than {MAX_VALIDATION_VALUES} values in {path.rsplit('/', 1)[-1]}")
        return [base64.b64decode("".join((e.text or "").split()), validate=True) for e in found]

    props = ".//xades:UnsignedSignatureProperties"
    certs = tuple(
        load_certificate(der) for der in values(f"{props}/xades:CertificateValues/xades:EncapsulatedX509Certificate")
    )
    crls = tuple(values(f"{props}/xades:RevocationValues/xades:CRLValues/xades:EncapsulatedCRLValue"))
    ocsps = tuple(values(f"{props}/xades:RevocationValues/xades:OCSPValues/xades:EncapsulatedOCSPValue"))
    return Carried(certs, crls, ocsps)


def load_certificates(pem_or_der: bytes) -> list[x509.Certificate]:
    if b"-----BEGIN" in pem_or_der:
        return x509.load_pem_x509_certificates(pem_or_der)
    return [x509.load_der_x509_certificate(pem_or_der)]


def read_certificates(paths: Iterable[Path]) -> list[x509.Certificate]:
    """The certificates in the files `paths` (PEM, several a file, or DER); ValueError naming the file when one is
    missing, unreadable or holds none — each caller says which setting or option named it."""
    found: list[x509.Certificate] = []
    for path in paths:
        try:
            found.extend(load_certificates(path.read_bytes()))
        except OSError as exc:
            raise ValueError(f"{path}: {exc.strerror or exc}") from None
        except ValueError:
            raise ValueError(f"{path}: not a certificate (PEM or DER)") from None
    return found


_DESCRIPTIONS: dict[bytes, dict[str, Any]] = {}
_FINGERPRINTS: dict[x509.Certificate, bytes] = {}
_LOADED: dict[str, x509.Certificate] = {}  # X509Certificate element text -> certificate (signers repeat)
_CACHE_MAX = 10_000


def _fingerprint(cert: x509.Certificate) -> bytes:
    """SHA-256 of the certificate (memoized: the same signers and CAs come back in every document)."""
    found = _FINGERPRINTS.get(cert)
    if found is None:
        if len(_FINGERPRINTS) > _CACHE_MAX:
            _FINGERPRINTS.clear()
        found = _FINGERPRINTS[cert] = cert.fingerprint(hashes.SHA256())
    return found


def load_certificate(der: bytes) -> x509.Certificate:
    """A DER certificate from an untrusted document, every field a validation reads parsed now (cryptography parses
    them when first read: a certificate whose issuer does not parse would raise deep inside path building).
    ValueError if it is not a certificate."""
    cert = x509.load_der_x509_certificate(der)
    try:
        _ = (cert.issuer, cert.subject, cert.serial_number, cert.not_valid_before_utc, cert.not_valid_after_utc)
        _ = (cert.public_key(), list(cert.extensions), cert.signature_hash_algorithm)
    except (ValueError, TypeError, x509.UnsupportedGeneralNameType) as exc:
        raise ValueError(f"a certificate that does not parse: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - e.g. UnsupportedAlgorithm: not a certificate hub can judge
        raise ValueError(f"a certificate hub cannot read: {exc.__class__.__name__}: {exc}") from None
    return cert


def _load_carried(text: str) -> x509.Certificate:
    """An X509Certificate element's content as a certificate (ValueError if it is not one)."""
    found = _LOADED.get(text)
    if found is None:
        if len(_LOADED) > _CACHE_MAX:
            _LOADED.clear()
        found = _LOADED[text] = load_certificate(base64.b64decode("".join(text.split())))
    return found


def _describe(cert: x509.Certificate) -> dict[str, Any]:
    """What a report says of a certificate (memoized: names are slow to render and certificates repeat)."""
    fingerprint = _fingerprint(cert)
    found = _DESCRIPTIONS.get(fingerprint)
    if found is None:
        if len(_DESCRIPTIONS) > 10_000:
            _DESCRIPTIONS.clear()
        found = _DESCRIPTIONS[fingerprint] = _render(cert)
    return dict(found)


def _render(cert: x509.Certificate) -> dict[str, Any]:
    key = cert.public_key()
    kind = (
        f"RSA-{key.key_size}"
        if isinstance(key, rsa.RSAPublicKey)
        else f"EC-{key.curve.name}"
        if isinstance(key, ec.EllipticCurvePublicKey)
        else type(key).__name__
    )
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "key": kind,
        "sha256": hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
    }


def _weak_key(cert: x509.Certificate) -> str | None:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA:
        return f"RSA key of {key.key_size} bits (policy: at least {MIN_RSA})"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size < MIN_EC:
        return f"EC key of {key.curve.key_size} bits (policy: at least {MIN_EC})"
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return f"key type {type(key).__name__} is not allowed by the policy"
    return None


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, Exception):  # noqa: BLE001 - any failure means "not its issuer"
        return False
    return True


class _StandaloneC14n:
    """lxml's C14N of a non-root element emits a spurious `xmlns=""` where the default namespace is declared
    higher up, so signxml fails inclusive-C14N signatures whose `<Signature xmlns="…xmldsig#">` uses a default
    namespace — the form xmlsec1, Java and .NET produce. Canonicalise a standalone copy instead: serializing an
    element carries the namespace declarations in scope onto it, which is what inclusive C14N renders."""

    def _fromstring(self, xml_string: Any, **_: Any) -> Any:
        """signxml re-parses its own serializations several times per signature and walks each tree for entity
        nodes; the document itself went through parse_untrusted first (no DTD, no entity declarations), so the
        re-parses use the same hardened parser without the walk."""
        return reparse(xml_string)

    def get_root(self, data: Any) -> Any:
        """Our own tree from parse_untrusted, used as it is (signxml reads it and copies before changing it)."""
        if isinstance(data, _OwnTree):
            return data.root
        return super().get_root(data)  # type: ignore[misc]

    def _apply_transforms(self, payload: Any, *, transforms_node: Any, signature: Any) -> Any:
        """signxml copies the payload (serialize + parse) before each C14N so that namespaces of its parents do
        not leak in; a root element has no parents, so the copy is skipped for it (the whole-document reference,
        URI="", of every document hub signs). Other payloads take signxml's path unchanged."""
        if not isinstance(payload, etree._Element) or payload.getparent() is not None:
            return super()._apply_transforms(  # type: ignore[misc]
                payload, transforms_node=transforms_node, signature=signature
            )
        transforms = self._findall(transforms_node, "Transform") if transforms_node is not None else []  # type: ignore[attr-defined]
        algorithms = [t.get("Algorithm") for t in transforms]
        if "http://www.w3.org/2000/09/xmldsig#base64" in algorithms:
            return super()._apply_transforms(  # type: ignore[misc]
                payload, transforms_node=transforms_node, signature=signature
            )
        if "http://www.w3.org/2000/09/xmldsig#enveloped-signature" in algorithms:
            _remove_sig(signature, idempotent=True)
        result: Any = payload
        applied = False
        for transform in transforms:
            try:
                method = CanonicalizationMethod(transform.get("Algorithm"))
            except ValueError:
                continue
            prefixes = self._get_inclusive_ns_prefixes(transform)  # type: ignore[attr-defined]
            result = self._c14n(self._fromstring(result) if applied else result, method, prefixes)
            applied = True
        if not applied:
            result = self._c14n(result, self.config.default_reference_c14n_method)  # type: ignore[attr-defined]
        return result

    def _verify_reference(
        self,
        reference: Any,
        index: int,
        root: Any,
        uri_resolver: Any,
        c14n_algorithm: Any,
        signature: Any,
        signature_key_used: Any,
    ) -> VerifyResult:
        """signxml's reference check, without parsing the canonical payload back into a tree for every reference:
        only XAdES SignedProperties need that tree (the XAdES checks read it); for the others the result carries
        an empty element of the payload's tag (hub reports the canonical bytes, never the tree)."""
        copied_root = self._fromstring(self._tostring(root))  # type: ignore[attr-defined]
        copied_signature = self._get_signature(copied_root)  # type: ignore[attr-defined]
        transforms = self._find(reference, "Transforms", require=False)  # type: ignore[attr-defined]
        digest_method = self._find(reference, "DigestMethod").get("Algorithm")  # type: ignore[attr-defined]
        digest_value = self._find(reference, "DigestValue")  # type: ignore[attr-defined]
        payload = self._resolve_reference(copied_root, reference, uri_resolver=uri_resolver)  # type: ignore[attr-defined]
        tag = payload.tag if isinstance(payload, etree._Element) else None
        payload_c14n = self._apply_transforms(payload, transforms_node=transforms, signature=copied_signature)
        digest_alg = DigestAlgorithm(digest_method)
        self.check_digest_alg_expected(digest_alg)  # type: ignore[attr-defined]
        if base64.b64decode(digest_value.text) != self._get_digest(payload_c14n, digest_alg):  # type: ignore[attr-defined]
            raise InvalidDigest(f"Digest mismatch for reference {index} ({reference.get('URI')})")
        signed_xml: Any
        if tag == f"{{{XADES}}}SignedProperties":
            try:
                signed_xml = self._fromstring(payload_c14n)
            except etree.XMLSyntaxError:
                signed_xml = None
        else:
            signed_xml = etree.Element(tag) if isinstance(tag, str) else None
        key = signature_key_used
        if not isinstance(key, bytes):
            key = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        return VerifyResult(payload_c14n, signed_xml, signature, signature_key=key)

    def _c14n(self, nodes: Any, algorithm: Any, inclusive_ns_prefixes: Any = None) -> bytes:
        items = nodes if isinstance(nodes, list) else [nodes]
        copies = [
            reparse(etree.tostring(n)) if isinstance(n, etree._Element) and n.getparent() is not None else n
            for n in items
        ]
        return super()._c14n(copies, algorithm, inclusive_ns_prefixes)  # type: ignore[misc,no-any-return]


@dataclass(frozen=True)
class _OwnTree:
    """A document already parsed by parse_untrusted, handed to signxml as it is."""

    root: Any


class _Verifier(_StandaloneC14n, XMLVerifier):
    pass


class _XAdESVerifier(_StandaloneC14n, XAdESVerifier):
    pass


class NotValidNow(ValueError):
    """A signature that cannot be made long-term: it does not pass now (`report` says why), or is not time-stamped."""

    def __init__(self, report: Report, why: str | None = None) -> None:
        super().__init__(why or f"{report.sub_indication}: {report.detail}")
        self.report = report
        self.time_stamped = why is None


def _token_parts(stamp: Any) -> tuple[Any, list[x509.Certificate], x509.Certificate | None]:
    """An EncapsulatedTimeStamp's CMS SignedData, the certificates it carries and, among them, the TSA's."""
    from asn1crypto import cms

    der = base64.b64decode("".join((stamp.findtext("xades:EncapsulatedTimeStamp", "", NS)).split()), validate=True)
    info = cms.ContentInfo.load(der)
    if info["content_type"].native != "signed_data":
        raise ValueError("the time-stamp token is not a CMS SignedData")
    signed_data = info["content"]
    return (signed_data, *token_certificates(signed_data))


def token_certificates(signed_data: Any) -> tuple[list[x509.Certificate], x509.Certificate | None]:
    """The certificates a time-stamp token's CMS SignedData carries and, among them, its signer's (the TSA's)."""
    embedded = [
        load_certificate(c.chosen.dump()) for c in (signed_data["certificates"] or []) if c.name == "certificate"
    ]
    sid = signed_data["signer_infos"][0]["sid"]
    serial = sid.chosen["serial_number"].native if sid.name == "issuer_and_serial_number" else None
    return embedded, next((c for c in embedded if c.serial_number == serial), None)


class Verifier:
    """Verification against configured trust anchors only (never the OS or certifi bundle)."""

    def __init__(
        self,
        anchors: Sequence[x509.Certificate],
        *,
        intermediates: Sequence[x509.Certificate] = (),
        revocation: RevocationSource | None = None,
        extra_crls: Iterable[bytes] = (),
        path_cache_seconds: float = 60.0,
    ) -> None:
        if not anchors:
            raise ValueError("at least one trust anchor is required")
        self.anchors = list(anchors)
        self.intermediates = list(intermediates)
        self.revocation = revocation
        self.extra_crls = list(extra_crls)
        self.path_cache_seconds = path_cache_seconds
        self._anchors_asn1 = [asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER)) for c in anchors]
        self._path_cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._paths: dict[bytes, list[x509.Certificate] | None] = {}  # built paths (pure function of the certs)
        self._lock = threading.Lock()

    # -- the pipeline ----------------------------------------------------------------------------------------

    def verify(self, data: bytes, *, at: datetime | None = None) -> Report:
        validation_time = at or datetime.now(UTC)
        vt = validation_time.isoformat()
        try:
            root = parse_untrusted(data)
        except UnsafeXml as exc:
            return Report.failed("FORMAT_FAILURE", str(exc), validation_time=vt)
        signatures = root.findall(".//ds:Signature", NS) + ([root] if root.tag == f"{{{DS}}}Signature" else [])
        if not signatures:
            return Report.failed("FORMAT_FAILURE", "the document carries no XML signature", validation_time=vt)
        if len(signatures) > 1:
            return Report.failed(
                "FORMAT_FAILURE", f"{len(signatures)} signatures found; exactly one is accepted", validation_time=vt
            )
        signature = signatures[0]
        xades = signature.find(".//xades:QualifyingProperties", NS) is not None
        fmt = "XAdES-B-B" if xades else "XMLDSig"
        if xades and signature.find(".//xades:SignatureTimeStamp", NS) is not None:
            fmt = "XAdES-B-T"
        try:
            lt = _carried_validation_data(signature) if fmt == "XAdES-B-T" else Carried()
        except ValueError as exc:
            return Report.failed("FORMAT_FAILURE", f"the signature's validation data: {exc}", validation_time=vt)
        if lt:
            fmt = "XAdES-B-LT"
        report = Report(indication="", signature_format=fmt, validation_time=vt)
        signing_time = signature.findtext(".//xades:SigningTime", namespaces=NS)
        report.signing_time = signing_time

        # algorithms, before any cryptography
        method = signature.find("ds:SignedInfo/ds:SignatureMethod", NS)
        digests = [d.get("Algorithm", "") for d in signature.findall("ds:SignedInfo/ds:Reference/ds:DigestMethod", NS)]
        algorithm = method.get("Algorithm", "") if method is not None else ""
        report.algorithms = {"signature": algorithm, "digests": digests}
        if not algorithm or not digests:
            return self._fail(report, "FORMAT_FAILURE", "SignedInfo lacks a SignatureMethod or a Reference")
        references = signature.findall("ds:SignedInfo/ds:Reference", NS)
        if len(references) > MAX_REFERENCES:
            return self._fail(
                report, "FORMAT_FAILURE", f"{len(references)} references: more than {MAX_REFERENCES} are not accepted"
            )
        if any(len(r.findall("ds:Transforms/ds:Transform", NS)) > MAX_TRANSFORMS for r in references):
            return self._fail(report, "FORMAT_FAILURE", f"a reference with more than {MAX_TRANSFORMS} transforms")
        weak = [a for a in [algorithm, *digests] if any(w in a.lower().rsplit("#", 1)[-1] for w in WEAK)]
        if weak:
            return self._fail(report, "CRYPTO_CONSTRAINTS_FAILURE", f"weak algorithm refused by policy: {weak[0]}")

        # the signing certificate and whatever else the signature carries
        carried: list[x509.Certificate] = []
        for el in signature.findall("ds:KeyInfo/ds:X509Data/ds:X509Certificate", NS):
            try:
                carried.append(_load_carried(el.text or ""))
            except ValueError:
                return self._fail(report, "FORMAT_FAILURE", "an X509Certificate element is not a certificate")
        leaf = self._leaf(carried)
        if leaf is None:
            return self._fail(report, "NO_SIGNING_CERTIFICATE_FOUND", "no X.509 certificate in the signature")
        report.signer = _describe(leaf)
        weak_key = _weak_key(leaf)
        if weak_key:
            return self._fail(report, "CRYPTO_CONSTRAINTS_FAILURE", weak_key)

        # the signature value and the references, pinned to that certificate (validity is judged below)
        inside = leaf.not_valid_before_utc + (leaf.not_valid_after_utc - leaf.not_valid_before_utc) / 2
        results: VerifyResult | list[VerifyResult]
        try:
            if xades:
                results = _XAdESVerifier().verify(
                    _OwnTree(root),  # parsed once, by the hardened parser; signxml copies before it changes anything
                    x509_cert=leaf,
                    expect_config=XAdESSignatureConfiguration(expect_references=True, verification_time=inside),
                )
            else:
                results = _Verifier().verify(
                    _OwnTree(root),
                    x509_cert=leaf,
                    expect_config=SignatureConfiguration(expect_references=True, verification_time=inside),
                )
        except InvalidDigest as exc:
            return self._fail(report, "HASH_FAILURE", f"a signed reference does not match its digest: {exc}")
        except InvalidCertificate as exc:
            return self._fail(report, "SIG_CONSTRAINTS_FAILURE", str(exc))
        except InvalidSignature as exc:
            return self._fail(report, "SIG_CRYPTO_FAILURE", f"the signature value does not verify: {exc}")
        except (InvalidInput, SignXMLException, etree.LxmlError, ValueError) as exc:
            return self._fail(report, "FORMAT_FAILURE", f"{exc.__class__.__name__}: {exc}")
        uris = [r.get("URI") for r in references]
        report.signed_references = self._references(results if isinstance(results, list) else [results], uris)
        if not report.signed_references:
            return self._fail(report, "FORMAT_FAILURE", "the signature covers no content, only its own properties")

        # the signature time-stamp (XAdES-B-T): over exactly this signature value, by a trusted TSA
        stamped_at: datetime | None = None
        if fmt in ("XAdES-B-T", "XAdES-B-LT"):
            ts_problem, stamped_at = self._timestamp(signature, at, report, lt)
            if ts_problem is not None:
                return self._fail(report, *ts_problem)

        # the certificate path, key usage and revocation
        carried = carried + [c for c in lt.certificates if c not in carried]
        chain_problem = self._path(leaf, carried, at, report, lt=lt)
        # XAdES-B-LT: the revocation status cannot be had now (a responder gone, a network cut off), but the
        # signature carries the evidence it was made with: judge the signer as of the time-stamp with that alone,
        # as an archive would years on
        if (
            chain_problem is not None
            and chain_problem[0] == "TRY_LATER"
            and lt
            and stamped_at is not None
            and self._path(leaf, carried, stamped_at, report, lt=lt, fetch=False) is None
        ):
            report.detail = (
                "validated with the revocation evidence the signature carries, as of its time-stamp "
                f"{stamped_at.isoformat()} (none could be fetched now)"
            )
            chain_problem = None
        if chain_problem is not None and chain_problem[0] in ("EXPIRED", "REVOKED") and stamped_at is not None:
            # the time-stamp proves the signature existed at `stamped_at`: judge the signer as of then (a
            # certificate that expired, or was revoked, after that time does not undo the signature)
            evidence = list(report.revocation)
            if (
                not self._ocsp_revoked_by(leaf, carried, stamped_at)
                and self._path(leaf, carried, stamped_at, report, crl_only=True, lt=lt) is None
            ):
                report.detail = (
                    f"{chain_problem[0].lower()} at validation time, valid at the time-stamp {stamped_at.isoformat()}"
                )
                chain_problem = None
            report.revocation = evidence + [r for r in report.revocation if r not in evidence]
        if chain_problem is not None:
            return self._fail(report, *chain_problem)
        report.indication = "TOTAL-PASSED"
        return report

    def validation_data(self, data: bytes) -> tuple[list[x509.Certificate], list[bytes], list[bytes]]:
        """What a XAdES-B-LT signature carries, for a time-stamped signature that passes now: the certificates of
        the signer's path and of the TSA's, and the CRLs / OCSP responses that show them unrevoked (the ones this
        validation used, from the revocation source's cache). ValueError when it does not pass."""
        report = self.verify(data)
        if report.indication != "TOTAL-PASSED":
            raise NotValidNow(report)
        if report.signature_format not in ("XAdES-B-T", "XAdES-B-LT"):
            raise NotValidNow(report, "only a time-stamped XAdES signature (B-T) can carry its validation data")
        root = parse_untrusted(data)
        signature = root if root.tag == f"{{{DS}}}Signature" else root.find(".//ds:Signature", NS)
        carried = [
            _load_carried(e.text or "") for e in signature.findall("ds:KeyInfo/ds:X509Data/ds:X509Certificate", NS)
        ]
        leaf = self._leaf(carried)
        stamp = signature.find(".//xades:SignatureTimeStamp", NS)
        if leaf is None or stamp is None:
            raise ValueError("a long-term signature needs a signing certificate and a signature time-stamp")
        _, embedded, tsa = _token_parts(stamp)
        paths = [self._build_path(leaf, carried), self._build_path(tsa or leaf, embedded)]
        certificates: list[x509.Certificate] = []
        crls: list[bytes] = []
        ocsps: list[bytes] = []
        for path in paths:
            if path is None:
                continue
            certificates += [c for c in path if c not in certificates]
            if self.revocation is not None:
                collected = self.revocation.collect(path)
                crls += [c for c in collected.crls if c not in crls]
                ocsps += [o for o in collected.ocsps if o not in ocsps]
        return certificates, crls + [c for c in self.extra_crls if c not in crls], ocsps

    def _ocsp_revoked_by(self, leaf: x509.Certificate, carried: list[x509.Certificate], when: datetime) -> bool:
        """Whether an OCSP answer (cached from this validation) dates a revocation of the path at or before
        `when`: the CRL-only judgment at the time-stamp must not overrule what OCSP alone knows."""
        from cryptography.x509 import ocsp

        path = self._build_path(leaf, carried)
        if path is None or self.revocation is None:
            return False
        for der in self.revocation.collect(path).ocsps:
            try:
                resp = ocsp.load_der_ocsp_response(der)
                revoked = resp.certificate_status == ocsp.OCSPCertStatus.REVOKED
                at = resp.revocation_time_utc if revoked else None
            except ValueError:
                continue
            if at is not None and at <= when:
                return True
        return False

    def _timestamp(
        self, signature: Any, at: datetime | None, report: Report, lt: Carried = Carried()
    ) -> tuple[tuple[str, str] | None, datetime | None]:
        """Validate the (first) SignatureTimeStamp: the token's imprint is the digest of the canonicalized
        SignatureValue, its CMS signature verifies, and the TSA's certificate (extended key usage timeStamping)
        chains to a configured anchor and is not revoked. Returns (problem, time stamped)."""
        from pyhanko.sign.validation.generic_cms import validate_tst_signed_data

        stamp = signature.find(".//xades:SignatureTimeStamp", NS)
        value = signature.find("ds:SignatureValue", NS)
        method = stamp.find("ds:CanonicalizationMethod", NS)
        algorithm = method.get("Algorithm", C14N_10) if method is not None else C14N_10
        try:
            signed_value = canonical(value, algorithm)
            signed_data, embedded, tsa = _token_parts(stamp)
            embedded += [c for c in lt.certificates if c not in embedded]
            gen_time = signed_data["encap_content_info"]["content"].parsed["gen_time"].native
            signer_info = signed_data["signer_infos"][0]
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            return ("FORMAT_FAILURE", f"signature time-stamp: not a readable RFC 3161 token ({exc})"), None
        tsa = tsa or self._leaf(embedded)
        if tsa is None:
            return ("NO_CERTIFICATE_CHAIN_FOUND", "signature time-stamp: the token carries no TSA certificate"), None
        digest_name = signer_info["digest_algorithm"]["algorithm"].native
        if any(w == digest_name for w in WEAK):
            return ("CRYPTO_CONSTRAINTS_FAILURE", f"signature time-stamp: weak digest {digest_name}"), None
        path = self._build_path(tsa, embedded)
        report.timestamp = {"tsa": _describe(tsa), "canonicalization": algorithm}
        if path is None:
            return (
                "NO_CERTIFICATE_CHAIN_FOUND",
                "signature time-stamp: the TSA's certificate does not chain to a configured trust anchor",
            ), None
        collected = self.revocation.collect(path) if self.revocation is not None else None
        der_path = [asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER)) for c in path]

        def imprint(name: str) -> bytes:
            if name in WEAK:
                raise ValueError(f"weak imprint digest {name}")
            return hashlib.new(name, signed_value).digest()

        def validate(moment: datetime | None, fetched: bool) -> dict[str, Any]:
            context = self.context(
                der_path[1:],
                (collected.crls if collected and fetched else []) + self.extra_crls + list(lt.crls),
                (collected.ocsps if collected and fetched else []) + list(lt.ocsps),
                moment,
            )
            found: dict[str, Any] = aio.run(validate_tst_signed_data(signed_data, context, imprint))
            return found

        try:
            status = validate(at, True)
            trouble = status.get("trust_problem_indic")
            # (pyHanko reports revocation information it could not find for a TSA as a chain constraint failure)
            if (
                lt
                and trouble is not None
                and getattr(trouble, "name", "") in ("TRY_LATER", "CHAIN_CONSTRAINTS_FAILURE")
            ):
                # XAdES-B-LT: the TSA's revocation status cannot be had now; judge it as of the time-stamp's
                # own time with the evidence the signature carries
                status = validate(gen_time, False)
        except ValueError as exc:
            return ("CRYPTO_CONSTRAINTS_FAILURE", f"signature time-stamp: {exc}"), None
        except Exception as exc:  # noqa: BLE001 - pyHanko's validation errors: a token we cannot accept
            return ("FORMAT_FAILURE", f"signature time-stamp: {exc.__class__.__name__}: {exc}"), None
        when: datetime = status["timestamp"]
        report.timestamp.update(
            time=when.astimezone(UTC).isoformat(),
            chain=[_describe(c) for c in path],
            revocation=collected.used if collected else [],
        )
        if not status.get("intact", False):
            return ("HASH_FAILURE", "signature time-stamp: the token does not cover this signature value"), None
        if not status.get("valid", False):
            return ("SIG_CRYPTO_FAILURE", "signature time-stamp: the TSA's signature does not verify"), None
        trouble = status.get("trust_problem_indic")
        if trouble is not None:
            name = getattr(trouble, "name", str(trouble))
            sub = (
                name
                if name in SUB_INDICATIONS and SUB_INDICATIONS[name] == INDETERMINATE
                else "CHAIN_CONSTRAINTS_FAILURE"
            )
            if sub == "CHAIN_CONSTRAINTS_FAILURE" and collected is not None and collected.problems:
                # the TSA's revocation status could not be fetched: undecided for now, not a bad certificate
                problems = "; ".join(collected.problems)
                return ("TRY_LATER", f"signature time-stamp: the TSA's revocation status is unknown ({problems})"), None
            return (sub, f"signature time-stamp: the TSA's certificate is not acceptable ({name})"), None
        report.timestamp["status"] = "valid"
        return None, when

    @staticmethod
    def _fail(report: Report, sub: str, detail: str) -> Report:
        failed = Report.failed(sub, detail)
        report.indication, report.sub_indication, report.detail = failed.indication, sub, detail
        return report

    @staticmethod
    def _leaf(carried: list[x509.Certificate]) -> x509.Certificate | None:
        """The end-entity certificate: the one that issued none of the others."""
        if not carried:
            return None
        for cert in carried:
            if not any(other is not cert and other.issuer == cert.subject for other in carried):
                return cert
        return carried[0]

    @staticmethod
    def _references(results: list[Any], uris: list[str | None]) -> list[dict[str, Any]]:
        """What the signature covers, reference by reference (signxml answers them in SignedInfo order)."""
        out = []
        for i, r in enumerate(results):
            ref = getattr(r, "signed_xml", None)
            data: bytes = r.signed_data
            tag = ref.tag if ref is not None else None
            if tag in (f"{{{XADES}}}SignedProperties", f"{{{DS}}}KeyInfo"):
                continue  # signature metadata, not the signed content
            uri = uris[i] if len(uris) == len(results) else None
            kind = "object" if tag == f"{{{DS}}}Object" else "document" if uri == "" else "element"
            out.append(
                {
                    "uri": uri,
                    "kind": kind,
                    "bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "content": data.decode("utf-8", "replace") if len(data) <= MAX_SIGNED_CONTENT else None,
                }
            )
        return out

    def _build_path(self, leaf: x509.Certificate, carried: list[x509.Certificate]) -> list[x509.Certificate] | None:
        key = b"".join(_fingerprint(c) for c in carried) + _fingerprint(leaf)
        with self._lock:
            if key in self._paths:
                return self._paths[key]
        path = self._search_path(leaf, carried)
        with self._lock:
            if len(self._paths) > 10_000:
                self._paths.clear()
            self._paths[key] = path
        return path

    def _search_path(self, leaf: x509.Certificate, carried: list[x509.Certificate]) -> list[x509.Certificate] | None:
        pool = [c for c in carried if c is not leaf] + self.intermediates
        path = [leaf]
        while len(path) < 10:
            current = path[-1]
            anchor = next((a for a in self.anchors if _issued_by(current, a)), None)
            if anchor is not None:
                return path + ([anchor] if anchor != current else [])
            if any(current == a for a in self.anchors):
                return path
            nxt = next((c for c in pool if c not in path and _issued_by(current, c)), None)
            if nxt is None:
                return None
            path.append(nxt)
        return None

    def _path(
        self,
        leaf: x509.Certificate,
        carried: list[x509.Certificate],
        at: datetime | None,
        report: Report,
        *,
        crl_only: bool = False,
        lt: Carried = Carried(),
        fetch: bool = True,
    ) -> tuple[str, str] | None:
        """`lt`: evidence the signature carries, beside what is fetched; `fetch=False`: that evidence alone."""
        path = self._build_path(leaf, carried)
        if path is None:
            return ("NO_CERTIFICATE_CHAIN_FOUND", "no path from the signing certificate to a configured trust anchor")
        report.chain = [_describe(c) for c in path]
        for cert in path[1:]:
            weak = _weak_key(cert)
            if weak:
                return ("CRYPTO_CONSTRAINTS_FAILURE", f"{cert.subject.rfc4514_string()}: {weak}")
        cache_key = hashlib.sha256(b"".join(_fingerprint(c) for c in path)).hexdigest()
        if at is None:
            with self._lock:
                hit = self._path_cache.get(cache_key)
            if hit is not None and hit[0] > time.monotonic():
                report.revocation = [dict(r, cached=True) for r in hit[1]["revocation"]]
                return hit[1]["problem"]  # type: ignore[no-any-return]
        source = self.revocation if fetch else None
        collected = source.collect(path, crl_only=crl_only) if source is not None else None
        crls = (collected.crls if collected else []) + self.extra_crls + list(lt.crls)
        ocsps = (collected.ocsps if collected else []) + ([] if crl_only else list(lt.ocsps))
        report.revocation = (collected.used if collected else []) + (
            [
                {
                    "certificate": "(validation data carried by the signature)",
                    "source": "carried",
                    "status": f"{len(lt.crls)} CRL(s), {len(lt.ocsps)} OCSP response(s)",
                }
            ]
            if lt
            else []
        )
        problem = self._validate(path, crls, ocsps, at, collected.problems if collected else [])
        if at is None and (problem is None or problem[0] in ("REVOKED", "EXPIRED", "NOT_YET_VALID")):
            with self._lock:
                self._path_cache[cache_key] = (
                    time.monotonic() + self.path_cache_seconds,
                    {"problem": problem, "revocation": report.revocation},
                )
        return problem

    def context(
        self, others: Sequence[Any], crls: Sequence[bytes], ocsps: Sequence[bytes], at: datetime | None
    ) -> ValidationContext:
        """The pyhanko-certvalidator context of every validation hub makes: the configured anchors only, `others`
        (asn1crypto certificates) for path building, the evidence hub gathered and no fetching of its own."""
        return ValidationContext(
            trust_roots=self._anchors_asn1,
            other_certs=list(others),
            moment=at,
            crls=list(crls),
            ocsps=list(ocsps),
            revocation_mode="hard-fail",
            # validating as of a past time with evidence fetched later: a later CRL/OCSP answer that does not list
            # the certificate also speaks for the past (revocation is permanent; holds are not used by these CAs)
            retroactive_revinfo=at is not None,
            time_tolerance=timedelta(seconds=1),
        )

    def _validate(
        self,
        path: list[x509.Certificate],
        crls: list[bytes],
        ocsps: list[bytes],
        at: datetime | None,
        fetch_problems: list[str],
    ) -> tuple[str, str] | None:
        der = [asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER)) for c in path]
        context = self.context(der[1:], crls, ocsps, at)
        validator = CertificateValidator(der[0], der[1:-1], validation_context=context)
        try:
            aio.run(validator.async_validate_usage({"digital_signature"}))
        except pv_errors.RevokedError as exc:
            return ("REVOKED", str(exc))
        except pv_errors.ExpiredError as exc:
            return ("EXPIRED", str(exc))
        except pv_errors.NotYetValidError as exc:
            return ("NOT_YET_VALID", str(exc))
        except pv_errors.InsufficientRevinfoError as exc:
            extra = f" ({'; '.join(fetch_problems)})" if fetch_problems else ""
            return ("TRY_LATER", f"revocation status could not be established: {exc}{extra}")
        except pv_errors.InvalidCertificateError as exc:
            return ("CHAIN_CONSTRAINTS_FAILURE", str(exc))
        except pv_errors.PathBuildingError as exc:
            return ("NO_CERTIFICATE_CHAIN_FOUND", str(exc))
        except pv_errors.PathValidationError as exc:
            return ("CHAIN_CONSTRAINTS_FAILURE", str(exc))
        except pv_errors.ValidationError as exc:
            return ("CHAIN_CONSTRAINTS_FAILURE", str(exc))
        return None
