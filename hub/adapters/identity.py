"""Tokens hub accepts from identity providers, verified with PyJWT against the keys the issuer publishes as a JWK
set (fetched, cached, refetched at most every 30 s for an unknown key id), then its issuer, audience and lifetime.
Only asymmetric algorithms are accepted: a token "signed" with `none` or with an HMAC keyed by a public key
(algorithm confusion) is refused before any key is looked up.

- Citizens' sign-in: the ID tokens of the identity provider citizens log in with (VNeID, or the national portal's
  single sign-on, OpenID Connect). hub never sees a citizen's password: a citizen signs in at the provider and
  calls hub with the ID token it issued; hub reads the 12-digit personal ID from the configured claim.
- Client systems: OAuth 2.0 access tokens of the client credentials grant, from the authorization server the
  province's systems already get tokens from (its API gateway / LGSP); hub reads the client_id and maps it to a
  configured client system, whose agencies and roles then apply as for an API key."""

from __future__ import annotations

import hashlib
import json
import ssl
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt
import urllib3

from hub.adapters.errors import PeerUnavailable
from hub.adapters.exchange import ExchangeHook, recorded
from hub.adapters.http import ReplyTooLarge, parse_json, read_capped, verified_pool
from hub.adapters.tls import context_for
from hub.domain import identifiers
from hub.domain.errors import DomainError
from hub.logs import correlation_id

if TYPE_CHECKING:
    from hub.settings import Settings

ALGORITHMS = ["ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"]
LEEWAY_SECONDS = 30  # clock skew between the provider and hub
MAX_TOKEN_BYTES = 8192
MAX_KEY_SET_BYTES = 256 * 1024  # a JWK set is a few kB (one RSA-4096 key: ~1 kB)


class KeySetUnusable(jwt.PyJWKClientError):
    """The issuer's key-set URL answered, but not with a JWK set hub can use (an HTML error page, not JSON, no
    usable key): no token of that issuer can be checked until it does — the issuer's fault, not the token's."""


class _RecordedKeys(jwt.PyJWKClient):
    """PyJWT's JWK client (its key cache, its refetch on an unknown key id at most every 30 s), the key set fetched
    through a urllib3 pool with a cap on the reply — PyJWT reads whatever the URL sends, and a token's check waits
    for it — and each fetch reported for the exchange record."""

    def __init__(
        self, uri: str, *, hook: ExchangeHook | None, peer: str, timeout: float, tls: ssl.SSLContext | None = None
    ) -> None:
        super().__init__(uri, cache_keys=True, lifespan=300, timeout=timeout, cooldown_duration=30)
        self._hook, self._peer = hook, peer
        self._pool = verified_pool(2, num_pools=1, tls=tls)
        self._timeouts = urllib3.Timeout(connect=timeout, read=timeout)

    def fetch_data(self) -> Any:
        with recorded(self._hook, self._peer, "jwks", correlation_id.get(), b"GET " + self.uri.encode()) as exchange:
            try:
                data = self._fetch()
            except jwt.PyJWKClientConnectionError:
                exchange.failed("unreachable", retryable=True)
                raise
            except (ValueError, RecursionError, ReplyTooLarge, jwt.PyJWKClientError, jwt.PyJWKSetError) as exc:
                # not JSON (PyJWT lets the parser's errors through), not a JWK set, or no key it can use
                exchange.failed("peer_malformed_reply", retryable=True)
                raise KeySetUnusable(f"its key set is not usable ({exc.__class__.__name__}: {exc})") from None
            exchange.answered(json.dumps(data, sort_keys=True).encode())
            return data

    def _fetch(self) -> Any:
        """What PyJWT's own fetch does — GET, no redirects followed, a JSON object required, the cache filled on
        success — with the reply read up to MAX_KEY_SET_BYTES only."""
        try:
            reply = self._pool.request(
                "GET",
                self.uri,
                headers=self.headers,
                timeout=self._timeouts,
                retries=False,
                redirect=False,
                preload_content=False,
            )
            status = reply.status
            body = read_capped(reply, MAX_KEY_SET_BYTES)
        except urllib3.exceptions.HTTPError as exc:
            raise jwt.PyJWKClientConnectionError(f"Fail to fetch data from the url, err: {exc}") from exc
        if not 200 <= status < 300:
            raise jwt.PyJWKClientConnectionError(f"Fail to fetch data from the url, err: HTTP {status}")
        data = parse_json(body)
        if not isinstance(data, dict):
            raise jwt.PyJWKClientError("The JWKS endpoint did not return a JSON object")
        if self.jwk_set_cache is not None:
            self.jwk_set_cache.put(data)
        self._last_successful_fetch = time.monotonic()  # PyJWT's cooldown between refetches starts now
        return data


