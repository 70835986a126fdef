"""Routing inside a LangGraph application you already have: an Orchestra workflow as one node of your own graph.

    .venv/bin/python examples/inside_a_langgraph_graph.py

Your graph (`triage` tidies the request, `orchestra` routes it to a team of Python tools with the `embedding`
router, `format` writes the reply) is built and compiled with LangGraph's own API; the `orchestra` node calls
`workflow.run` (`workflow.arun` in the async graph). What you get without any glue:

- the routed run is stored like any other, and read back by its id (`app.store.get_run(id).tree()`,
  `.decisions()`);
- your graph's `stream(..., stream_mode=["custom", "updates"], subgraphs=True)` (or `astream`) carries the run's
  decision, call and aggregate events as they happen, under the `orchestra` node's namespace (model agents' token
  events come the same way; the tools here write no tokens);
- a LangChain callback handler given to your graph (a LangSmith or Langfuse tracer in real life; here a small one
  that records chain starts) sees Orchestra's router, call and aggregate nodes, with `orchestra_run_id` in their
  metadata beside your own tags and metadata;
- your graph's `recursion_limit`, `max_concurrency` and checkpointer leave the run working: its recursion limit and
  concurrency are its own (from `Budget.max_rounds` and `Budget.max_parallel_calls`, all of a dispatch's calls at
  once when that is unset), and it keeps no checkpoint in your checkpointer (the
  trace store is its record: a node that runs again, resumed after an `interrupt`, runs the workflow anew). Handed
  to `workflow.run` directly, those keys are refused, naming what sets them.

Runs offline: the agents are Python functions and the router embeds the cards with the bundled all-MiniLM-L6-v2.
The trace goes to a SQLite file (pass a URL as the first argument to use another store).
"""

from __future__ import annotations

import asyncio
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, TypedDict

from langchain_core.callbacks import BaseCallbackHandler
from langgraph.checkpoint.memory import MemorySaver
from langgraph.graph import END, START, StateGraph

from orchestra import AgentCard, ConfigurationError, Orchestra, Workflow


def convert_units(query: str) -> str:
    """Kilometres to miles and back, for a distance found in the query."""
    found = re.search(r"(\d+(?:\.\d+)?)\s*(km|kilomet\w*|mi\w*)", query.lower())
    if not found:
        return "Give me a distance with its unit to convert, e.g. '10 km in miles'."
    value, unit = float(found.group(1)), found.group(2)
    if unit.startswith("mi"):
        return f"{value:g} miles = {value * 1.609344:.3f} km"
    return f"{value:g} km = {value / 1.609344:.3f} miles"


def count_words(query: str) -> str:
    """How many words and characters the quoted text (or the whole query) has."""
    quoted = re.findall(r"['\"](.+?)['\"]", query)
    text = quoted[0] if quoted else query
    return f"{len(text.split())} words, {len(text)} characters"


def spell_backwards(query: str) -> str:
    """The quoted text (or the whole query) backwards."""
    quoted = re.findall(r"['\"](.+?)['\"]", query)
    return (quoted[0] if quoted else query)[::-1]


