"""The approval store's additions for issue 13: the audit trail of every change, expiry recorded once, one-time
claims across processes, matching an identical call, and paging of the decided history (real SQLite)."""

from __future__ import annotations

from pathlib import Path

import pytest
from interlock.tools.approvals import ApprovalError, ApprovalStore

ARGS = {"order_id": "ORD-1001", "reason": "trail test"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path: Path):
    s = ApprovalStore(f"sqlite:///{tmp_path / 'approvals.db'}", clock=Clock())
    yield s
    await s.close()


async def test_trail_records_who_did_what(store: ApprovalStore) -> None:
    a = await store.request(tool="cancel_order", server="orders", args=ARGS, principal="u1", tenant="acme")
    edited = {**ARGS, "reason": "edited by ops"}
    await store.decide(a.id, "approve", decided_by="ops@acme", reason="ok", args=edited)
    await store.consume(a.id, "cancel_order", edited, "u1", "acme", server="orders")
    trail = await store.events(a.id)
    assert [(e.kind, e.actor, e.reason) for e in trail] == [
        ("requested", "u1", None), ("edited", "ops@acme", "ok"), ("consumed", "u1", None)]
    assert trail[1].args_hash == trail[2].args_hash != trail[0].args_hash


async def test_default_lifetime_is_the_policy_s_24_hours_and_expiry_is_recorded_once(store: ApprovalStore) -> None:
    a = await store.request(tool="cancel_order", server="orders", args=ARGS, principal="u1", tenant="acme")
    assert (a.expires_at - a.created_at).total_seconds() == 24 * 3600
    store._clock.now += 24 * 3600  # type: ignore[attr-defined]
    assert await store.expire_due() == [a.id]
    assert await store.expire_due() == []
    assert [e.kind for e in await store.events(a.id)] == ["requested", "expired"]
    with pytest.raises(ApprovalError) as exc:
        await store.decide(a.id, "approve", decided_by="ops")
    assert exc.value.code == "already_decided"


async def test_claims_are_once_and_unclaimed_lists_only_the_rest(store: ApprovalStore) -> None:
    a = await store.request(tool="cancel_order", server="orders", args=ARGS, principal="u1", tenant="acme")
    b = await store.request(tool="cancel_order", server="orders", args=ARGS, principal="u2", tenant="acme")
    assert {x.id for x in await store.unclaimed("hook", "pending")} == {a.id, b.id}
    assert await store.claim(a.id, "hook") is True
    assert await store.claim(a.id, "hook") is False
    assert [x.id for x in await store.unclaimed("hook", "pending")] == [b.id]


async def test_find_call_matches_tool_args_principal_and_tenant_only(store: ApprovalStore) -> None:
    a = await store.request(tool="cancel_order", server="orders", args=ARGS, principal="u1", tenant="acme")
    assert [x.id for x in await store.find_call("cancel_order", "orders", ARGS, "u1", "acme", "pending")] == [a.id]
    for tool, args, who, tenant in (("refund_order", ARGS, "u1", "acme"), ("cancel_order", {**ARGS, "reason": "x"},
                                    "u1", "acme"), ("cancel_order", ARGS, "u2", "acme"),
                                    ("cancel_order", ARGS, "u1", "globex")):
        assert await store.find_call(tool, "orders", args, who, tenant, "pending") == []


async def test_decided_history_pages_newest_first(store: ApprovalStore) -> None:
    ids = []
    for i in range(5):
        store._clock.now += 1  # type: ignore[attr-defined]
        a = await store.request(tool="cancel_order", server="orders", args={**ARGS, "n": i}, principal="u",
                                tenant="acme")
        await store.decide(a.id, "reject", decided_by="ops")
        ids.append(a.id)
    await store.request(tool="cancel_order", server="orders", args=ARGS, principal="u", tenant="acme")
    decided = ("approved", "rejected", "consumed", "expired")
    first = await store.list("acme", limit=2, statuses=decided)
    rest = await store.list("acme", limit=10, offset=2, statuses=decided)
    assert [a.id for a in first + rest] == ids[::-1]
    assert await store.list("globex", statuses=decided) == []
