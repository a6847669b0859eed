"""Hosts, origins and headers, from settings, on a real replica."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.stack import ApiServer


@pytest.fixture(scope="module")
def strict_api(stack_env: dict[str, str], log_dir: Path) -> Iterator[ApiServer]:
    env = {**stack_env, "ALLOWED_HOSTS": '["127.0.0.1", "tutor.example"]', "CORS_ORIGINS": '["https://app.example"]'}
    server = ApiServer("api-strict", env, log_dir)
    yield server
    server.stop()


def test_unknown_host_headers_are_refused(strict_api: ApiServer) -> None:
    assert httpx.get(f"{strict_api.base_url}/healthz").status_code == 200
    assert httpx.get(f"{strict_api.base_url}/healthz", headers={"Host": "tutor.example"}).status_code == 200
    assert httpx.get(f"{strict_api.base_url}/healthz", headers={"Host": "evil.example"}).status_code == 400


def test_only_configured_origins_may_call_cross_origin(strict_api: ApiServer) -> None:
    def preflight(origin: str) -> httpx.Response:
        return httpx.options(
            f"{strict_api.base_url}/ai/chat2",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization,content-type"},
        )  # fmt: skip

    allowed = preflight("https://app.example")
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://app.example"
    refused = preflight("https://evil.example")
    assert "access-control-allow-origin" not in refused.headers


def test_html_pages_carry_security_headers(strict_api: ApiServer) -> None:
    page = httpx.get(f"{strict_api.base_url}/login.html")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "content-security-policy" not in httpx.get(f"{strict_api.base_url}/healthz").headers, "JSON stays plain"
