"""Access tokens: HS256 JWTs with required sub and exp; anything else is unauthorized."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest

from taskcast.realtime.errors import Unauthorized
from taskcast.realtime.tokens import LEEWAY_SECONDS, bearer, issue, verify

SECRET = "s" * 64  # long enough for HS512 too, so forging is not refused for key length


def test_issued_token_verifies_to_its_principal() -> None:
    """A token from issue() verifies to its user and scopes."""
    principal = verify(issue(SECRET, "alice", ["topic:orders", "admin"]), SECRET)
    assert principal.user == "alice"
    assert principal.scopes == {"topic:orders", "admin"}
    assert principal.is_admin


def test_scopes_are_optional() -> None:
    """A token without scopes verifies with no scopes."""
    token = jwt.encode({"sub": "bob", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    principal = verify(token, SECRET)
    assert principal.user == "bob"
    assert principal.scopes == frozenset()
    assert not principal.is_admin


def test_expired_token_is_refused() -> None:
    """A token past exp (beyond the small leeway) is unauthorized, saying it expired."""
    token = issue(SECRET, "alice", ttl=-(LEEWAY_SECONDS + 5))
    with pytest.raises(Unauthorized, match="expired"):
        verify(token, SECRET)


def test_wrong_secret_is_refused() -> None:
    """A token signed with another secret is unauthorized."""
    with pytest.raises(Unauthorized, match="invalid"):
        verify(issue("other-" + SECRET, "alice"), SECRET)


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": 4102444800},
        {"sub": "alice"},
        {"sub": "", "exp": 4102444800},
        {"sub": 42, "exp": 4102444800},
        {"sub": "alice", "exp": 4102444800, "scopes": {"admin": True}},
        {"sub": "alice", "exp": 4102444800, "scopes": [1]},
    ],
)
def test_missing_or_ill_typed_claims_are_refused(claims: dict[str, object]) -> None:
    """A token without sub or exp, or with ill-typed sub/scopes, is unauthorized."""
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized):
        verify(token, SECRET)


def test_alg_none_is_refused() -> None:
    """An unsigned token (alg none) is unauthorized even with valid claims."""
    token = jwt.encode({"sub": "root", "exp": 4102444800, "scopes": ["admin"]}, None, "none")
    with pytest.raises(Unauthorized):
        verify(token, SECRET)


def test_other_hmac_algorithm_is_refused() -> None:
    """A token signed with the right secret but HS512 is refused: only HS256 is accepted."""
    token = jwt.encode({"sub": "alice", "exp": 4102444800}, SECRET, algorithm="HS512")
    with pytest.raises(Unauthorized):
        verify(token, SECRET)


def _forge(header: dict[str, object], claims: dict[str, object]) -> str:
    """A JWT with any header, HMAC-SHA256-signed with the right secret (an attacker's best try)."""

    def part(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    signing_input = f"{part(header)}.{part(claims)}"
    mac = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def test_forged_header_is_accepted_only_as_hs256() -> None:
    """With the right HMAC, a header saying HS256 verifies and one saying RS256 is refused."""
    claims: dict[str, object] = {"sub": "alice", "exp": 4102444800}
    assert verify(_forge({"alg": "HS256", "typ": "JWT"}, claims), SECRET).user == "alice"
    with pytest.raises(Unauthorized):
        verify(_forge({"alg": "RS256", "typ": "JWT"}, claims), SECRET)
    with pytest.raises(Unauthorized):
        verify(_forge({"alg": "none", "typ": "JWT"}, claims), SECRET)


@pytest.mark.parametrize("token", [None, "", "not.a.jwt", "abc"])
def test_missing_or_garbage_token_is_refused(token: str | None) -> None:
    """No token or a malformed one is unauthorized."""
    with pytest.raises(Unauthorized):
        verify(token, SECRET)


def test_bearer_header_parsing() -> None:
    """bearer() takes the token of an `Authorization: Bearer` header and nothing else."""
    assert bearer("Bearer abc.def") == "abc.def"
    assert bearer("bearer   abc ") == "abc"
    assert bearer("Basic dXNlcg==") is None
    assert bearer("Bearer ") is None
    assert bearer(None) is None
