"""Verify the signatures of a PDF (PAdES: results issued as signed PDFs, extracts, scanned documents signed by an
officer) with pyHanko, against the same configured anchors, path cache and revocation evidence as the XML
verifier, and answer the same ETSI-style report (ADR 0027).

Every signature in the file must pass; the report describes the last (the one covering the most). A signature
that does not cover the whole file is accepted only if what came after it is further signatures, form fields
filled, time-stamps and validation data, as the document's permissions allow (pyHanko's difference analysis):
anything else — a page turned or replaced, content added — is a HASH_FAILURE, whatever the signature value says."""

from __future__ import annotations

import re
import zlib
from datetime import UTC, datetime
from io import BytesIO
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from hub.signing import aio
from hub.signing.report import Report
from hub.signing.verify import WEAK, Verifier, _describe, _weak_key, load_certificate, token_certificates

MAX_SIGNATURES = 20
# what all of a PDF's Flate streams may expand to: 64 MiB, or 32 times the file (a scan's Flate images expand 2-10
# times; a bomb, a thousand)
MAX_EXPANDED, MAX_RATIO = 64 * 1024 * 1024, 32
_STREAM = re.compile(rb"stream\r?\n")


def _expands_too_far(data: bytes) -> int | None:
    """The cap, when the file's compressed streams, all decoded, would pass it: pyHanko decodes the object and
    cross-reference streams it reads, and a hostile PDF within the request's size limit can expand without bound.
    Every `stream` is tried as Flate (one that is not stops its attempt at once); nothing decoded is kept."""
    cap = max(MAX_EXPANDED, MAX_RATIO * len(data))
    total = 0
    for match in _STREAM.finditer(data):
        start = match.end()
        end = data.find(b"endstream", start)
        if end < 0:
            break
        decoder = zlib.decompressobj()
        chunk = data[start:end]
        try:
            while chunk and total <= cap and not decoder.eof:
                out = decoder.decompress(chunk, min(1 << 20, cap + 1 - total))  # 1 MiB at a time
                total += len(out)
                if not out and decoder.unconsumed_tail == chunk:
                    break  # no progress (what follows the stream's end)
                chunk = decoder.unconsumed_tail
        except zlib.error:
            continue
        if total > cap:
            return cap
    return None


def is_pdf(data: bytes) -> bool:
    return data[:1024].lstrip().startswith(b"%PDF-")


def verify_pdf(verifier: Verifier, data: bytes, *, at: datetime | None = None) -> Report:
    from pyhanko.pdf_utils.reader import PdfFileReader

    vt = (at or datetime.now(UTC)).isoformat()
    if (cap := _expands_too_far(data)) is not None:
        detail = f"its compressed streams expand past {cap // (1024 * 1024)} MiB: not read"
        return Report.failed("FORMAT_FAILURE", detail, validation_time=vt)
    try:
        signatures = list(PdfFileReader(BytesIO(data), strict=False).embedded_signatures)
    except Exception as exc:  # noqa: BLE001 - whatever a hostile file makes the parser raise: not a readable PDF
        return Report.failed(
            "FORMAT_FAILURE", f"not a readable PDF: {exc.__class__.__name__}: {exc}", validation_time=vt
        )
    if not signatures:
        return Report.failed("FORMAT_FAILURE", "the PDF carries no signature", validation_time=vt)
    if len(signatures) > MAX_SIGNATURES:
        return Report.failed(
            "FORMAT_FAILURE", f"{len(signatures)} signatures: more than {MAX_SIGNATURES} are not accepted",
            validation_time=vt,
        )  # fmt: skip
    report = Report(indication="", signature_format="PAdES-B-B", validation_time=vt)
    for i, signature in enumerate(signatures, 1):
        report = Report(indication="", signature_format="PAdES-B-B", validation_time=vt)
        problem = _one(verifier, signature, at, report, len(data))
        if problem is not None:
            sub, detail = problem
            where = f"signature {i} of {len(signatures)}: " if len(signatures) > 1 else ""
            failed = Report.failed(sub, where + detail)
            report.indication, report.sub_indication, report.detail = failed.indication, sub, failed.detail
            return report
    report.indication = "TOTAL-PASSED"
    return report


