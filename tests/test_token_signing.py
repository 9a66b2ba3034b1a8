"""Signing with a key that never leaves its token (an HSM, a CA's USB token), through PKCS#11: a SoftHSM token
with keys made on it. What it signs verifies in hub (chain to the government root, revocation by OCSP) and in
xmlsec1; the service and the CLI take the token from configuration; a wrong PIN is offered to the token once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from hub.settings import Settings
from hub.signing.pkcs11 import TokenConfig, TokenSigner
from hub.signing.service import SignatureService
from hub.signing.sign import SigningError, sign_document
from hub.signing.verify import Verifier
from tests.pki_helpers import SOFTHSM, Token, Trust
from tests.test_signing import DOC, HUB_BIN, tsa_url, verdict, xmlsec1_verify


@pytest.fixture
def verifier(trust: Trust) -> Verifier:
    return trust.verifier()


@pytest.mark.parametrize(
    ("key", "xades", "timestamped"),
    [("hub-rsa", False, False), ("hub-rsa", True, True), ("hub-ec", False, False), ("hub-ec", True, False)],
)
def test_a_key_on_a_token_signs_and_its_signature_verifies(
    token: Token, trust: Trust, verifier: Verifier, key: str, xades: bool, timestamped: bool
) -> None:
    signer = TokenSigner(token.config(key))
    gov_ca = trust.pki.issued["gov_ca"].cert
    assert signer.chain == [gov_ca]  # found on the token; the root left to the verifier's anchors
    signed = sign_document(DOC, signer, xades=xades, tsa_url=tsa_url(trust) if timestamped else None)
    report = verifier.verify(signed)
    assert verdict(report) == ("TOTAL-PASSED", None), report.detail
    assert report.signer is not None and report.signer["subject"] == signer.certificate.subject.rfc4514_string()
    assert "khóa" in report.signer["subject"] and len(report.chain) == 3
    # each certificate checked: OCSP says good, or — its responder slow on a loaded machine (2 s) — the CA's CRL,
    # which does not list it
    assert len(report.revocation) == 2 and {r["status"] for r in report.revocation} <= {"good", "listed"}
    assert report.algorithms["signature"].endswith("rsa-sha256" if key == "hub-rsa" else "ecdsa-sha256")
    assert report.signature_format == ("XAdES-B-T" if timestamped else "XAdES-B-B" if xades else "XMLDSig")
    with pytest.raises(SigningError, match="cannot be exported"):
        signer.key.private_bytes()  # type: ignore[call-arg]


def test_xmlsec1_verifies_what_a_token_signed(token: Token, trust: Trust, tmp_path: Path) -> None:
    for key in ("hub-rsa", "hub-ec"):
        path = tmp_path / f"{key}.xml"
        path.write_bytes(sign_document(DOC, TokenSigner(token.config(key))))
        result = xmlsec1_verify(path, trust.dir, xades=False)
        assert result.returncode == 0, (key, result.stderr)


def test_what_the_token_cannot_do_is_said_plainly(token: Token, trust: Trust) -> None:
    cases = [
        (token.config("nobody"), "token_key_not_found"),
        (token.config("no-certificate"), "token_certificate_not_found"),
        (TokenConfig(SOFTHSM, "no-such-token", "hub-rsa", token.pin), "token_unavailable"),
        (TokenConfig(Path("/nonexistent/libpkcs11.so"), token.label, "hub-rsa", token.pin), "token_unavailable"),
    ]
    for config, code in cases:
        with pytest.raises(SigningError) as caught:
            TokenSigner(config)
        assert caught.value.code == code, (config, caught.value)
    # a certificate given for the key must be the key's
    with pytest.raises(SigningError, match="does not belong"):
        TokenSigner(token.config("hub-rsa"), [trust.pki.issued["hub"].cert])


PIN_PROBE = """
import json, sys
from pathlib import Path
import pkcs11
from hub.signing.pkcs11 import TokenConfig, TokenSigner, library
from hub.signing.sign import SigningError

module, label, right, wrong = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
seen = []
def attempt(pin):
    try:
        TokenSigner(TokenConfig(module, label, "hub-rsa", pin))
        seen.append("signed")
    except SigningError as exc:
        seen.append(exc.code)
attempt(wrong)
token = library(module).get_token(token_label=label)
with token.open(user_pin=right, rw=True) as s:  # the token's PIN becomes the one hub was refused
    s.set_pin(right, wrong)
attempt(wrong)
with token.open(user_pin=wrong, rw=True) as s:
    s.set_pin(wrong, right)
attempt(right)
print(json.dumps(seen))
"""


def test_a_pin_the_token_refused_is_never_offered_again(token: Token) -> None:
    """A token locks itself after a few wrong PINs: hub offers a refused PIN once, not at every request — here it
    does not offer it again even once the token would take it (a process retrying would have signed)."""
    probe = subprocess.run(
        [sys.executable, "-c", PIN_PROBE, str(SOFTHSM), token.label, token.pin, "0" + token.pin],
        env={**os.environ, **token.env()}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout) == ["token_pin_refused", "token_pin_refused", "signed"]


def test_hub_signs_with_the_token_its_settings_name(token: Token, trust: Trust, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="HUB_SIGNING_PKCS11_PIN"):
        Settings(var_dir=tmp_path, signing_pkcs11_module=SOFTHSM, signing_pkcs11_token="t", signing_pkcs11_key="k")
    settings = Settings(
        var_dir=tmp_path,
        signing_pkcs11_module=SOFTHSM,
        signing_pkcs11_token=token.label,
        signing_pkcs11_key="hub-ec",
        signing_pkcs11_pin=SecretStr(token.pin),
        signing_tsa_url=tsa_url(trust),
    )
    service = SignatureService(settings)
    try:
        report = trust.verifier().verify(service.sign(DOC))
    finally:
        service.close()
    assert verdict(report) == ("TOTAL-PASSED", None), report.detail
    assert report.signature_format == "XAdES-B-T" and "EC" in (report.signer or {}).get("subject", "")


def test_cli_signs_with_a_token(token: Token, trust: Trust, tmp_path: Path) -> None:
    doc = tmp_path / "doc.xml"
    doc.write_bytes(DOC)
    env = {**os.environ, **token.env(), "TOKEN_PIN": token.pin}
    sign = subprocess.run(
        [HUB_BIN, "sign", "sign", str(doc), "--pkcs11-module", str(SOFTHSM), "--token", token.label,
         "--key-label", "hub-rsa", "--password-env", "TOKEN_PIN", "--xades", "--out", str(tmp_path / "signed.xml")],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert sign.returncode == 0, sign.stderr
    verify = subprocess.run(
        [HUB_BIN, "sign", "verify", str(tmp_path / "signed.xml"), "--trust", str(trust.dir / "gov_root.pem"),
         "--format", "json"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert json.loads(verify.stdout)["indication"] == "TOTAL-PASSED"
    wrong = subprocess.run(
        [HUB_BIN, "sign", "sign", str(doc), "--pkcs11-module", str(SOFTHSM), "--token", token.label,
         "--key-label", "nobody", "--password-env", "TOKEN_PIN"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert wrong.returncode == 2 and "no private key labelled 'nobody'" in wrong.stderr
