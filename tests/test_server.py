"""`orchestra serve`: a routed workflow as an OpenAI-compatible model, and the registry over HTTP, driven by the
real `openai` SDK through FastAPI's in-process test client (no socket, no network)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest

pytest.importorskip("fastapi")

import openai
from fastapi.testclient import TestClient

from orchestra import AgentCard, Call, ConfigurationError, Dispatch, ModelCard, ModelUnavailableError, Orchestra, Refine, RouterState
from orchestra.server import create_app
from orchestra.testing import FunctionRouter, InMemoryStore, ScriptedModel, ScriptedModels

SEEN: list[RouterState] = []


def dispatch_all(state: RouterState) -> Dispatch:
    SEEN.append(state)
    return Dispatch(calls=tuple(Call(agent_id=card.id, query=state.query) for card in state.agents), rationale="every agent")


@pytest.fixture
def served() -> tuple[Orchestra, TestClient]:
    SEEN.clear()
    models = [ScriptedModel("writer", ["Paris is the capital."]), ScriptedModel("refiner", ["Paris."]),
              ScriptedModel("down", [ModelUnavailableError("connection refused")])]
    app = Orchestra(store=InMemoryStore(), model_factory=ScriptedModels(models))
    for model in models:
        app.registry.add_model(ModelCard(id=model.id, description=f"scripted model {model.id}", input_price_per_mtok=1.0, output_price_per_mtok=2.0))
    app.registry.add_agent(AgentCard(id="geo", description="Geography answers.", model="writer"))
    app.registry.add_agent(AgentCard(id="history", description="History answers.", model="writer"))
    workflow = app.workflow(FunctionRouter(dispatch_all), aggregator=Refine("refiner"))
    return app, TestClient(create_app(app, workflow, name="team"))


def sdk(client: TestClient) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=client, max_retries=0)


def test_a_completion_is_a_stored_run_with_its_routing_account(served) -> None:
    app, client = served
    completion = sdk(client).chat.completions.create(
        model="team",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is the Louvre?"},
                  {"role": "assistant", "content": "In Paris."}, {"role": "user", "content": "Capital of France?"}],
        extra_body={"cost_weight": 0.3},
    )
    assert completion.choices[0].message.content == "Paris." and completion.choices[0].finish_reason == "stop"
    assert completion.model == "team" and completion.usage.total_tokens > 0
    account = completion.model_extra["orchestra"]
    assert account["status"] == "ok" and account["cost_usd"] > 0
    assert account["decisions"][0]["rationale"] == "every agent"
    assert sorted(obs["agent_id"] for obs in account["observations"]) == ["geo", "history"]
    assert account["notes"] == ["1 system or developer message(s) left out: routers read the user's query and the conversation"]
    state = SEEN[-1]
    assert state.query == "Capital of France?" and state.policy.cost_weight == 0.3
    assert [(turn.role, turn.content) for turn in state.history] == [("user", "Where is the Louvre?"), ("assistant", "In Paris.")]
    stored = client.get(f"/orchestra/runs/{account['run_id']}").json()
    assert stored["run"]["answer"] == "Paris." and stored["tree"] == app.store.get_run(account["run_id"]).tree()
    assert [model.id for model in sdk(client).models.list()] == ["team"]


def test_a_streamed_completion_sends_routing_events_then_the_answer(served) -> None:
    _, client = served
    chunks = list(sdk(client).chat.completions.create(model="team", messages=[{"role": "user", "content": "Capital of France?"}], stream=True))
    events = [chunk.model_extra["orchestra"]["event"] for chunk in chunks if "event" in (chunk.model_extra.get("orchestra") or {})]
    assert events == ["decision", "call", "call", "aggregate"]
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices) == "Paris."
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].usage.total_tokens > 0
    assert len({chunk.id for chunk in chunks}) == 1


def test_an_agent_onboarded_over_http_answers_the_next_request(served) -> None:
    app, client = served
    poet = {"id": "poet", "description": "Writes short poems.", "model": "writer"}
    created = client.post("/orchestra/agents", json=poet)
    assert created.status_code == 201 and created.json()["added"][0]["id"] == "poet"
    sdk(client).chat.completions.create(model="team", messages=[{"role": "user", "content": "A poem about Paris?"}])
    assert sorted(card.id for card in SEEN[-1].agents) == ["geo", "history", "poet"]
    duplicate = client.post("/orchestra/agents", json=poet)
    assert duplicate.status_code == 409 and duplicate.json()["error"]["code"] == "duplicate_id"
    assert client.post("/orchestra/agents?update=true", json={**poet, "description": "Writes haiku."}).status_code == 201
    assert {card["id"]: card["description"] for card in client.get("/orchestra/agents").json()["data"]}["poet"] == "Writes haiku."
    assert client.delete("/orchestra/agents/poet").status_code == 200
    assert sorted(card.id for card in app.registry.agents()) == ["geo", "history"]


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        ({"id": "x", "description": "", "model": "writer"}, 400, "description"),
        ([{"id": "y", "description": "Fine.", "model": "writer"}, {"id": "y", "description": "Again.", "model": "writer"}], 400, "'y'"),
        ({"id": "geo", "description": "Taken.", "model": "writer"}, 409, "'geo' is already registered"),
        ([], 400, "non-empty list"),
        ("not a card", 400, "JSON object"),
    ],
)
def test_a_bad_card_is_refused_with_its_field_and_nothing_is_stored(served, body: Any, status: int, names: str) -> None:
    app, client = served
    response = client.post("/orchestra/agents", json=body)
    assert response.status_code == status and names in response.json()["error"]["message"]
    assert sorted(card.id for card in app.registry.agents()) == ["geo", "history"]


@pytest.mark.parametrize(
    ("body", "status", "param_or_text"),
    [
        ({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}, 404, "'gpt-4'"),
        ({"model": "team"}, 400, "messages"),
        ({"model": "team", "messages": []}, 400, "messages"),
        ({"model": "team", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, 400, "messages[1].role"),
        ({"model": "team", "messages": [{"role": "user", "content": "   "}]}, 400, "the query is empty"),
        ({"model": "team", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, 400, "'image_url' part"),
        ({"model": "team", "messages": [{"role": "user", "content": "hi"}], "cost_weight": 2}, 400, "cost_weight"),
        ({"model": "team", "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages.0.role"),
        ({"model": "team", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "tools:"),
        ({"model": "team", "messages": [{"role": "user", "content": "hi"}], "tool_choice": "required"}, 400, "tool_choice:"),
        ({"model": "team", "messages": [{"role": "user", "content": "hi"}], "n": 3}, 400, "n: a routed run gives one answer"),
        ({"model": "team", "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}}, 400, "response_format:"),
    ],
)
def test_a_bad_request_answers_400_or_404_in_openai_s_error_shape_and_runs_nothing(served, body: Any, status: int, param_or_text: str) -> None:
    app, client = served
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert param_or_text in error["message"] and error["type"]
    assert app.store.list_runs(limit=5) == [] and SEEN == []


def test_a_run_that_fails_answers_502_with_its_stored_run(served) -> None:
    app, client = served
    for agent_id in ("geo", "history"):
        app.registry.update_agent(AgentCard(id=agent_id, description="Answers.", model="down"))
    with pytest.raises(openai.APIStatusError) as raised:
        sdk(client).chat.completions.create(model="team", messages=[{"role": "user", "content": "Capital of France?"}])
    assert raised.value.status_code == 502
    body = raised.value.body
    run_id = raised.value.response.json()["orchestra"]["run_id"]
    assert body["type"] == "AgentError" and "connection refused" in body["message"]
    assert app.store.get_run(run_id).run.status == "error"


def test_models_are_added_listed_and_removed_over_http(served) -> None:
    app, client = served
    card = {"id": "extra", "description": "Another scripted model.", "input_price_per_mtok": 0.5, "output_price_per_mtok": 1.0}
    assert client.post("/orchestra/models", json=card).status_code == 201
    assert "extra" in [model["id"] for model in client.get("/orchestra/models").json()["data"]]
    bad = client.post("/orchestra/models", json={**card, "id": "neg", "input_price_per_mtok": -1})
    assert bad.status_code == 400 and "input_price_per_mtok" in bad.json()["error"]["message"]
    assert client.delete("/orchestra/models/extra").status_code == 200 and "extra" not in [m.id for m in app.registry.models()]
    missing = client.delete("/orchestra/models/extra")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert client.get("/orchestra/runs/nope").status_code == 404


# -- POST /orchestra/runs/{run_id}/resume -----------------------------------------------------------------------


def _three_agents() -> tuple[Orchestra, ScriptedModels, TestClient]:
    """Three LLM agents on their own priced models, the third's model down; served with the ``all`` router."""
    from orchestra import PassThrough

    models = ScriptedModels([ScriptedModel("m1", ["one"]), ScriptedModel("m2", ["two"]),
                             ScriptedModel("m3", [ModelUnavailableError("provider down", model_id="m3")])])
    app = Orchestra(store=InMemoryStore(), model_factory=models)
    for number in (1, 2, 3):
        app.registry.add_model(ModelCard(id=f"m{number}", description="answers", input_price_per_mtok=1.0, output_price_per_mtok=2.0))
        app.registry.add_agent(AgentCard(id=f"a{number}", description="LLM agent", model=f"m{number}"))
    return app, models, TestClient(create_app(app, app.workflow("all", aggregator=PassThrough()), name="team"))


