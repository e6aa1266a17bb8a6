"""Stream-mode translation: the API's stream modes (`messages-tuple`, legacy `messages`, `events`, subgraph
namespaces) from LangGraph's own stream, published to the run's SSE log."""

from __future__ import annotations

from typing import Any

from interlock.server.engine.job import RunOptions
from interlock.server.state import checkpoint_of, interrupt_out
from interlock.server.streams import RunStream
from langchain_core.messages import BaseMessageChunk, message_chunk_to_message


async def stream_graph(
    graph: Any,
    graph_input: Any,
    config: dict[str, Any],
    options: RunOptions,
    stream: RunStream,
    run_id: str,
    *,
    continuing: bool = False,
) -> None:
    """`continuing`: the run resumes from its own last checkpoint after a crash or a lost connection. LangGraph
    then first re-emits that checkpoint's values, which the run's stream already carries; they are skipped so a
    rejoining client sees each state once."""
    requested: list[str] = options.stream_mode or ["values"]
    subgraphs = options.subgraphs
    tuple_messages = "messages-tuple" in requested
    legacy_messages = "messages" in requested
    # An answer is written inside a subgraph (RAG, the planner): its tokens must reach the messages modes even
    # when the client did not ask for subgraph events. LangGraph streams subgraph tokens only with subgraphs on,
    # so the graph always runs with them on for the messages modes; other modes keep the client's choice.
    run_subgraphs = subgraphs or tuple_messages or legacy_messages
    internal = {m for m in requested if m not in ("events", "messages-tuple")}
    if "messages-tuple" in requested:
        internal.add("messages")
    internal.add("updates")  # interrupts surface through updates
    only_interrupt_updates = "updates" not in requested
    accumulated: dict[str, BaseMessageChunk] = {}
    skip_restored_values = continuing

    def emit(ns: tuple[str, ...], mode: str, chunk: Any) -> None:
        nonlocal skip_restored_values
        if skip_restored_values and not ns:
            skip_restored_values = False
            if mode == "values":
                return
        suffix = ("|" + "|".join(ns)) if (ns and subgraphs) else ""
        if ns and not subgraphs and mode != "messages":
            return  # a subgraph's own state and updates: only for clients that asked for subgraphs
        if mode == "messages":
            if tuple_messages:
                stream.publish("messages" + suffix, chunk)
            if legacy_messages:
                message, meta = chunk
                key = message.id or ""
                if key in accumulated and isinstance(message, BaseMessageChunk):
                    accumulated[key] = accumulated[key] + message  # type: ignore[assignment]
                else:
                    accumulated[key] = message
                    stream.publish("messages/metadata", {key: {"metadata": meta}})
                if isinstance(message, BaseMessageChunk):
                    stream.publish("messages/partial", [message_chunk_to_message(accumulated[key])])
                else:
                    stream.publish("messages/complete", [message])
            return
        if mode == "debug" and isinstance(chunk, dict) and chunk.get("type") == "checkpoint":
            payload = chunk.get("payload") or {}
            chunk = {
                **chunk,
                "payload": {
                    **payload,
                    "checkpoint": checkpoint_of(payload.get("config")),
                    "parent_checkpoint": checkpoint_of(payload.get("parent_config")),
                },
            }
        if mode in requested:
            stream.publish(mode + suffix, chunk)
        elif mode == "updates" and only_interrupt_updates and isinstance(chunk, dict) and chunk.get("__interrupt__"):
            stream.publish("values" + suffix, {"__interrupt__": [interrupt_out(i) for i in chunk["__interrupt__"]]})

    kwargs: dict[str, Any] = {
        "stream_mode": sorted(internal),
        "subgraphs": run_subgraphs,
        "interrupt_before": options.interrupt_before,
        "interrupt_after": options.interrupt_after,
    }
    if options.context is not None:
        kwargs["context"] = options.context
    if options.durability:
        kwargs["durability"] = options.durability
    if "events" in requested:
        async for event in graph.astream_events(graph_input, config, version="v2", **kwargs):
            tags = event.get("tags") or ()
            if "nostream" in tags or "langsmith:hidden" in tags:
                continue  # internal model calls: their raw text is not for clients in any stream mode
            if event.get("event") == "on_chain_stream" and event.get("run_id") == run_id:
                data = event["data"]["chunk"]
                if run_subgraphs:
                    ns, mode, chunk = data
                else:
                    (mode, chunk), ns = data, ()
                emit(tuple(ns), mode, chunk)
            else:
                stream.publish("events", event)
        return
    async for item in graph.astream(graph_input, config, **kwargs):
        if run_subgraphs:
            ns, mode, chunk = item
        else:
            (mode, chunk), ns = item, ()
        emit(tuple(ns), mode, chunk)