class ChainStartRecorder(BaseCallbackHandler):
    """A LangChain callback handler that keeps what a tracer is told when each chain (graph, node) starts."""

    def __init__(self) -> None:
        self.starts: list[dict[str, Any]] = []

    def on_chain_start(self, serialized: Any, inputs: Any, *, tags: list[str] | None = None,
                       metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """Record the chain's name, tags and metadata."""
        self.starts.append({"name": kwargs.get("name") or "", "tags": list(tags or []), "metadata": dict(metadata or {})})


class Request(TypedDict, total=False):
    """The state of the user's own graph."""

    request: str
    query: str
    answer: str
    agents: list[str]
    run_id: str
    reply: str


def triage(state: Request) -> Request:
    """Normalise the request: no greeting, single spaces, one question mark."""
    query = re.sub(r"^\s*(hi|hey|hello)\b[^,:]*[,:]\s*", "", state["request"], flags=re.IGNORECASE)
    query = re.sub(r"\?+", "?", " ".join(query.split()))
    return {"query": query}


def format_reply(state: Request) -> Request:
    """The reply the application shows, naming who answered and the run to look up."""
    return {"reply": f"{state['answer']}  [{', '.join(state['agents'])}; run {state['run_id'][:8]}]"}


def build_graph(workflow: Workflow, *, asynchronous: bool = False, checkpointer: Any = None) -> Any:
    """The user's graph, triage -> orchestra -> format, compiled; its `orchestra` node runs ``workflow``."""

    def route(state: Request) -> Request:
        result = workflow.run(state["query"])
        return {"answer": result.answer or "", "agents": [o.agent_id for o in result.observations], "run_id": result.run_id}

    async def aroute(state: Request) -> Request:
        result = await workflow.arun(state["query"])
        return {"answer": result.answer or "", "agents": [o.agent_id for o in result.observations], "run_id": result.run_id}

    builder = StateGraph(Request)
    builder.add_node("triage", triage)
    builder.add_node("orchestra", aroute if asynchronous else route)
    builder.add_node("format", format_reply)
    builder.add_edge(START, "triage")
    builder.add_edge("triage", "orchestra")
    builder.add_edge("orchestra", "format")
    builder.add_edge("format", END)
    return builder.compile(checkpointer=checkpointer)


def describe_chunk(namespace: tuple[str, ...], mode: str, chunk: Any) -> dict[str, Any]:
    """One chunk of the user's graph's stream, as the example prints and returns it: its namespace (``()`` for the
    user's graph, ``("orchestra:<task id>",)`` inside the node's run), its mode, and what it says (for custom chunks,
    Orchestra's `RunEvent`: its kind and run id)."""
    described: dict[str, Any] = {"namespace": namespace, "mode": mode}
    if mode == "updates":
        return described | {"what": "update of " + ", ".join(chunk), "nodes": list(chunk), "update": chunk}
    data = chunk.data
    if chunk.kind == "decision":
        what = "decision: " + ", ".join(call["agent_id"] for call in data["decision"].get("calls", []))
    elif chunk.kind == "call":
        what = f"call: {data['agent_id']} -> {data['answer']!r}"
    elif chunk.kind in ("aggregate", "token"):
        what = f"{chunk.kind}: {data.get('answer', data.get('delta'))!r}"
    else:
        what = chunk.kind
    return described | {"what": what, "kind": chunk.kind, "run_id": chunk.run_id}


def show(described: dict[str, Any]) -> None:
    """Print a described chunk on one line, the run's namespace shortened."""
    where = f"{described['namespace'][0][:18]}…" if described["namespace"] else "your graph"
    print(f"   {where:<20} {described['mode']:<7} {described['what']}")


def main(store_url: str | None = None) -> dict[str, object]:
    """Run the user's graph with invoke, stream and astream, a tracer, and LangGraph config of its own."""
    with tempfile.TemporaryDirectory() as tmp:
        app = Orchestra(store=store_url or f"sqlite:///{Path(tmp) / 'example.db'}")
        app.registry.ensure_agent(
            AgentCard(id="units", description="Converts distances between kilometres and miles.",
                      examples=("how many miles is 42 km", "convert 5 miles to kilometres"), backend="function",
                      function="examples.inside_a_langgraph_graph:convert_units"),
            implementation=convert_units,
        )
        app.registry.ensure_agent(
            AgentCard(id="wordcount", description="Counts the words and characters of a text.",
                      examples=("how many words are in 'to be or not to be'",), backend="function",
                      function="examples.inside_a_langgraph_graph:count_words"),
            implementation=count_words,
        )
        app.registry.ensure_agent(
            AgentCard(id="reverse", description="Spells a word or text backwards, reversing its letters.",
                      examples=("spell 'hello' backwards", "reverse the letters of 'banana'"), backend="function",
                      function="examples.inside_a_langgraph_graph:spell_backwards"),
            implementation=spell_backwards,
        )
        workflow = app.workflow("embedding", k=2, threshold=0.35)
        graph = build_graph(workflow)

        # 1. invoke, with a tracer, tags and metadata given to the user's graph (not to workflow.run)
        tracer = ChainStartRecorder()
        out = graph.invoke({"request": "Hey bot,   how many miles is a 42 km marathon??"},
                           {"callbacks": [tracer], "tags": ["my-app"], "metadata": {"user": "ada"}})
        print(f"1. invoke: {out['query']!r} -> {out['reply']!r}")
        inner = [start for start in tracer.starts if "orchestra_run_id" in start["metadata"]]
        outer_nodes = [start["name"] for start in tracer.starts
                       if "orchestra_run_id" not in start["metadata"] and start["metadata"].get("langgraph_node") == start["name"]]
        inner_nodes = sorted({start["name"] for start in inner if start["metadata"].get("langgraph_node") == start["name"]})
        run_ids = {start["metadata"]["orchestra_run_id"] for start in inner}
        print(f"   the tracer saw your nodes {outer_nodes} and Orchestra's {inner_nodes}, all {len(inner)} of its chain starts "
              f"with orchestra_run_id {'/'.join(run_ids)} (the run's id: {run_ids == {out['run_id']}}), "
              f"tag 'my-app' on all: {all('my-app' in s['tags'] for s in inner)}, user 'ada' on all: "
              f"{all(s['metadata'].get('user') == 'ada' for s in inner)}")
        stored = app.store.get_run(next(iter(run_ids)))
        decision = stored.decisions()[0]
        print(f"   stored run {stored.run.id[:8]}: status {stored.run.status}, query {stored.run.query!r}; "
              f"tree {[(node['kind'], node.get('calls') or node.get('agent') or node.get('answer')) for node in _flat(stored.tree())]}")
        print(f"   its decision: {decision.rationale}; scores "
              + ", ".join(f"{score.id} {score.score:.2f}" for score in sorted(decision.scores, key=lambda s: -s.score)))

        # 2. stream: the run's events arrive under the orchestra node's namespace while the graph runs
        print("2. stream(stream_mode=['custom', 'updates'], subgraphs=True):")
        streamed = []
        for namespace, mode, chunk in graph.stream({"request": "how many words are in 'to be or not to be'? and 10 km in miles?"},
                                                   stream_mode=["custom", "updates"], subgraphs=True):
            streamed.append(describe_chunk(namespace, mode, chunk))
            show(streamed[-1])

        # 3. the same graph with an async node calling workflow.arun, read with astream
        async def read_async() -> list[dict[str, Any]]:
            agraph = build_graph(workflow, asynchronous=True)
            return [describe_chunk(namespace, mode, chunk) async for namespace, mode, chunk in agraph.astream(
                {"request": "Hello there: spell 'orchestra' backwards"}, stream_mode=["custom", "updates"], subgraphs=True)]

        astreamed = asyncio.run(read_async())
        print("3. astream, the node awaiting workflow.arun:")
        for described in astreamed:
            show(described)

        # 4. LangGraph config of the user's graph: the inner run keeps its own recursion limit and no checkpoint
        saver = MemorySaver()
        remembering = build_graph(workflow, checkpointer=saver)
        thread = {"configurable": {"thread_id": "ada-1"}, "recursion_limit": 4, "max_concurrency": 1}
        turns = [remembering.invoke({"request": request}, thread)
                 for request in ("how many miles is 42 km?", "spell 'langgraph' backwards")]
        turn_status = [app.store.get_run(turn["run_id"]).run.status for turn in turns]
        turn_steps = [[step.kind for step in app.store.get_run(turn["run_id"]).steps] for turn in turns]
        checkpoint_namespaces = sorted({saved.config["configurable"]["checkpoint_ns"] for saved in saver.list(thread)})
        print(f"4. recursion_limit=4, max_concurrency=1, MemorySaver thread 'ada-1': replies {[t['reply'] for t in turns]}, "
              f"runs {turn_status} with steps {turn_steps}; checkpoint namespaces {checkpoint_namespaces} "
              f"(your graph's only); the thread remembers {remembering.get_state(thread).values['query']!r}")
        refused = {}
        for key, value in (("recursion_limit", 4), ("max_concurrency", 1), ("configurable", {"thread_id": "ada-1"})):
            try:
                workflow.run("how many miles is 42 km?", config={key: value})
            except ConfigurationError as exc:
                refused[key] = str(exc)
                print(f"   workflow.run(config={{{key!r}: ...}}) refused: {exc}")
        return {
            "query": out["query"], "reply": out["reply"], "answer": out["answer"], "agents": out["agents"],
            "outer_nodes": outer_nodes, "inner_nodes": inner_nodes, "tracer_run_ids": sorted(run_ids), "run_id": out["run_id"],
            "inner_tags_ok": all("my-app" in s["tags"] for s in inner), "inner_metadata_ok": all(s["metadata"].get("user") == "ada" for s in inner),
            "stored_status": stored.run.status, "stored_query": stored.run.query, "tree": stored.tree(),
            "decision_calls": [call.agent_id for call in decision.calls], "decision_scores": {s.id: s.score for s in decision.scores},
            "streamed": streamed, "astreamed": astreamed,
            "turn_replies": [turn["reply"] for turn in turns], "turn_status": turn_status, "turn_steps": turn_steps,
            "checkpoint_namespaces": checkpoint_namespaces, "refused": refused,
        }


def _flat(tree: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A run's tree, depth first."""
    return [node for top in tree for node in (top, *_flat(top.get("children", [])))]


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