def _fix_third(app: Orchestra, models: ScriptedModels) -> ScriptedModel:
    """The user's fix: the third model's card re-onboarded, now reaching a provider that answers."""
    fixed = ScriptedModel("m3", ["three"])
    models.models["m3"] = fixed
    app.registry.update_model(ModelCard(id="m3", description="moved to another provider", input_price_per_mtok=1.0, output_price_per_mtok=2.0))
    return fixed


def test_a_run_whose_third_model_was_down_is_resumed_over_http_once_it_is_fixed() -> None:
    app, models, client = _three_agents()
    completion = sdk(client).chat.completions.create(model="team", messages=[{"role": "user", "content": "question"}])
    original = completion.model_extra["orchestra"]["run_id"]
    assert completion.model_extra["orchestra"]["status"] == "ok" and "three" not in completion.choices[0].message.content
    good, fixed = [models.models["m1"], models.models["m2"]], _fix_third(app, models)

    response = client.post(f"/orchestra/runs/{original}/resume", json={"budget": {"max_calls": 8}})

    assert response.status_code == 201, response.text
    body = response.json()
    run = body["run"]
    assert run["status"] == "ok" and run["answer"] == "**a1**: one\n\n**a2**: two\n\n**a3**: three"
    assert run["replay_of"] == original and run["replay_mode"] == "resume" and body["resumed_from"] == original
    assert (body["served"], body["live"]) == (3, 2)  # the decision and two answers served; the third call and the aggregation live
    assert [len(model.calls) for model in good] == [1, 1] and len(fixed.calls) == 1  # the good models not called again
    assert run["meta"]["budget"]["max_calls"] == 8 and run["meta"]["budget"]["max_rounds"] == 4  # the others as recorded
    stored = client.get(f"/orchestra/runs/{run['id']}").json()
    assert stored["run"] == run and stored["tree"] == body["tree"]
    assert app.store.get_run(original).run.status == "ok" and app.store.get_run(original).run.replay_of is None

    # the resumed run ended ok with nothing failed: a conflict with its state, said in words, nothing stored
    before = [r.id for r in app.store.list_runs()]
    refused = client.post(f"/orchestra/runs/{run['id']}/resume")
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert "ended ok and no step of it failed: there is nothing to resume" in error["message"] and error["code"] == "not_resumable"
    assert [r.id for r in app.store.list_runs()] == before


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        (None, 404, "no run with id 'no-such-run'"),
        ({"budget": {"max_calls": 0}}, 400, "budget.max_calls"),
        ({"budget": {"max_calls": "8"}}, 400, "budget.max_calls"),
        ({"budget": {"max_callz": 8}}, 400, "budget.max_callz"),
        ({"budget": 8}, 400, "budget: must be a JSON object"),
        ({"router": "all"}, 400, "router: not a field of a resume request"),
        ([1], 400, "must be a JSON object"),
        ("{", 400, "not JSON"),
    ],
)
def test_a_resume_refused_says_why_with_its_status_and_stores_nothing(body: Any, status: int, names: str) -> None:
    from orchestra import PassThrough

    app, models, client = _three_agents()
    original = app.workflow("all", aggregator=PassThrough()).run("question").run_id
    _fix_third(app, models)
    run_id = "no-such-run" if status == 404 else original
    if isinstance(body, str):
        response = client.post(f"/orchestra/runs/{run_id}/resume", content=body, headers={"content-type": "application/json"})
    else:
        response = client.post(f"/orchestra/runs/{run_id}/resume", json=body)
    assert response.status_code == status, response.text
    assert names in response.json()["error"]["message"]
    assert [run.id for run in app.store.list_runs()] == [original]
    assert len(models.models["m3"].calls) == 0