def _one(verifier: Verifier, signature: Any, at: datetime | None, report: Report, size: int) -> tuple[str, str] | None:
    """Validate one embedded signature into `report`; the problem (sub-indication, detail), or None."""
    from pyhanko.sign.diff_analysis.policy_api import ModificationLevel
    from pyhanko.sign.validation import async_validate_pdf_signature
    from pyhanko.sign.validation.settings import KeyUsageConstraints
    from pyhanko.sign.validation.status import SignatureCoverageLevel

    try:
        leaf = load_certificate(signature.signer_cert.dump())
        others = [load_certificate(c.dump()) for c in signature.other_embedded_certs]
        digest = str(signature.md_algorithm)
    except Exception as exc:  # noqa: BLE001 - whatever a hostile CMS blob raises: not a signature we can read
        return ("FORMAT_FAILURE", f"the signature cannot be read: {exc.__class__.__name__}: {exc}")
    report.signer = _describe(leaf)
    if digest in WEAK:
        return ("CRYPTO_CONSTRAINTS_FAILURE", f"weak algorithm refused by policy: {digest}")
    if weak := _weak_key(leaf):
        return ("CRYPTO_CONSTRAINTS_FAILURE", weak)
    path = verifier._build_path(leaf, others)
    if path is None:
        return ("NO_CERTIFICATE_CHAIN_FOUND", "no path from the signing certificate to a configured trust anchor")
    report.chain = [_describe(c) for c in path]
    collected = verifier.revocation.collect(path) if verifier.revocation is not None else None
    report.revocation = collected.used if collected else []
    context = _context(verifier, path, collected, at)
    try:
        status = aio.run(
            async_validate_pdf_signature(
                signature,
                signer_validation_context=context,
                ts_validation_context=_tsa_context(verifier, signature) or context,
                key_usage_settings=KeyUsageConstraints(key_usage={"digital_signature", "non_repudiation"}),
            )
        )
    except Exception as exc:  # noqa: BLE001 - pyHanko's errors on a malformed signature dictionary or CMS
        return ("FORMAT_FAILURE", f"{exc.__class__.__name__}: {exc}")
    if status.signer_reported_dt is not None:
        report.signing_time = status.signer_reported_dt.isoformat()
    report.algorithms = {"signature": str(signature.signer_info["signature_algorithm"]["algorithm"].native),
                         "digests": [digest]}  # fmt: skip
    ts = status.timestamp_validity
    ts_ok = ts is not None and ts.intact and ts.valid and ts.trust_problem_indic is None
    if ts is not None:
        report.signature_format = "PAdES-B-T"
        report.timestamp = {"time": ts.timestamp.astimezone(UTC).isoformat(), "status": "valid" if ts_ok else "failed"}
    report.signed_references = [{"uri": None, "coverage": status.coverage.name if status.coverage else None,
                                 "bytes": size}]  # fmt: skip
    if not status.intact:
        return ("HASH_FAILURE", "the signed bytes of the PDF do not match the signature's digest")
    if not status.valid:
        return ("SIG_CRYPTO_FAILURE", "the signature value does not verify")
    if status.coverage != SignatureCoverageLevel.ENTIRE_FILE and (
        status.modification_level in (None, ModificationLevel.OTHER) or status.docmdp_ok is False
    ):
        # after it: further signatures, form fields filled, validation data — not a page or content changed
        level = status.modification_level.name if status.modification_level else "unknown"
        return ("HASH_FAILURE", f"the PDF was changed after it was signed ({level})")
    if ts is not None and not ts_ok:
        return ("SIG_CRYPTO_FAILURE", "the signature time-stamp does not verify")
    trouble = status.trust_problem_indic
    if trouble is not None:
        name = getattr(trouble, "name", str(trouble))
        if "REVOKED" in name:
            return ("REVOKED", f"the signer's certificate is revoked ({name})")
        if "OUT_OF_BOUNDS" in name or "EXPIRED" in name:
            return ("EXPIRED", f"the signer's certificate was not valid at the validation time ({name})")
        if collected is not None and collected.problems:
            return ("TRY_LATER", f"revocation status could not be established ({'; '.join(collected.problems)})")
        return ("CHAIN_CONSTRAINTS_FAILURE", f"the signer's certificate is not acceptable ({name})")
    return None


def _context(verifier: Verifier, path: list[x509.Certificate], collected: Any, at: datetime | None) -> Any:
    """The verifier's context for `path`, with the evidence hub collected for it (hub's revocation source caps,
    caches and records every fetch; pyHanko fetches nothing)."""
    from asn1crypto import x509 as asn1_x509

    others = [asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER)) for c in path[1:]]
    crls = (collected.crls if collected else []) + verifier.extra_crls
    return verifier.context(others, crls, collected.ocsps if collected else [], at)


def _tsa_context(verifier: Verifier, signature: Any) -> Any:
    """The context for the signature's time-stamp: its TSA's path, with that path's evidence (None: no token, or
    a TSA that chains to no anchor — pyHanko then says so against the signer's context)."""
    from pyhanko.sign.validation.generic_cms import extract_tst_data_iter

    tokens = list(extract_tst_data_iter(signature.signer_info, signed=False))
    if not tokens:
        return None
    certs, tsa = token_certificates(tokens[0])
    tsa = tsa or verifier._leaf(certs)
    path = verifier._build_path(tsa, certs) if tsa is not None else None
    if path is None:
        return None
    collected = verifier.revocation.collect(path) if verifier.revocation is not None else None
    return _context(verifier, path, collected, None)
