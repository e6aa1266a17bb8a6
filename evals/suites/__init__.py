"""The eval suites, by name. `interlock eval` runs them in this order."""

from __future__ import annotations

from interlock.evals.suite import Suite
from interlock.evals.suites.approval import ApprovalSuite
from interlock.evals.suites.groundedness import GroundednessSuite
from interlock.evals.suites.injection import InjectionSuite
from interlock.evals.suites.multi_intent import MultiIntentSuite
from interlock.evals.suites.refusal import RefusalSuite
from interlock.evals.suites.retrieval import RetrievalSuite
from interlock.evals.suites.router import RouterSuite
from interlock.evals.suites.router_cv import RouterCvSuite
from interlock.evals.suites.safety import SafetySuite
from interlock.evals.suites.tenant_knowledge import TenantKnowledgeSuite

SUITES: dict[str, type[Suite]] = {s.name: s for s in (
    RouterSuite, RouterCvSuite, RetrievalSuite, GroundednessSuite, RefusalSuite, InjectionSuite, ApprovalSuite, SafetySuite, TenantKnowledgeSuite,
    MultiIntentSuite)}


def get_suite(name: str) -> Suite:
    try:
        return SUITES[name]()
    except KeyError:
        raise KeyError(f"unknown suite {name!r} (suites: {', '.join(SUITES)})") from None