def _paused_for_a_payment(app: Orchestra, client: TestClient) -> tuple[list[str], Any]:
    """What a payment agent whose card requires approval paid, and the error of the request that paused for it."""
    paid: list[str] = []
    app.registry.add_agent(AgentCard(id="pay", description="Pays invoices.", requires_approval=True), implementation=lambda q: paid.append(q) or "paid")
    with pytest.raises(openai.APIStatusError) as raised:
        sdk(client).chat.completions.create(model="team", messages=[{"role": "user", "content": "Pay invoice 7"}])
    return paid, raised


def test_a_run_paused_for_approval_answers_409_and_resuming_it_over_http_approves(served) -> None:
    app, client = served
    paid, raised = _paused_for_a_payment(app, client)
    assert raised.value.status_code == 409 and raised.value.body["code"] == "approval_required" and paid == []
    run_id = raised.value.response.json()["orchestra"]["run_id"]
    assert app.store.get_run(run_id).run.status == "interrupted"
    response = client.post(f"/orchestra/runs/{run_id}/resume")
    assert response.status_code == 201 and response.json()["run"]["status"] == "ok" and paid == ["Pay invoice 7"]


# -- who may use the server ---------------------------------------------------------------------------------------


def _keyed(key: str = "sk-orchestra-test") -> tuple[Orchestra, TestClient]:
    """The `served` team behind an API key."""
    models = [ScriptedModel("writer", ["Paris is the capital."] * 4), ScriptedModel("refiner", ["Paris."] * 2)]
    app = Orchestra(store=InMemoryStore(), model_factory=ScriptedModels(models))
    for model in models:
        app.registry.add_model(ModelCard(id=model.id, description=f"scripted model {model.id}", input_price_per_mtok=1.0, output_price_per_mtok=2.0))
    app.registry.add_agent(AgentCard(id="geo", description="Geography answers.", model="writer"))
    workflow = app.workflow(FunctionRouter(dispatch_all), aggregator=Refine("refiner"))
    return app, TestClient(create_app(app, workflow, name="team", api_key=key))


