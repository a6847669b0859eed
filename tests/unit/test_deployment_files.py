"""The production files stay consistent: compose services, health checks, nginx WebSocket proxying."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from app.task_kinds import REGISTRY

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def test_compose_describes_the_production_shape() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yml").read_text())
    services = compose["services"]
    core = {name: service for name, service in services.items() if "profiles" not in service}
    assert set(core) == {"redis", "postgres", "migrate", "api", "worker-chat", "worker-grading", "nginx"}
    ops = {name: service for name, service in services.items() if service.get("profiles") == ["ops"]}
    assert set(ops) == {"flower", "prometheus", "grafana"}, "the optional operator tools, in one profile"
    for service in ops.values():
        assert all(port.startswith("127.0.0.1:") for port in service["ports"]), "operator tools stay on loopback"
    assert "CELERY_EVENTS" in compose["x-taskwire"]["environment"], "Flower sees workers only with events on"
    for name, service in services.items():
        if name != "migrate":
            assert "healthcheck" in service, f"{name} needs a health check"
    assert services["api"]["deploy"]["replicas"] >= 2
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    # Every queue has its own workers, with its own limits: a burst of one kind never starves another.
    queues = {name: service["command"][-1] for name, service in services.items() if name.startswith("worker-")}
    assert sorted(queues.values()) == sorted(REGISTRY.queues)
    for name in queues:
        worker = services[name]
        assert worker["command"][:3] == ["taskwire", "worker", "--queues"]
        assert worker["environment"]["WORKER_HEARTBEAT_FILE"] in worker["healthcheck"]["test"][1]
        assert "replicas" not in worker.get("deploy", {}), "workers scale with --scale worker-<kind>=N"
    assert "shm_size" in services["worker-grading"], "Chromium needs shared memory"
    env = services["api"]["environment"]
    assert env["JWT_SECRET"].startswith("${JWT_SECRET:?"), "production must be given a secret"
    # Rate limits count each learner, not nginx: the replicas believe the proxy's X-Forwarded-For
    # (and publish no port of their own, so only nginx can send one).
    assert env["FORWARDED_ALLOW_IPS"] == "*" and "ports" not in services["api"]
    for name, service in services.items():
        if name != "migrate":
            assert service["restart"] == "unless-stopped", f"{name} comes back after a crash"


def test_nginx_upgrades_websockets_with_long_timeouts() -> None:
    conf = (DOCKER / "nginx.conf").read_text()
    assert "proxy_set_header Upgrade $http_upgrade;" in conf
    assert "proxy_read_timeout 1h;" in conf and "server api:8000" in conf
    # The client's own address, replacing any X-Forwarded-For it sent: appending would let a
    # client name its own address to the rate limits.
    assert "$proxy_add_x_forwarded_for" not in conf
    assert conf.count("proxy_set_header X-Forwarded-For $remote_addr;") == 2
    assert "location = /metrics {\n        return 403;" in conf, "metrics are not public"


def test_prometheus_scrapes_every_replica_and_grafana_gets_the_dashboard() -> None:
    prometheus = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["dns_sd_configs"][0] == {
        "names": ["api"],
        "type": "A",
        "port": 8000,
        "refresh_interval": "15s",
    }
    compose = yaml.safe_load((DOCKER / "compose.yml").read_text())
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts and prometheus["rule_files"] == [
        "/etc/prometheus/alerts.yml"
    ]
    rules = yaml.safe_load((DOCKER / "alerts.yml").read_text())["groups"][0]["rules"]
    assert all(rule["annotations"]["summary"] for rule in rules)
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "taskwire.json").read_text())
    assert dashboard["uid"] == "taskwire" and len(dashboard["panels"]) >= 10
    provider = yaml.safe_load((DOCKER / "grafana" / "provisioning" / "dashboards" / "taskwire.yml").read_text())
    grafana_mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['providers'][0]['options']['path']}:ro" in grafana_mounts


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None


def test_docker_compose_accepts_the_file() -> None:
    compose = _compose_command()
    if compose is None:
        # .ci/run installs docker-compose, so this only skips on a developer machine without it.
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    for files in (["compose.yml"], ["compose.yml", "compose.tls.yml"]):
        result = subprocess.run(
            [*compose, *(arg for name in files for arg in ("-f", str(DOCKER / name))), "config", "--quiet"],
            capture_output=True,
            text=True,
            env={"JWT_SECRET": "x" * 32, "PATH": "/usr/bin:/bin:/usr/local/bin"},
            check=False,
        )
        assert result.returncode == 0, (files, result.stderr)


def test_grading_workers_refuse_to_grade_without_the_lanes_walls() -> None:
    grading = yaml.safe_load((DOCKER / "compose.yml").read_text())["services"]["worker-grading"]
    assert grading["environment"]["SANDBOX_ISOLATION"] == "namespaces"
    # unshare and mount need seccomp and AppArmor out of the way, and a /proc without masks.
    assert {"seccomp=unconfined", "apparmor=unconfined", "systempaths=unconfined"} <= set(grading["security_opt"])
    assert grading["cap_drop"] == ["ALL"] and "no-new-privileges:true" in grading["security_opt"]


def test_https_in_front_redirects_plain_http_and_keeps_the_app_config() -> None:
    plain, tls = (DOCKER / "nginx.conf").read_text(), (DOCKER / "nginx-tls.conf").read_text()
    assert "listen 443 ssl;" in tls and "return 301 https://$host$request_uri;" in tls
    assert 'Strict-Transport-Security "max-age=31536000"' in tls
    # Everything the plain config does for the app, the TLS one does too.
    for line in plain.splitlines():
        if line.strip() and "listen 80" not in line:
            assert line in tls, line
    override = yaml.safe_load((DOCKER / "compose.tls.yml").read_text())["services"]["nginx"]
    assert "443:443" in override["ports"] and any(v.startswith("./certs:") for v in override["volumes"])
    assert "certs/" in (DOCKER / ".gitignore").read_text(), "keys stay out of git"


def test_the_env_example_names_real_settings_and_a_persistent_secret() -> None:
    from app.core.config import Settings

    root = DOCKER.parent
    example = (root / ".env.example").read_text()
    names = [line.split("=", 1)[0] for line in example.splitlines() if line and not line.startswith("#")]
    compose_only = {"GRAFANA_ADMIN_PASSWORD"}
    assert set(names) - compose_only <= {name.upper() for name in Settings.model_fields}, names
    assert "JWT_SECRET=" in example and "openssl rand -hex 32" in example
    assert ".env" in (root / ".gitignore").read_text().splitlines()
