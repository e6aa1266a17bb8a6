"""The deployment manifests users take away (deploy/compose.yaml, deploy/kubernetes/*.yaml): probes point at
liveness (/ok) and readiness (/ready), and every INTERLOCK_* variable they set is one `interlock serve` reads,
with values it accepts (a real server starts with the Compose environment and reports ready)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import yaml
from server_testkit import ROOT, make_server

DEPLOY = ROOT / "deploy"
SOURCES = [ROOT / d for d in ("server", "interlock", "tools", "graphs", "policies", "mcp_servers")]
REDIS = "redis://127.0.0.1:6379/0"


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def _k8s_docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _containers() -> list[dict[str, Any]]:
    return [c for d in _k8s_docs() if d["kind"] == "Deployment" for c in d["spec"]["template"]["spec"]["containers"]]


def _manifest_variables() -> dict[str, str | None]:
    out: dict[str, str | None] = dict(_compose()["services"]["interlock"]["environment"])
    for container in _containers():
        for item in container.get("env", []):
            out.setdefault(item["name"], item.get("value"))
    return {k: v for k, v in out.items() if k.startswith("INTERLOCK_")}


def _read_by_code() -> set[str]:
    """Every variable the settings object reads (the only place the code reads INTERLOCK_* variables)."""
    from interlock.kernel.settings import Settings, variable

    return {variable(name) for name in Settings.model_fields}


def test_probes_are_liveness_ok_and_readiness_ready() -> None:
    check = " ".join(_compose()["services"]["interlock"]["healthcheck"]["test"])
    assert "/ready" in check
    containers = _containers()
    assert containers
    for container in containers:
        assert container["livenessProbe"]["httpGet"]["path"] == "/ok"
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    services = [d for d in _k8s_docs() if d["kind"] == "Service"]
    assert services and all(s["spec"].get("sessionAffinity", "None") == "None" for s in services)


def test_every_variable_the_manifests_set_is_read_by_the_server() -> None:
    variables = _manifest_variables()
    assert {"INTERLOCK_DATABASE_URL", "INTERLOCK_REDIS_URL"} <= set(variables)
    unknown = sorted(set(variables) - _read_by_code())
    assert not unknown, f"manifests set variables nothing reads: {unknown}"


def test_a_server_starts_ready_with_the_compose_environment(pg_factory, tmp_path: Path) -> None:  # noqa: ANN001
    env = {k: str(v) for k, v in _compose()["services"]["interlock"]["environment"].items()}
    env["INTERLOCK_DATABASE_URL"] = pg_factory()  # the test's PostgreSQL and Redis instead of the Compose hosts
    env["INTERLOCK_REDIS_URL"] = REDIS
    server = make_server(tmp_path, env.pop("INTERLOCK_DATABASE_URL"), **env)
    try:
        ready = httpx.get(server.url + "/ready", timeout=5)
        assert ready.status_code == 200, ready.text
        assert set(ready.json()["checks"]) >= {"database", "redis"}
    finally:
        server.stop()