def test_with_an_api_key_only_its_holders_are_served_and_a_refused_request_runs_nothing() -> None:
    app, client = _keyed()
    ask = {"model": "team", "messages": [{"role": "user", "content": "Capital of France?"}]}
    with pytest.raises(openai.AuthenticationError) as refused:
        sdk(client).chat.completions.create(**ask)  # the SDK sends its api_key, "unused", as the bearer token
    assert refused.value.status_code == 401 and refused.value.code == "invalid_api_key"
    assert "sk-orchestra-test" not in str(refused.value.body)
    for method, path in [("GET", "/v1/models"), ("GET", "/orchestra/agents"), ("DELETE", "/orchestra/agents/geo"),
                         ("POST", "/orchestra/runs/nope/resume")]:
        response = client.request(method, path)
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == "missing_api_key" and response.headers["www-authenticate"] == "Bearer"
    response = client.post("/orchestra/agents", json={"id": "poet", "description": "Poems.", "model": "writer"},
                           headers={"Authorization": "Bearer sk-orchestra-tesT"})  # one letter off
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert app.store.list_runs(limit=5) == [] and [card.id for card in app.registry.agents()] == ["geo"]

    keyed = openai.OpenAI(base_url="http://testserver/v1", api_key="sk-orchestra-test", http_client=client, max_retries=0)
    assert keyed.chat.completions.create(**ask).choices[0].message.content == "Paris is the capital."
    assert [run.status for run in app.store.list_runs(limit=5)] == ["ok"]
    listed = client.get("/orchestra/agents", headers={"Authorization": "bearer sk-orchestra-test"})  # the scheme in any case
    assert listed.status_code == 200 and [card["id"] for card in listed.json()["data"]] == ["geo"]


