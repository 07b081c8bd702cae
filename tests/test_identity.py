"""Tokens from an identity provider: RS256/ES256 with a public key or a JWKS, iss/aud, claims."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import ValidationError

from taskcast.api.main import create_app
from taskcast.realtime.errors import Unauthorized, Unavailable
from taskcast.realtime.settings import Settings
from taskcast.realtime.tokens import TokenRules, Verifier, verify

from .inprocess import served
from .processes import free_port
from .wsclient import WS

pytestmark = pytest.mark.anyio

ISSUER = "https://id.example.test/"
AUDIENCE = "taskcast"


class Key:
    """A signing key pair of the identity provider, with its key id."""

    def __init__(self, kind: str = "RSA") -> None:
        self.kid = uuid.uuid4().hex[:12]
        if kind == "RSA":
            self.private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.alg = "RS256"
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.alg = "ES256"
        self.public_pem = (
            self.private.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def jwk(self) -> dict[str, Any]:
        algo = jwt.algorithms.RSAAlgorithm if self.alg == "RS256" else jwt.algorithms.ECAlgorithm
        data: dict[str, Any] = algo.to_jwk(self.private.public_key(), as_dict=True)
        return {**data, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def sign(self, ttl: int = 600, kid: str | None = None, **claims: Any) -> str:
        """A token of this key; a claim given as None is left out."""
        body = {"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + ttl}
        body.update(claims)
        body = {name: value for name, value in body.items() if value is not None}
        headers = {"kid": kid or self.kid}
        return jwt.encode(body, self.private, algorithm=self.alg, headers=headers)


class JWKS:
    """An identity provider's JWKS endpoint on loopback: the keys it serves can be rotated."""

    def __init__(self) -> None:
        self.keys: list[Key] = []
        self.hits = 0
        self.asked = threading.Event()
        self.hold: threading.Event | None = None  # set: answer; unset: the request waits
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                jwks.hits += 1
                jwks.asked.set()
                if jwks.hold is not None:
                    jwks.hold.wait(10)
                body = json.dumps({"keys": [k.jwk() for k in jwks.keys]}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        if self.hold is not None:
            self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def jwks() -> Iterator[JWKS]:
    server = JWKS()
    server.keys.append(Key())
    yield server
    server.close()


def rules(jwks: JWKS, **overrides: Any) -> TokenRules:
    base: dict[str, Any] = {
        "algorithms": ("RS256",),
        "jwks_url": jwks.url,
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "jwks_cooldown": 0.0,
    }
    base.update(overrides)
    return TokenRules(**base)


def hs256_forged_with(secret: str, claims: dict[str, Any]) -> str:
    """An HS256 token whose HMAC key is `secret` (pyjwt refuses to sign with a PEM key)."""

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    signing_input = f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}"
    mac = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


# -- the verifier ------------------------------------------------------------------------


async def test_rs256_token_from_a_jwks_is_accepted(jwks: JWKS) -> None:
    """A token signed by the provider's JWKS key verifies to its subject and scopes."""
    verifier = Verifier(rules(jwks))
    principal = await verifier.authenticate(jwks.keys[0].sign(scopes=["topic:orders"]))
    assert principal.user == "alice"
    assert principal.scopes == {"topic:orders"}
    assert principal.claims["iss"] == ISSUER


async def test_a_rotated_key_id_is_picked_up(jwks: JWKS) -> None:
    """After the provider rotates to a new key, its tokens verify; the retired key's do not."""
    verifier = Verifier(rules(jwks, jwks_cache_seconds=0.001))
    old = jwks.keys[0]
    assert (await verifier.authenticate(old.sign())).user == "alice"
    new = Key()
    jwks.keys[:] = [new]
    assert (await verifier.authenticate(new.sign(sub="bob"))).user == "bob"
    with pytest.raises(Unauthorized):
        await verifier.authenticate(old.sign())


async def test_cached_keys_verify_without_asking_the_provider(jwks: JWKS) -> None:
    """The key set is fetched once; later tokens with a known key id cost no request."""
    verifier = Verifier(rules(jwks))
    for user in ("a", "b", "c"):
        assert (await verifier.authenticate(jwks.keys[0].sign(sub=user))).user == user
    assert jwks.hits == 1


