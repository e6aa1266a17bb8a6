"""The settings object: every INTERLOCK_* variable once, documented in the README, printed without secrets."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic.fields import FieldInfo

from interlock.kernel.settings import Settings, get_settings, mask_url, masked, variable

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("server", "tools", "graphs", "policies", "mcp_servers", "evals", "interlock")


def _default_text(field: FieldInfo) -> str:
    default = field.get_default(call_default_factory=True)
    if default in (None, "", []):
        return "unset"
    if isinstance(default, bool):
        return "1" if default else "0"
    if isinstance(default, float):
        return f"{default:g}"
    return str(default)


def _readme_table() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("### Configuration", 1)[1].split("\n### ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        match = re.match(r"\|\s*`(INTERLOCK_[A-Z0-9_]+)`\s*\|\s*([^|]+?)\s*\|", line)
        if match:
            rows[match.group(1)] = match.group(2).strip("`")
    return rows


def test_readme_configuration_table_lists_exactly_the_settings_with_their_defaults() -> None:
    table = _readme_table()
    expected = {variable(name): _default_text(field) for name, field in Settings.model_fields.items()}
    assert sorted(table) == sorted(expected)
    assert table == expected
    assert all(field.description for field in Settings.model_fields.values())  # every variable documented


def test_every_interlock_variable_the_code_names_is_a_setting() -> None:
    # Names written in the product's code (not tests) must be settings; nothing reads one ad hoc.
    known = {variable(name) for name in Settings.model_fields}
    named: set[str] = set()
    for folder in SOURCES:
        for path in (ROOT / folder).rglob("*.py"):
            source = path.read_text()
            named |= set(re.findall(r"INTERLOCK_[A-Z0-9_]*[A-Z0-9]", source))
            if path.name != "settings.py":
                assert not re.search(r"(environ\.get|getenv)\(\s*[\"']INTERLOCK_", source), path
    named -= {"INTERLOCK_MCP"}  # the INTERLOCK_MCP_<SYSTEM>_URL family, spelled out as settings
    assert named <= known, named - known


def test_environment_is_reread_when_it_changes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("INTERLOCK_HOME", str(tmp_path / "a"))
    assert get_settings().home == tmp_path / "a"
    monkeypatch.setenv("INTERLOCK_HOME", str(tmp_path / "b"))
    assert get_settings().data_dir() == (tmp_path / "b").resolve()
    assert (tmp_path / "b").is_dir()
    monkeypatch.setenv("INTERLOCK_RUN_CONCURRENCY", "")  # empty means unset, as before
    assert get_settings().run_concurrency == 10
    monkeypatch.setenv("INTERLOCK_DEV_SCOPES", "")  # ...except for scopes, where empty means none
    assert get_settings().dev_scopes == []
    monkeypatch.setenv("INTERLOCK_DEV_SCOPES", "orders:read, crm:read")
    assert get_settings().dev_scopes == ["orders:read", "crm:read"]
    monkeypatch.setenv("INTERLOCK_WEBHOOK_ALLOW_HOSTS", "hooks.internal,,ci.local ")
    assert get_settings().webhook_allow_hosts == ["hooks.internal", "ci.local"]


def test_masking_hides_passwords_tokens_and_keys() -> None:
    assert mask_url("postgresql://app:hunter2@db:5432/x?sslmode=require") == "postgresql://app:****@db:5432/x?sslmode=require"
    assert "s3cr3t" not in mask_url("https://h/p?api_key=s3cr3t&x=1")
    assert mask_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    values = masked(Settings(token="tok-123", vault_key="vk-456", database_url="postgresql://u:pw@h/db"))
    assert values["INTERLOCK_TOKEN"] == values["INTERLOCK_VAULT_KEY"] == "****"
    assert values["INTERLOCK_DATABASE_URL"] == "postgresql://u:****@h/db"


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("INTERLOCK_")}
    return subprocess.run([sys.executable, "-m", "interlock", *args], env={**base, **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_interlock_config_prints_effective_settings_with_secrets_masked(tmp_path: Path) -> None:
    secrets = {"INTERLOCK_DATABASE_URL": "postgresql://app:pg-secret-1@db.internal:5432/interlock",
               "INTERLOCK_REDIS_URL": "redis://:redis-secret-2@cache:6379/0", "INTERLOCK_TOKEN": "tok-secret-3",
               "INTERLOCK_MCP_TOKEN": "mcp-secret-4", "INTERLOCK_VAULT_KEY": "vault-secret-5",
               "INTERLOCK_EMBEDDINGS_API_KEY": "emb-secret-6"}
    result = _cli("config", "--json", INTERLOCK_HOME=str(tmp_path), INTERLOCK_RUN_CONCURRENCY="3", **secrets)
    assert result.returncode == 0, result.stderr
    for secret in ("pg-secret-1", "redis-secret-2", "tok-secret-3", "mcp-secret-4", "vault-secret-5", "emb-secret-6"):
        assert secret not in result.stdout + result.stderr
    values = json.loads(result.stdout)
    assert set(values) == {variable(name) for name in Settings.model_fields}
    assert values["INTERLOCK_RUN_CONCURRENCY"] == "3" and values["INTERLOCK_HOME"] == str(tmp_path)
    assert values["INTERLOCK_DATABASE_URL"] == "postgresql://app:****@db.internal:5432/interlock"
    assert values["INTERLOCK_TOKEN"] == "****"
    table = _cli("config", INTERLOCK_HOME=str(tmp_path), INTERLOCK_TOKEN="tok-secret-3")
    assert table.returncode == 0 and "tok-secret-3" not in table.stdout
    assert re.search(r"^INTERLOCK_TOKEN\s+\*\*\*\*", table.stdout, re.M)


def test_invalid_setting_is_named_without_echoing_the_value(tmp_path: Path) -> None:
    result = _cli("config", INTERLOCK_HOME=str(tmp_path), INTERLOCK_MAX_BODY_BYTES="lots-of-bytes-7")
    assert result.returncode == 2
    assert "INTERLOCK_MAX_BODY_BYTES" in result.stderr and "lots-of-bytes-7" not in result.stderr
    assert "Traceback" not in result.stderr
