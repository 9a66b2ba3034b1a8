"""Signing with a key that never leaves its token: an HSM, or a USB token such as the CAs issue to agencies, used
through its PKCS#11 library (python-pkcs11). `TokenSigner` is a `Signer` like `FileSigner`: its `key` is a
cryptography private key whose `sign` asks the token, so signxml signs with it unchanged (ADR 0025).

The token is logged in to once and its session kept (a lock serialises its use: a PKCS#11 session is not for
two threads at once); a session the token dropped (unplugged, restarted HSM) is opened again once. A PIN the
token refuses is never tried again by this process — a token locks itself after a few wrong PINs, and a service
retrying on every request would lock the agency's key within the minute."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from asn1crypto import algos
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15

from hub.signing.sign import HeldKey, SigningError

_HASHES = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}
_libraries: dict[str, tuple[int, Any]] = {}  # module path -> (the process that initialised it, pkcs11.lib)
_libraries_lock = threading.Lock()
# PINs a token refused, by (module, token, digest of the PIN): never offered again by this process
_refused: dict[tuple[str, str, bytes], str] = {}


@dataclass
class _Login:
    """The process's login to one token. PKCS#11 logs in an application, not a session — a second login is an
    error and closing a logged-in session logs every session out — so all signers of a token share one session,
    used by one thread at a time."""

    pin: bytes  # its digest
    lock: threading.Lock = field(default_factory=threading.Lock)
    session: Any = None
    generation: int = 0  # counts the sessions opened: a key's handle belongs to one


_logins: dict[tuple[str, str], _Login] = {}


def library(module: Path) -> Any:
    """One `pkcs11.lib` per module and process (C_Initialize twice is an error; a forked child starts again)."""
    import pkcs11

    key = str(module)
    with _libraries_lock:
        pid, lib = _libraries.get(key, (None, None))
        if lib is not None and pid != os.getpid():
            lib.reinitialize()
            _libraries[key] = (os.getpid(), lib)
            for login in [v for (m, _), v in _logins.items() if m == key]:
                login.session = None  # the parent's
        elif lib is None:
            try:
                lib = pkcs11.lib(key)
            except pkcs11.PKCS11Error as exc:
                raise SigningError(
                    f"the PKCS#11 module {module} cannot be loaded: {exc}", code="token_unavailable"
                ) from None
            _libraries[key] = (os.getpid(), lib)
        return lib


@dataclass(frozen=True)
class TokenConfig:
    module: Path  # the token's PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so or the vendor's .so
    token_label: str
    key_label: str  # CKA_LABEL of the private key
    pin: str = field(repr=False)


class TokenSigner(HeldKey):
    """The `Signer` of a key on a PKCS#11 token. The certificate is read from the token (the one whose public key
    is the key's), with the token's CA certificates that issued it as the chain — or given (from a PEM file)."""

    def __init__(self, config: TokenConfig, certificates: list[x509.Certificate] | None = None) -> None:
        import pkcs11

        self.config = config
        digest = hashlib.sha256(config.pin.encode()).digest()
        self._which = (str(config.module), config.token_label, digest)
        with _libraries_lock:
            self._login = _logins.setdefault((str(config.module), config.token_label), _Login(digest))
        self._handle: Any = None  # the private key's object, in session `_generation`
        self._generation = -1
        with self._login.lock:
            session = self._open()
            self._key_type = self._find_key(session).key_type
            self._mechanisms = set(session.token.slot.get_mechanisms())
            on_token = [
                x509.load_der_x509_certificate(bytes(c[pkcs11.Attribute.VALUE]))
                for c in session.get_objects({pkcs11.Attribute.CLASS: pkcs11.ObjectClass.CERTIFICATE})
            ]
        if self._key_type == pkcs11.KeyType.RSA:
            self._key = _TokenRSAKey(self)
        elif self._key_type == pkcs11.KeyType.EC:
            self._key = _TokenECKey(self)
        else:
            raise SigningError(f"the token's key is {self._key_type.name}: only RSA and EC keys can sign")
        self._cert, self._chain = self._pick(certificates or on_token, given=certificates is not None)
        public = self._cert.public_key()
        if isinstance(public, rsa.RSAPublicKey) and public.key_size < 2048:
            raise SigningError("RSA keys under 2048 bits are refused")
        self._prove()

    # -- the token -------------------------------------------------------------------------------------------

    def _open(self) -> Any:
        """The token's logged-in session (called holding the login's lock)."""
        import pkcs11

        login = self._login
        if self._which in _refused:
            raise SigningError(_refused[self._which], code="token_pin_refused")
        lib = library(self.config.module)  # (in a forked child: initialised again, the parent's session dropped)
        if login.session is not None:
            if login.pin != self._which[2]:
                raise SigningError(
                    f"token {self.config.token_label!r} is already logged in by this process with another PIN",
                    code="token_unavailable",
                )
            return login.session
        try:
            token = lib.get_token(token_label=self.config.token_label)
        except pkcs11.NoSuchToken:
            raise SigningError(
                f"no token labelled {self.config.token_label!r} behind {self.config.module}", code="token_unavailable"
            ) from None
        except pkcs11.MultipleTokensReturned:
            raise SigningError(
                f"several tokens labelled {self.config.token_label!r}", code="token_unavailable"
            ) from None
        try:
            session = token.open(user_pin=self.config.pin)
        except (pkcs11.PinIncorrect, pkcs11.PinLocked, pkcs11.PinExpired, pkcs11.PinLenRange) as exc:
            _refused[self._which] = (
                f"token {self.config.token_label!r} refused the PIN ({type(exc).__name__}); hub does not offer it "
                "again (a token locks itself after a few wrong PINs): set the right one and restart"
            )
            raise SigningError(_refused[self._which], code="token_pin_refused") from None
        except pkcs11.PKCS11Error as exc:
            raise SigningError(
                f"token {self.config.token_label!r} could not be opened: {type(exc).__name__}", code="token_unavailable"
            ) from None
        login.session, login.pin = session, self._which[2]
        login.generation += 1
        return session

    def _find_key(self, session: Any) -> Any:
        """The private key's handle in the session (found again in a new one)."""
        import pkcs11

        if self._generation == self._login.generation and self._handle is not None:
            return self._handle
        try:
            self._handle = session.get_key(object_class=pkcs11.ObjectClass.PRIVATE_KEY, label=self.config.key_label)
        except pkcs11.NoSuchKey:
            raise SigningError(
                f"token {self.config.token_label!r} holds no private key labelled {self.config.key_label!r}",
                code="token_key_not_found",
            ) from None
        except pkcs11.MultipleObjectsReturned:
            raise SigningError(
                f"token {self.config.token_label!r} holds several private keys labelled {self.config.key_label!r}",
                code="token_key_ambiguous",
            ) from None
        self._generation = self._login.generation
        return self._handle

    def _with_key(self, use: Callable[[Any], bytes]) -> bytes:
        """Run `use(private key handle)` in the session, opening it again once if the token dropped it."""
        import pkcs11

        gone = (pkcs11.SessionClosed, pkcs11.SessionHandleInvalid, pkcs11.DeviceRemoved, pkcs11.TokenNotPresent)
        with self._login.lock:
            for attempt in (1, 2):
                session = self._open()
                try:
                    return use(self._find_key(session))
                except gone:
                    self._login.session = None
                    if attempt == 2:
                        raise SigningError(
                            f"token {self.config.token_label!r} is not there", code="token_unavailable"
                        ) from None
                except pkcs11.PKCS11Error as exc:
                    raise SigningError(
                        f"token {self.config.token_label!r} did not sign: {type(exc).__name__}", code="token_failed"
                    ) from None
        raise AssertionError("unreachable")

    def sign_rsa_pkcs1(self, data: bytes, hash_name: str) -> bytes:
        import pkcs11

        combined = {
            "sha256": pkcs11.Mechanism.SHA256_RSA_PKCS,
            "sha384": pkcs11.Mechanism.SHA384_RSA_PKCS,
            "sha512": pkcs11.Mechanism.SHA512_RSA_PKCS,
        }[hash_name]
        if combined in self._mechanisms:
            return self._with_key(lambda k: bytes(k.sign(data, mechanism=combined)))
        if pkcs11.Mechanism.RSA_PKCS not in self._mechanisms:
            raise SigningError("the token offers no RSA PKCS#1 v1.5 signing mechanism", code="token_failed")
        # the token pads and exponentiates; the digest and its DigestInfo (RFC 8017 9.2) are made here
        info = algos.DigestInfo(
            {"digest_algorithm": {"algorithm": hash_name}, "digest": _HASHES[hash_name](data).digest()}
        ).dump()
        return self._with_key(lambda k: bytes(k.sign(info, mechanism=pkcs11.Mechanism.RSA_PKCS)))

    def sign_ecdsa(self, data: bytes, hash_name: str) -> bytes:
        """DER-encoded (r, s), as cryptography's keys answer (the token answers r || s)."""
        import pkcs11

        combined = {
            "sha256": pkcs11.Mechanism.ECDSA_SHA256,
            "sha384": pkcs11.Mechanism.ECDSA_SHA384,
            "sha512": pkcs11.Mechanism.ECDSA_SHA512,
        }[hash_name]
        if combined in self._mechanisms:
            raw = self._with_key(lambda k: bytes(k.sign(data, mechanism=combined)))
        elif pkcs11.Mechanism.ECDSA in self._mechanisms:  # the token signs a digest made here
            digest = _HASHES[hash_name](data).digest()
            raw = self._with_key(lambda k: bytes(k.sign(digest, mechanism=pkcs11.Mechanism.ECDSA)))
        else:
            raise SigningError("the token offers no ECDSA signing mechanism", code="token_failed")
        half = len(raw) // 2
        return utils.encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))

    def _pick(
        self, certificates: list[x509.Certificate], *, given: bool
    ) -> tuple[x509.Certificate, list[x509.Certificate]]:
        """The certificate of this key — the first given, or the token's whose public key is the key's (proved by
        a signature, below) — and the CA certificates among the rest that issued it, nearest first."""
        if not certificates:
            raise SigningError(
                f"token {self.config.token_label!r} holds no certificate for key {self.config.key_label!r} "
                "(write it there, or give it with HUB_SIGNING_CERT)",
                code="token_certificate_not_found",
            )
        if given:
            return certificates[0], certificates[1:]
        probe = b"hub: which certificate is this key's?"
        signature = self._sign_probe(probe)
        mine = next((c for c in certificates if _verifies(c, signature, probe)), None)
        if mine is None:
            raise SigningError(
                f"no certificate on token {self.config.token_label!r} is that of key {self.config.key_label!r}",
                code="token_certificate_not_found",
            )
        return mine, _issuers(mine, [c for c in certificates if c is not mine])

    def _prove(self) -> None:
        probe = b"hub: does the key belong to the certificate?"
        if not _verifies(self._cert, self._sign_probe(probe), probe):
            raise SigningError("the key does not belong to the certificate")

    def _sign_probe(self, probe: bytes) -> bytes:
        if isinstance(self._key, rsa.RSAPrivateKey):
            return self.sign_rsa_pkcs1(probe, "sha256")
        return self.sign_ecdsa(probe, "sha256")