def test_a_function_agent_is_onboarded_over_http_only_on_a_keyed_server_and_its_function_is_not_imported_without(served, monkeypatch) -> None:
    app, client = served
    imported: list[str] = []
    import orchestra.agent

    real_check = orchestra.agent.check_function
    monkeypatch.setattr(orchestra.agent, "check_function", lambda target, **kw: (imported.append(target), real_check(target, **kw)))
    card = {"id": "shell", "description": "Answers every question.", "backend": "function", "function": "os:getcwd"}
    version = app.registry.version
    response = client.post("/orchestra/agents", json=[{"id": "poet", "description": "Poems.", "model": "writer"}, card])
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "api_key_required" and "'shell'" in error["message"] and "--api-key" in error["message"]
    # refused before anything is imported (importing a module runs its code) and all or nothing: the poet is not added
    assert imported == [] and app.registry.version == version and sorted(c.id for c in app.registry.agents()) == ["geo", "history"]

    keyed_app, keyed = _keyed("k3y")
    auth = {"Authorization": "Bearer k3y"}
    missing = keyed.post("/orchestra/agents", json={**card, "function": "no.such.module:fn"}, headers=auth)
    assert missing.status_code == 400 and "no.such.module" in missing.json()["error"]["message"]
    assert keyed.post("/orchestra/agents", json=card, headers=auth).status_code == 201
    assert keyed_app.registry.agent("shell").function == "os:getcwd"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_not_sent_as_json_is_refused_so_a_web_page_cannot_post_one_behind_its_user_s_back(served, content_type: str | None) -> None:
    """Browsers send a cross-origin POST of plain text or a form without asking the server first (a JSON one they
    ask about, and this server allows no other origin): such a body onboards nothing and resumes nothing."""
    app, client = served
    headers = {"content-type": content_type} if content_type else {}
    card = json.dumps({"id": "poet", "description": "Poems.", "model": "writer"}).encode()
    response = client.post("/orchestra/agents", content=card, headers=headers)
    assert response.status_code == 415 and response.json()["error"]["code"] == "unsupported_media_type"
    assert sorted(c.id for c in app.registry.agents()) == ["geo", "history"]
    completion = sdk(client).chat.completions.create(model="team", messages=[{"role": "user", "content": "Capital?"}])
    run_id = completion.model_extra["orchestra"]["run_id"]
    resumed = client.post(f"/orchestra/runs/{run_id}/resume", content=b'{"budget": {"max_calls": 9}}', headers=headers)
    assert resumed.status_code == 415 and len(app.store.list_runs(limit=5)) == 1
    # declared JSON, with a charset or as a +json type, it is read
    ok = client.post("/orchestra/agents", content=card, headers={"content-type": "application/json; charset=utf-8"})
    assert ok.status_code == 201


@pytest.mark.parametrize("key", ["", "   ", "two words", "kéy", 42])
def test_an_api_key_that_cannot_travel_in_a_header_is_refused_without_being_repeated(served, key: Any) -> None:
    app, _ = served
    with pytest.raises(ConfigurationError, match="api_key") as refused:
        create_app(app, app.workflow(FunctionRouter(dispatch_all)), api_key=key)
    assert not (isinstance(key, str) and key.strip() and key in str(refused.value))


