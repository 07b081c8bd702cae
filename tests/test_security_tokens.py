"""Property tests: token verification and channel parsing hold for any input an attacker sends."""

from __future__ import annotations

import base64
import json
import time
import warnings

import jwt
import jwt.warnings
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from taskcast.realtime import Settings, registry
from taskcast.realtime.channels import Channel, may_subscribe, parse, valid_id
from taskcast.realtime.errors import BadChannel, Unauthorized
from taskcast.realtime.tokens import LEEWAY_SECONDS, bearer, issue, verify

# Another test's leftover background thread (a retry loop with jitter) may touch the global
# `random` while Hypothesis draws; that says nothing about the code under test here.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
SECRET = "k" * 48
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}", fullmatch=True)
subs = st.text(min_size=1, max_size=128)
scopes = st.lists(
    st.one_of(st.sampled_from(["admin", "topic:*"]), st.builds("topic:{}".format, ids)),
    max_size=5,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=10,
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@FUZZ
@given(sub=subs, granted=scopes)
def test_issued_tokens_round_trip(sub: str, granted: list[str]) -> None:
    """Any valid subject and scopes survive issue() then verify() unchanged."""
    principal = verify(issue(SECRET, sub, granted), SECRET)
    assert principal.user == sub
    assert principal.scopes == frozenset(granted)
    assert principal.is_admin == ("admin" in granted)


@FUZZ
@given(token=st.one_of(st.text(max_size=500), st.binary(max_size=300).map(b64)))
def test_arbitrary_strings_are_only_ever_unauthorized(token: str) -> None:
    """Random text is refused with `Unauthorized`, never another exception."""
    with pytest.raises(Unauthorized):
        verify(token, SECRET)


@FUZZ
@given(claims=st.dictionaries(st.sampled_from(["sub", "exp", "scopes", "iat", "x"]), json_values))
def test_arbitrary_claims_verify_only_when_well_formed(claims: dict[str, object]) -> None:
    """Signed claims of any shape give a principal only with a string sub and a future exp."""
    try:
        token = jwt.encode(claims, SECRET, algorithm="HS256")
    except (TypeError, ValueError, OverflowError):
        assume(False)  # not encodable as a JWT at all: nothing to send
    try:
        principal = verify(token, SECRET)
    except Unauthorized:
        return
    assert isinstance(claims["sub"], str)
    assert principal.user == claims["sub"]
    assert isinstance(claims["exp"], int | float)
    assert claims["exp"] > time.time() - LEEWAY_SECONDS - 1
    assert isinstance(claims.get("scopes", []), list | str)  # a string: space-separated


@FUZZ
@given(sub=subs, forged_sub=subs, granted=scopes)
def test_changing_the_payload_breaks_the_signature(
    sub: str, forged_sub: str, granted: list[str]
) -> None:
    """Swapping in another payload (say, an admin claim) under a valid signature is refused."""
    header, _, signature = issue(SECRET, sub, granted).split(".")
    forged = {"sub": forged_sub, "exp": int(time.time()) + 600, "scopes": ["admin"]}
    payload = b64(json.dumps(forged).encode())
    with pytest.raises(Unauthorized):
        verify(f"{header}.{payload}.{signature}", SECRET)


@pytest.mark.parametrize("alg", ["none", "HS384", "HS512"])
def test_only_hs256_is_accepted_even_with_the_right_secret(alg: str) -> None:
    """The token header cannot pick the algorithm: anything but HS256 is refused."""
    claims = {"sub": "root", "exp": int(time.time()) + 600, "scopes": ["admin"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        token = jwt.encode(claims, None if alg == "none" else SECRET, algorithm=alg)
    with pytest.raises(Unauthorized):
        verify(token, SECRET)


@FUZZ
@given(age=st.integers(min_value=-3600, max_value=3600))
def test_expiry_leeway_is_small(age: int) -> None:
    """A token is accepted until `exp` plus the leeway, refused after (with a second's slack)."""
    token = jwt.encode({"sub": "alice", "exp": int(time.time()) - age}, SECRET, algorithm="HS256")
    assume(abs(age - LEEWAY_SECONDS) > 1)
    if age < LEEWAY_SECONDS:
        assert verify(token, SECRET).user == "alice"
    else:
        with pytest.raises(Unauthorized, match="expired"):
            verify(token, SECRET)


@FUZZ
@given(header=st.text(max_size=300))
def test_bearer_never_raises_and_returns_a_stripped_token(header: str) -> None:
    """Any Authorization header gives None or a non-empty token without surrounding spaces."""
    token = bearer(header)
    assert token is None or (token and token == token.strip())


@FUZZ
@given(name=st.one_of(st.text(max_size=200), st.builds("{}:{}".format, st.text(), st.text())))
def test_channel_parse_accepts_exactly_the_contract_names(name: str) -> None:
    """parse() returns a channel whose name is the input, or raises BadChannel; nothing else."""
    try:
        channel = parse(name)
    except BadChannel:
        kind, _, ident = name.partition(":")
        assert not (kind in ("task", "user") and valid_id(ident))
        assert not (kind == "topic" and registry.is_topic(ident))
        return
    assert channel.name == name
    assert channel.kind in ("task", "user", "topic")
    assert len(name) <= 140
    assert not any(ch.isspace() for ch in name)


@FUZZ
@given(kind=st.sampled_from(["task", "user"]), ident=ids)
def test_valid_ids_round_trip(kind: str, ident: str) -> None:
    """Every id the contract allows parses back to the same channel."""
    assert parse(f"{kind}:{ident}") == Channel(kind, ident)  # type: ignore[arg-type]


@FUZZ
@given(
    user=ids,
    other=ids,
    granted=scopes,
    owner=st.none() | ids,
    topic=st.sampled_from(sorted(registry.topics())),
)
def test_access_rules(
    user: str, other: str, granted: list[str], owner: str | None, topic: str
) -> None:
    """Without admin: only your own user channel, only tasks you own, topics by scope."""
    have = frozenset(granted)
    admin = "admin" in have
    assert may_subscribe(Channel("user", other), user, have, None) == (admin or other == user)
    assert may_subscribe(Channel("task", "t1"), user, have, owner) == (admin or owner == user)
    readable = admin or topic == "system" or "topic:*" in have or f"topic:{topic}" in have
    assert may_subscribe(Channel("topic", topic), user, have, None) == readable


@pytest.mark.parametrize("secret", ["", "x" * 31])
def test_settings_refuse_a_missing_or_short_secret(
    secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside the embedded default, a secret under 32 characters fails naming the variable."""
    monkeypatch.setenv("TASKCAST_JWT_SECRET", secret)
    monkeypatch.delenv("TASKCAST_EMBEDDED", raising=False)
    with pytest.raises(ValueError, match="TASKCAST_JWT_SECRET") as info:
        Settings()
    if secret:
        assert secret not in str(info.value)


def test_embedded_mode_relaxes_the_secret_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """`taskcast up` (TASKCAST_EMBEDDED) may start with a generated or empty secret."""
    monkeypatch.setenv("TASKCAST_JWT_SECRET", "")
    monkeypatch.setenv("TASKCAST_EMBEDDED", "1")
    assert Settings().embedded
