"""scope.yaml topic check."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from interlock.policies.loader import load_policies
from interlock.policies.scope import ScopeChecker


@pytest.fixture(scope="module", autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The PII vault key file is created under INTERLOCK_HOME: keep it in a temporary directory."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INTERLOCK_HOME", str(tmp_path_factory.mktemp("guards-home")))
        yield


def test_scope_decisions() -> None:
    checker = ScopeChecker(load_policies().scope)
    assert checker.check("Where is my refund for order 12?").decision == "in_scope"
    out = checker.check("What dosage of ibuprofen should I take with my order?")
    assert out.decision == "out_of_scope" and out.out_topics == ["medical_advice"] and "orders" in out.in_topics
    assert checker.check("Tell me a joke").decision == "unknown"
    # Obfuscation does not dodge it.
    assert checker.check("should I s\u200bue the courier?").decision == "out_of_scope"
