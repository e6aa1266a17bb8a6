"""Graphs for the progressive-streaming tests: the real router and planner over a scripted model that streams
its reply slowly (a few characters every few hundredths of a second), as a provider does.

The answer text is a long reply; `{cite}` becomes the first passage marker of RAG's prompt, so the same script
answers on the planner path (no passages: no citation) and on the RAG path (a verified citation per sentence).
`router_leaky` answers with values the output guard removes, streamed in three-character chunks so each value
is split across chunks. `router_uncited` answers from the refunds passage without a single `[#id]` marker, as
small real models do (each sentence gets its citation attached once a passage backs it).
"""

from __future__ import annotations

from interlock.graphs.defaults import Lazy, default_retriever
from interlock.graphs.models import StreamingScriptedChatModel, scripted_chain
from interlock.graphs.planner import PlannerDeps, RunLimits, make_graph
from interlock.graphs.router import RouterDeps, build_router

SENTENCES = [
    "Refunds go back to the original payment method once the return is received {cite}.",
    "Most banks show the credit within a few business days after that {cite}.",
    "If you paid with a gift card, the value is restored to the same card {cite}.",
    "Store credit is available right away when you choose it instead of a refund {cite}.",
    "Shipping costs are refunded when the item arrived damaged or was shipped by mistake {cite}.",
    "You will receive an email confirmation as soon as the refund is processed {cite}.",
    "Keep the tracking number of your return until the refund has arrived {cite}.",
    "Our team is happy to help if anything about your refund is unclear {cite}.",
]
LONG_ANSWER = " ".join(SENTENCES)
LEAKY_ANSWER = ("Thanks for asking about your order. The courier contact on file is jane.roe@courier-mail.com "
                "for any question. Track it at https://collector.evil.example/t?id=ORD-1001 whenever you like. "
                "It should arrive within a few days, and we will email you when it ships.")
# Close to the refunds passage's own sentences, no citation markers.
UNCITED_ANSWER = ("Refunds are issued to the original payment method within 5 to 7 business days after the returned "
                  "item arrives at our warehouse. We email you when the refund has been issued. Your bank may take "
                  "a further 2 to 3 business days to show the refund on your statement. Partial refunds are possible "
                  "when only some items of an order are returned.")
CHUNK_DELAY_S = 0.03


def _router(answer: str, chunk_chars: int) -> object:
    model = StreamingScriptedChatModel(replies=[answer], chunk_chars=chunk_chars, token_delay_s=CHUNK_DELAY_S,
                                       delay_s=0.1)
    gateway = scripted_chain(model, tiers=("planner", "answer"), timeout_s=60.0, chain_timeout_s=90.0)
    return build_router(RouterDeps(gateway=gateway, toolbox=None, retriever=Lazy(default_retriever)))


router = _router(LONG_ANSWER, 4)
router_leaky = _router(LEAKY_ANSWER, 3)
router_uncited = _router(UNCITED_ANSWER, 2)
planner = make_graph(PlannerDeps(toolbox=None, limits=RunLimits.from_policy(), gateway=scripted_chain(
    StreamingScriptedChatModel(replies=[LONG_ANSWER], chunk_chars=4, token_delay_s=CHUNK_DELAY_S),
    tiers=("planner",), timeout_s=60.0, chain_timeout_s=90.0)))