def test_orchestra_serve_takes_its_key_from_the_option_or_the_environment_and_refuses_a_bad_one_before_serving(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    import orchestra.server
    from orchestra.cli import app as cli

    served_with: list[str | None] = []
    origins: list[tuple[str, ...]] = []
    monkeypatch.setattr(orchestra.server, "serve", lambda *args, api_key=None, allow_origins=(), **kwargs: (served_with.append(api_key), origins.append(allow_origins)))
    db = ["--db", f"sqlite:///{tmp_path / 'runs.db'}", "--profile", "none", "--router", "all"]
    runner = CliRunner()
    refused = runner.invoke(cli, ["serve", *db, "--api-key", "two words"])
    assert refused.exit_code != 0 and "api_key" in refused.output and "two words" not in refused.output and served_with == []
    assert runner.invoke(cli, ["serve", *db], env={"ORCHESTRA_API_KEY": "from-env"}).exit_code == 0
    assert runner.invoke(cli, ["serve", *db, "--api-key", "given"], env={"ORCHESTRA_API_KEY": "from-env"}).exit_code == 0
    opened = runner.invoke(cli, ["serve", *db, "--host", "0.0.0.0"], env={"ORCHESTRA_API_KEY": None})
    assert opened.exit_code == 0 and "no --api-key" in opened.output
    assert served_with == ["from-env", "given", None]
    assert runner.invoke(cli, ["serve", *db, "--allow-origin", "http://localhost:3000", "--allow-origin", "https://app.example"]).exit_code == 0
    assert origins[-1] == ("http://localhost:3000", "https://app.example")
    refused = runner.invoke(cli, ["serve", *db, "--allow-origin", "*"])
    assert refused.exit_code != 0 and "allow_origins" in refused.output and len(origins) == 4


@pytest.mark.parametrize(
    ("card", "names"),
    [
        ({"id": "gpt", "description": "A model.", "base_url": "https://elsewhere.example/v1", "api_key_env": "OPENAI_API_KEY"}, "OPENAI_API_KEY"),
        ({"id": "disk", "description": "A local model.", "local": True, "gguf_path": "/etc/passwd"}, "/etc/passwd"),
    ],
)
def test_a_model_card_that_would_use_the_server_s_secrets_or_files_needs_a_keyed_server(served, card: dict[str, Any], names: str) -> None:
    """Without a key, a model card naming one of the server's environment variables would have the server send
    that secret to the card's base_url, and a GGUF path would load the server's files: refused before storing."""
    app, client = served
    version = app.registry.version
    response = client.post("/orchestra/models", json=[{"id": "plain", "description": "Fine."}, card])
    assert response.status_code == 403 and response.json()["error"]["code"] == "api_key_required"
    assert names in response.json()["error"]["message"] and app.registry.version == version
    keyed_app, keyed = _keyed("k3y")
    assert keyed.post("/orchestra/models", json=card, headers={"Authorization": "Bearer k3y"}).status_code == 201
    assert keyed_app.registry.model(card["id"]) is not None


def test_openai_fields_a_run_honours_by_their_defaults_are_accepted(served) -> None:
    _, client = served
    completion = sdk(client).chat.completions.create(
        model="team", messages=[{"role": "user", "content": "Capital of France?"}], n=1, tools=[], tool_choice="auto",
        response_format={"type": "text"}, temperature=0.2,
    )
    assert completion.choices[0].message.content == "Paris."


def test_a_streamed_completion_sends_the_answer_as_the_refining_model_writes_it() -> None:
    """Two agents answer, then the refiner writes the answer: its words reach the client as it writes them, before
    the run has finished (the aggregate event comes after them), and joined they are the stored answer."""
    models = [ScriptedModel("writer", ["Paris is the capital.", "Paris, on the Seine."]),
              ScriptedModel("refiner", ["Merged answer: Paris is the capital of France, on the Seine."])]
    app = Orchestra(store=InMemoryStore(), model_factory=ScriptedModels(models))
    for model in models:
        app.registry.add_model(ModelCard(id=model.id, description=f"scripted model {model.id}", input_price_per_mtok=1.0, output_price_per_mtok=2.0))
    app.registry.add_agent(AgentCard(id="geo", description="Geography answers.", model="writer"))
    app.registry.add_agent(AgentCard(id="history", description="History answers.", model="writer"))
    client = TestClient(create_app(app, app.workflow(FunctionRouter(dispatch_all), aggregator=Refine("refiner")), name="team"))
    chunks = list(sdk(client).chat.completions.create(model="team", messages=[{"role": "user", "content": "Capital of France?"}], stream=True))
    kinds = ["content" if chunk.choices and chunk.choices[0].delta.content else (chunk.model_extra.get("orchestra") or {}).get("event")
             for chunk in chunks]
    assert kinds.count("content") > 5 and kinds.index("aggregate") > max(i for i, kind in enumerate(kinds) if kind == "content")
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "Paris is the capital of France, on the Seine." == app.store.list_runs(limit=1)[0].answer  # the echoed cue left out


def test_only_the_origins_given_may_call_the_server_from_a_browser() -> None:
    """A web app on another origin needs CORS to send JSON and a key; the browser's preflight carries no key, and
    is answered for the origins given only."""
    app, _ = _keyed("k3y")
    workflow = app.workflow(FunctionRouter(dispatch_all), aggregator=Refine("refiner"))
    client = TestClient(create_app(app, workflow, name="team", api_key="k3y", allow_origins=["http://localhost:3000"]))
    ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    preflight = client.options("/v1/chat/completions", headers={"Origin": "http://localhost:3000", **ask})
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "http://localhost:3000"
    elsewhere = client.options("/v1/chat/completions", headers={"Origin": "https://evil.example", **ask})
    assert elsewhere.status_code == 400 and "access-control-allow-origin" not in elsewhere.headers
    answered = client.post("/v1/chat/completions", json={"model": "team", "messages": [{"role": "user", "content": "Capital?"}]},
                           headers={"Origin": "http://localhost:3000", "Authorization": "Bearer k3y"})
    assert answered.status_code == 200 and answered.headers["access-control-allow-origin"] == "http://localhost:3000"

    plain = TestClient(create_app(app, workflow, name="team"))  # none given: no page of any origin may
    refused = plain.options("/v1/chat/completions", headers={"Origin": "http://localhost:3000", **ask})
    assert refused.status_code == 405 and "access-control-allow-origin" not in refused.headers
    for origins in (["*"], ["localhost:3000"], ["http://localhost:3000/app"], "http://localhost:3000", ["ftp://x"]):
        with pytest.raises(ConfigurationError, match="allow_origins"):
            create_app(app, workflow, allow_origins=origins)  # type: ignore[arg-type]


def test_a_client_that_leaves_before_the_answer_stops_its_run() -> None:
    """A client gives up (its timeout, a closed tab): the run is cancelled rather than left writing for nobody, and
    is stored as interrupted. A real server on loopback, since an in-process client cannot hang up."""
    import asyncio
    import socket
    import threading
    import time

    import httpx
    import uvicorn

    class Slow(ScriptedModel):
        async def achat(self, messages: Any, options: Any = None) -> Any:
            await asyncio.sleep(10)
            return await super().achat(messages, options)

    app = Orchestra(store=InMemoryStore(), model_factory=ScriptedModels([Slow("writer", ["too late"])]))
    app.registry.add_model(ModelCard(id="writer", description="scripted model writer", input_price_per_mtok=1.0, output_price_per_mtok=2.0))
    app.registry.add_agent(AgentCard(id="geo", description="Geography answers.", model="writer"))
    api = create_app(app, app.workflow(FunctionRouter(dispatch_all)), name="team")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=1.0,
                       json={"model": "team", "messages": [{"role": "user", "content": "Capital?"}]})
        left = time.monotonic()
        while time.monotonic() - left < 5 and [run.status for run in app.store.list_runs(limit=1)] != ["interrupted"]:
            time.sleep(0.05)
        assert [run.status for run in app.store.list_runs(limit=1)] == ["interrupted"]
        assert time.monotonic() - left < 2  # not the model's 10 s
    finally:
        server.should_exit = True
        thread.join(timeout=5)