async def test_made_up_key_ids_do_not_hammer_the_provider(jwks: JWKS) -> None:
    """Tokens with unknown key ids are refused, refetching at most once per cooldown."""
    verifier = Verifier(rules(jwks, jwks_cooldown=60.0))
    await verifier.authenticate(jwks.keys[0].sign())
    for _ in range(10):
        with pytest.raises(Unauthorized):
            await verifier.authenticate(jwks.keys[0].sign(kid=uuid.uuid4().hex))
    assert jwks.hits == 1


async def test_fetching_keys_does_not_block_the_event_loop(jwks: JWKS) -> None:
    """While the JWKS request is in flight the loop runs: here it is what lets the reply go."""
    jwks.hold = threading.Event()
    verifier = Verifier(rules(jwks))
    checking = asyncio.create_task(verifier.authenticate(jwks.keys[0].sign()))
    async with asyncio.timeout(10):
        # The request reached the provider and waits there; the loop still runs this test.
        assert await asyncio.to_thread(jwks.asked.wait, 10)
        assert not checking.done()
        jwks.hold.set()
        assert (await checking).user == "alice"


async def test_an_unreachable_provider_is_unavailable_not_unauthorized() -> None:
    """No JWKS to fetch: the caller is told to retry, not that its token is bad."""
    url = f"http://127.0.0.1:{free_port()}/jwks.json"
    verifier = Verifier(TokenRules(algorithms=("RS256",), jwks_url=url))
    token = jwt.encode(
        {"sub": "a", "exp": int(time.time()) + 60},
        Key().private,
        algorithm="RS256",
        headers={"kid": "k1"},
    )
    with pytest.raises(Unavailable):
        await verifier.authenticate(token)


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        ({"iss": "https://evil.example.test/"}, "another issuer"),
        ({"aud": "someone-else"}, "another audience"),
        ({"iss": None}, "no issuer"),
        ({"aud": None}, "no audience"),
        ({"ttl": -60}, "expired"),
    ],
)
async def test_issuer_audience_and_expiry_are_checked(
    jwks: JWKS, claims: dict[str, Any], why: str
) -> None:
    """A token from another issuer, for another audience, without them, or expired: refused."""
    token = jwks.keys[0].sign(**claims)
    with pytest.raises(Unauthorized):
        await Verifier(rules(jwks)).authenticate(token)


async def test_user_and_scope_claims_are_configurable(jwks: JWKS) -> None:
    """The user id may come from another claim, the scopes from OAuth's space-separated `scope`."""
    verifier = Verifier(rules(jwks, user_claim="email", scopes_claim="scope"))
    token = jwks.keys[0].sign(email="alice@example.test", scope="topic:orders admin")
    principal = await verifier.authenticate(token)
    assert principal.user == "alice@example.test"
    assert principal.scopes == {"topic:orders", "admin"}
    with pytest.raises(Unauthorized):  # the configured claim is missing
        await verifier.authenticate(jwks.keys[0].sign(scope="admin"))


async def test_es256_with_a_public_key() -> None:
    """ES256 tokens verify against a configured public key; another key's are refused."""
    key = Key("EC")
    verifier = Verifier(TokenRules(algorithms=("ES256",), public_key=key.public_pem))
    assert (await verifier.authenticate(key.sign(aud=None, iss=None))).user == "alice"
    with pytest.raises(Unauthorized):
        await verifier.authenticate(Key("EC").sign())


async def test_unsigned_tokens_are_refused_under_asymmetric_rules(jwks: JWKS) -> None:
    """`alg: none` with valid claims is refused whatever the configuration."""
    claims = {"sub": "root", "exp": int(time.time()) + 600, "iss": ISSUER, "aud": AUDIENCE}
    token = jwt.encode(claims, None, algorithm="none", headers={"kid": jwks.keys[0].kid})
    with pytest.raises(Unauthorized):
        await Verifier(rules(jwks)).authenticate(token)


async def test_hs256_signed_with_the_public_key_is_refused() -> None:
    """The HS/RS confusion attack fails: an HMAC over the public key's text verifies nowhere."""
    key = Key()
    claims = {"sub": "root", "exp": int(time.time()) + 600, "scopes": ["admin"]}
    forged = hs256_forged_with(key.public_pem, claims)
    rs_only = Verifier(TokenRules(algorithms=("RS256",), public_key=key.public_pem))
    with pytest.raises(Unauthorized):
        await rs_only.authenticate(forged)
    both = Verifier(
        TokenRules(algorithms=("HS256", "RS256"), secret="s" * 40, public_key=key.public_pem)
    )
    with pytest.raises(Unauthorized):
        await both.authenticate(forged)
    # Even a deployment whose HMAC secret is the PEM text: pyjwt refuses a PEM as HMAC key.
    with pytest.raises(Unauthorized):
        verify(forged, key.public_pem)


