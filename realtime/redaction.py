"""Log redaction: access tokens never reach a log line, whoever writes it (uvicorn included)."""

from __future__ import annotations

import logging
import re
from typing import Final

REDACTED: Final = "[redacted]"
# `token=` in a query string (uvicorn's access and WebSocket lines print the full URL), a
# bearer header, and anything shaped like a JWT (three base64url parts, the first `eyJ`).
_PATTERNS: Final = (
    (re.compile(r"(?i)(token=)[^&\s\"'#]*"), rf"\g<1>{REDACTED}"),
    (re.compile(r"(?i)(bearer\s+)[^\s\"',]+"), rf"\g<1>{REDACTED}"),
    (re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), REDACTED),
)
# Where records carrying URLs are created: a filter on a logger only sees records logged on
# that very logger, so each source is named (propagated records are already redacted).
LOGGERS: Final = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi", "taskcast")


def redact(text: str) -> str:
    """`text` with every token-like value replaced by `[redacted]`."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _clean(value: object) -> object:
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, int | float):
        return value  # `%d` and friends need the number itself
    # A container or bytes (uvicorn's trace level logs the whole ASGI scope, headers and
    # query string included): replaced by its redacted text only when it held a token.
    text = str(value)
    cleaned = redact(text)
    return value if cleaned == text else cleaned


class RedactTokens(logging.Filter):
    """Rewrites a record's message and string arguments in place; never drops a record.

    Arguments stay a tuple of the same shape because uvicorn's access formatter unpacks them.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_clean(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _clean(arg) for key, arg in record.args.items()}
        return True


def install(every_logger: bool = True) -> None:
    """Attach the filter to the loggers that print URLs (uvicorn's, taskcast's) and, with
    `every_logger`, to every logger and handler already set up.

    Idempotent; call it after logging is configured (uvicorn configures it before it starts
    the app, so the app's lifespan is the right place).
    """
    existing = [
        name
        for name, obj in logging.root.manager.loggerDict.items()
        if isinstance(obj, logging.Logger) and every_logger
    ]
    for name in sorted(set(LOGGERS) | set(existing)):
        logger = logging.getLogger(name)
        targets: list[logging.Filterer] = [logger, *logger.handlers]
        for target in targets:
            if not any(isinstance(f, RedactTokens) for f in target.filters):
                target.addFilter(RedactTokens())
