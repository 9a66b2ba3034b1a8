"""The generated PKI (fresh keys per run) with its CRL, OCSP and TSA endpoints on loopback, shared by the
signature tests (the `trust` fixture lives in conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hub.sandbox import pki
from hub.sandbox.common import ServerThread
from hub.sandbox.token import SOFTHSM, Token, make_token
from hub.signing.revocation import RevocationSource
from hub.signing.sign import FileSigner
from hub.signing.verify import Verifier


class Trust:
    def __init__(self, server: ServerThread, state: pki.PkiState, p: pki.TestPki, directory: Path) -> None:
        self.server, self.state, self.pki, self.dir = server, state, p, directory

    def signer(self, name: str) -> FileSigner:
        signer: FileSigner = self.pki.signer(name)
        return signer

    def verifier(self, **kwargs: Any) -> Verifier:
        anchors = [self.pki.issued["national_root"].cert, self.pki.issued["gov_root"].cert]
        return Verifier(anchors, revocation=RevocationSource(read_timeout=2), **kwargs)

    def token(self, directory: Path) -> Token:
        return make_token(directory, self.pki)


__all__ = ["SOFTHSM", "Token", "Trust"]