# -- settings ----------------------------------------------------------------------------


def env_settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name in ("TASKCAST_JWT_SECRET", "TASKCAST_EMBEDDED", "TASKCAST_JWT_ALGORITHMS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TASKCAST_JWT_ALGORITHMS": "none"}, "TASKCAST_JWT_ALGORITHMS"),
        ({"TASKCAST_JWT_ALGORITHMS": "RS256"}, "TASKCAST_JWKS_URL"),
        ({"TASKCAST_JWT_ALGORITHMS": "ES256", "TASKCAST_JWT_PUBLIC_KEY": "RSA"}, "PUBLIC_KEY"),
        ({"TASKCAST_JWT_ALGORITHMS": "RS256", "TASKCAST_JWT_PUBLIC_KEY": "/nope.pem"}, "PUBLIC"),
        ({"TASKCAST_JWT_ALGORITHMS": "RS256", "TASKCAST_JWKS_URL": "file:///k"}, "JWKS_URL"),
        ({"TASKCAST_JWT_ALGORITHMS": "HS256,RS256", "TASKCAST_JWKS_URL": "http://x/"}, "SECRET"),
        ({"TASKCAST_JWT_SECRET": "s" * 40, "TASKCAST_AUTHORIZE": "not a path"}, "AUTHORIZE"),
    ],
)
def test_bad_token_settings_stop_start_up_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    """A configuration that could accept forged tokens, or none at all, does not start."""
    if env.get("TASKCAST_JWT_PUBLIC_KEY") == "RSA":
        env = {**env, "TASKCAST_JWT_PUBLIC_KEY": Key().public_pem}
    with pytest.raises(ValidationError, match=named):
        env_settings(monkeypatch, **env)


def test_asymmetric_only_needs_no_secret(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """RS256 with a public key file starts without `TASKCAST_JWT_SECRET`; the key is read."""
    key = Key()
    path = tmp_path / "idp.pem"
    path.write_text(key.public_pem)
    conf = env_settings(
        monkeypatch, TASKCAST_JWT_ALGORITHMS="RS256", TASKCAST_JWT_PUBLIC_KEY=str(path)
    )
    assert conf.token_rules().public_key == key.public_pem
    assert Verifier(conf.token_rules()).verify(key.sign(aud=None, iss=None)).user == "alice"


# -- every way in ------------------------------------------------------------------------


@pytest.fixture
async def idp_app(settings: Settings, jwks: JWKS) -> AsyncIterator[tuple[str, str]]:
    """The app, in process, taking RS256 tokens from the JWKS only: (http url, ws url)."""
    conf = settings.model_copy(
        update={
            "jwt_algorithms": "RS256",
            "jwt_secret": settings.jwt_secret.__class__(""),
            "jwks_url": jwks.url,
            "jwt_issuer": ISSUER,
            "jwt_audience": AUDIENCE,
        }
    )
    async with served(create_app(conf)) as port:
        yield f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws"


async def test_provider_tokens_work_on_ws_sse_and_http(
    idp_app: tuple[str, str], jwks: JWKS, make_token: Callable[..., str]
) -> None:
    """A JWKS-signed token opens /ws, /sse and the REST routes; an HS256 one is refused."""
    http_url, ws_url = idp_app
    token = jwks.keys[0].sign(sub="carol", scopes=["topic:orders"])
    ws = await WS.open(ws_url, token)
    assert (await ws.recv())["user"] == "carol"
    assert (await ws.subscribe("topic:orders"))["type"] == "subscribed"
    await ws.close()
    async with httpx.AsyncClient(base_url=http_url, timeout=10) as http:
        missing = await http.get("/tasks/nope", headers={"Authorization": f"Bearer {token}"})
        assert missing.status_code == 404
        async with http.stream(
            "GET", "/sse", params={"channel": "topic:orders", "token": token}
        ) as stream:
            assert stream.status_code == 200
        hs = make_token("carol")
        refused = await http.get("/tasks/nope", headers={"Authorization": f"Bearer {hs}"})
        assert refused.status_code == 401
    ws = await WS.open(ws_url, make_token("carol"))
    assert (await ws.recv())["code"] == "unauthorized"
