"""The Streamlit UI, page by page, with Streamlit's AppTest: a temporary SQLite store, no profile, function agents
written into a module under tmp_path, the ``all``/``fixed`` routers and the pass-through aggregator (no model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import networkx as nx
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from orchestra import AgentCard, ModelCard, Orchestra, PassThrough, RetryPolicy  # noqa: E402

TIMEOUT = 60
APP = Path(__file__).resolve().parents[1] / "ui" / "app.py"

AGENTS_MODULE = '''
def shout(query):
    return query.upper() + "!"


def echo(query):
    return "echo: " + query


def haiku(query):
    return "it costs $5 and then $10 later\\nan old pond\\n\\n- **one**\\n- two"


def overpriced(query):
    raise ValueError("it costs $5 and then $10")
'''


# -- pages as AppTest scripts (each imports its page and draws it) ------------------------------------------------


def chat_page() -> None:
    from orchestra.ui import chat

    chat.render()


def registry_page() -> None:
    from orchestra.ui import registry_page

    registry_page.render()


def runs_page() -> None:
    from orchestra.ui import runs

    runs.render()


def routers_page() -> None:
    from orchestra.ui import routers_page

    routers_page.render()


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite store the UI opens through ``$ORCHESTRA_DB_URL``, and an importable agents module."""
    (tmp_path / "ui_test_agents.py").write_text(AGENTS_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    url = f"sqlite:///{tmp_path / 'ui.db'}"
    monkeypatch.setenv("ORCHESTRA_DB_URL", url)
    monkeypatch.setenv("ORCHESTRA_UI_PROFILE", "none")
    monkeypatch.delenv("ORCHESTRA_UI_ROUTER", raising=False)
    monkeypatch.delenv("ORCHESTRA_UI_AGGREGATOR", raising=False)
    return url


def _add_echo(url: str) -> Orchestra:
    app = Orchestra(store=url)
    app.registry.add_agent(AgentCard(id="echo", description="Repeats the request.", backend="function",
                                     function="ui_test_agents:echo"))
    return app


def _start(script: Any) -> AppTest:
    at = AppTest.from_function(script, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    return at


def _choose(at: AppTest, router: str = "all", aggregator: str = "pass-through") -> None:
    at.selectbox(key="chat_router").set_value(router)
    at.selectbox(key="chat_aggregator").set_value(aggregator)
    at.run()


def _say(at: AppTest, text: str) -> None:
    at.chat_input[0].set_value(text).run()
    assert not at.exception, at.exception


def _assistant_texts(at: AppTest) -> list[str]:
    return [" ".join(m.value for m in message.markdown) for message in at.chat_message if message.name == "assistant"]


def _children(node: Any) -> list[Any]:
    children = getattr(node, "children", None)
    return list(children.values()) if isinstance(children, dict) else []


def _find_block(node: Any, key: str) -> Any:
    """The form (a block) whose children include the widget with ``key``."""
    for child in _children(node):
        if any(getattr(grandchild, "key", None) == key for grandchild in _children(child)):
            return child
        found = _find_block(child, key)
        if found is not None:
            return found
    return None


def _error_after(at: AppTest, key: str) -> str | None:
    """The error drawn right under the widget ``key`` (the field's own message), if any."""
    block = _find_block(at.main, key)
    assert block is not None, f"no widget {key!r}"
    items = _children(block)
    index = next(i for i, item in enumerate(items) if getattr(item, "key", None) == key)
    following = items[index + 1] if index + 1 < len(items) else None
    return following.value if type(following).__name__ == "Error" else None


# -- chat ---------------------------------------------------------------------------------------------------------


def test_chat_turn_shows_the_answer_and_the_routing_panel(store: str) -> None:
    _add_echo(store)
    at = _start(chat_page)
    _choose(at)
    _say(at, "hello")

    assert any("echo: hello" in text for text in _assistant_texts(at))
    panel = next(e for e in at.expander if e.label.startswith("Routing: all → echo"))
    panel_text = " ".join(m.value for m in panel.markdown)
    assert "**Router** `all`" in panel_text and "every agent (1)" in panel_text  # router and its rationale
    assert "`echo`" in panel_text and "**Answer passed through** (`pass-through`): echo: hello" in panel_text
    candidates = panel.dataframe[0].value
    assert list(candidates["candidate"]) == ["echo"] and bool(candidates["chosen"].iloc[0])
    steps = panel.dataframe[1].value
    assert list(steps["step"]) == ["decision", "call", "aggregate"] and "latency ms" in steps.columns
    assert list(steps.columns)[-1] == "what" and list(steps["cost"]) == ["—", "—", "—"]  # a function agent has no price
    dot = panel.get("graphviz_chart")[0].proto.spec
    assert '"query"' in dot and "echo" in dot and '"answer"' in dot

    _say(at, "again")  # the second turn continues the same session, so routers and agents see the history
    app = Orchestra(store=store)
    runs = app.store.list_runs()
    assert len(runs) == 2 and runs[0].session_id == runs[1].session_id
    assert runs[0].meta["history"][0] == {"role": "user", "content": "hello"}


def test_the_budget_set_in_the_sidebar_is_the_runs_and_the_panel_shows_it(store: str) -> None:
    _add_echo(store)
    at = _start(chat_page)
    _choose(at)
    at.number_input(key="chat_max_tokens").set_value(1000).run()
    _say(at, "hello")
    app = Orchestra(store=store)
    (run,) = app.store.list_runs()
    assert run.status == "ok" and run.meta["budget"]["max_tokens"] == 1000 and run.meta["budget"]["max_cost_usd"] is None
    panel = next(e for e in at.expander if e.label.startswith("Routing: all → echo"))
    assert "Budget: max_rounds=4, max_tokens=1000, max_calls=32" in [c.value for c in panel.caption]

    at.number_input(key="chat_max_tokens").set_value(0).run()  # 0: no limit, and the workflow is rebuilt with it
    at.number_input(key="chat_max_cost").set_value(0.5).run()
    _say(at, "again")
    newest = app.store.list_runs()[0]
    assert newest.meta["budget"]["max_tokens"] is None and newest.meta["budget"]["max_cost_usd"] == 0.5


def test_dollars_and_line_breaks_show_as_typed(store: str) -> None:
    """`$5 and then $10` was drawn as LaTeX math and single line breaks were lost, in the chat and on the Runs page."""
    from orchestra.ui.common import as_typed

    assert as_typed("it costs $5 and then $10 later") == "it costs \\$5 and then \\$10 later"
    assert as_typed("an old pond\na frog jumps in\nsplash") == "an old pond  \na frog jumps in  \nsplash"
    assert as_typed("- a\n- **b**\n\npara") == "- a  \n- **b**\n\npara"  # the model's Markdown is kept
    assert as_typed("`$x` and \\$y\n```\nz = $1\n```") == "`$x` and \\$y\n```\nz = $1\n```"  # code verbatim

    app = Orchestra(store=store)
    app.registry.add_agent(AgentCard(id="poet", description="Writes.", backend="function", function="ui_test_agents:haiku"))
    at = _start(chat_page)
    _choose(at)
    _say(at, "what does $5 buy?")
    user = next(m for m in at.chat_message if m.name == "user")
    assert user.markdown[0].value == "what does \\$5 buy?"
    assert "it costs \\$5 and then \\$10 later  \nan old pond\n\n- **one**" in _assistant_texts(at)[0]
    panel = " ".join(m.value for m in at.expander[0].markdown)
    assert "\\$10 later  \n  an old pond" in panel  # the agent's answer, lines kept inside its list item

    page = _start(runs_page)
    texts = [m.value for m in page.markdown]
    assert any(t.startswith("**Answer:** it costs \\$5") and "later  \nan old pond" in t for t in texts)
    tree = next(t for t in texts if t.startswith("- query:"))
    assert "what does \\$5 buy?" in tree and "\\$10 later" in tree and " $" not in tree


def test_a_dead_model_is_reported_in_words(store: str) -> None:
    app = Orchestra(store=store)
    # a loopback port nobody listens on: the connection is refused at once
    app.registry.add_model(ModelCard(id="gone", base_url="http://127.0.0.1:9/v1", description="A model whose server is down."))
    app.registry.add_agent(AgentCard(id="writer", description="Writes text.", backend="model", model="gone"))
    app.registry.add_agent(AgentCard(id="echo", description="Repeats.", backend="function", function="ui_test_agents:echo"))
    at = _start(chat_page)
    _choose(at, "fixed")
    at.multiselect(key="chat_fixed").set_value(["writer"]).run()
    _say(at, "write a poem")
    answer = next(m for m in at.chat_message if m.name == "assistant")
    assert answer.error[0].value.startswith("The model could not be reached"), answer.error[0].value
    assert "'gone' at http://127.0.0.1:9/v1" in answer.error[0].value  # names the model at fault
    assert not any("Traceback" in e.value for e in at.error)
    assert Orchestra(store=store).store.list_runs()[0].status == "error"  # the failed run is recorded


def stored_run_panel() -> None:
    import os

    from orchestra import Orchestra
    from orchestra.ui.panel import render_routing_panel

    app = Orchestra(store=os.environ["ORCHESTRA_DB_URL"])
    render_routing_panel(app.store.get_run(os.environ["UI_TEST_RUN"]), key="panel")


def test_a_refiner_that_failed_is_said_beside_the_answers_it_could_not_merge(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestra import Call, Dispatch, ModelOutputError, Refine
    from orchestra.testing import FunctionRouter, ScriptedModel, ScriptedModels

    failing = ScriptedModels([ScriptedModel("refiner", [ModelOutputError("model 'refiner' streamed nothing", model_id="refiner")])])
    app = Orchestra(store=store, model_factory=failing)
    app.registry.add_model(ModelCard(id="refiner", description="Merges answers."))
    for agent in ("echo", "shout"):
        app.registry.add_agent(AgentCard(id=agent, description="Repeats.", backend="function", function=f"ui_test_agents:{agent}"))
    both = FunctionRouter(lambda s: Dispatch(calls=tuple(Call(agent_id=a.id, query=s.query) for a in s.agents)))
    result = app.workflow(both, aggregator=Refine("refiner")).run("hello")
    assert result.status == "ok"
    monkeypatch.setenv("UI_TEST_RUN", result.run_id)
    at = _start(stored_run_panel)
    assert any("could not merge the answers" in w.value and "streamed nothing" in w.value for w in at.warning)


def test_a_model_routers_chosen_model_is_marked_chosen(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model router's candidates are models: the call names the agent and, in model_id, the model chosen. The
    panel marked that model "not chosen" and added a row for the agent with no score."""
    from orchestra import CandidateScore, Call, Dispatch
    from orchestra.testing import FunctionRouter, ScriptedModel, ScriptedModels
    from orchestra.ui.graph import trace_graph

    app = Orchestra(store=store, model_factory=ScriptedModels([ScriptedModel("small", ["four"]), ScriptedModel("big", ["4"])]))
    for model in ("small", "big"):
        app.registry.add_model(ModelCard(id=model, description=f"The {model} model."))
    app.registry.add_agent(AgentCard(id="chat", description="Answers.", backend="model", model="small"))
    router = FunctionRouter(lambda s: Dispatch(
        calls=(Call(agent_id="chat", query=s.query, model_id="big"),),
        scores=(CandidateScore(id="big", score=0.9), CandidateScore(id="small", score=0.4)),
    ))
    result = app.workflow(router, aggregator=PassThrough()).run("2+2?")
    assert result.status == "ok", result.error
    monkeypatch.setenv("UI_TEST_RUN", result.run_id)
    at = _start(stored_run_panel)
    candidates = at.dataframe[0].value
    assert list(candidates["candidate"]) == ["big", "small"] and list(candidates["chosen"]) == [True, False]
    graph = trace_graph(app.store.get_run(result.run_id))
    unchosen = [data["label"].split("\n")[0] for _, data in graph.nodes(data=True) if data["kind"] == "candidate"]
    assert unchosen == ["small"]


def test_the_panel_shows_the_sub_query_each_agent_was_asked(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A router that splits the query (the set router's segments, Router-R1's searches) gives each agent its own
    sub-query: the panel showed the answers without what they answer."""
    from orchestra import Call, Dispatch
    from orchestra.testing import FunctionRouter

    app = _add_echo(store)
    app.registry.add_agent(AgentCard(id="shouter", description="Shouts.", backend="function", function="ui_test_agents:shout"))
    split = FunctionRouter(lambda s: Dispatch(calls=(Call(agent_id="echo", query="book a flight to Oslo"),
                                                     Call(agent_id="shouter", query=s.query))))
    result = app.workflow(split, aggregator=PassThrough()).run("book a flight to Oslo and  a hotel")
    monkeypatch.setenv("UI_TEST_RUN", result.run_id)
    at = _start(stored_run_panel)
    lines = [m.value for m in at.markdown if m.value.startswith("- `")]
    assert lines[0].startswith("- `echo`, asked “book a flight to Oslo” (") and lines[0].endswith(": echo: book a flight to Oslo")
    assert lines[1].startswith("- `shouter` (")  # asked the whole query: nothing to add


def test_the_panel_says_how_the_answers_were_fused(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fused run showed "Refined answer" whatever the aggregator did: a vote, or one answer passed through."""
    from orchestra import Fuse, Refine

    app = _add_echo(store)
    app.registry.add_agent(AgentCard(id="echo2", description="Repeats.", backend="function", function="ui_test_agents:echo"))
    app.registry.add_agent(AgentCard(id="shouter", description="Shouts.", backend="function", function="ui_test_agents:shout"))
    # a one-word answer is voted on by its text (a yes-or-no question would vote on the yes or no each states)
    voted = app.workflow("all", aggregator=Fuse(None)).run("Answer with one word: is it raining?")
    monkeypatch.setenv("UI_TEST_RUN", voted.run_id)
    at = _start(stored_run_panel)
    texts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    assert any(t.startswith("**Voted answer** (`fuse`): echo: Answer with one word") for t in texts), texts
    how = next(c.value for c in at.caption if c.value.startswith("fusion: weighted-vote"))
    assert "votes: “echo answer with one word is it raining” 2, “answer with one word is it raining” 1" in how
    assert not any("Refined answer" in t for t in texts)

    single = app.workflow("fixed", agent_ids=["echo"], aggregator=Refine("nobody")).run("hello")  # one answer: no model
    monkeypatch.setenv("UI_TEST_RUN", single.run_id)
    at = _start(stored_run_panel)
    assert any(m.value.startswith("**Answer passed through** (`refine`): echo: hello") for m in at.markdown)
    assert any("only `echo` answered" in c.value for c in at.caption)


def test_an_answer_cut_off_at_the_token_limit_is_flagged(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model answer that stopped at max_tokens (finish_reason "length") read as a complete answer everywhere."""
    from orchestra.testing import ScriptedModel, ScriptedModels
    from orchestra.ui.graph import trace_graph
    from orchestra.ui.runs import tree_markdown

    class Truncating(ScriptedModel):
        def _result(self, messages: Any, text: str) -> Any:
            return super()._result(messages, text).model_copy(update={"finish_reason": "length"})

    app = Orchestra(store=store, model_factory=ScriptedModels([Truncating("small", ["The three reasons are: first,"])]))
    app.registry.add_model(ModelCard(id="small", description="A small model."))
    app.registry.add_agent(AgentCard(id="writer", description="Writes.", backend="model", model="small"))
    result = app.workflow("all", aggregator=PassThrough()).run("give three reasons")
    monkeypatch.setenv("UI_TEST_RUN", result.run_id)
    at = _start(stored_run_panel)
    assert any(w.value.startswith("`writer`'s answer was cut off at the token limit (`small`") for w in at.warning)
    trace = app.store.get_run(result.run_id)
    assert "cut off at the token limit" in tree_markdown(trace)
    assert any("cut off at the token limit" in data["label"] for _, data in trace_graph(trace).nodes(data=True))


def _failed_priced_run(store: str) -> tuple[Orchestra, str]:
    """A run whose only agent failed: its model refused after being billed 10+5 tokens, $0.002, in 50 ms."""
    from orchestra import ModelOutputError
    from orchestra.testing import ScriptedModel, ScriptedModels

    refused = ModelOutputError("model 'small' refused", model_id="small", prompt_tokens=10, completion_tokens=5, cost_usd=0.002)
    models = ScriptedModels([ScriptedModel("small", [refused], latency_s=0.05)])
    app = Orchestra(store=store, model_factory=models, retry=RetryPolicy(max_attempts=1))
    app.registry.add_model(ModelCard(id="small", description="Small.", input_price_per_mtok=1.0, output_price_per_mtok=2.0))
    app.registry.add_agent(AgentCard(id="writer", description="Writes.", backend="model", model="small"))
    app.registry.add_agent(AgentCard(id="echo", description="Repeats.", backend="function", function="ui_test_agents:echo"))
    result = app.workflow("all", aggregator=PassThrough()).run("hi")
    return app, result.run_id


def test_the_panel_lists_failed_agents_apart_with_what_they_cost(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """"Agents that answered" listed the agents that failed too; a failed call that was billed showed cost "—"."""
    from orchestra.ui.panel import step_rows

    app, run_id = _failed_priced_run(store)
    monkeypatch.setenv("UI_TEST_RUN", run_id)
    at = _start(stored_run_panel)
    texts = [m.value for m in at.markdown]
    answered, failed = texts.index("**Agents that answered**"), texts.index("**Agents that failed**")
    assert texts[answered + 1].startswith("- `echo` (") and texts[failed + 1].startswith("- `writer` (")
    assert answered + 2 == failed  # echo alone between the two headings
    trace = app.store.get_run(run_id)
    billed = [s.model_copy(update={"cost_usd": 0.002}) if s.kind == "call" and s.error else s for s in trace.steps]
    rows = step_rows(trace.model_copy(update={"steps": billed}))
    assert [row["cost"] for row in rows if row["step"] == "call" and row["agent"] == "writer"] == ["$0.002000"]


def test_an_error_shows_as_typed_too(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Error messages skipped as_typed: an agent's "$5 and then $10" was drawn as LaTeX in the panel."""
    app = _add_echo(store)
    app.registry.add_agent(AgentCard(id="pricey", description="Fails.", backend="function", function="ui_test_agents:overpriced"))
    result = app.workflow("fixed", agent_ids=["echo", "pricey"], aggregator=PassThrough()).run("hello")
    monkeypatch.setenv("UI_TEST_RUN", result.run_id)
    at = _start(stored_run_panel)
    shown = [e.value for e in at.error]
    assert any("\\$5 and then \\$10" in text for text in shown), shown


def test_the_runs_tree_shows_the_sub_query_each_agent_was_asked(store: str) -> None:
    """The panel said what each agent was asked when a router split the query; the Runs tree did not."""
    from orchestra import Call, Dispatch
    from orchestra.testing import FunctionRouter
    from orchestra.ui.runs import tree_markdown

    app = _add_echo(store)
    split = FunctionRouter(lambda s: Dispatch(calls=(Call(agent_id="echo", query="the first part"),)))
    result = app.workflow(split, aggregator=PassThrough()).run("the first part, and a second one")
    whole = app.workflow("fixed", agent_ids=["echo"], aggregator=PassThrough()).run("just this")
    assert "asked “the first part”" in tree_markdown(app.store.get_run(result.run_id))
    assert "asked" not in tree_markdown(app.store.get_run(whole.run_id))


def test_a_message_whose_run_was_stopped_says_so(store: str) -> None:
    at = AppTest.from_function(chat_page, default_timeout=TIMEOUT)
    at.session_state["chat_messages"] = [{"role": "user", "content": "left half-way"}]
    at.run()
    assert any("No answer: this run was stopped" in c.value for c in at.caption)


def test_a_store_that_cannot_be_opened_is_reported_in_words(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRA_DB_URL", "nosuchdb://nowhere/orchestra")
    monkeypatch.setenv("ORCHESTRA_UI_PROFILE", "none")
    at = _start(chat_page)
    assert any("trace store could not be opened" in e.value for e in at.error)


# -- agents and models --------------------------------------------------------------------------------------------


def test_onboarding_form_shows_errors_beside_fields_then_the_new_agent_is_chosen(store: str) -> None:
    _add_echo(store)
    chat = _start(chat_page)
    _choose(chat)
    _say(chat, "first")
    assert chat.expander[0].label.startswith("Routing: all → echo ·")  # only echo exists yet

    page = _start(registry_page)
    page.text_input(key="agent_id").set_value("not an id!")
    page.selectbox(key="agent_backend").set_value("function")
    page.text_input(key="agent_function").set_value("ui_test_agents:missing")
    page.button(key="FormSubmitter:onboard_agent-Onboard agent").click().run()
    assert not page.exception
    assert "letters, digits" in (_error_after(page, "agent_id") or "")
    assert "description is required" in (_error_after(page, "agent_description") or "")
    assert _error_after(page, "agent_name") is None
    assert [row for row in page.dataframe[0].value["id"]] == ["echo"]  # nothing was added

    page.text_input(key="agent_id").set_value("shouter")
    page.text_area(key="agent_description").set_value("Repeats the request in capitals.")
    page.selectbox(key="agent_backend").set_value("function")
    page.text_input(key="agent_function").set_value("ui_test_agents:missing")
    page.button(key="FormSubmitter:onboard_agent-Onboard agent").click().run()
    assert "cannot import" in (_error_after(page, "agent_function") or "")  # checked before it is added

    page.text_input(key="agent_function").set_value("ui_test_agents:shout")
    page.button(key="FormSubmitter:onboard_agent-Onboard agent").click().run()
    assert not page.exception and not page.error
    assert any("shouter" in s.value and "onboarded" in s.value for s in page.success)
    assert set(page.dataframe[0].value["id"]) == {"echo", "shouter"}
    assert page.text_input(key="agent_id").value == "" and page.text_area(key="agent_description").value == ""

    _say(chat, "second")  # the same chat, no restart: the next message routes over the new agent
    panels = [e.label for e in chat.expander if e.label.startswith("Routing:")]
    assert panels[-1].startswith("Routing: all → echo, shouter")
    assert any("SECOND!" in text for text in _assistant_texts(chat))


def test_model_form_and_yaml_cards_and_removal(store: str) -> None:
    page = _start(registry_page)
    page.text_input(key="model_id").set_value("small")
    page.text_area(key="model_description").set_value("A small model.")
    page.text_input(key="model_input_price_per_mtok").set_value("-1")
    page.text_input(key="model_api_key_env").set_value("sk-secret")
    page.button(key="FormSubmitter:add_model-Add model").click().run()
    assert "greater than or equal to 0" in (_error_after(page, "model_input_price_per_mtok") or "")
    assert "environment variable" in (_error_after(page, "model_api_key_env") or "")

    page.text_input(key="model_input_price_per_mtok").set_value("0.15")
    page.text_input(key="model_api_key_env").set_value("")
    page.button(key="FormSubmitter:add_model-Add model").click().run()
    assert list(page.dataframe[-1].value["id"]) == ["small"]
    assert list(page.dataframe[-1].value["$/Mtok out"]) == ["unknown"]  # unknown stays unknown, never 0

    page.radio(key="yaml_kind").set_value("agent")
    page.text_area(key="yaml_text").set_value("- id: a1\n  description: First.\n  model: nope\n")
    page.button(key="FormSubmitter:yaml_cards-Add cards").click().run()
    assert "no model card with id 'nope'" in (_error_after(page, "yaml_text") or "")
    # all or nothing: a good card before a bad one is not added either
    for bad, problem in [
        ("  model: nope\n", "no model card with id 'nope'"),
        ("  backend: function\n  function: os.path:no_such\n", "cannot import 'os.path:no_such'"),
        ("", "holds id 'a1' twice"),  # a2 is a1 again
    ]:
        second = "- id: a1\n  description: Again.\n" if not bad else f"- id: a2\n  description: Second.\n{bad}"
        page.text_area(key="yaml_text").set_value("- id: a1\n  description: First.\n  model: small\n" + second)
        page.button(key="FormSubmitter:yaml_cards-Add cards").click().run()
        error = _error_after(page, "yaml_text") or ""
        assert problem in error and "Nothing was added" in error, error
        assert Orchestra(store=store).registry.agents() == []
    page.text_area(key="yaml_text").set_value("- id: a1\n  description: First.\n  model: small\n")
    page.button(key="FormSubmitter:yaml_cards-Add cards").click().run()
    assert list(page.dataframe[0].value["id"]) == ["a1"]
    page.text_area(key="yaml_text").set_value("- id: a3\n  description: Third.\n- id: a1\n  description: First.\n")
    page.button(key="FormSubmitter:yaml_cards-Add cards").click().run()
    error = _error_after(page, "yaml_text") or ""
    assert "agent id 'a1' is already registered" in error and "Nothing was added" in error
    assert [card.id for card in Orchestra(store=store).registry.agents()] == ["a1"]

    page.selectbox(key="remove_agent").set_value("a1")
    page.button[-2].click().run()
    assert any("Removed agent" in s.value for s in page.success)
    assert Orchestra(store=store).registry.agents() == []


# -- runs and replay ----------------------------------------------------------------------------------------------


def test_a_run_tree_stays_one_list_when_the_query_and_answer_span_lines() -> None:
    from orchestra.ui.runs import tree_markdown

    app = Orchestra(store="memory://")
    app.registry.add_agent(AgentCard(id="poet", description="Writes lines."), implementation=lambda q: "# Title\nline one\n\nline two")
    result = app.workflow("all", aggregator=PassThrough()).run("first line\nsecond line")
    markdown = tree_markdown(app.store.get_run(result.run_id))
    lines = markdown.split("\n")
    assert all(line.lstrip().startswith("- ") for line in lines), markdown
    assert lines[0] == "- query: first line second line" and lines[-1] == "- **answer**: # Title line one line two"
    long = app.workflow("all", aggregator=PassThrough()).run("word " * 3000)
    first = tree_markdown(app.store.get_run(long.run_id)).split("\n")[0]
    assert len(first) < 500 and first.endswith("… (15,000 characters)")


def test_a_failed_run_tree_tells_each_error_once_with_the_time_it_took(store: str) -> None:
    """The tree told the model's refusal at the call and again at its model call, and the run's error at its error
    step and again at the end; a failed call's line had no time or tokens."""
    from orchestra.ui.graph import trace_graph
    from orchestra.ui.runs import tree_markdown

    app, run_id = _failed_priced_run(store)
    app.registry.remove_agent("echo")
    trace = app.store.get_run(app.workflow("all", aggregator=PassThrough()).run("hi").run_id)
    tree = tree_markdown(trace)
    assert tree.count("model 'small' refused") == 2, tree  # at the model call, and in the run's error it caused
    assert tree.count("every dispatched agent failed") == 1, tree
    call = next(line for line in tree.split("\n") if "**call** writer" in line)
    assert "failed (the cause is below)" in call
    model_call = next(line for line in tree.split("\n") if "**model_call** small" in line)
    spent = next(s for s in trace.steps if s.kind == "model_call").latency_ms
    assert spent >= 40 and model_call.endswith(f"10+5 tok · {spent:.0f} ms")
    label = next(data["label"] for _, data in trace_graph(trace).nodes(data=True) if data.get("kind") == "error" and "small" in data["label"])
    assert label.endswith(f"15 tok · {spent:.0f} ms")


def test_runs_page_lists_a_run_and_replays_it_exactly_side_by_side(store: str) -> None:
    app = _add_echo(store)
    original = app.workflow("all", aggregator=PassThrough()).run("replay me")
    assert original.status == "ok"

    page = _start(runs_page)
    assert original.run_id in list(page.dataframe[0].value["run"])
    assert page.selectbox(key="runs_selected").value == original.run_id
    tree = next(m.value for m in page.markdown if m.value.startswith("- query: replay me"))
    assert "**decision** r0: dispatch echo" in tree and "**call** echo: echo: replay me" in tree

    page.button(key="runs_replay_exact").click().run()
    assert not page.exception
    assert any(s.value.startswith("Exact replay: same decisions and same answer") for s in page.success)
    headings = [m.value for m in page.markdown if m.value.startswith("#### ")]
    assert headings == ["#### Original · all", "#### Exact replay · all"]
    assert [s.value for s in page.success].count("echo: replay me") == 2  # the two answers, side by side
    replayed = [run for run in app.store.list_runs() if run.replay_of == original.run_id]
    assert len(replayed) == 1 and replayed[0].replay_mode == "exact" and replayed[0].answer == original.answer
    assert replayed[0].id in list(page.dataframe[0].value["run"])  # the table shows the replay at once

    page.selectbox(key="runs_replay_router").set_value("fixed")
    page.text_input(key="runs_replay_options").set_value('{"agent_ids": ["echo"]}')
    page.button(key="runs_replay_other").click().run()
    assert any("Counterfactual replay with `fixed`: the same agents (echo), the same answer" in i.value for i in page.info)

    page.text_input(key="runs_replay_options").set_value("[1, 2]")
    page.button(key="runs_replay_other").click().run()
    assert any("must be a JSON object" in e.value for e in page.error)

    # a counterfactual that fails says so (it used to read "other agents (none ...), a different answer")
    page.selectbox(key="runs_replay_router").set_value("fixed")
    page.text_input(key="runs_replay_options").set_value('{"agent_ids": ["nobody"]}')
    page.button(key="runs_replay_other").click().run()
    assert any("Counterfactual replay with `fixed` failed" in e.value and "UnknownAgentError" in e.value for e in page.error)


def test_an_agent_removed_from_the_fixed_routers_choice_is_named(store: str) -> None:
    """The agent chosen for the fixed router, removed by another process, dropped out of the box without a word,
    and the next message complained about a missing option 'agent_ids' in command-line terms."""
    app = _add_echo(store)
    app.registry.add_agent(AgentCard(id="shouter", description="Shouts.", backend="function", function="ui_test_agents:shout"))
    at = _start(chat_page)
    _choose(at, "fixed")
    at.multiselect(key="chat_fixed").set_value(["shouter"]).run()
    app.registry.remove_agent("shouter")
    at.run()
    assert any(w.value.startswith("Removed from the registry since it was chosen: shouter.") for w in at.sidebar.warning)
    _say(at, "hello")
    error = next(m for m in at.chat_message if m.name == "assistant").error[0].value
    assert error.startswith("The fixed router has no agent to call: choose them in the sidebar"), error
    assert any("shouter" in w.value for w in at.sidebar.warning)  # still said after the message
    at.multiselect(key="chat_fixed").set_value(["echo"]).run()
    assert not at.sidebar.warning


def test_a_message_of_spaces_is_not_sent(store: str) -> None:
    _add_echo(store)
    at = _start(chat_page)
    _say(at, "     ")
    assert not at.chat_message and any("Type a question first" in w.value for w in at.warning)
    assert Orchestra(store=store).store.list_runs() == []


def test_the_ui_offers_only_routers_that_can_answer_untrained_or_from_their_checkpoint(store: str) -> None:
    app = _add_echo(store)
    original = app.workflow("fixed", agent_ids=["echo"], aggregator=PassThrough()).run("hello")
    at = _start(chat_page)
    offered = at.selectbox(key="chat_router").options
    assert {"all", "embedding", "fixed", "set"} <= set(offered)
    # they learn from a data set first: offered when a saved file can build them, with a box for it
    assert {"knn", "mlp", "mf", "graph-router", "agent-router"} <= set(offered) and "oracle" not in offered
    page = _start(runs_page)
    assert page.selectbox(key="runs_selected").value == original.run_id
    assert page.selectbox(key="runs_replay_router").value == "all"  # a router that can answer, not the first listed


def test_a_trained_router_answers_in_the_chat_from_its_checkpoint(store: str, tmp_path: Path) -> None:
    """A router trained in Python and saved could not be chosen in the UI at all (the UI left out every router that
    learns from data): it is offered with a box for its file, and says what is missing until the file is given."""
    from orchestra.bench.models import ModelOutcome, ModelQuery
    from orchestra.routers.model_routers import KnnRouter

    cards = [ModelCard(id=f"{size}-lm", description=f"A {size} model.", base_url="http://127.0.0.1:9/v1") for size in ("big", "small")]
    rows = [ModelQuery(id=str(i), query=f"What is {i} plus {i}?", task="math",
                       outcomes={"big-lm": ModelOutcome(score=1.0, cost=0.01), "small-lm": ModelOutcome(score=float(i % 2), cost=0.001)})
            for i in range(8)]
    path = KnnRouter(agent_id="writer", k=3).fit(rows, cards).save(tmp_path / "knn.pt")  # the project's MiniLM, as the UI's
    app = Orchestra(store=store)
    for card in cards:
        app.registry.add_model(card)
    app.registry.add_agent(AgentCard(id="writer", description="Writes text.", backend="model", model="big-lm"))

    at = _start(chat_page)
    _choose(at, "knn")
    assert any("knn decides only once trained" in w.value for w in at.sidebar.warning)
    _say(at, "What is 3 plus 3?")
    error = next(m for m in at.chat_message if m.name == "assistant").error[0].value
    assert error.startswith("The knn router decides only once trained: give the file its save() wrote"), error

    at.text_input(key="chat_checkpoint").set_value(str(tmp_path / "missing.pt")).run()
    _say(at, "What is 3 plus 3?")
    error = [m for m in at.chat_message if m.name == "assistant"][-1].error[0].value
    assert "The router could not be prepared" in error and "does not exist" in error, error

    at.text_input(key="chat_checkpoint").set_value(str(path)).run()
    assert not at.sidebar.warning
    _say(at, "What is 3 plus 3?")
    (run,) = [r for r in Orchestra(store=store).store.list_runs() if r.router == "knn"]
    assert run.meta["router"]["checkpoint"] == str(path)
    decision = next(s for s in Orchestra(store=store).store.get_run(run.id).steps if s.kind == "decision")
    assert decision.response["decision"]["calls"][0]["model_id"] in ("big-lm", "small-lm")  # routed by the trained knn


def test_runs_page_filters(store: str) -> None:
    app = _add_echo(store)
    app.workflow("all", aggregator=PassThrough()).run("about cats")
    app.workflow("fixed", aggregator=PassThrough(), agent_ids=["echo"]).run("about dogs")
    page = _start(runs_page)
    assert len(page.dataframe[0].value) == 2
    page.selectbox(key="runs_router").set_value("fixed").run()
    assert list(page.dataframe[0].value["query"]) == ["about dogs"]
    page.selectbox(key="runs_router").set_value("any")
    page.text_input(key="runs_contains").set_value("CATS").run()
    assert list(page.dataframe[0].value["query"]) == ["about cats"]
    page.text_input(key="runs_contains").set_value("zebras").run()
    assert any("No run matches" in i.value for i in page.info)


# -- routers ------------------------------------------------------------------------------------------------------


def _model_report(router: str, points: list[tuple[float, float, float]]) -> dict[str, Any]:
    """A report in the shape `orchestra bench models --json` writes (see orchestra/bench/models.py)."""
    return {
        "set": "tiny", "router": router, "n_test": 3, "cost": "measured", "holdout_models": [],
        "points": [{"w": w, "quality": q, "cost_usd": c, "share": {"big": 1.0}} for w, c, q in points],
        "single_models": [{"model": "small", "quality": 0.5, "cost_usd": 0.001},
                          {"model": "big", "quality": 0.8, "cost_usd": 0.01}],
        "aiq": 0.71, "aiq_single_models": 0.62, "best_single": {"model": "big", "quality": 0.8, "cost_usd": 0.01},
        "cheapest_point_reaching_best_single": None,
        "scenario_rewards": {"performance_first": 0.8, "balance": 0.3, "cost_first": 0.1},
        "latency": {"decision_p50_ms_with_embedding": 4.2},
    }


def test_routers_page_draws_bench_reports_and_names_the_command_when_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = tmp_path / "results"
    results.mkdir()
    monkeypatch.setenv("ORCHESTRA_BENCH_RESULTS", str(results))
    page = _start(routers_page)
    infos = " ".join(i.value for i in page.info)
    assert "orchestra bench models" in infos and "orchestra bench agents" in infos

    (results / "models_tiny_knn.json").write_text(json.dumps(_model_report("knn", [(0.0, 0.01, 0.8), (1.0, 0.001, 0.5)])))
    (results / "models_tiny_all.json").write_text(json.dumps([_model_report("mlp", [(0.0, 0.009, 0.79)])]))
    (results / "models_broken.json").write_text("{not json")
    (results / "agents_clinc.json").write_text(json.dumps({
        "data": "/data/agents/clinc150", "router": "set", "regime": "supervised", "shots": 5, "fit_seconds": 1.5,
        "test": {"n": 10, "set_hit": 0.9, "top1": 0.85, "exact_set": 0.8, "micro_f1": 0.875, "mean_set_size": 1.1},
        "oos": {"n_oos": 4, "oos_precision": 0.75, "oos_recall": 0.5}, "latency": {"p50_ms": 3.0},
    }))
    page = _start(routers_page)
    assert any("models_broken.json: not readable" in w.value for w in page.warning)
    assert page.get("arrow_vega_lite_chart") or page.get("vega_lite_chart")
    models = page.dataframe[0].value
    assert sorted(models["router"]) == ["knn", "mlp"] and set(models["AIQ"]) == {0.71}
    agents = page.dataframe[-1].value
    assert list(agents["router"]) == ["set"] and list(agents["micro-F1 %"]) == [87.5]
    assert list(agents["OOS recall"]) == [0.5]


def test_routers_page_reads_reports_by_content_and_leaves_out_bad_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A point whose cost was "abc" took the page down with a traceback (nothing below it was drawn), and model
    reports in files not named models_*.json (agent_router_models_*.json) were never shown."""
    results = tmp_path / "results"
    results.mkdir()
    monkeypatch.setenv("ORCHESTRA_BENCH_RESULTS", str(results))
    bad = _model_report("knn", [(0.0, 0.01, 0.8), (1.0, 0.001, 0.5)])
    bad["points"][1]["cost_usd"] = "abc"
    (results / "models_tiny_knn.json").write_text(json.dumps(bad))
    (results / "agent_router_models_tiny.json").write_text(json.dumps(_model_report("agent-router", [(0.0, 0.02, 0.9)])))
    (results / "runtime.json").write_text(json.dumps({"p50_ms": 3}))  # other results: passed over in silence
    (results / "agents_clinc.json").write_text(json.dumps({
        "data": "clinc150", "router": "set", "regime": "supervised", "test": {"n": 10, "micro_f1": "n/a"},
    }))
    page = _start(routers_page)
    assert [w.value for w in page.warning] == [
        "models_tiny_knn.json (knn): left out the point at w=1.0 (cost_usd 'abc': not a number)"
    ]
    models = page.dataframe[0].value
    assert sorted(models["router"]) == ["agent-router", "knn"]
    assert list(page.dataframe[1].value["w"]) == [0.0, 0.0]  # the points drawn: knn's good one, agent-router's
    agents = page.dataframe[-1].value
    assert list(agents["router"]) == ["set"] and agents["micro-F1 %"].isna().all()


def test_model_frames_hull_is_the_benchmarks_hull() -> None:
    from orchestra.ui.routers_page import model_frames

    report = _model_report("knn", [(0.0, 0.01, 0.8), (0.5, 0.005, 0.6), (0.8, 0.004, 0.7), (1.0, 0.001, 0.5)])
    report["_file"] = "x.json"
    points, hulls, singles = model_frames([report])
    assert len(points) == 4 and set(singles["model"]) == {"small", "big"}
    # (0.005, 0.6) lies under the chord from (0.004, 0.7) to (0.01, 0.8): not on the hull
    assert list(zip(hulls["cost_usd"], hulls["quality"])) == [(0.001, 0.5), (0.004, 0.7), (0.01, 0.8)]


def test_reports_of_one_router_in_several_variants_keep_apart() -> None:
    """Two runs of one router (another window, held out models) used to merge into one series and one hull."""
    from orchestra.ui.routers_page import model_frames, model_table

    reports = []
    for name in ("models_rb_graph-router.json", "models_rb_graph-router_window256.json", "models_rb_knn.json"):
        report = _model_report("knn" if "knn" in name else "graph-router", [(0.0, 0.01, 0.8), (1.0, 0.001, 0.5)])
        reports.append({**report, "_file": name})
    assert [row["router"] for row in model_table(reports)] == ["graph-router", "graph-router [window256]", "knn"]
    points, hulls, _ = model_frames(reports)
    assert hulls.groupby("router").size().to_dict() == {"graph-router": 2, "graph-router [window256]": 2, "knn": 2}


# -- the app and the decision graph -------------------------------------------------------------------------------


def test_app_opens_on_the_chat_page(store: str) -> None:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Chat"
    assert at.chat_input  # ready for a message


def test_errors_read_as_sentences() -> None:
    from orchestra import ModelTimeoutError
    from orchestra.ui.common import explain_error

    assert explain_error(ModelTimeoutError("model 'm' timed out after 60 s", model_id="m")) == (
        "The model took too long to answer. (ModelTimeoutError: model 'm' timed out after 60 s)"
    )
    # a run whose page was left half-way is recorded by the runtime as GeneratorExit: say what happened
    stopped = {"type": "RunError", "code": "run_error", "message": "GeneratorExit: "}
    assert explain_error(stopped).startswith("The run was stopped before it finished")
    # the UI's words: an option is given in the options box, not on the command line; no guess at the cause
    from orchestra import ConfigurationError, DecisionError, UnknownAgentError, load_router

    with pytest.raises(ConfigurationError) as missing:
        load_router("fixed")
    assert explain_error(missing.value) == (
        "ConfigurationError: router 'fixed' needs option 'agent_ids' (give it in the router options box as JSON, "
        'e.g. {"agent_ids": ...})'
    )
    assert explain_error(DecisionError("cheapest: no agent with backend 'model' to choose a model for")) == (
        "The router could not reach a decision. (DecisionError: cheapest: no agent with backend 'model' to choose a model for)"
    )
    assert explain_error(UnknownAgentError("x")).startswith("The router chose an agent that is not in the registry.")


def test_decision_graph_links_query_decision_agents_aggregate_answer(store: str) -> None:
    from orchestra.ui.graph import to_dot, trace_graph

    app = _add_echo(store)
    app.registry.add_agent(AgentCard(id="shouter", description="Shouts.", backend="function", function="ui_test_agents:shout"))
    app.registry.add_agent(AgentCard(id="idle", description="Never chosen.", backend="function", function="ui_test_agents:echo"))
    result = app.workflow("fixed", aggregator=PassThrough(), agent_ids=["echo", "shouter"]).run("hi")
    graph = trace_graph(app.store.get_run(result.run_id))
    kinds = nx.get_node_attributes(graph, "kind")
    calls = [n for n, k in kinds.items() if k == "call"]
    decision = next(n for n, k in kinds.items() if k == "decision")
    aggregate = next(n for n, k in kinds.items() if k == "aggregate")
    assert len(calls) == 2 and nx.is_directed_acyclic_graph(graph)
    assert graph.has_edge("query", decision) and graph.has_edge(aggregate, "answer")
    assert all(graph.has_edge(decision, c) and graph.has_edge(c, aggregate) for c in calls)
    dot = to_dot(graph)
    assert dot.startswith("digraph run {") and dot.rstrip().endswith("}")
    assert dot.count("->") == graph.number_of_edges()


def test_graph_labels_and_the_steps_table_show_no_markdown_marks(store: str) -> None:
    """PassThrough lists answers as "**echo**: …": the graph's labels and the steps table showed the raw marks."""
    from orchestra.ui.graph import trace_graph
    from orchestra.ui.panel import step_rows

    app = _add_echo(store)
    app.registry.add_agent(AgentCard(id="shouter", description="Shouts.", backend="function", function="ui_test_agents:shout"))
    trace = app.store.get_run(app.workflow("all", aggregator=PassThrough()).run("hi").run_id)
    labels = [data["label"] for _, data in trace_graph(trace).nodes(data=True)]
    assert any(label.startswith("answer\necho: echo: hi") for label in labels), labels
    assert not any("**" in label for label in labels)
    assert [row["what"] for row in step_rows(trace) if row["step"] == "aggregate"] == ["echo: echo: hi\n\nshouter: HI!"]


def test_a_failed_agent_is_drawn_as_an_error_node(store: str) -> None:
    from orchestra.ui.graph import trace_graph

    app = Orchestra(store=store, retry=RetryPolicy(max_attempts=1))
    app.registry.add_agent(AgentCard(id="ghost", description="Cannot be imported.", backend="function",
                                     function="ui_test_agents:missing"))
    app.registry.add_agent(AgentCard(id="echo", description="Repeats.", backend="function", function="ui_test_agents:echo"))
    result = app.workflow("all", aggregator=PassThrough()).run("hi")
    graph = trace_graph(app.store.get_run(result.run_id))
    labels = {data["label"].split("\n")[0]: data["kind"] for _, data in graph.nodes(data=True)}
    assert labels["ghost"] == "error" and labels["echo"] == "call"


# -- resume on the Runs page --------------------------------------------------------------------------------------


def test_runs_page_resumes_a_run_whose_third_agent_failed_and_shows_it_beside_the_original(store: str, tmp_path: Path) -> None:
    from orchestra import Call, Dispatch
    from orchestra.testing import FunctionRouter

    app = Orchestra(store=store, retry=RetryPolicy(max_attempts=1))
    for number, function in ((1, "echo"), (2, "shout")):
        app.registry.add_agent(AgentCard(id=f"a{number}", description="Answers.", backend="function", function=f"ui_test_agents:{function}"))
    clean = app.workflow("all", aggregator=PassThrough()).run("all is well")
    # the third agent cannot be imported: it fails, and the run ends ok with two answers of three
    app.registry.add_agent(AgentCard(id="a3", description="Answers.", backend="function", function="ui_test_agents:missing"))
    original = app.workflow("all", aggregator=PassThrough()).run("question")
    assert original.status == "ok" and [obs.ok for obs in original.observations] == [True, True, False]
    stuck = app.workflow(FunctionRouter(lambda s: Dispatch(calls=(Call(agent_id="nobody", query=s.query),)), multi_round=True)).run("stuck")
    assert clean.status == "ok" and stuck.status == "error"
    stored = lambda: sorted(run.id for run in app.store.list_runs())  # noqa: E731

    # an ok run with nothing failed is offered no Resume
    page = _start(runs_page)
    page.selectbox(key="runs_selected").set_value(clean.run_id).run()
    assert not [b for b in page.button if b.key == "runs_resume"] and not [h for h in page.subheader if h.value == "Resume"]

    # a run resume refuses (its router cannot be rebuilt and must decide anew): why, in words, and nothing stored
    page.selectbox(key="runs_selected").set_value(stuck.run_id).run()
    before = stored()
    page.button(key="runs_resume").click().run()
    assert not page.exception
    refusal = [e.value for e in page.error if e.value.startswith("This run cannot be resumed:")]
    assert refusal and "cannot be rebuilt" in refusal[0] and stuck.run_id in refusal[0], [e.value for e in page.error]
    assert stored() == before

    # resumed before the fix: the two answers served, the third fails live again, and the page says so
    page.selectbox(key="runs_selected").set_value(original.run_id).run()
    page.button(key="runs_resume").click().run()
    assert not page.exception
    assert any(w.value.startswith("Resume: 3 steps served from the record, 2 run live; the resumed run is ok, but a3 failed again")
               for w in page.warning), [w.value for w in page.warning]

    # the fix: the third agent re-onboarded on a function that answers; resumed again, the run is whole
    (tmp_path / "ui_test_fixed.py").write_text("def third(query):\n    return 'three: ' + query\n")
    app.registry.update_agent(AgentCard(id="a3", description="Answers.", backend="function", function="ui_test_fixed:third"))
    # the original was resumed already: resumed twice, what its resume did live would be done again; refused, naming
    # the resume, which is the run to resume now
    (first_resume,) = [run for run in app.store.list_runs() if run.replay_of == original.run_id]
    before = stored()
    page.button(key="runs_resume").click().run()
    refusal = [e.value for e in page.error if e.value.startswith("This run cannot be resumed:")]
    assert refusal and f"already resumed, as run {first_resume.id}" in refusal[0] and stored() == before
    page.selectbox(key="runs_selected").set_value(first_resume.id).run()
    page.button(key="runs_resume").click().run()
    assert not page.exception
    (resumed,) = [run for run in app.store.list_runs() if run.replay_of == first_resume.id]
    assert resumed.replay_mode == "resume" and resumed.status == "ok"
    original = first_resume  # what this resume resumed, shown beside it
    assert resumed.answer == "**a1**: echo: question\n\n**a2**: QUESTION!\n\n**a3**: three: question"
    verdict = [s.value for s in page.success if s.value.startswith("Resume:")]
    assert verdict == [f"Resume: 3 steps served from the record, 2 run live; the resumed run is ok. Its answer: {resumed.answer}"], \
        [s.value for s in page.success]
    headings = [m.value for m in page.markdown if m.value.startswith("#### ")]
    assert headings == ["#### Original · all", "#### Resume · all"]
    assert [s.value for s in page.success].count(resumed.answer) == 1  # the new answer in its panel, beside the original's
    rows = page.dataframe[0].value
    assert list(rows[rows["run"] == resumed.id]["status"]) == [f"ok (resume of {original.id[:8]})"]
    assert not any("replay" in text.lower() for text in verdict + headings[1:])

    # opened by itself, the resumed run says what it resumed and sits beside its original (the two resumes, of one
    # query and status and often started in the same second, are told apart in the run list: it opens the one chosen)
    page.selectbox(key="runs_selected").set_value(resumed.id).run()
    assert [h.value for h in page.subheader][0] == f"Run {resumed.id}"
    assert any(c.value == f"Resume of run `{original.id}`: 3 steps served from the record, 2 run live." for c in page.caption)
    assert [m.value for m in page.markdown if m.value.startswith("#### ")] == ["#### Original · all", "#### Resume · all"]
    assert not [b for b in page.button if b.key == "runs_resume"]  # it ended ok with nothing failed


def test_the_steps_table_says_how_many_attempts_a_retried_call_took_and_what_failed_first() -> None:
    from orchestra import Orchestra, RetryPolicy
    from orchestra.testing import InMemoryStore
    from orchestra.ui.panel import step_rows

    app = Orchestra(store=InMemoryStore())
    tries: list[str] = []

    def flaky(query: str) -> str:
        tries.append(query)
        if len(tries) == 1:
            raise ConnectionError("reset by peer")
        return "sunny"

    fast = RetryPolicy(max_attempts=2, initial_backoff_s=0.0, max_backoff_s=0.0, jitter_s=0.0)
    app.registry.add_agent(AgentCard(id="weather", description="Weather.", retry=fast), implementation=flaky)
    trace = app.store.get_run(app.workflow("all", aggregator=PassThrough()).run("weather?").run_id)
    (what,) = [row["what"] for row in step_rows(trace) if row["step"] == "call"]
    assert what.startswith("after 2 attempts (first:") and "reset by peer" in what and what.endswith("sunny")


def _waiting_for_a_payment(store: str) -> tuple[Orchestra, AppTest]:
    """The chat after "pay invoice 7", routed to an echo agent and to a payment agent whose card requires approval."""
    app = _add_echo(store)
    app.registry.add_agent(AgentCard(id="pay", description="Pays invoices.", backend="function", function="ui_test_agents:shout",
                                     requires_approval=True))
    at = _start(chat_page)
    _choose(at)
    _say(at, "pay invoice 7")
    return app, at


def test_a_chat_answer_that_waits_for_approval_is_approved_in_the_chat_and_runs_then(store: str) -> None:
    """An agent whose card requires approval: the chat said only that the run was interrupted. It now says who waits
    for approval, calls nothing, and its Approve button resumes the run, whose answer takes the message's place."""
    app, at = _waiting_for_a_payment(store)
    warnings = [w.value for w in at.warning if "waits for your approval" in w.value]
    assert warnings and "**pay**" in warnings[0] and "echo: pay invoice 7" not in _assistant_texts(at)[-1]
    (paused,) = app.store.list_runs()
    assert paused.status == "interrupted"

    at.button(key="chat_approve_1").click().run()
    assert not at.exception, at.exception
    assert not [w for w in at.warning if "waits for your approval" in w.value]
    assert "PAY INVOICE 7!" in _assistant_texts(at)[-1] and "echo: pay invoice 7" in _assistant_texts(at)[-1]
    resumed = [run for run in app.store.list_runs() if run.replay_of == paused.id]
    assert len(resumed) == 1 and resumed[0].status == "ok" and resumed[0].replay_mode == "resume"


def test_the_routers_page_shows_what_bench_compare_prints_from_the_same_rows() -> None:
    """The page and `orchestra bench compare` read a report through one row builder: the page's table carries the
    comparison's CPT columns, and a figure that is not a number is missing in both rather than an error."""
    from orchestra.bench.compare import model_row
    from orchestra.ui.routers_page import model_table

    # small (0.5, $0.001) to big (0.8, $0.01): half the gap is quality 0.65, on the chord from (0.001, 0.5) to
    # (0.004, 0.7) at $0.00325, a share 0.325 of big's cost; four fifths, 0.74, on the next chord at $0.0064
    report = {**_model_report("knn", [(1.0, 0.001, 0.5), (0.5, 0.004, 0.7), (0.0, 0.01, 0.8)]), "_file": "k.json"}
    row = model_table([report])[0]
    assert row["CPT(50%)"] == pytest.approx(0.325) and row["CPT(80%)"] == pytest.approx(0.64)
    assert model_row(report)["gap_recovery"]["0.5"]["cost_usd"] == pytest.approx(0.00325)
    broken = {**report, "aiq": "n/a", "best_single": {"model": "big", "quality": "?", "cost_usd": 0.01}}
    row = model_table([broken])[0]
    assert row["AIQ"] is None and row["CPT(50%)"] is None and row["router"] == "knn"


# -- a budget that ran out, raised on the Runs page ---------------------------------------------------------------


def _budget_stopped_run(store: str, budget: Any) -> tuple[Orchestra, str]:
    """A run of two agents under ``budget`` (``all`` dispatches to both at once: ``max_calls=1`` stops it before)."""
    app = _add_echo(store)
    app.registry.add_agent(AgentCard(id="loud", description="Shouts.", backend="function", function="ui_test_agents:shout"))
    result = app.workflow("all", aggregator=PassThrough(), budget=budget).run("budget")
    assert result.status == "error"
    return app, result.run_id


def _budget_expander(page: AppTest) -> Any:
    (expander,) = [e for e in page.expander if e.label == "Budget of the resumed run"]
    return expander


def test_a_run_whose_budget_ran_out_is_resumed_on_the_runs_page_with_a_larger_limit(store: str) -> None:
    """The Runs page resumed a budget-stopped run on its recorded budget only, so it ran out again; its Resume now
    shows the budget, says which limit ran out, and resumes with the limits changed (the others as recorded)."""
    from orchestra import Budget

    app, original = _budget_stopped_run(store, Budget(max_calls=1, max_seconds=30.0))
    recorded = app.store.get_run(original).run.meta["budget"]

    page = _start(runs_page)
    page.selectbox(key="runs_selected").set_value(original).run()
    assert _budget_expander(page).proto.expanded
    warning = [w.value for w in page.warning if "limit ran out" in w.value]
    assert warning and "**max_calls**" in warning[0] and "max_calls allowed 1, 2 needed" in warning[0], warning
    assert page.number_input(key=f"runs_resume_max_calls_{original}").value == 1
    assert page.number_input(key=f"runs_resume_max_seconds_{original}").value == 30.0
    assert page.number_input(key=f"runs_resume_max_tokens_{original}").value == 0  # no limit

    # nothing changed: the recorded budget, and the same stop
    page.button(key="runs_resume").click().run()
    assert not page.exception
    (again,) = [run for run in app.store.list_runs() if run.replay_of == original]
    assert again.status == "error" and again.error["limit"] == "max_calls" and again.meta["budget"] == recorded
    assert any(e.value.startswith("Resume: ") and "the resumed run failed: The run's budget ran out" in e.value
               for e in page.error), [e.value for e in page.error]

    # its resume, with more calls and no time limit (0, as in the sidebar): the answer, on the new budget
    page.selectbox(key="runs_selected").set_value(again.id).run()
    assert _budget_expander(page).proto.expanded
    page.number_input(key=f"runs_resume_max_calls_{again.id}").set_value(2)
    page.number_input(key=f"runs_resume_max_seconds_{again.id}").set_value(0.0)
    page.button(key="runs_resume").click().run()
    assert not page.exception
    (resumed,) = [run for run in app.store.list_runs() if run.replay_of == again.id]
    assert resumed.status == "ok" and resumed.answer == "**echo**: echo: budget\n\n**loud**: BUDGET!"
    assert resumed.meta["budget"] == {**recorded, "max_calls": 2, "max_seconds": None}
    assert any(s.value.startswith("Resume: ") and "the resumed run is ok" in s.value for s in page.success)


def test_a_budget_the_resume_cannot_run_on_is_refused_in_words_and_nothing_is_stored(store: str) -> None:
    from orchestra import Budget
    from orchestra.ui.runs import BUDGET_LIMITS

    assert set(BUDGET_LIMITS) == set(Budget.model_fields)  # a limit Budget gains is offered too
    app, original = _budget_stopped_run(store, Budget(max_calls=1))
    # a run that failed otherwise: the budget is offered, closed, and no limit is blamed
    other = app.workflow("fixed", aggregator=PassThrough(), agent_ids=["nobody"]).run("who?")
    assert other.status == "error"
    stored = lambda: sorted(run.id for run in app.store.list_runs())  # noqa: E731

    page = _start(runs_page)
    page.selectbox(key="runs_selected").set_value(other.run_id).run()
    assert not _budget_expander(page).proto.expanded and not [w for w in page.warning if "limit ran out" in w.value]

    page.selectbox(key="runs_selected").set_value(original).run()
    before = stored()
    page.number_input(key=f"runs_resume_max_calls_{original}").set_value(2)
    page.number_input(key=f"runs_resume_max_rounds_{original}").set_value(101)  # the widget has no upper bound: Budget's
    page.button(key="runs_resume").click().run()
    assert not page.exception
    refusal = [e.value for e in page.error if e.value.startswith("The budget of the resumed run is not valid:")]
    assert refusal and "Budget.max_rounds" in refusal[0] and "100" in refusal[0], [e.value for e in page.error]
    assert stored() == before


def test_a_call_left_unticked_in_the_chat_s_approval_is_not_made(store: str) -> None:
    """Each call that waits for approval has its own box: the one unticked is not called, the others run and
    answer, and the run's record says which was not approved."""
    app, at = _waiting_for_a_payment(store)
    (paused,) = app.store.list_runs()
    assert at.checkbox(key="chat_approve_1_pay").value is True  # approved unless unticked
    at.checkbox(key="chat_approve_1_pay").uncheck().run()
    at.button(key="chat_approve_1").click().run()
    assert not at.exception, at.exception
    assert "PAY INVOICE 7!" not in _assistant_texts(at)[-1] and "echo: pay invoice 7" in _assistant_texts(at)[-1]
    (resumed,) = [run for run in app.store.list_runs() if run.replay_of == paused.id]
    assert resumed.status == "ok" and resumed.meta["resumed"]["not_approved"] == ["pay"]


def test_a_multi_round_router_answers_itself_and_the_sidebar_says_no_aggregator_runs(store: str) -> None:
    """With a multi-round router chosen (router-r1 is one), the sidebar's aggregator box is disabled and says why;
    the run is made with no aggregator, and its panel says the router answered."""
    from orchestra import BaseRouter, Finish, RouterState, register_router

    class Loop(BaseRouter):
        name = "ui-loop-test"
        multi_round = True

        def decide(self, state: RouterState) -> Finish:
            return Finish(answer="looped")

    register_router("ui-loop-test", Loop)
    _add_echo(store)
    at = _start(chat_page)
    assert at.selectbox(key="chat_aggregator").disabled is False
    at.selectbox(key="chat_router").set_value("ui-loop-test").run()
    box = at.selectbox(key="chat_aggregator")
    assert box.disabled is True and "writes the answer itself" in box.help
    _say(at, "hi")
    assert _assistant_texts(at)[-1].startswith("looped")
    assert any("answered by the router" in markdown.value for markdown in at.markdown)
    (run,) = Orchestra(store=store).store.list_runs()
    assert run.answer == "looped" and run.meta["aggregator"] is None


def test_the_runs_page_shows_a_run_a_dead_process_left_running_as_interrupted(store: str) -> None:
    """The UI stays up while other processes come and go: a run that one of them was making when it died used to
    show as running until some process opened the store again, and its Resume was refused as still running."""
    import socket
    import subprocess
    import sys

    from orchestra.store import open_store
    from orchestra.trace import RunRecord

    at = _start(runs_page)  # the page is up before the other process dies
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    left = RunRecord(session_id="s", query="left behind", router="all", meta={"pid": child.pid, "host": socket.gethostname()})
    raw = open_store(store)  # the dead process's writes, through a store that marks nothing when opened
    raw.start_run(left)
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="runs_selected").value == left.id
    assert raw.get_run(left.id).run.status == "interrupted"


def test_the_runs_page_offers_no_resume_of_an_exact_replay_of_a_failed_run(store: str) -> None:
    """An exact replay reproduces its original, failure included, and the page offered to resume it; `resume` now
    refuses an exact replay (it would do live what resuming the original does, twice once both are resumed), so the
    page offers Resume under the original only."""
    from orchestra import replay

    app = _add_echo(store)
    app.registry.add_agent(AgentCard(id="gone", description="Answers.", backend="function", function="ui_test_agents:missing"))
    failed = app.workflow("fixed", aggregator=PassThrough(), agent_ids=["gone"]).run("question")
    exact = replay(app, failed.run_id)
    assert (failed.status, exact.status) == ("error", "error")
    page = _start(runs_page)
    page.selectbox(key="runs_selected").set_value(failed.run_id).run()
    assert [b for b in page.button if b.key == "runs_resume"]
    page.selectbox(key="runs_selected").set_value(exact.run_id).run()
    assert not page.exception and not [b for b in page.button if b.key == "runs_resume"]
