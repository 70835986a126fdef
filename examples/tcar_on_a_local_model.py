"""TCAR, the LLM-prompted agent router, on the embedded local model: the router model reasons, names the agents
that should answer (or says no agent fits), the chosen agents answer in parallel, the Refining Agent merges what
they said, and an agent onboarded by its description alone is offered to the router at its next decision.

    .venv/bin/python examples/tcar_on_a_local_model.py

Runs offline on SmolLM2-135M-Instruct, served by Orchestra's managed llama.cpp server (`local_model_card()`; the
server starts at the first call, about 3 seconds, and stops when the script ends). The router's answer is decoded
under a JSON schema whose agent field is an enum of the agents in its prompt, so every decision parses. The agents
are deterministic tools: a unit converter and a word counter written below, and the shipped calculator and clock
(`orchestra.agents`); each declines what is not its job. Each run is read back from the trace store and drawn as
`orchestra runs show` draws it. The trace goes to a SQLite file (pass a URL as the first argument to use another
store).

The example shows how the machinery works, not how well a 135M model routes: it often names the first agents of
its list, or a tool for a question no tool serves, its reasoning can be wrong, and its merged answer can leave out
what the agents said. On CLINC150 the same router on
this model puts the right agent in its set for 61% of queries, against 91.25% for TCAR's own model (README,
"Agent routing", the table's last row); a capable router model is a model card away (`TCARRouter(model_id=...)`).
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from orchestra import AgentCard, AgentReply, ChatOptions, Orchestra, Refine, RunTrace
from orchestra.agents import calculator, clock
from orchestra.cli import render_trace
from orchestra.local import LOCAL_MODEL_ID, local_model_card
from orchestra.routers.tcar import TCARRouter, parse_answer

K = 2
"""At most this many agents per decision."""

QUERIES = (
    "Two things: convert 42 km to miles, and count the words in 'the marathon is long'.",  # two tools' jobs
    "Who wrote Pride and Prejudice?",  # no agent here knows literature
)
ONBOARDED_QUERY = "Write 1994 in Roman numerals."
"""Meant for the agent onboarded at runtime."""

_QUOTED = re.compile(r"""['"‘“](.+?)['"’”]""")
_UNITS = {  # unit -> (how it is written, to the other system, the other system's unit)
    "km": (r"km|kilomet(?:re|er)s?", lambda v: v / 1.609344, "miles"),
    "mi": (r"miles?|mi", lambda v: v * 1.609344, "km"),
    "kg": (r"kg|kilograms?", lambda v: v / 0.45359237, "lb"),
    "lb": (r"lbs?|pounds?", lambda v: v * 0.45359237, "kg"),
    "C": (r"°\s?C|degrees? Celsius|Celsius", lambda v: v * 9 / 5 + 32, "°F"),
    "F": (r"°\s?F|degrees? Fahrenheit|Fahrenheit", lambda v: (v - 32) * 5 / 9, "°C"),
}
_QUANTITY = re.compile(
    r"(?P<value>-?\d+(?:\.\d+)?)\s*(?:" + "|".join(f"(?P<{unit}>{spelled})" for unit, (spelled, _, _) in _UNITS.items()) + r")\b",
    re.IGNORECASE,
)
_ROMAN = ((1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"), (50, "L"), (40, "XL"),
          (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I"))
_ROMAN_DIGITS = {letters: amount for amount, letters in _ROMAN if len(letters) == 1}


def convert_units(query: str) -> str | AgentReply:
    """Every distance, weight or temperature in the query, converted between metric and imperial units."""
    lines = []
    for found in _QUANTITY.finditer(query):
        unit = found.lastgroup or ""
        _, convert, other = _UNITS[unit]
        value = float(found.group("value"))
        lines.append(f"{value:g} {found.group(unit)} = {convert(value):.2f} {other}")
    if not lines:
        return AgentReply(answer="Sorry, I only convert distances (km, miles), weights (kg, lb) and temperatures "
                                 "(°C, °F), and the request names none.", declined=True)
    return "; ".join(lines)


def count_words(query: str) -> str | AgentReply:
    """How many words and characters the quoted text of the query has."""
    quoted = _QUOTED.findall(query)
    if not quoted:
        return AgentReply(answer="Sorry, I count the words of a quoted text, and the request quotes none.", declined=True)
    return "; ".join(f"'{text}' has {len(text.split())} words and {len(text)} characters" for text in quoted)


def roman_numerals(query: str) -> str | AgentReply:
    """A whole number (1 to 3999) written in Roman numerals, or a Roman numeral read as a number."""
    number = re.search(r"\b(\d{1,4})\b", query)
    if number and 0 < int(number.group(1)) < 4000:
        value, numeral = int(number.group(1)), ""
        for amount, letters in _ROMAN:
            while value >= amount:
                numeral, value = numeral + letters, value - amount
        return f"{number.group(1)} in Roman numerals is {numeral}"
    numeral_found = re.search(r"\b([MDCLXVI]{2,})\b", query)
    if numeral_found:
        worths = [_ROMAN_DIGITS[letter] for letter in numeral_found.group(1)]
        # a digit written before a bigger one is taken away (IV = 4)
        total = sum(-worth if later > worth else worth for worth, later in zip(worths, [*worths[1:], 0]))
        return f"{numeral_found.group(1)} is {total}"
    return AgentReply(answer="Sorry, I only convert numbers from 1 to 3999 to Roman numerals and back.", declined=True)


def read_back(trace: RunTrace) -> dict[str, Any]:
    """What the trace store holds of one TCAR run: the decision (reasoning, candidates offered, agents chosen or out
    of scope, whether its raw answer parses), each agent's answer, the aggregation and every model call's tokens."""
    decision_step = next(step for step in trace.steps if step.kind == "decision")
    decision = decision_step.response["decision"]
    meta = decision.get("meta") or {}
    candidates = [score["id"] for score in decision.get("scores", [])]
    router_calls = [step for step in trace.children(decision_step.id) if step.kind == "model_call"]
    calls = [step for step in trace.steps if step.kind == "call"]
    aggregate = next((step for step in trace.steps if step.kind == "aggregate"), None)
    refine_calls = [step for step in trace.children(aggregate.id) if step.kind == "model_call"] if aggregate else []
    model_calls = [step for step in trace.steps if step.kind == "model_call"]
    return {
        "query": trace.run.query,
        "status": trace.run.status,
        "reasoning": decision["rationale"] if decision["kind"] == "dispatch" else meta.get("reasoning", decision["rationale"]),
        "out_of_scope": decision.get("out_of_scope", False),
        "candidates": candidates,
        "chosen": [call["agent_id"] for call in decision.get("calls", [])],
        "parsed": parse_answer(meta.get("raw", ""), candidates, K)["ok"],
        "prompt": router_calls[0].request["messages"][-1]["content"] if router_calls else "",
        "answers": {step.agent_id: step.response.get("answer") for step in calls},
        "declined": sorted(step.agent_id or "" for step in calls if step.response.get("declined")),
        "refined": bool(refine_calls),
        "answer": trace.run.answer,
        "router_tokens": sum(step.prompt_tokens + step.completion_tokens for step in router_calls),
        "refine_tokens": sum(step.prompt_tokens + step.completion_tokens for step in refine_calls),
        "model_call_tokens": sum(step.prompt_tokens + step.completion_tokens for step in model_calls),
        "run_tokens": trace.run.prompt_tokens + trace.run.completion_tokens,
        "latency_ms": trace.run.latency_ms,
    }


def main(store_url: str | None = None) -> dict[str, Any]:
    console = Console(width=120, soft_wrap=False)
    with tempfile.TemporaryDirectory() as tmp:
        app = Orchestra(store=store_url or f"sqlite:///{Path(tmp) / 'example.db'}")
        app.registry.ensure_model(local_model_card())  # SmolLM2-135M-Instruct, card id "local-smollm2"
        app.registry.ensure_agent(AgentCard(
            id="units", description="Converts distances, weights and temperatures between metric and imperial units: "
                                    "km and miles, kg and pounds, Celsius and Fahrenheit.",
            backend="function", function="examples.tcar_on_a_local_model:convert_units"), implementation=convert_units)
        app.registry.ensure_agent(AgentCard(
            id="wordcount", description="Counts the words and characters of a quoted text.",
            backend="function", function="examples.tcar_on_a_local_model:count_words"), implementation=count_words)
        app.registry.ensure_agent(calculator.CALCULATOR_CARD, implementation=calculator.answer)
        app.registry.ensure_agent(clock.CLOCK_CARD, implementation=clock.answer)

        # Short bounds keep a decision to a few seconds on 2 cores; the refiner merges what two agents said.
        router = TCARRouter(LOCAL_MODEL_ID, k=K, max_tokens=160, reasoning_chars=160)
        workflow = app.workflow(router, aggregator=Refine(LOCAL_MODEL_ID, options=ChatOptions(temperature=0.0, max_tokens=120)))

        runs = []

        def ask(query: str) -> dict[str, Any]:
            result = workflow.run(query)
            trace = app.store.get_run(result.run_id)
            facts = read_back(trace)
            facts["observations"] = sorted(o.agent_id for o in result.observations)
            facts["result_tokens"] = result.prompt_tokens + result.completion_tokens
            what = "out of scope" if facts["out_of_scope"] else f"chose {facts['chosen']}"
            print(f"{len(runs) + 1}. {query!r}: {what}, offered {facts['candidates']}; {facts['run_tokens']} tokens, "
                  f"{facts['latency_ms'] / 1000:.1f} s")
            console.print(render_trace(trace))  # what `orchestra runs show RUN_ID` draws, from the store
            runs.append(facts)
            return facts

        for query in QUERIES:
            ask(query)

        # Onboard an agent by its card alone (a description, no example queries): the compiled workflow offers it to
        # the router at its next decision, since the prompt lists the registry's agents as they are then.
        app.registry.add_agent(AgentCard(
            id="roman", description="Converts whole numbers to Roman numerals and Roman numerals back to numbers.",
            backend="function", function="examples.tcar_on_a_local_model:roman_numerals"), implementation=roman_numerals)
        print("onboarded 'roman' by its description alone")
        after = ask(ONBOARDED_QUERY)
        picked = "picked it" if "roman" in after["chosen"] else "did not pick it"
        print(f"the router was offered 'roman' ({'- roman:' in after['prompt']} in its prompt) and {picked}")
        return {"runs": runs, "onboarded": "roman"}


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
