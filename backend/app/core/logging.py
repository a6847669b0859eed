"""Structured logs: one JSON object per line (or plain text locally), carrying task and participant ids."""

import contextlib
import contextvars
import json
import logging
import re
import sys
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

# Set by the request middleware, the WebSocket route and task runners; read by every log line.
log_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("log_context", default={})  # noqa: B039

# `?token=` in WebSocket URLs (logged by uvicorn), bearer headers and token fields in bodies.
# A token's characters include percent escapes: `?token=aaa%2Ebbb` is the same token in a URL.
_SECRETS = re.compile(r"((?:access_)?token[\"']?\s*[=:]\s*[\"']?|Bearer\s+)[\w.~+/%-]+=*", re.IGNORECASE)
REDACTED = "[redacted]"

_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def bind_log_context(**values: object) -> contextvars.Token[dict[str, str]]:
    """Add ids (task_id, participant_id, request_id…) to every log line of the current context."""
    merged = {**log_context.get(), **{k: str(v) for k, v in values.items() if v is not None}}
    return log_context.set(merged)


@contextlib.contextmanager
def log_context_bound(**values: object) -> Iterator[None]:
    """Bind ids for the duration of a block (a worker runs many tasks in one context)."""
    token = bind_log_context(**values)
    try:
        yield
    finally:
        log_context.reset(token)


# A JWT, whatever names it: its header is a JSON object, so it always begins "eyJ".
_JWT = re.compile(r"eyJ[\w-]*(?:\.|%2e)[\w-]*(?:\.|%2e)[\w-]*", re.IGNORECASE)


def redact_secrets(text: str) -> str:
    """The text with every token-looking value replaced by `[redacted]`."""
    redacted = _JWT.sub(REDACTED, _SECRETS.sub(lambda match: match.group(1) + REDACTED, text))
    if "%" in redacted:
        # A query string is decoded once before it is read: `?%74oken=` is `?token=` to the
        # server, and so is a token written with escapes. Judge (and log) the decoded text.
        decoded = urllib.parse.unquote(redacted)
        cleaned = _JWT.sub(REDACTED, _SECRETS.sub(lambda match: match.group(1) + REDACTED, decoded))
        if cleaned != decoded:
            return cleaned
    return redacted


class RedactSecretsFilter(logging.Filter):
    """Rewrites each record's message so no token reaches any log line, whoever logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_secrets(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, context ids and `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **log_context.get(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-friendly lines for local runs: the message, then the context ids and `extra=` fields.

    The fields are what makes a line useful ("could not start Chromium" needs its path and error),
    so text keeps them as JSON does; a traceback follows on the lines after.
    """

    def format(self, record: logging.LogRecord) -> str:
        exc_info, exc_text = record.exc_info, record.exc_text
        record.exc_info = record.exc_text = None
        try:
            line = super().format(record)
        finally:
            record.exc_info, record.exc_text = exc_info, exc_text
        fields = {**log_context.get(), **{k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}}
        if fields:
            line += " " + " ".join(f"{key}={_field_text(value)}" for key, value in fields.items())
        if exc_info:
            line += "\n" + self.formatException(exc_info)
        return line


def _field_text(value: object) -> str:
    text = str(value)
    # Quoted (as JSON) when it would not read as one word: spaces, quotes, line breaks.
    return json.dumps(text, ensure_ascii=False) if not text or any(c in text for c in " \"'\n\t=") else text


def configure_logging(fmt: str = "json", level: str = "INFO") -> None:
    """Send all logs to stderr in the chosen format; idempotent."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecretsFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The access log adds nothing our request ids don't, and would print every query string.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("httpx").setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "celery"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
