"""Serve a routed workflow as an OpenAI-compatible model and use it from the official ``openai`` SDK: the model
listed, a completion with Orchestra's account of its routing, the same streamed, this request's routing fields, an
agent onboarded over HTTP while the server runs, a run read back as a tree, and the refusals a client meets.

    .venv/bin/python examples/openai_client.py

Runs offline, on loopback: `orchestra.server.create_app` under uvicorn in a background thread, with an API key (on
the command line: ``orchestra serve --router embedding --api-key KEY``). The agents are Python functions and the
router embeds cards with the bundled all-MiniLM-L6-v2. The trace goes to a SQLite file (pass a URL as the first
argument to use another store).
"""

from __future__ import annotations

import contextlib
import re
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import uvicorn

from orchestra import AgentCard, Orchestra, PassThrough
from orchestra.embeddings import warm_up_embedder
from orchestra.server import create_app

KEY = "sk-example-only"


def convert_units(query: str) -> str:
    """Kilometres to miles and back, for the first distance found in the query."""
    found = re.search(r"(\d+(?:\.\d+)?)\s*(km|kilomet\w*|mi\w*)", query.lower())
    if not found:
        return "Give me a distance with its unit to convert, e.g. '10 km in miles'."
    value, unit = float(found.group(1)), found.group(2)
    return f"{value:g} miles = {value * 1.609344:.3f} km" if unit.startswith("mi") else f"{value:g} km = {value / 1.609344:.3f} miles"


def count_words(query: str) -> str:
    """How many words and characters the quoted text (or the whole query) has."""
    text = next(iter(re.findall(r"['\"](.+?)['\"]", query)), query)
    return f"{len(text.split())} words, {len(text)} characters"


def spell_backwards(query: str) -> str:
    """The quoted text (or the whole query) backwards: the agent onboarded over HTTP, which the server imports."""
    return next(iter(re.findall(r"['\"](.+?)['\"]", query)), query)[::-1]


@contextlib.contextmanager
def serving(api: object) -> Iterator[str]:
    """``api`` served by uvicorn on a free loopback port in a background thread; yields its base URL."""
    listener = socket.create_server(("127.0.0.1", 0))  # bound before uvicorn starts: no race for the port
    server = uvicorn.Server(uvicorn.Config(api, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join()
        listener.close()


def refusal(request: Callable[[], object]) -> openai.APIStatusError:
    """The error the SDK raises for ``request``, which the server must refuse."""
    try:
        request()
    except openai.APIStatusError as exc:
        return exc
    raise AssertionError("the server answered a request it should have refused")


def main(store_url: str | None = None) -> dict[str, object]:
    # The server imports a function agent onboarded over HTTP by its dotted name: this file is examples.openai_client.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    with tempfile.TemporaryDirectory() as tmp:
        app = Orchestra(store=store_url or f"sqlite:///{Path(tmp) / 'example.db'}")
        for agent_id, function, description, example in [
            ("units", convert_units, "Converts distances between kilometres and miles.", "how many miles is 42 km"),
            ("wordcount", count_words, "Counts the words and characters of a text.", "how many words are in 'to be or not to be'"),
        ]:
            app.registry.add_agent(AgentCard(id=agent_id, description=description, examples=(example,), backend="function",
                                             function=f"examples.openai_client:{function.__name__}"), implementation=function)
        workflow = app.workflow("embedding", aggregator=PassThrough(), k=2, threshold=0.35)
        warm_up_embedder()  # as `orchestra serve` does before it listens: else the first request loads the encoder

        with serving(create_app(app, workflow, name="orchestra", api_key=KEY)) as base_url:
            client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=KEY)
            auth = {"Authorization": f"Bearer {KEY}"}  # what the SDK sends; Orchestra's own routes take it too
            models = [model.id for model in client.models.list()]
            print(f"1. models: {models}")

            def ask(question: str, **options: object) -> openai.types.chat.ChatCompletion:
                return client.chat.completions.create(model="orchestra", messages=[{"role": "user", "content": question}], **options)

            question = "Convert 42 km to miles, then count the words of 'run a marathon'"
            completion = ask(question)
            account = completion.model_extra["orchestra"]  # Orchestra's account of the run, beside OpenAI's fields
            decision = account["decisions"][0]
            scores = {score["id"]: round(score["score"], 3) for score in decision["scores"]}
            answers = {o["agent_id"]: o["answer"] for o in account["observations"]}
            print(f"2. {completion.choices[0].message.content!r}\n   {decision['rationale']}: scores {scores}, "
                  f"answers {answers}, cost ${account['cost_usd']}")

            deltas, events = [], []
            for chunk in ask(question, stream=True):
                if chunk.choices:
                    deltas.append(chunk.choices[0].delta.content or "")
                else:  # a routing event, as it happens
                    events.append(chunk.model_extra["orchestra"]["event"])
            streamed = "".join(deltas)
            print(f"3. streamed: events {events}, the same answer: {streamed == completion.choices[0].message.content}")

            # This request's k (and w, which model routers trade predicted quality against cost with)
            narrowed = ask(question, extra_body={"cost_weight": 0.5, "max_agents": 1})
            narrowed_agents = [o["agent_id"] for o in narrowed.model_extra["orchestra"]["observations"]]
            print(f"4. max_agents=1: {narrowed.choices[0].message.content!r} by {narrowed_agents}")

            unauthorised = refusal(lambda: openai.OpenAI(base_url=f"{base_url}/v1", api_key="sk-wrong").models.list())
            print(f"5. wrong key: {type(unauthorised).__name__} {unauthorised.status_code}: {unauthorised.body['message']}")

            reverse = "Spell 'orchestra' backwards"
            before = ask(reverse).model_extra["orchestra"]
            card = {"id": "reverse", "description": "Spells a word or text backwards, reversing its letters.",
                    "examples": ["spell 'hello' backwards"], "backend": "function", "function": "examples.openai_client:spell_backwards"}
            onboarded = httpx.post(f"{base_url}/orchestra/agents", json=card, headers=auth)  # a function card needs the key
            after = ask(reverse)
            run_id = after.model_extra["orchestra"]["run_id"]
            after_agents = [o["agent_id"] for o in after.model_extra["orchestra"]["observations"]]
            print(f"6. before onboarding: out of scope {before['out_of_scope']}; onboarded: {onboarded.status_code}; "
                  f"after: {after.choices[0].message.content!r} by {after_agents}")

            stored = httpx.get(f"{base_url}/orchestra/runs/{run_id}", headers=auth).json()
            print(f"7. run {run_id[:8]} read back: {stored['run']['status']}, tree {stored['tree']}")

            bad = refusal(lambda: ask(question, n=2))
            print(f"8. n=2: {type(bad).__name__} {bad.status_code}: {bad.body['message']}")
        return {
            "models": models, "answer": completion.choices[0].message.content, "answers": answers, "scores": scores,
            "streamed": streamed, "events": events, "narrowed_agents": narrowed_agents,
            "unauthorised": (type(unauthorised).__name__, unauthorised.status_code),
            "before_out_of_scope": before["out_of_scope"], "before_agents": [o["agent_id"] for o in before["observations"]],
            "onboarded": onboarded.status_code, "after": after.choices[0].message.content, "after_agents": after_agents,
            "tree": stored["tree"], "bad_request": (type(bad).__name__, bad.status_code, bad.body["message"]),
        }


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
