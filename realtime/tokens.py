"""Access tokens: HS256 JWTs with `sub`, `exp` and optional `scopes`."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import jwt

from .errors import Unauthorized

ALGORITHM = "HS256"
LEEWAY_SECONDS = 10


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a valid token says the caller is."""

    user: str
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes


def issue(secret: str, user: str, scopes: Iterable[str] = (), ttl: int = 3600) -> str:
    """Sign a token for `user` (used by the CLI, the demo sign-in and tests)."""
    now = int(time.time())
    claims = {"sub": user, "iat": now, "exp": now + ttl, "scopes": sorted(set(scopes))}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify(token: str | None, secret: str) -> Principal:
    """Check signature (HS256 only), `exp` and `sub`; any failure is `Unauthorized`."""
    if not token:
        raise Unauthorized("missing token")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["exp", "sub"]},
            leeway=LEEWAY_SECONDS,
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token expired") from None
    except jwt.PyJWTError:
        raise Unauthorized("invalid token") from None
    sub = claims.get("sub")
    scopes = claims.get("scopes", [])
    if not isinstance(sub, str) or not sub or len(sub) > 128:
        raise Unauthorized("invalid token subject")
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise Unauthorized("invalid token scopes")
    return Principal(user=sub, scopes=frozenset(scopes))


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer …` header, if any."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
