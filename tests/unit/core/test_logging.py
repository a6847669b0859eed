import io
import json
import logging

from app.core.logging import JsonFormatter, RedactSecretsFilter, bind_log_context, log_context, redact_secrets

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


def test_redact_secrets_covers_query_headers_and_json_fields() -> None:
    for text in (
        f'127.0.0.1:5 - "WebSocket /ws/user/p?token={TOKEN}&last_id=1-0" [accepted]',
        f"Authorization: Bearer {TOKEN}",
        f'{{"access_token": "{TOKEN}", "token_type": "bearer"}}',
        f"{{'token': '{TOKEN}'}}",
        f'"WebSocket /ws/user/p?token={TOKEN.replace(".", "%2E")}" [accepted]',  # issue 15, hole 6
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