def _verifies(cert: x509.Certificate, signature: bytes, data: bytes) -> bool:
    public = cert.public_key()
    try:
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True


def _issuers(leaf: x509.Certificate, others: Iterable[x509.Certificate]) -> list[x509.Certificate]:
    """The CA certificates among `others` that issued `leaf`, nearest first, without a self-signed root (the
    verifier has its own trust anchors)."""
    pool = list(others)
    chain: list[x509.Certificate] = []
    current = leaf
    while True:
        parent = next((c for c in pool if c.subject == current.issuer and c.subject != c.issuer), None)
        if parent is None or parent in chain:
            return chain
        try:
            current.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature):
            return chain
        chain.append(parent)
        current = parent


def _hash_name(algorithm: Any) -> str:
    name = getattr(algorithm, "name", "")
    if name not in _HASHES:
        raise SigningError(f"the token key signs with SHA-256, SHA-384 or SHA-512, not {name or algorithm!r}")
    return str(name)


def _not_on_a_token(what: str) -> NoReturn:
    raise SigningError(f"a key on a token cannot {what}", code="token_key_not_extractable")


class _TokenRSAKey(rsa.RSAPrivateKey):
    def __init__(self, signer: TokenSigner) -> None:
        self._signer = signer

    def sign(self, data: Any, padding: Any, algorithm: Any) -> bytes:
        if not isinstance(padding, PKCS1v15):
            raise SigningError("the token key signs with PKCS#1 v1.5 padding only")
        if isinstance(algorithm, utils.Prehashed):
            raise SigningError("the token key signs whole data, not a digest")
        return self._signer.sign_rsa_pkcs1(bytes(data), _hash_name(algorithm))

    def public_key(self) -> rsa.RSAPublicKey:
        public = self._signer.certificate.public_key()
        if not isinstance(public, rsa.RSAPublicKey):
            raise SigningError("the certificate is not that of an RSA key")
        return public

    @property
    def key_size(self) -> int:
        return self.public_key().key_size

    def decrypt(self, ciphertext: Any, padding: Any) -> bytes:
        _not_on_a_token("decrypt here")

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        _not_on_a_token("give its private numbers")

    def private_bytes(self, *args: Any, **kwargs: Any) -> bytes:
        _not_on_a_token("be exported")

    def __copy__(self) -> _TokenRSAKey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _TokenRSAKey:
        return self


class _TokenECKey(ec.EllipticCurvePrivateKey):
    def __init__(self, signer: TokenSigner) -> None:
        self._signer = signer

    def sign(self, data: Any, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise SigningError("the token key signs with ECDSA only")
        algorithm = signature_algorithm.algorithm
        if isinstance(algorithm, utils.Prehashed):
            raise SigningError("the token key signs whole data, not a digest")
        return self._signer.sign_ecdsa(bytes(data), _hash_name(algorithm))

    def public_key(self) -> ec.EllipticCurvePublicKey:
        public = self._signer.certificate.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise SigningError("the certificate is not that of an EC key")
        return public

    @property
    def curve(self) -> ec.EllipticCurve:
        return self.public_key().curve

    @property
    def key_size(self) -> int:
        return self.curve.key_size

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        _not_on_a_token("agree keys here")

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        _not_on_a_token("give its private numbers")

    def private_bytes(self, *args: Any, **kwargs: Any) -> bytes:
        _not_on_a_token("be exported")

    def __copy__(self) -> _TokenECKey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _TokenECKey:
        return self
