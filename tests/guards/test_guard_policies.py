"""Policy loading: valid set, hash, and errors that name the file and the field."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from interlock.policies.loader import POLICY_DIR, PolicyError, get_policies, load_policies


@pytest.fixture(scope="module", autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The PII vault key file is created under INTERLOCK_HOME: keep it in a temporary directory."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INTERLOCK_HOME", str(tmp_path_factory.mktemp("guards-home")))
        yield

FILES = ["tools.yaml", "pii.yaml", "injection.yaml", "scope.yaml", "limits.yaml"]


@pytest.fixture()
def policy_dir(tmp_path: Path) -> Path:
    for name in FILES:
        shutil.copy(POLICY_DIR / name, tmp_path / name)
    return tmp_path


def test_shipped_policies_validate_and_hash_is_stable() -> None:
    first = load_policies()
    second = load_policies()
    assert len(first.hash) == 64 and first.hash == second.hash
    assert first.tools.tools["refund_order"].risk == "destructive"
    assert first.limits.for_tenant("anyone").requests_per_minute == 60
    assert get_policies() is get_policies()


def test_hash_changes_with_any_byte(policy_dir: Path) -> None:
    before = load_policies(policy_dir).hash
    path = policy_dir / "limits.yaml"
    path.write_text(path.read_text() + "\n# comment\n")
    assert load_policies(policy_dir).hash != before


def test_invalid_field_names_file_and_field(policy_dir: Path) -> None:
    text = (policy_dir / "limits.yaml").read_text().replace("requests_per_minute: 60", "requests_per_minute: -5")
    (policy_dir / "limits.yaml").write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policies(policy_dir)
    assert info.value.file == "limits.yaml"
    assert info.value.field == "default_tenant.requests_per_minute"
    assert "limits.yaml: default_tenant.requests_per_minute" in str(info.value)


def test_unknown_key_is_rejected(policy_dir: Path) -> None:
    text = (policy_dir / "tools.yaml").read_text().replace("    risk: destructive\n", "    risk: destructive\n    aproval: never\n", 1)
    (policy_dir / "tools.yaml").write_text(text)
    with pytest.raises(PolicyError, match=r"tools.yaml: tools\.\w+\.aproval"):
        load_policies(policy_dir)


def test_bad_regex_and_bad_yaml_and_missing_file(policy_dir: Path) -> None:
    text = (policy_dir / "injection.yaml").read_text().replace("pattern: '\\b(dan mode", "pattern: '(unclosed\\b(dan mode", 1)
    (policy_dir / "injection.yaml").write_text(text)
    with pytest.raises(PolicyError, match=r"injection.yaml: rules\.\d+\.pattern"):
        load_policies(policy_dir)
    (policy_dir / "injection.yaml").write_text("rules: [unclosed")
    with pytest.raises(PolicyError, match="injection.yaml: not valid YAML"):
        load_policies(policy_dir)
    (policy_dir / "injection.yaml").unlink()
    with pytest.raises(PolicyError, match="injection.yaml: required policy file not found"):
        load_policies(policy_dir)


def test_graph_policy_files_are_validated_when_present(policy_dir: Path) -> None:
    pytest.importorskip("interlock.policies.graph_schema")
    (policy_dir / "models.yaml").write_text("providers:\n  x:\n    kind: nonsense\n")
    with pytest.raises(PolicyError) as info:
        load_policies(policy_dir)
    assert info.value.file == "models.yaml" and info.value.field.startswith("providers.x.kind")


def test_tenant_override_merges_field_by_field(policy_dir: Path) -> None:
    text = (policy_dir / "limits.yaml").read_text().replace("tenants: {}", "tenants:\n  small: {tokens_per_minute: 10}")
    (policy_dir / "limits.yaml").write_text(text)
    limits = load_policies(policy_dir).limits
    assert limits.for_tenant("small").tokens_per_minute == 10
    assert limits.for_tenant("small").requests_per_minute == 60
