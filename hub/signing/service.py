"""Signature verification and signing as hub's services use them: trust anchors, intermediates, the signing
key and the revocation source come from Settings (in dev mode, the sandbox PKI's roots and hub's sandbox key
when nothing is configured)."""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from hub.adapters.exchange import ExchangeHook
from hub.domain.errors import DomainError
from hub.settings import Settings
from hub.signing.report import Report
from hub.signing.revocation import RevocationSource
from hub.signing.sign import FileSigner, Signer, SigningError, add_validation_data, sign_document
from hub.signing.verify import Verifier, read_certificates

SANDBOX_PKI_DIR = "sandbox-pki"
SANDBOX_ANCHORS = ("national_root.pem", "gov_root.pem")


class NotConfigured(DomainError):
    code = "signing_not_configured"
    status = 503


def _load(paths: list[Path]) -> list[x509.Certificate]:
    """The certificates in `paths`; NotConfigured (a 503 that names the file) when one cannot be read as such —
    the settings check them at start-up, so this is a file changed or removed since."""
    try:
        return read_certificates(paths)
    except ValueError as exc:
        raise NotConfigured(f"the certificates to verify with cannot be loaded: {exc}") from None


class SignatureService:
    def __init__(self, settings: Settings, *, on_exchange: ExchangeHook | None = None) -> None:
        self.settings = settings
        self._on_exchange = on_exchange  # OCSP / CRL fetches and time-stamp requests, for the exchange record
        self.revocation = RevocationSource(
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            max_cache_seconds=settings.revocation_cache_seconds,
            down_seconds=settings.revocation_down_seconds,
            on_exchange=on_exchange,
        )
        self._verifier: Verifier | None = None
        self._signer: Signer | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        self.revocation.close()

    def _sandbox_dir(self) -> Path | None:
        directory = self.settings.var_dir / SANDBOX_PKI_DIR
        if self.settings.mode == "dev" and all((directory / a).exists() for a in SANDBOX_ANCHORS):
            return directory
        return None

    def verifier(self) -> Verifier:
        with self._lock:
            if self._verifier is None:
                anchors = _load(self.settings.signing_trust_anchors)
                intermediates = _load(self.settings.signing_intermediates)
                sandbox = self._sandbox_dir()
                if not anchors and sandbox is not None:
                    anchors = _load([sandbox / a for a in SANDBOX_ANCHORS])
                    intermediates = _load([sandbox / "public_ca.pem", sandbox / "gov_ca.pem"])
                if not anchors:
                    raise NotConfigured("no trust anchors are configured (HUB_SIGNING_TRUST_ANCHORS)")
                self._verifier = Verifier(anchors, intermediates=intermediates, revocation=self.revocation)
            return self._verifier

    def verify(self, data: bytes, *, at: datetime | None = None) -> Report:
        """An XML document's signature, or a PDF's signatures (PAdES)."""
        from hub.signing.pdf import is_pdf, verify_pdf

        if is_pdf(data):
            return verify_pdf(self.verifier(), data, at=at)
        return self.verifier().verify(data, at=at)

    def signer(self) -> Signer:
        with self._lock:
            if self._signer is None:
                s = self.settings
                password = s.signing_key_password.get_secret_value().encode() if s.signing_key_password else None
                if s.signing_pkcs11_module is not None:
                    from hub.signing.pkcs11 import TokenConfig, TokenSigner

                    pin = s.signing_pkcs11_pin.get_secret_value() if s.signing_pkcs11_pin else ""
                    config = TokenConfig(s.signing_pkcs11_module, s.signing_pkcs11_token, s.signing_pkcs11_key, pin)
                    given = None
                    if s.signing_cert is not None:
                        try:
                            given = read_certificates([s.signing_cert])
                        except ValueError as exc:
                            raise SigningError(f"certificate file {exc}") from None
                    self._signer = TokenSigner(config, given)
                elif s.signing_pkcs12 is not None:
                    self._signer = FileSigner.from_pkcs12(s.signing_pkcs12, password)
                elif s.signing_key is not None and s.signing_cert is not None:
                    self._signer = FileSigner.from_pem(s.signing_key, s.signing_cert, password)
                elif (sandbox := self._sandbox_dir()) is not None:
                    self._signer = FileSigner.from_pem(sandbox / "hub.key", sandbox / "hub-chain.pem")
                else:
                    raise NotConfigured(
                        "no signing key is configured (HUB_SIGNING_KEY/_CERT, HUB_SIGNING_PKCS12 or "
                        "HUB_SIGNING_PKCS11_MODULE with its token)"
                    )
            return self._signer

    def key_state(self) -> tuple[x509.Certificate | None, str | None] | None:
        """hub's signing key as operators watch it (metrics, console): None when none is configured, (its
        certificate, None) when it can sign, (None, why) when it cannot be loaded — file, token or PIN."""
        try:
            return self.signer().certificate, None
        except NotConfigured:
            return None
        except Exception as exc:  # noqa: BLE001 - whatever stops the key is what to say
            return None, str(exc)[:300]

    def sign_edxml(self, header: Any, attachments: list[Any], *, sent_at: datetime) -> bytes:
        """An edXML envelope signed as the agency (XAdES, B-T when a TSA is configured)."""
        from hub.signing import edxml

        return self._long_term(
            edxml.sign(
                header,
                attachments,
                self.signer(),
                sent_at=sent_at,
                tsa_url=self.tsa_url(),
                tsa_timeout=self.settings.read_timeout,
                on_exchange=self._on_exchange,
            )
        )

    def extend(self, signed: bytes) -> bytes:
        """Anyone's time-stamped XAdES signature made XAdES-B-LT (NotValidNow when it does not pass now, or is not
        time-stamped); one that is B-LT already gets the evidence of today's validation beside what it carries."""
        return add_validation_data(signed, *self.verifier().validation_data(signed))

    def _long_term(self, signed: bytes) -> bytes:
        """With HUB_SIGNING_LONG_TERM, a time-stamped signature is made XAdES-B-LT: it carries the certificates and
        the revocation evidence of its validation now (which must pass), so it can be validated when the CA's
        services cannot be reached."""
        if not self.settings.signing_long_term:
            return signed
        if self.tsa_url() is None:
            raise SigningError(
                "a long-term signature (B-LT) needs a time-stamp: set HUB_SIGNING_TSA_URL", code="tsa_not_configured"
            )
        try:
            certificates, crls, ocsps = self.verifier().validation_data(signed)
        except ValueError as exc:
            raise SigningError(
                f"hub's signature does not validate now, so it cannot carry its validation data: {exc}",
                code="validation_data_unavailable",
            ) from None
        return add_validation_data(signed, certificates, crls, ocsps)

    def tsa_url(self) -> str | None:
        """The configured TSA; in dev mode with the sandbox PKI, the sandbox's."""
        if self.settings.signing_tsa_url:
            return self.settings.signing_tsa_url
        if (
            self._sandbox_dir() is not None
            and self.settings.signing_key is None
            and self.settings.signing_pkcs12 is None
            and self.settings.signing_pkcs11_module is None
        ):
            return f"http://{self.settings.sandbox_host}:{self.settings.sandbox_pki_port}/pki/tsa"
        return None

    def sign(self, data: bytes, *, xades: bool = True, timestamp: bool = True) -> bytes:
        """Sign as the agency: XAdES-B-T when a TSA is configured (and `timestamp`), else XAdES-B-B / XMLDSig."""
        tsa = self.tsa_url() if xades and timestamp else None
        signed = sign_document(
            data,
            self.signer(),
            xades=xades,
            tsa_url=tsa,
            tsa_timeout=self.settings.read_timeout,
            on_exchange=self._on_exchange,
        )
        return self._long_term(signed) if xades and timestamp else signed