class InvalidToken(DomainError):
    """The bearer token is not a valid token of the configured issuer (signature, issuer, audience, lifetime, type,
    or the claim hub reads is missing or wrong)."""

    code = "invalid_token"
    status = 401


class TokenVerifier:
    """Tokens of one issuer: signature against its published keys, then issuer, audience and lifetime."""

    what = "token"
    peer = "identity_provider"  # as the exchange record and errors name the issuer

    def __init__(
        self,
        issuer: str,
        jwks_url: str,
        audience: str,
        claim: str,
        *,
        timeout: float,
        on_exchange: ExchangeHook | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """`claim`: the claim hub reads (the citizen's personal ID, the client's id); required in every token."""
        self.issuer = issuer
        self.audience = audience
        self.claim = claim
        self._keys = _RecordedKeys(jwks_url, hook=on_exchange, peer=self.peer, timeout=timeout, tls=tls)
        # A caller sends the same token until it expires (a client system's access token, a citizen's ID token
        # on each page of their portal): what a token was verified to say is remembered until its `exp` (at most),
        # keyed by the token's digest. Verifying costs ~1 ms (the key set rebuilt, the signature checked); a
        # remembered token costs a hash.
        self._verified: OrderedDict[bytes, tuple[Any, float]] = OrderedDict()
        self._lock = threading.Lock()

    CACHE_SIZE = 10_000

    def remembered(self, token: str) -> Any | None:
        """What a token verified before and not yet expired said, without verifying it again."""
        digest = hashlib.sha256(token.encode()).digest()
        with self._lock:
            found = self._verified.get(digest)
            if found is None:
                return None
            if found[1] <= time.time():
                del self._verified[digest]
                return None
            self._verified.move_to_end(digest)
            return found[0]

    def remember(self, token: str, value: Any, claims: dict[str, Any]) -> None:
        with self._lock:
            self._verified[hashlib.sha256(token.encode()).digest()] = (value, float(claims["exp"]))
            while len(self._verified) > self.CACHE_SIZE:
                self._verified.popitem(last=False)

    def published_keys(self) -> int:
        """Fetch the issuer's key set now (hub check); how many keys it publishes. Raises PeerUnavailable."""
        try:
            return len(self._keys.get_jwk_set(refresh=True).keys)
        except jwt.PyJWKClientConnectionError as exc:
            raise PeerUnavailable(self.peer, f"its keys could not be fetched: {exc}") from exc
        except jwt.PyJWKClientError as exc:  # KeySetUnusable among them
            raise PeerUnavailable(self.peer, f"its key set is not usable: {exc}") from exc

    def claims(self, token: str) -> dict[str, Any]:
        """The verified claims; raises InvalidToken, or PeerUnavailable when the issuer's keys cannot be fetched."""
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken("the token is too large")
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") not in ALGORITHMS:
                raise InvalidToken(f"tokens signed with {header.get('alg')!r} are not accepted")
            self.check_header(header)
            key = self._keys.get_signing_key_from_jwt(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=ALGORITHMS,
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "aud", self.claim]},
            )
        except jwt.PyJWKClientConnectionError as exc:
            raise PeerUnavailable(self.peer, f"its keys could not be fetched: {exc}") from exc
        except KeySetUnusable as exc:
            raise PeerUnavailable(self.peer, str(exc)) from exc
        except jwt.PyJWKClientError as exc:  # no key with the token's key id (rotated away, or never the issuer's)
            raise InvalidToken(
                f"the token is not signed by a key of the {self.peer.replace('_', ' ')}: {exc}"
            ) from None
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(f"invalid {self.what}: {exc}") from None
        return claims

    def check_header(self, header: dict[str, Any]) -> None:
        """Refuse a token whose header says it is of another kind."""