def test_a_resume_over_http_may_leave_calls_that_waited_for_approval_unapproved(served) -> None:
    app, client = served
    paid, raised = _paused_for_a_payment(app, client)
    run_id = raised.value.response.json()["orchestra"]["run_id"]
    for body, names in (({"reject": "pay"}, "reject: must be a list"), ({"reject": ["geo"]}, "'geo' is not an agent run"),
                        ({"approve": ["pay"]}, "approve: not a field")):
        refused = client.post(f"/orchestra/runs/{run_id}/resume", json=body)
        assert refused.status_code == 400 and names in refused.json()["error"]["message"], refused.json()
    assert len(app.store.list_runs(limit=5)) == 1 and paid == []
    response = client.post(f"/orchestra/runs/{run_id}/resume", json={"reject": ["pay"]})
    assert response.status_code == 201 and response.json()["run"]["status"] == "ok" and paid == []
    assert response.json()["run"]["meta"]["resumed"]["not_approved"] == ["pay"]


def test_a_failed_or_paused_run_is_not_sent_again_by_an_openai_client_s_default_retries(served) -> None:
    # the SDK retries a 409 and a 5xx twice by default: each retry would be another stored run, its agents called again
    app, client = served
    retrying = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=client)  # max_retries=2
    paid: list[str] = []
    app.registry.add_agent(AgentCard(id="pay", description="Pays invoices.", requires_approval=True), implementation=lambda q: paid.append(q) or "paid")
    with pytest.raises(openai.APIStatusError) as paused:
        retrying.chat.completions.create(model="team", messages=[{"role": "user", "content": "Pay invoice 7"}])
    app.registry.remove_agent("pay")
    for agent_id in ("geo", "history"):
        app.registry.update_agent(AgentCard(id=agent_id, description="Answers.", model="down"))
    with pytest.raises(openai.APIStatusError) as failed:
        retrying.chat.completions.create(model="team", messages=[{"role": "user", "content": "Capital of France?"}])
    assert (paused.value.status_code, failed.value.status_code) == (409, 502)
    assert paused.value.response.headers["x-should-retry"] == failed.value.response.headers["x-should-retry"] == "false"
    assert [run.status for run in app.store.list_runs(limit=10)] == ["error", "interrupted"]  # one run per request


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"cost_weight": 2}, "cost_weight"),
        ({"max_agents": 0}, "max_agents"),
        ({"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "content": "x"}, {"role": "user", "content": "hi"}]}, "messages[1].role"),
    ],
)
def test_a_refused_field_is_named_in_param_as_openai_s_clients_read_it(served, extra: dict[str, Any], param: str) -> None:
    """OpenAI's SDK shows ``BadRequestError.param``: Orchestra's own refusals fill it with the request's field (it
    was None), and a routing value out of range is named as the request names it, not RoutingPolicy's field."""
    app, client = served
    response = client.post("/v1/chat/completions", json={"model": "team", "messages": [{"role": "user", "content": "hi"}], **extra})
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == param and error["message"].startswith(f"{param}: "), error
    assert error["type"] == "invalid_request_error" and app.store.list_runs(limit=5) == []


