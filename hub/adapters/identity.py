"""Citizens' sign-in: the ID tokens of the identity provider citizens log in with (VNeID, or the national
portal's single sign-on), which an OpenID Connect provider signs with keys it publishes as a JWK set.

hub never sees a citizen's password: a citizen signs in at the provider (through the provincial portal's login
page), and calls hub with the ID token it issued. hub checks the token's signature against the provider's
published keys (fetched with PyJWT's JWK client, cached, refetched at most every 30 s for an unknown key id),
its issuer, its audience (hub's client id at the provider) and its lifetime, and reads the citizen's 12-digit
personal ID from the configured claim. Only asymmetric algorithms are accepted: a token "signed" with `none` or
with an HMAC keyed by a public key (algorithm confusion) is refused before any key is looked up."""

from __future__ import annotations

import jwt

from hub.adapters.errors import PeerUnavailable
from hub.domain import identifiers
from hub.domain.errors import DomainError

ALGORITHMS = ["ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"]
LEEWAY_SECONDS = 30  # clock skew between the provider and hub
MAX_TOKEN_BYTES = 8192


class InvalidCitizenToken(DomainError):
    """The bearer token is not a valid ID token of the configured provider (signature, issuer, audience, lifetime,
    or no personal ID in it)."""

    code = "invalid_token"
    status = 401


class CitizenTokens:
    def __init__(self, issuer: str, jwks_url: str, audience: str, id_claim: str, *, timeout: float) -> None:
        self.issuer = issuer
        self.audience = audience
        self.id_claim = id_claim
        self._keys = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=300, timeout=timeout, cooldown_duration=30)

    def personal_id(self, token: str) -> str:
        """The signed-in citizen's personal ID; raises InvalidCitizenToken, or PeerUnavailable when the provider's
        keys cannot be fetched."""
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidCitizenToken("the token is too large")
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") not in ALGORITHMS:
                raise InvalidCitizenToken(f"tokens signed with {header.get('alg')!r} are not accepted")
            key = self._keys.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=ALGORITHMS,
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "aud", self.id_claim]},
            )
        except jwt.PyJWKClientConnectionError as exc:
            raise PeerUnavailable("identity_provider", f"its keys could not be fetched: {exc}") from exc
        except jwt.PyJWKClientError as exc:  # no key with the token's key id (rotated away, or never the provider's)
            raise InvalidCitizenToken(f"the token is not signed by a key of the identity provider: {exc}") from None
        except jwt.InvalidTokenError as exc:
            raise InvalidCitizenToken(f"invalid ID token: {exc}") from None
        personal_id = str(claims[self.id_claim])
        try:
            identifiers.personal_id(personal_id)
        except DomainError:
            raise InvalidCitizenToken(f"the token's {self.id_claim!r} claim is not a personal ID number") from None
        return personal_id
