from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.config import DEFAULT_JWT_SECRET, Settings


def test_outside_development_the_default_jwt_secret_is_refused() -> None:
    for environment in ("production", "test"):
        with pytest.raises(ValidationError, match="JWT_SECRET"):
            Settings(environment=environment, jwt_secret=DEFAULT_JWT_SECRET)
    assert Settings(environment="production", jwt_secret="a-real-secret").environment == "production"
    assert Settings(environment="development").jwt_secret == DEFAULT_JWT_SECRET


def test_settings_come_from_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WS_PING_INTERVAL_S", "7")
    monkeypatch.setenv("HISTORY_MAXLEN", "50")
    monkeypatch.setenv("LLM_OFFLINE_DELAY_MS", "0")
    settings = Settings()
    assert (settings.ws_ping_interval_s, settings.history_maxlen, settings.llm_offline_delay_ms) == (7, 50, 0)


def test_redis_url_is_required_where_redis_is_needed() -> None:
    with pytest.raises(RuntimeError, match="REDIS_URL"):
        _ = Settings(redis_url=None).required_redis_url


def test_every_setting_is_documented() -> None:
    root = Path(__file__).resolve().parents[3]
    docs = (root / "README.md").read_text() + "".join(p.read_text() for p in (root / "docs").glob("*.md"))
    undocumented = [name.upper() for name in Settings.model_fields if f"`{name.upper()}`" not in docs]
    assert undocumented == [], "name each setting in README.md's table or docs/operations.md"