def test_a_request_sets_its_min_score_as_it_sets_its_cost_weight_and_max_agents(served) -> None:
    """Of the three `RoutingPolicy` fields a request may set, ``min_score`` was silently ignored (the request's extra
    fields are allowed, for OpenAI's clients): a client asking for confident routing got the workflow's own."""
    app, client = served
    reply = client.post("/v1/chat/completions", json={"model": "team", "messages": [{"role": "user", "content": "hi"}],
                                                      "min_score": 0.8, "max_agents": 2, "cost_weight": 0.4})
    assert reply.status_code == 200, reply.json()
    assert SEEN[-1].policy.min_score == 0.8 and SEEN[-1].policy.max_agents == 2 and SEEN[-1].policy.cost_weight == 0.4
    assert app.store.get_run(reply.json()["orchestra"]["run_id"]).run.meta["policy"]["min_score"] == 0.8
    refused = client.post("/v1/chat/completions", json={"model": "team", "messages": [{"role": "user", "content": "hi"}], "min_score": "high"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "min_score", refused.json()


def test_the_cards_a_server_lists_are_the_stored_ones_after_another_process_changed_them(served) -> None:
    """GET /orchestra/agents and /orchestra/models answered from the server's view as of its last run: an agent
    `orchestra agents add` had stored (another process, the same store) was missing from the listing, and one it had
    removed still listed, until a chat request happened to take the changes in."""
    from orchestra.registry import Registry

    app, client = served
    cli = Registry(app.store)
    cli.add_model(ModelCard(id="extra", description="added by the CLI"))
    cli.add_agent(AgentCard(id="poet", description="Writes short poems.", model="extra"))
    cli.remove_agent("history")
    agents, models = client.get("/orchestra/agents").json(), client.get("/orchestra/models").json()
    assert [card["id"] for card in agents["data"]] == ["geo", "poet"] and agents["registry_version"] == cli.version
    assert [card["id"] for card in models["data"]] == ["writer", "refiner", "down", "extra"] and models["registry_version"] == cli.version


_SERVE_A_GATED_AGENT = """
import sys, time
from pathlib import Path

import orchestra.embeddings
from orchestra import AgentCard, Orchestra
from orchestra.server import serve

orchestra.embeddings.warm_up_embedder = lambda: True  # the fixed router embeds nothing: no encoder to load
db, port, gate = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])

def wait_for_the_gate(query):
    while not gate.exists():
        time.sleep(0.02)
    return "the gate opened"

app = Orchestra(store=db)
app.registry.add_agent(AgentCard(id="gated", description="Answers once the gate opens."), implementation=wait_for_the_gate)
serve(app, app.workflow("fixed", agent_ids=["gated"]), port=port, shutdown_grace_s=0.5)
"""


@pytest.mark.parametrize("stream", [False, True])
def test_a_server_told_to_stop_stops_the_runs_under_way_after_its_grace_and_stores_them_interrupted(tmp_path, stream: bool) -> None:
    """SIGTERM (a service manager's stop) left `serve` waiting for every request under way, for ever if a run did not
    end: the server never stopped until it was killed, and the run stayed "running" in the store. Now the runs get
    the grace period, then are stopped and stored as interrupted, their clients told so, and the server exits."""
    import signal
    import socket
    import subprocess
    import sys
    import threading
    import time

    import httpx

    from orchestra.store import open_store

    db, gate = f"sqlite:///{tmp_path / 'served.db'}", tmp_path / "gate"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-c", _SERVE_A_GATED_AGENT, db, str(port), str(gate)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    answered: list[object] = []

    def ask() -> None:
        body = {"model": "orchestra", "messages": [{"role": "user", "content": "open the gate"}], "stream": stream}
        try:
            response = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=30)
            answered.append((response.status_code, response.text))
        except httpx.HTTPError as exc:
            answered.append(type(exc).__name__)

    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        else:
            pytest.fail(f"the server did not start: {server.stderr.read() if server.poll() is not None else 'timed out'}")
        client = threading.Thread(target=ask)
        client.start()
        store = open_store(db)
        while not (runs := store.list_runs(limit=1)) or not any(step.kind == "decision" for step in store.get_run(runs[0].id).steps):
            time.sleep(0.05)  # the run is under way: decided, its agent waiting for the gate
        server.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while store.list_runs(limit=1)[0].status == "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        run = store.list_runs(limit=1)[0]
        gate.touch()  # the agent's own call ends, and with it the process
        assert server.wait(timeout=20) == -signal.SIGTERM
        client.join(timeout=10)
    finally:
        gate.touch()
        if server.poll() is None:
            server.kill()
    assert run.status == "interrupted" and run.error["type"] == "RunCancelled", run
    if stream:  # the answer had begun (200, the stream's first chunk): its stream ends without [DONE]
        assert answered and "[DONE]" not in str(answered[0])
    else:  # told in OpenAI's error shape, with the run to resume (it was a bare 500 page)
        status, text = answered[0]
        error = json.loads(text)
        assert status == 503 and error["error"]["code"] == "server_shutdown" and error["orchestra"]["run_id"] == run.id
    assert [r.status for r in open_store(db).list_runs()] == ["interrupted"]