class CitizenTokens(TokenVerifier):
    what = "ID token"

    def check_header(self, header: dict[str, Any]) -> None:
        if "at+jwt" in str(header.get("typ") or "").lower():
            raise InvalidToken("an access token is not an ID token")

    def personal_id(self, token: str) -> str:
        """The signed-in citizen's personal ID; raises InvalidToken, or PeerUnavailable when the provider's keys
        cannot be fetched."""
        found = self.remembered(token)
        if found is not None:
            return str(found)
        claims = self.claims(token)
        personal_id = str(claims[self.claim])
        try:
            identifiers.personal_id(personal_id)
        except DomainError:
            raise InvalidToken(f"the token's {self.claim!r} claim is not a personal ID number") from None
        self.remember(token, personal_id, claims)
        return personal_id


class ClientTokens(TokenVerifier):
    """OAuth 2.0 access tokens issued to client systems by the client credentials grant (RFC 6749 §4.4), as JWTs
    (RFC 9068: `typ` at+jwt; many servers still say JWT): the province's API gateway or the national platform's
    authorization server issues them, hub is the resource server named in `aud`."""

    what = "access token"
    peer = "authorization_server"

    def remembered(self, token: str) -> Grant | None:
        """What a token verified before and not yet expired grants, without verifying it again."""
        found = super().remembered(token)
        return found if isinstance(found, Grant) else None

    def check_header(self, header: dict[str, Any]) -> None:
        typ = str(header.get("typ") or "JWT").lower()
        if typ not in ("jwt", "at+jwt", "application/at+jwt"):
            raise InvalidToken(f"a token of type {header.get('typ')!r} is not an access token")

    def grant(self, token: str) -> Grant:
        """Verify the token: the client system's client_id at the authorization server, and the scopes of hub's
        it names (`scope`, space-separated, RFC 9068; or `scp`, a list, as some servers write it)."""
        claims = self.claims(token)
        value = claims[self.claim]
        if not isinstance(value, str) or not value:
            raise InvalidToken(f"the token's {self.claim!r} claim is not a client id")
        granted = Grant(value, hub_scopes(claims))
        self.remember(token, granted, claims)
        return granted


# What a client system's access token may be used for, when its authorization server says (the API gateway grants
# a system the scopes of the APIs it subscribed to). A token naming none of them is not limited by scope (its
# server knows nothing of hub's: "openid profile", "default"…) unless HUB_OAUTH_REQUIRE_SCOPES is set.
SCOPES = {
    "hub:dossiers": "file and update dossiers, read them (one-stop systems; the portal's push)",
    "hub:prefill": "pre-fill e-forms from the population database; record consents and documents for reuse",
    "hub:audit": "read who used a citizen's data (the access log)",
    "hub:payments": "create fee payments and read them",
    "hub:signatures": "have XML signatures verified",
}


@dataclass(frozen=True, slots=True)
class Grant:
    client_id: str
    scopes: frozenset[str]  # hub's scopes the token names; empty: none of hub's


def hub_scopes(claims: dict[str, Any]) -> frozenset[str]:
    raw = claims.get("scope", claims.get("scp"))
    if isinstance(raw, str):
        names = raw.split()
    elif isinstance(raw, list):
        names = [x for x in raw if isinstance(x, str)]
    else:
        names = []
    return frozenset(n for n in names if n in SCOPES)


def looks_like_jwt(value: str) -> bool:
    """Three base64url parts, the first a JSON object: worth verifying as a token (an API key is not)."""
    return value.startswith("eyJ") and value.count(".") == 2


def client_tokens(settings: Settings, on_exchange: ExchangeHook | None = None) -> ClientTokens | None:
    """The verifier of client systems' access tokens, when an authorization server is configured (dev: the
    sandbox's) and some client system has an `oauth_client_id`."""
    issuer = settings.effective_oauth_issuer
    if not issuer or not any(c.oauth_client_id for c in settings.clients):
        return None
    return ClientTokens(
        issuer,
        settings.oauth_jwks_url or f"{issuer}/jwks.json",
        settings.oauth_audience,
        settings.oauth_client_claim,
        timeout=settings.connect_timeout + settings.read_timeout,
        on_exchange=on_exchange,
        tls=context_for(settings, "authorization_server"),
    )
