"""Action honesty and placeholder rendering in the real output guard (graphs/nodes/guards.py `check_output`):
which sentences claim a finished action, which tool results back them, and what replaces an answer that is a
tool call written as text."""

from __future__ import annotations

from typing import Any

import pytest
from interlock.graphs.nodes import guards
from interlock.graphs.nodes.claims import claims_in, unsupported_claims
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage


@pytest.mark.parametrize(("text", "actions"), [
    ("I have canceled your order ORD-1001.", {"cancel"}),
    ("I've gone ahead and cancelled it for you.", {"cancel"}),
    ("Your order has been cancelled and your refund has been issued.", {"cancel"}),
    ("Your order is now cancelled.", {"cancel"}),
    ("Done! Order cancelled.", {"cancel"}),
    ("I have issued a refund of $20 to your card.", {"refund"}),
    ("We have sent you an email with the label.", {"send"}),
    ("I've opened a ticket for our support team.", {"create"}),
    ("I've escalated this to a human agent.", {"escalate"}),
    ("I have updated your phone number.", {"update"}),
    ("Your password has been reset.", {"process"}),
    # not claims
    ("I can cancel it if you like.", set()),
    ("I have not cancelled anything yet.", set()),
    ("I haven't refunded it.", set()),
    ("I'll cancel it once an operator approves.", set()),
    ("I've asked an operator to approve the cancellation.", set()),
    ("I've requested that it be cancelled.", set()),
    ("Order ORD-1001 was cancelled on 3 May.", set()),
    ("Refunds are processed within 5-7 business days.", set()),
    ("Once your order has been cancelled, the refund follows.", set()),
    ("- “Orders that have been cancelled are refunded.” (Refunds) [#abcd1234]", set()),
    ("Your order ORD-1002 has shipped.", set()),
])
def test_which_sentences_claim_a_finished_action(text: str, actions: set[str]) -> None:
    assert {c.action for c in claims_in(text)} == actions


def run(*results: ToolMessage) -> list[Any]:
    return [HumanMessage("earlier turn"), ToolMessage("{}", tool_call_id="old", name="cancel_order"),
            HumanMessage("please cancel ORD-1001"), *results]


def test_only_this_runs_successful_results_back_a_claim() -> None:
    claim = "I have cancelled order ORD-1001."
    assert unsupported_claims(claim, run())  # the cancel of an earlier turn does not count
    failed = ToolMessage("Tool error: not allowed", tool_call_id="c", name="cancel_order", status="error")
    assert unsupported_claims(claim, run(failed))
    done = ToolMessage('{"status": "cancelled"}', tool_call_id="c", name="cancel_order")
    assert not unsupported_claims(claim, run(done))
    # A lookup shows a state ("has been cancelled") but does not back "I have cancelled".
    lookup = ToolMessage('{"order_id": "ORD-1001", "status": "cancelled"}', tool_call_id="g", name="get_order")
    assert not unsupported_claims("Your order has been cancelled.", run(lookup))
    assert unsupported_claims(claim, run(lookup))
    assert unsupported_claims("I have refunded it.", run(done))  # a cancel is no refund


async def output_of(answer: str, messages: list[Any], vault: dict[str, Any] | None = None) -> tuple[str, dict]:
    state = {"messages": [*messages, AIMessage(answer, id="answer")], "pii_vault": vault or {}}
    out = await guards.output_guard(state)
    [verdict] = out["guard_verdicts"]
    return str(out["messages"][-1].content), verdict


async def test_the_output_guard_replaces_a_false_claim_and_keeps_a_true_one() -> None:
    text, verdict = await output_of("I have cancelled your order ORD-1001.", run())
    assert "I have cancelled" not in text and "nothing has been cancelled" in text
    assert verdict["ok"] is False and verdict["honesty"]["unsupported_claims"] == ["cancel"]
    done = ToolMessage('{"status": "cancelled"}', tool_call_id="c", name="cancel_order")
    text, verdict = await output_of("I have cancelled your order ORD-1001.", run(done))
    assert text == "I have cancelled your order ORD-1001." and verdict["honesty"]["ok"] is True


@pytest.mark.parametrize("answer", [
    '```json\n{"name": "cancel_order", "arguments": {"order_id": "ORD-1001", "reason": "wrong size"}}\n```',
    '<tool_call>{"name": "get_order", "arguments": {"order_id": "ORD-1002"}}</tool_call>',
])
async def test_an_answer_that_is_a_tool_call_is_never_delivered(answer: str) -> None:
    text, verdict = await output_of(answer, run())
    assert "{" not in text and "tool_call" not in text and "nothing was changed" in text
    assert verdict["honesty"]["tool_call_text"] is True


async def test_placeholders_are_rendered_for_the_reader_without_raw_values() -> None:
    scanned = await guards.input_guard({"messages": [HumanMessage("my email is mia.lopez@example.org", id="q")]})
    vault = scanned["pii_vault"]
    assert "<EMAIL_1>" in str(scanned["messages"][0].content)
    text, _ = await output_of("We will write to <EMAIL_1>, not <EMAIL_7>.", [*scanned["messages"]], vault)
    assert "<EMAIL_" not in text and "m•••@example.org" in text and "mia.lopez@example.org" not in text
    assert "[redacted]" in text  # a token nobody issued
