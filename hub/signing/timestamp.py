"""RFC 3161 signature time-stamps for XAdES-T (ETSI EN 319 132-1, SignatureTimeStamp): the time-stamp's message
imprint is the digest of the canonicalized ds:SignatureValue element. Requests go to a TSA over HTTP through
pyHanko's RFC 3161 client (nonce checked, status checked); tokens are validated in verify.py."""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Any

from lxml import etree

from hub.adapters.exchange import ExchangeHook, recorded
from hub.logs import correlation_id
from hub.signing import aio
from hub.signing.xml import reparse

DS = "http://www.w3.org/2000/09/xmldsig#"
XADES = "http://uri.etsi.org/01903/v1.3.2#"
NS = {"ds": DS, "xades": XADES}
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
C14N_10 = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"  # the default when none is named
C14N_10_COMMENTS = C14N_10 + "#WithComments"
EXC_C14N_COMMENTS = EXC_C14N + "WithComments"


class TimestampError(ValueError):
    """The TSA could not be asked, or refused (code: tsa_unavailable | tsa_refused)."""

    def __init__(self, detail: str, code: str) -> None:
        super().__init__(detail)
        self.code = code


def canonical(el: Any, algorithm: str) -> bytes:
    """The element canonicalized as `algorithm` says (C14N 1.0 or exclusive C14N, with or without comments)."""
    comments = algorithm in (C14N_10_COMMENTS, EXC_C14N_COMMENTS)
    if algorithm in (EXC_C14N, EXC_C14N_COMMENTS):
        return bytes(etree.tostring(el, method="c14n", exclusive=True, with_comments=comments))
    if algorithm in (C14N_10, C14N_10_COMMENTS):
        # inclusive C14N renders the namespaces in scope; a standalone copy carries them (and avoids lxml's
        # spurious xmlns="" on a subtree under a default namespace)
        copy = reparse(etree.tostring(el))
        return bytes(etree.tostring(copy, method="c14n", exclusive=False, with_comments=comments))
    raise ValueError(f"canonicalization {algorithm!r} is not supported for time-stamps")


def request_token(url: str, digest: bytes, *, timeout: float = 10.0, on_exchange: ExchangeHook | None = None) -> bytes:
    """A time-stamp token (DER ContentInfo) over a SHA-256 `digest` from the TSA at `url` (reported to
    `on_exchange` for the exchange record)."""
    with recorded(on_exchange, "tsa", "timestamp", correlation_id.get(), url.encode() + b"\n" + digest) as exchange:
        try:
            token = _request_token(url, digest, timeout)
        except TimestampError as exc:
            exchange.failed(exc.code, retryable=exc.code == "tsa_unavailable")
            raise
        exchange.answered(token)
        return token


MAX_TSA_REPLY_BYTES = 256 * 1024  # a time-stamp reply with the TSA's certificates is a few kB


def _request_token(url: str, digest: bytes, timeout: float) -> bytes:
    import requests
    import urllib3
    from asn1crypto import tsp
    from pyhanko.sign.general import SigningError as PyhankoSigningError
    from pyhanko.sign.timestamps.common_utils import TimestampRequestError
    from pyhanko.sign.timestamps.requests_client import RequestsHTTPTimeStamper

    from hub.adapters.http import ReplyTooLarge, read_capped, verified_pool

    class CappedTimeStamper(RequestsHTTPTimeStamper):
        """pyHanko's RFC 3161 client (the request, the nonce, the reply's checks), the reply read through urllib3 up
        to MAX_TSA_REPLY_BYTES: pyHanko's own reads whatever the TSA sends, while a signing request waits."""

        async def async_request_tsa_response(self, req: tsp.TimeStampReq) -> tsp.TimeStampResp:
            try:
                reply = verified_pool(1, num_pools=1).request(
                    "POST",
                    self.url,
                    body=req.dump(),
                    headers=self.request_headers(),
                    timeout=urllib3.Timeout(connect=timeout, read=timeout),
                    retries=False,
                    redirect=False,
                    preload_content=False,
                )
                content_type = reply.headers.get("Content-Type")
                body = read_capped(reply, MAX_TSA_REPLY_BYTES)
            except urllib3.exceptions.HTTPError as exc:
                raise TimestampRequestError("Error in communication with timestamp server") from OSError(str(exc))
            except ReplyTooLarge as exc:
                raise TimestampRequestError(f"Timestamp server response is malformed: {exc}") from None
            if content_type != "application/timestamp-reply":
                raise TimestampRequestError(f"Timestamp server response is malformed (HTTP {reply.status})")
            return tsp.TimeStampResp.load(body)

    stamper = CappedTimeStamper(url, timeout=timeout)  # type: ignore[no-untyped-call]
    try:
        token = aio.run(stamper.async_timestamp(digest, "sha256"))
    except TimestampRequestError as exc:
        if isinstance(exc.__cause__, OSError) or "malformed" in str(exc):  # not reached, or answered no TSP reply
            raise TimestampError(f"the time-stamping authority could not be asked: {exc}", "tsa_unavailable") from None
        raise TimestampError(f"the time-stamping authority refused: {exc}", "tsa_refused") from None
    except (OSError, requests.RequestException, PyhankoSigningError) as exc:
        raise TimestampError(f"the time-stamping authority could not be asked: {exc}", "tsa_unavailable") from None
    return bytes(token.dump())


def add_signature_timestamp(
    signature: Any, tsa_url: str, *, timeout: float = 10.0, on_exchange: ExchangeHook | None = None
) -> None:
    """Turn a XAdES-B-B signature (lxml ds:Signature) into XAdES-B-T: add a SignatureTimeStamp over its value."""
    value = signature.find("ds:SignatureValue", NS)
    properties = signature.find(".//xades:QualifyingProperties", NS)
    if value is None or properties is None:
        raise ValueError("a signature time-stamp needs a XAdES signature with a SignatureValue")
    digest = hashlib.sha256(canonical(value, EXC_C14N)).digest()
    token = request_token(tsa_url, digest, timeout=timeout, on_exchange=on_exchange)
    unsigned = properties.find("xades:UnsignedProperties", NS)
    if unsigned is None:
        unsigned = etree.SubElement(properties, f"{{{XADES}}}UnsignedProperties")
    usp = unsigned.find("xades:UnsignedSignatureProperties", NS)
    if usp is None:
        usp = etree.SubElement(unsigned, f"{{{XADES}}}UnsignedSignatureProperties")
    stamp = etree.SubElement(usp, f"{{{XADES}}}SignatureTimeStamp", Id=f"TS-{uuid.uuid4()}")
    etree.SubElement(stamp, f"{{{DS}}}CanonicalizationMethod", Algorithm=EXC_C14N)
    etree.SubElement(stamp, f"{{{XADES}}}EncapsulatedTimeStamp").text = base64.b64encode(token).decode()
