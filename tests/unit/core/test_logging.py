import io
import json
import logging
import sys

from app.core.logging import (
    JsonFormatter,
    RedactSecretsFilter,
    TextFormatter,
    bind_log_context,
    log_context,
    redact_secrets,
)

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


def test_redact_secrets_covers_query_headers_and_json_fields() -> None:
    for text in (
        f'127.0.0.1:5 - "WebSocket /ws/user/p?token={TOKEN}&last_id=1-0" [accepted]',
        f"Authorization: Bearer {TOKEN}",
        f'{{"access_token": "{TOKEN}", "token_type": "bearer"}}',
        f"{{'token': '{TOKEN}'}}",
        f'"WebSocket /ws/user/p?token={TOKEN.replace(".", "%2E")}" [accepted]',  # issue 15, hole 6
        f'"WebSocket /ws/user/p?%74oken={TOKEN}" [accepted]',  # issue 25: the name escaped
        f'"WebSocket /ws/user/p?%74oken={TOKEN.replace("J", "%4A")}" [accepted]',  # and the token too
        f'"WebSocket /ws/user/p?t%6Fken={TOKEN.replace("a", "%61")}&last_id=1-0" [accepted]',
        f"some other name={TOKEN} in a message",
    ):
        redacted = redact_secrets(text)
        leaked = [part for part in TOKEN.split(".") if part in redacted]
        assert not leaked and "[redacted]" in redacted, redacted
    assert "last_id=1-0" in redact_secrets(f"/ws?token={TOKEN}&last_id=1-0")


def test_json_lines_carry_context_ids_and_no_token() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactSecretsFilter())
    logger = logging.getLogger("test.logging")
    logger.addHandler(handler)
    logger.propagate = False
    reset = bind_log_context(task_id="t-1", participant_id="p-1")
    try:
        logger.warning('"WebSocket %s" [accepted]', f"/ws/user/p-1?token={TOKEN}", extra={"attempt": 2})
    finally:
        log_context.reset(reset)
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["task_id"] == "t-1" and line["participant_id"] == "p-1" and line["attempt"] == 2
    assert line["level"] == "WARNING" and TOKEN not in stream.getvalue()


def test_text_lines_keep_the_extra_fields_then_the_traceback() -> None:
    # Issue 17: "could not start Chromium" came out with no path and no error in text logs.
    formatter = TextFormatter("%(levelname)s %(name)s: %(message)s")
    try:
        raise FileNotFoundError("no such file")
    except FileNotFoundError:
        record = logging.LogRecord("app.sandbox", logging.ERROR, __file__, 1, "could not start Chromium", None, None)
        record.exc_info = sys.exc_info()
    record.path = "/usr/bin/chromium"
    record.error = "Executable doesn't exist at /usr/bin/chromium"
    token = bind_log_context(task_id="t-1")
    try:
        text = formatter.format(record)
    finally:
        log_context.reset(token)
    first, *rest = text.splitlines()
    assert first == (
        "ERROR app.sandbox: could not start Chromium task_id=t-1 path=/usr/bin/chromium "
        'error="Executable doesn\'t exist at /usr/bin/chromium"'
    )
    assert rest[0].startswith("Traceback") and "FileNotFoundError: no such file" in rest[-1]
