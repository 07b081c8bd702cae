"""Access tokens: JWTs checked with pinned algorithms and keys, their claims read as configured.

HS256 with a shared secret is the default (`issue` signs those). A deployment whose tokens
come from an identity provider pins asymmetric algorithms (RS256, ES256, ...) and gives a
public key or a JWKS URL. The key is chosen by the algorithm's family, never by what else the
token says: an HS token is checked only with the secret, an RS/ES one only with public keys.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from jwt.algorithms import get_default_algorithms

from .errors import Unauthorized, Unavailable

ALGORITHM = "HS256"
LEEWAY_SECONDS = 10
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
# Every algorithm pyjwt verifies, less `none`: no configuration can accept unsigned tokens.
ALGORITHMS = frozenset(get_default_algorithms()) - {"none"}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a valid token says the caller is; `claims` are the verified token's own."""

    user: str
    scopes: frozenset[str]
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    @property
    def expires_at(self) -> int | None:
        """`exp`, unix seconds: an open connection ends once it has passed (plus the leeway)."""
        return _seconds(self.claims.get("exp"))

    @property
    def issued_at(self) -> int | None:
        """`iat`, unix seconds, if the token has one: a revocation refuses tokens up to it."""
        return _seconds(self.claims.get("iat"))


def _seconds(value: Any) -> int | None:
    """A verified numeric date claim as whole unix seconds (pyjwt checked it is a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


@dataclass(frozen=True, slots=True)
class TokenRules:
    """How tokens are checked: algorithms, keys, expected issuer and audience, claim names."""

    algorithms: tuple[str, ...] = (ALGORITHM,)
    secret: str = ""
    public_key: str = ""  # PEM
    jwks_url: str = ""
    issuer: str = ""  # "" = not checked
    audience: str = ""  # "" = tokens must carry no `aud`
    user_claim: str = "sub"
    scopes_claim: str = "scopes"
    jwks_cache_seconds: float = 300.0
    jwks_cooldown: float = 30.0


def issue(secret: str, user: str, scopes: Iterable[str] = (), ttl: int = 3600) -> str:
    """Sign a token for `user` (used by the CLI, the demo sign-in and tests)."""
    now = int(time.time())
    claims = {"sub": user, "iat": now, "exp": now + ttl, "scopes": sorted(set(scopes))}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def check_public_key(pem: str, algorithms: Iterable[str]) -> None:
    """Raise `ValueError` unless `pem` is a public key usable with every asymmetric algorithm."""
    registry = get_default_algorithms()
    for name in algorithms:
        if name in HMAC_ALGORITHMS:
            continue
        try:
            registry[name].prepare_key(pem)
        except Exception:  # noqa: BLE001 - pyjwt and cryptography raise several types
            raise ValueError(f"not a public key for {name}") from None


class _KeyNotCached(Exception):
    """The token names a JWKS key this process has not fetched (or whose copy is too old)."""


class Verifier:
    """Checks tokens against `TokenRules`; JWKS keys are fetched in a thread and cached.

    The common path is a dict lookup and a signature check; a key id not seen before (a
    rotation) refetches the key set, at most once per `jwks_cooldown` (pyjwt's cooldown),
    so tokens with made-up key ids cannot make the node hammer the identity provider.
    """

    def __init__(self, rules: TokenRules) -> None:
        self.rules = rules
        self.algorithms = list(rules.algorithms)
        unknown = [a for a in self.algorithms if a not in ALGORITHMS]
        if not self.algorithms or unknown:
            raise ValueError(f"unsupported token algorithms: {', '.join(unknown) or 'none'}")
        self._jwks: jwt.PyJWKClient | None = None
        if rules.jwks_url:
            self._jwks = jwt.PyJWKClient(
                rules.jwks_url,
                cache_jwk_set=True,
                lifespan=rules.jwks_cache_seconds,
                cooldown_duration=rules.jwks_cooldown,
                timeout=10,
            )
        self._keys: dict[str, tuple[jwt.PyJWK, float]] = {}
        self._fetching: asyncio.Lock | None = None
        self._require = ["exp"]
        if rules.issuer:
            self._require.append("iss")
        if rules.audience:
            self._require.append("aud")

    async def authenticate(self, token: str | None) -> Principal:
        """The principal of a valid token; `Unauthorized` otherwise (never blocks the loop)."""
        try:
            return self.verify(token)
        except _KeyNotCached as missing:
            await self._fetch(str(missing))
        try:
            return self._verify(token, any_age=True)  # just fetched
        except _KeyNotCached:
            raise Unauthorized("invalid token") from None

    def verify(self, token: str | None) -> Principal:
        """Check signature, algorithm, `exp` (and `iss`/`aud` when configured) and claims.

        JWKS keys come from the cache only; `authenticate` fetches what is missing.
        """
        return self._verify(token, any_age=False)

    def _verify(self, token: str | None, any_age: bool) -> Principal:
        if not token:
            raise Unauthorized("missing token")
        try:
            header = jwt.get_unverified_header(token)
            alg = header.get("alg")
            if alg not in self.algorithms:
                raise Unauthorized("invalid token")
            claims = jwt.decode(
                token,
                self._key(alg, header.get("kid"), any_age),
                algorithms=[alg],
                options={"require": self._require},
                issuer=self.rules.issuer or None,
                audience=self.rules.audience or None,
                leeway=LEEWAY_SECONDS,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except jwt.PyJWTError:
            raise Unauthorized("invalid token") from None
        return self.principal(claims)

    def principal(self, claims: dict[str, Any]) -> Principal:
        """The user and scopes the configured claims carry; anything malformed is refused."""
        user = claims.get(self.rules.user_claim)
        scopes = claims.get(self.rules.scopes_claim, [])
        if isinstance(scopes, str):  # OAuth's `scope`: one space-separated string
            scopes = scopes.split()
        if not isinstance(user, str) or not user or len(user) > 128:
            raise Unauthorized("invalid token subject")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise Unauthorized("invalid token scopes")
        return Principal(user=user, scopes=frozenset(scopes), claims=claims)

    def _key(self, alg: str, kid: Any, any_age: bool) -> Any:
        """The key for `alg`'s family: the secret for HS, the public key or a JWKS key else."""
        if alg in HMAC_ALGORITHMS:
            if not self.rules.secret:
                raise jwt.InvalidKeyError("no secret configured")
            return self.rules.secret
        if self.rules.public_key:
            return self.rules.public_key
        if self._jwks is None or not isinstance(kid, str) or not kid:
            raise jwt.InvalidKeyError("no key for this token")
        cached = self._keys.get(kid)
        if cached is None or not (any_age or self._fresh(cached)):
            raise _KeyNotCached(kid)
        return cached[0]

    def _fresh(self, cached: tuple[jwt.PyJWK, float]) -> bool:
        return time.monotonic() - cached[1] <= self.rules.jwks_cache_seconds

    async def _fetch(self, kid: str) -> None:
        """Look `kid` up in the JWKS (pyjwt refetches on an unknown id), in a worker thread."""
        if self._fetching is None:
            self._fetching = asyncio.Lock()
        async with self._fetching:  # one lookup at a time; those waiting may find it cached
            cached = self._keys.get(kid)
            if cached is not None and self._fresh(cached):
                return
            try:
                await asyncio.to_thread(self._lookup, kid)
            except jwt.PyJWKClientConnectionError:
                raise Unavailable("the identity provider's keys are unreachable") from None
            except jwt.PyJWKClientError:  # not in the key set, even after a refresh
                self._keys.pop(kid, None)

    def _lookup(self, kid: str) -> None:
        assert self._jwks is not None
        key = self._jwks.get_signing_key(kid)
        self._keys[kid] = (key, time.monotonic())


def verify(token: str | None, secret: str) -> Principal:
    """Check an HS256 token signed with `secret` (the default rules)."""
    return Verifier(TokenRules(secret=secret)).verify(token)


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer …` header, if any."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
