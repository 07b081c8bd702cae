"""Log redaction: token values vanish from every log line, whatever logger or shape carries them."""

from __future__ import annotations

import logging
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskcast.realtime import redaction
from taskcast.realtime.redaction import REDACTED, RedactTokens, redact
from taskcast.realtime.tokens import issue

# Another test's leftover background thread (a retry loop with jitter) may touch the global
# `random` while Hypothesis draws; that says nothing about the code under test here.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
SECRET = "s" * 40
TOKEN_CHARS = string.ascii_letters + string.digits + "-_.%~+"


@given(st.text(TOKEN_CHARS, min_size=8, max_size=300), st.sampled_from(["?", "&"]))
def test_query_token_is_redacted(token: str, sep: str) -> None:
    """Whatever the token's characters, `token=<value>` in a URL keeps no part of the value."""
    line = f'127.0.0.1:5000 - "GET /ws{sep}token={token}&x=1 HTTP/1.1" 200'
    assert redact(line) == f'127.0.0.1:5000 - "GET /ws{sep}token={REDACTED}&x=1 HTTP/1.1" 200'


def test_jwts_and_bearer_headers_are_redacted_anywhere() -> None:
    """A JWT-shaped string or a bearer credential is redacted even outside a query string."""
    token = issue(SECRET, "alice")
    for line in (f"got {token} from client", f"Authorization: Bearer {token}", f"bearer x{token}"):
        assert token not in redact(line)
        assert REDACTED in redact(line)


def test_plain_lines_are_untouched() -> None:
    """Lines without credentials pass through unchanged."""
    line = '127.0.0.1:5000 - "GET /tasks/abc?since=4 HTTP/1.1" 200'
    assert redact(line) == line


def test_filter_keeps_uvicorn_access_args_shape(caplog: pytest.LogCaptureFixture) -> None:
    """The filter rewrites args in place as a tuple of the same length (uvicorn unpacks it)."""
    token = issue(SECRET, "alice")
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:1", "GET", f"/ws?token={token}", "1.1", 101), None,
    )  # fmt: skip
    assert RedactTokens().filter(record)
    assert isinstance(record.args, tuple)
    assert len(record.args) == 5
    assert token not in record.getMessage()


def test_install_covers_loggers_that_exist_and_is_idempotent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After install(), a token logged on uvicorn's loggers or ours is redacted, once."""
    token = issue(SECRET, "alice")
    redaction.install()
    redaction.install()
    for name in ("uvicorn.error", "uvicorn.access", "taskcast"):
        logger = logging.getLogger(name)
        assert sum(isinstance(f, RedactTokens) for f in logger.filters) == 1
        with caplog.at_level(logging.INFO, logger=name):
            logger.info('%s - "WebSocket %s" [accepted]', "127.0.0.1:1", f"/ws?token={token}")
    assert caplog.records
    assert token not in caplog.text


def test_containers_and_bytes_in_args_are_redacted() -> None:
    """A logged ASGI scope (uvicorn's trace level) loses its token from query and headers."""
    token = issue(SECRET, "alice")
    scope = {
        "path": "/ws",
        "query_string": f"token={token}".encode(),
        "headers": [(b"authorization", f"Bearer {token}".encode())],
    }
    record = logging.LogRecord(
        "uvicorn.asgi", 5, __file__, 1, "%s ASGI [%d] Started scope=%s",
        ("127.0.0.1:1 - ", 7, scope), None,
    )  # fmt: skip
    RedactTokens().filter(record)
    message = record.getMessage()
    assert token not in message
    assert "ASGI [7] Started" in message
    assert "token=[redacted]" in message
