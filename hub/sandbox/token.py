"""A test token for the sandbox PKI: SoftHSM (Debian's softhsm2, a PKCS#11 token kept in files) with keys made on
it and their certificates from the sandbox's government CA — what an agency's HSM or USB token looks like to hub
(hub/signing/pkcs11.py). Used by the tests and bench/signing.py."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hub.sandbox.pki import TestPki
from hub.signing.pkcs11 import TokenConfig, library

SOFTHSM = Path("/usr/lib/softhsm/libsofthsm2.so")


@dataclass(frozen=True)
class Token:
    """A SoftHSM token (Debian's softhsm2: a PKCS#11 token in files) holding keys made on it, never outside: an
    RSA key and an EC key, each with its certificate from the sandbox's government CA, that CA's certificate and
    the root's beside them, and a key without a certificate."""

    conf: Path
    label: str
    pin: str
    so_pin: str
    spare: str = "hub-spare"  # a second token, empty, same PINs: for trying a wrong PIN without disturbing the first

    def config(self, key: str, *, pin: str | None = None) -> TokenConfig:
        return TokenConfig(SOFTHSM, self.label, key, self.pin if pin is None else pin)

    def env(self) -> dict[str, str]:
        return {"SOFTHSM2_CONF": str(self.conf)}


def make_token(directory: Path, pki: TestPki) -> Token:
    """Initialise a token (softhsm2-util, as an operator would), then make its keys on it and write their
    certificates there through PKCS#11 — the process's one PKCS#11 library, shared with hub."""
    from pkcs11 import Attribute, KeyType
    from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters
    from pkcs11.util.x509 import decode_x509_certificate

    util = shutil.which("softhsm2-util")
    if not SOFTHSM.exists() or util is None:
        raise FileNotFoundError(f"{SOFTHSM}, softhsm2-util: install Debian's softhsm2")
    (directory / "tokens").mkdir(parents=True)
    conf = directory / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {directory / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)  # read by the library when it is initialised (once a process)
    token = Token(conf, "hub-agency", secrets.token_hex(4), secrets.token_hex(4))
    for label in (token.label, token.spare):  # before the library first starts: it sees the tokens there then
        subprocess.run(  # noqa: S603 - a fixed command; the label and PINs are made here
            [util, "--init-token", "--free", "--label", label, "--pin", token.pin, "--so-pin", token.so_pin],
            check=True, capture_output=True, env={**os.environ, **token.env()},
        )  # fmt: skip
    lib = library(SOFTHSM)
    with lib.get_token(token_label=token.label).open(user_pin=token.pin, rw=True) as s:

        def store(cert: x509.Certificate, label: str, key_id: bytes) -> None:
            attrs = decode_x509_certificate(cert.public_bytes(serialization.Encoding.DER))
            s.create_object({**attrs, Attribute.LABEL: label, Attribute.ID: key_id, Attribute.TOKEN: True})

        public, _ = s.generate_keypair(KeyType.RSA, 2048, label="hub-rsa", id=b"\x01", store=True)
        numbers = rsa.RSAPublicNumbers(
            int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big"), int.from_bytes(public[Attribute.MODULUS], "big")
        )
        store(pki.certify("hub — khóa trên token (sandbox)", "gov_ca", numbers.public_key()), "hub-rsa", b"\x01")
        params = s.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True
        )
        public, _ = params.generate_keypair(label="hub-ec", id=b"\x02", store=True)
        ec_public = serialization.load_der_public_key(encode_ec_public_key(public))
        if not isinstance(ec_public, ec.EllipticCurvePublicKey):
            raise TypeError("the token's EC key has no EC public key")
        store(pki.certify("hub — khóa EC trên token (sandbox)", "gov_ca", ec_public), "hub-ec", b"\x02")
        s.generate_keypair(KeyType.RSA, 2048, label="no-certificate", id=b"\x03", store=True)
        store(pki.issued["gov_ca"].cert, "gov_ca", b"\xca")
        store(pki.issued["gov_root"].cert, "gov_root", b"\xcb")
    return token
