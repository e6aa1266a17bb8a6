"""The eval suites, by name. `interlock eval` runs them in this order."""

from __future__ import annotations

from evals.suite import Suite
from evals.suites.approval import ApprovalSuite
from evals.suites.groundedness import GroundednessSuite
from evals.suites.injection import InjectionSuite
from evals.suites.refusal import RefusalSuite
from evals.suites.retrieval import RetrievalSuite
from evals.suites.router import RouterSuite
from evals.suites.safety import SafetySuite

SUITES: dict[str, type[Suite]] = {s.name: s for s in (
    RouterSuite, RetrievalSuite, GroundednessSuite, RefusalSuite, InjectionSuite, ApprovalSuite, SafetySuite)}


def get_suite(name: str) -> Suite:
    try:
        return SUITES[name]()
    except KeyError:
        raise KeyError(f"unknown suite {name!r} (suites: {', '.join(SUITES)})") from None
