"""Property-based fuzzing of every HTTP operation from the OpenAPI schema: no 5xx, no response off its schema."""

import subprocess
import sys
from pathlib import Path

import httpx

from app.core.embedded_redis import EmbeddedRedis
from tests.conftest import with_own_database
from tests.support.stack import ApiServer, make_operator

ST = Path(sys.executable).with_name("st")


async def test_no_generated_request_gets_a_server_error(
    stack_env: dict[str, str], redis_server: EmbeddedRedis, tmp_path: Path, log_dir: Path
) -> None:
    # Its own database and Redis and no worker: accepted tasks just wait, feeding nobody's queue.
    # The fuzzer is an operator too, so the ops endpoints are fuzzed past their 403.
    env = {
        **with_own_database(stack_env, tmp_path),
        "REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/8",
        "ADMIN_USERNAMES": "fuzz-operator",
    }
    api = ApiServer("api-fuzz", env, log_dir)
    try:
        async with httpx.AsyncClient(base_url=api.base_url) as http:
            make_operator(env, "fuzz-operator", "correct horse battery")
            signed_in = await http.post(
                "/api/auth/login", json={"username": "fuzz-operator", "password": "correct horse battery"}
            )
            assert signed_in.status_code == 200, signed_in.text
            token = signed_in.json()["access_token"]
        result = subprocess.run(
            [
                str(ST), "run", f"{api.base_url}/openapi.json",
                "--checks", "not_a_server_error,response_schema_conformance",
                "--max-examples", "15",
                "--generation-deterministic",
                "--request-timeout", "10",
                "--header", f"Authorization: Bearer {token}",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )  # fmt: skip
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-4000:]
        assert " passed" in output and "failed" not in output.split("SUMMARY")[-1], output[-2000:]
        api.assert_running()
        assert "Traceback" not in api.log_text()
    finally:
        api.stop()
