"""AgentRouter: entity extraction, the per-query knowledge graph, KL soft-label training, top-k weighted dispatch,
onboarding by card, bad input, checkpoints, and both benchmark harnesses (on small synthetic sets)."""

from __future__ import annotations

import dataclasses

import json
import re
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("spacy")
pytest.importorskip("torch_geometric")

from orchestra.bench.agents import RoutingExample, run_agent_bench  # noqa: E402
from orchestra.bench.models import ModelOutcome, ModelQuery, run_model_bench  # noqa: E402
from orchestra.cards import AgentCard, ModelCard  # noqa: E402
from orchestra.errors import CheckpointError, DataError, DecisionError, PolicyError  # noqa: E402
from orchestra.policies import RoutingPolicy  # noqa: E402
from orchestra.routers.agent_router import (  # noqa: E402
    EDGE_TYPES,
    AgentRouter,
    answer_kind,
    focus_text,
    soft_targets,
)
from orchestra.routers.entities import Entity, extract_entities  # noqa: E402
from orchestra.routing import Dispatch, Finish, RouterState, register_router  # noqa: E402


class HashEmbedder:
    """A deterministic bag-of-words embedder: fast, offline, and similar texts get similar vectors."""

    dim = 64

    def encode(self, texts, batch_size=64):  # noqa: ANN001, ANN201
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[i, zlib.crc32(word.encode()) % self.dim] += 1.0
            norm = np.linalg.norm(out[i])
            out[i] /= norm if norm else 1.0
        return out


TEMPLATES = {
    "math": ["What is {a} plus {b}?", "Compute {a} times {b} please", "How much is {a} percent of {b}?"],
    "history": ["When did Napoleon reach Moscow in {y}?", "Who ruled France in {y}?", "What happened in Rome in {y}?"],
    "code": ["Write a python function that sorts {a} lists", "Fix this python code with {a} loops",
             "Implement a python class for {a} stacks"],
}


def make_query(kind: str, i: int) -> str:
    template = TEMPLATES[kind][i % 3]
    return template.format(a=i + 2, b=3 * i + 1, y=1700 + i)


def model_rows(n: int, seed: int) -> list[ModelQuery]:
    """m-math, m-history, m-code each right on their own kind; m-general right on math and history too, so
    p* of a math query is split between two models."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        kind = ("math", "history", "code")[i % 3]
        scores = {
            "m-math": float(kind == "math"),
            "m-history": float(kind == "history"),
            "m-code": float(kind == "code"),
            "m-general": float(kind != "code"),
        }
        if rng.random() < 0.05:
            scores = {m: 0.0 for m in scores}  # nobody right: an uninformative row
        outcomes = {m: ModelOutcome(score=s, cost=0.001 * (j + 1), response="A") for j, (m, s) in enumerate(scores.items())}
        rows.append(ModelQuery(id=f"q{seed}-{i}", query=make_query(kind, i + 1000 * seed), task=kind, outcomes=outcomes))
    return rows


MODEL_CARDS = [
    ModelCard(id="m-math", description="arithmetic and numbers specialist"),
    ModelCard(id="m-history", description="history dates and events specialist"),
    ModelCard(id="m-code", description="python programming specialist"),
    ModelCard(id="m-general", description="general assistant"),
]
AGENT_CARDS = [
    AgentCard(id="calculator", description="arithmetic: adds, multiplies, percentages of numbers"),
    AgentCard(id="historian", description="history: dates, rulers and events of the past"),
    AgentCard(id="coder", description="writes and fixes python code"),
]


def _small(**options):  # noqa: ANN003, ANN202
    return AgentRouter(embedder=HashEmbedder(), hidden=32, epochs=15, patience=15, batch_size=32, **options)


@pytest.fixture(scope="module")
def model_router() -> AgentRouter:
    return _small().fit(model_rows(90, 0), MODEL_CARDS, val=model_rows(15, 1))


@pytest.fixture(scope="module")
def agent_router() -> AgentRouter:
    names = {"math": "calculator", "history": "historian", "code": "coder"}
    rows = [RoutingExample(query=make_query(kind, i), agents=(names[kind],)) for i in range(60) for kind in [("math", "history", "code")[i % 3]]]
    oos = [RoutingExample(query=q, agents=()) for q in ("tell me a joke about cats", "sing me a lullaby about cats",
                                                           "a joke about dogs and cats", "recommend a cat joke")] * 4
    return _small(k=2).fit(AGENT_CARDS, rows, "supervised", 5, oos_rows=oos, seed=0)


# ---------------------------------------------------------------------------------------------- entities


def test_entities_find_dates_numbers_money_and_names() -> None:
    found = {(e.text, e.label) for e in extract_entities(
        "Book a flight from New York to Paris on May 3rd, 2024 for $450; NASA said 3.5% in the 1990s.")}
    assert {("New York", "NAME"), ("Paris", "NAME"), ("May 3rd, 2024", "DATE"), ("$450", "MONEY"),
            ("NASA", "NAME"), ("3.5%", "PERCENT"), ("1990s", "DATE")} <= found


def test_entities_skip_sentence_openers_and_handle_empty_text() -> None:
    assert extract_entities("Write a python function to sort numbers.") == []
    assert extract_entities("") == []
    assert extract_entities(None) == []  # type: ignore[arg-type]
    names = [e.text for e in extract_entities("Yesterday Marie Curie met Pierre in 1903.")]
    assert names == ["Yesterday", "Marie Curie", "Pierre", "1903"]


# ---------------------------------------------------------------------------------------------- pieces


def test_soft_targets_normalise_scores_and_flag_rows_where_all_failed() -> None:
    targets, informative = soft_targets(np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.6, 0.2, 0.2]]))
    np.testing.assert_allclose(targets[0], [0.5, 0.5, 0.0])
    np.testing.assert_allclose(targets[1], [1 / 3] * 3, rtol=1e-6)
    np.testing.assert_allclose(targets[2], [0.6, 0.2, 0.2], rtol=1e-6)
    assert informative.tolist() == [True, False, True]


def test_focus_text_reads_the_last_paragraph_of_a_long_prompt() -> None:
    prompt = ("Example question?\nAnswer: A\n\n" * 50) + "Which planet is largest?\nA) Mars\nB) Jupiter\nAnswer:"
    assert focus_text(prompt, 600) == "Which planet is largest?\nA) Mars\nB) Jupiter\nAnswer:"
    assert focus_text("short query", 600) == "short query"
    assert answer_kind(prompt) == "vote" and answer_kind("Explain how tides work.") == "refine"


def test_graph_has_typed_nodes_and_edges(model_router: AgentRouter) -> None:
    graph = model_router.graphs(["In 1812 Napoleon left Paris for Moscow with 600000 men."])[0]
    labels = [(e.text, e.label) for e in graph.entities]
    assert ("Napoleon", "NAME") in labels and ("1812", "DATE") in labels and ("600000", "NUMBER") in labels
    assert len(graph.relation_x) == len(graph.entities) - 1  # consecutive entities of one sentence
    with_task = model_router.graphs(["Compute 3 times 4"], tasks=["gsm8k"])[0]
    assert with_task.entities[-1] == Entity(text="gsm8k", label="TASK", start=-1, end=-1)
    # "3" and "4" share a sentence and a relation; the task is linked to the query only
    assert len(with_task.relation_x) == 1 and len(with_task.entities) - 1 not in with_task.relation_edges[0]
    agent_x, _ = model_router.card_vectors(MODEL_CARDS)
    data = graph.to_hetero_data(agent_x)
    assert set(data.node_types) == {"query", "entity", "relation", "agent"}
    assert set(data.edge_types) == set(EDGE_TYPES)
    assert data["query", "asks", "agent"].edge_index.shape[1] == len(MODEL_CARDS)
    assert data["entity", "relevant_to", "agent"].edge_index.shape[1] == 3 * len(graph.entities)


# ---------------------------------------------------------------------------------------------- training


def test_model_mode_learns_the_soft_distribution(model_router: AgentRouter) -> None:
    test = model_rows(30, 7)
    chosen, _, quality, _ = model_router.route_batch(test, MODEL_CARDS, 0.0)
    ids = [card.id for card in MODEL_CARDS]
    assert np.mean([row.outcomes[ids[j]].score for row, j in zip(test, chosen, strict=True)]) >= 0.9
    p, _, _ = model_router.distribution([make_query("math", 5000)], MODEL_CARDS)
    # soft supervision: math is shared by m-math and m-general, so both keep a real share (not one-hot)
    assert p[0, 0] > 0.25 and p[0, 3] > 0.25 and p[0, 2] < 0.1
    assert abs(p[0].sum() - 1.0) < 1e-5 and quality.min() >= 0.0 and quality.max() <= 1.0
    assert model_router.training_log["uninformative_rows"] > 0


def test_agent_mode_dispatches_top_k_weighted_by_p(agent_router: AgentRouter) -> None:
    state = RouterState(query="When did Napoleon reach Moscow in 1812?", agents=tuple(AGENT_CARDS), models=(), registry_version=1)
    decision = agent_router.decide(state)
    assert isinstance(decision, Dispatch)
    assert decision.calls[0].agent_id == "historian"
    weights = [call.weight for call in decision.calls]
    assert len(weights) == 2 and weights == sorted(weights, reverse=True) and abs(sum(weights) - 1) < 1e-6
    assert [s.id for s in decision.scores][0] == "historian" and len(decision.scores) == 3
    assert ["Napoleon", "NAME"] in decision.meta["entities"]
    narrow = RouterState(query=state.query, agents=state.agents, models=(), registry_version=1, policy=RoutingPolicy(max_agents=1))
    assert len(agent_router.decide(narrow).calls) == 1


def test_out_of_scope_examples_teach_a_refusal(agent_router: AgentRouter) -> None:
    state = RouterState(query="tell me a joke about cats", agents=tuple(AGENT_CARDS), models=(), registry_version=1)
    decision = agent_router.decide(state)
    assert isinstance(decision, Finish) and decision.out_of_scope
    assert decision.meta["p_none"] > 0.5


def test_new_agent_joins_the_graph_at_the_next_decision(agent_router: AgentRouter) -> None:
    weather = AgentCard(id="weather", description="weather forecasts: rain, snow, temperature tomorrow")
    state = RouterState(query="Will it rain tomorrow in Paris?", agents=(*AGENT_CARDS, weather), models=(), registry_version=2)
    decision = agent_router.decide(state)
    scored = {s.id: s for s in decision.scores}
    assert "weather" in scored and scored["weather"].detail["seen_in_training"] == "no"
    assert decision.meta["onboarded"] == ["weather"]
    assert "none of these agents was seen" not in decision.rationale
    only_new = agent_router.decide(RouterState(query="Will it rain tomorrow in Paris?", agents=(weather,), models=(), registry_version=3))
    # a registry the router was not trained for: it still routes by card, and says so
    assert isinstance(only_new, Dispatch) and "none of these agents was seen in training" in only_new.rationale


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_input_is_recorded_not_raised(agent_router: AgentRouter) -> None:
    empty_query = agent_router.decide(RouterState(query="   ", agents=tuple(AGENT_CARDS), models=(), registry_version=1))
    assert isinstance(empty_query, Finish) and empty_query.out_of_scope
    no_agents = agent_router.decide(RouterState(query="What is 2 plus 2?", agents=(), models=(), registry_version=1))
    assert isinstance(no_agents, Finish) and "no agents" in no_agents.rationale
    plain = agent_router.decide(RouterState(query="Write a python function that sorts lists", agents=tuple(AGENT_CARDS), models=(), registry_version=1))
    assert plain.meta["no_entities"] is True and plain.meta["entities"] == []  # decided and recorded either way
    # a candidate with no description (a data row, not a card) is embedded by its id and recorded
    vectors, undescribed = agent_router.card_vectors([SimpleNamespace(id="mystery", description="")])
    assert undescribed == ["mystery"] and vectors.shape == (1, HashEmbedder.dim)


def test_untrained_router_and_bad_options_raise() -> None:
    with pytest.raises(DecisionError, match="not trained"):
        AgentRouter(embedder=HashEmbedder()).decide(
            RouterState(query="hi there", agents=tuple(AGENT_CARDS), models=(), registry_version=1))
    with pytest.raises(PolicyError, match="'k'"):
        AgentRouter(k=0)


def test_bad_training_input_is_a_data_error_naming_it() -> None:
    """Training input is the user's to fix (DataError), not a run-time failure; nothing is trained from it."""
    router = _small()
    with pytest.raises(DataError, match="no agent cards"):
        router.fit_agents([], [RoutingExample(query="what is 2 + 2", agents=("calc",))])
    with pytest.raises(DataError, match="training row 2: agent 'Poetry'"):
        router.fit_agents(AGENT_CARDS, [RoutingExample(query=make_query("math", 0), agents=(AGENT_CARDS[0].id,)),
                                        RoutingExample(query="write a sonnet", agents=("Poetry",))])
    with pytest.raises(DataError, match="no training queries"):
        router.fit_models([], MODEL_CARDS)
    with pytest.raises(DataError, match="no model cards"):
        router.fit_models(model_rows(5, 0), [])
    with pytest.raises(DecisionError, match="not trained"):
        router.distribution(["what is 2 + 2"], AGENT_CARDS)


def test_model_mode_decide_backs_the_llm_agent_with_top_models(model_router: AgentRouter) -> None:
    llm = AgentCard(id="assistant", description="general assistant", model="m-general")
    state = RouterState(query=make_query("code", 4242), agents=(llm,), models=tuple(MODEL_CARDS), registry_version=1)
    decision = model_router.decide(state)
    assert isinstance(decision, Dispatch)
    assert {call.agent_id for call in decision.calls} == {"assistant"} and decision.calls[0].model_id == "m-code"
    no_llm = RouterState(query="hello", agents=(), models=tuple(MODEL_CARDS), registry_version=1)
    assert isinstance(model_router.decide(no_llm), Finish)


def test_model_mode_decide_follows_the_requests_cost_weight(model_router: AgentRouter) -> None:
    """w = 1 ranks by cost alone: the cheapest model leads (it was the same calls at every w)."""
    llm = AgentCard(id="assistant", description="general assistant", model="m-general")
    state = RouterState(query=make_query("code", 4242), agents=(llm,), models=tuple(MODEL_CARDS), registry_version=1)
    frugal = model_router.decide(dataclasses.replace(state, policy=RoutingPolicy(cost_weight=1.0)))
    assert isinstance(frugal, Dispatch) and frugal.calls[0].model_id == "m-math" and frugal.meta["cost_weight"] == 1.0
    assert {"quality", "cost_usd", "utility"} <= set(frugal.scores[0].detail)
    assert model_router.decide(state).calls[0].model_id == "m-code"


# ---------------------------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_and_mismatches(model_router: AgentRouter, tmp_path: Path) -> None:
    path = model_router.save(tmp_path / "router.pt")
    again = AgentRouter.load(path, candidates=[c.id for c in MODEL_CARDS], embedder=HashEmbedder())
    queries = [make_query("history", 77), make_query("code", 78)]
    np.testing.assert_allclose(again.distribution(queries, MODEL_CARDS)[0], model_router.distribution(queries, MODEL_CARDS)[0], atol=1e-6)
    with pytest.raises(CheckpointError, match="knows none"):
        AgentRouter.load(path, candidates=["other-a", "other-b"], embedder=HashEmbedder())
    with pytest.raises(CheckpointError, match="missing"):
        AgentRouter.load(path, candidates=["m-math", "m-code"], strict=True, embedder=HashEmbedder())
    class WideEmbedder(HashEmbedder):
        dim = 32

    with pytest.raises(CheckpointError, match="'HashEmbedder', but the embedder given is 'WideEmbedder'"):
        AgentRouter.load(path, embedder=WideEmbedder())
    WideEmbedder.name = "HashEmbedder"  # named as the trained one: the width still tells them apart
    wrong_width = AgentRouter.load(path, embedder=WideEmbedder())
    with pytest.raises(CheckpointError, match="64-dimensional"):
        wrong_width.distribution(queries, MODEL_CARDS)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        AgentRouter.load(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        AgentRouter(checkpoint=str(tmp_path / "absent.pt"))


# ---------------------------------------------------------------------------------------------- harnesses


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def test_runs_in_the_agents_harness(tmp_path: Path) -> None:
    names = {"math": "calculator", "history": "historian", "code": "coder"}
    _write_jsonl(tmp_path / "agents.jsonl", [{"id": c.id, "description": c.description} for c in AGENT_CARDS])
    kinds = ("math", "history", "code")
    _write_jsonl(tmp_path / "train.jsonl", [{"query": make_query(kinds[i % 3], i), "agents": [names[kinds[i % 3]]]} for i in range(45)])
    _write_jsonl(tmp_path / "test.jsonl", [{"query": make_query(kinds[i % 3], 900 + i), "agents": [names[kinds[i % 3]]]} for i in range(12)])
    report = run_agent_bench(tmp_path, _small(k=1), regime="supervised")
    assert report["test"]["n"] == 12 and report["test"]["top1"] >= 0.9


def test_runs_in_the_models_harness(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "models.jsonl", [{"id": c.id, "description": c.description} for c in MODEL_CARDS])
    _write_jsonl(tmp_path / "train.jsonl", [row.model_dump() for row in model_rows(60, 3)])
    _write_jsonl(tmp_path / "test.jsonl", [row.model_dump() for row in model_rows(12, 4)])
    register_router("agent-router-test", lambda **options: _small(**options))
    report = run_model_bench(tmp_path, "agent-router-test", weights=[0.0, 1.0], latency_queries=3)
    by_w = {point["w"]: point for point in report["points"]}
    assert by_w[0.0]["quality"] >= 0.8
    assert by_w[1.0]["cost_usd"] <= by_w[0.0]["cost_usd"]


@pytest.mark.parametrize("option", ["hidden", "layers", "epochs", "batch_size"])
def test_sizes_and_counts_below_one_are_refused_when_built(option: str) -> None:
    with pytest.raises(PolicyError, match=option):
        AgentRouter(embedder=HashEmbedder(), **{option: 0})


def test_fit_models_checks_its_rows_and_cards_as_the_model_routers_do() -> None:
    rows = model_rows(12, 0)
    with pytest.raises(DataError, match="duplicate model id 'm-math'"):
        _small().fit_models(rows, [*MODEL_CARDS, MODEL_CARDS[0]])
    # every ModelRouter.fit refuses a query with no outcomes; AgentRouter trained on it as "uninformative"
    with pytest.raises(DataError, match="'empty' has no outcomes"):
        _small().fit_models([*rows, ModelQuery(id="empty", query="What is 2 plus 2?", task="math")], MODEL_CARDS)


def test_fit_agents_refuses_a_repeated_agent_id_and_an_unknown_regime() -> None:
    rows = [RoutingExample(query=make_query("math", i), agents=("calculator",)) for i in range(3)]
    with pytest.raises(DataError, match="duplicate agent id 'calculator'"):
        _small().fit_agents([*AGENT_CARDS, AGENT_CARDS[0]], rows)
    with pytest.raises(DataError, match="fewshot"):
        _small().fit_agents(AGENT_CARDS, rows, "fewshot")


@pytest.mark.parametrize("w", [0.0, 0.5])
def test_model_mode_decision_meta_gives_the_predicted_quality_and_cost_at_every_weight(model_router: AgentRouter, w: float) -> None:
    """As ModelRouter.decide: at w = 0 the meta held no prediction and the scores only 'seen_in_training'."""
    llm = AgentCard(id="assistant", description="general assistant", model="m-general")
    state = RouterState(query=make_query("code", 4242), agents=(llm,), models=tuple(MODEL_CARDS), registry_version=1,
                        policy=RoutingPolicy(cost_weight=w))
    decision = model_router.decide(state)
    assert isinstance(decision, Dispatch)
    assert {"router", "cost_weight", "predicted_quality", "predicted_cost_usd"} <= set(decision.meta)
    assert decision.meta["cost_weight"] == w
    chosen = next(score for score in decision.scores if score.id == decision.calls[0].model_id)
    assert {"quality", "cost_usd", "utility"} <= set(chosen.detail)
    assert decision.meta["predicted_quality"] == pytest.approx(chosen.detail["quality"], abs=1e-6)
    assert decision.meta["predicted_cost_usd"] == pytest.approx(chosen.detail["cost_usd"])


def test_model_mode_cost_follows_a_price_changed_since_training() -> None:
    priced = [card.with_changes(input_price_per_mtok=1.0, output_price_per_mtok=1.0) for card in MODEL_CARDS]
    router = AgentRouter(embedder=HashEmbedder(), hidden=8, epochs=1).fit_models(model_rows(12, 0), priced)
    rows = model_rows(3, 1)
    _, before = router.predict(rows, priced)
    _, after = router.predict(rows, [priced[0].with_changes(input_price_per_mtok=2.0, output_price_per_mtok=2.0), *priced[1:]])
    np.testing.assert_allclose(after[:, 0], 2 * before[:, 0])
    np.testing.assert_array_equal(after[:, 1:], before[:, 1:])


def test_a_checkpoint_keeps_its_routing_options_and_options_given_override_them(tmp_path: Path) -> None:
    # k, min_share, agent_id and seed were written to the checkpoint but not read back: a router saved with k=1
    # came back with k=3 and min_share 0
    router = AgentRouter(k=1, min_share=0.5, agent_id="llm", seed=3, hidden=32, epochs=1, embedder=HashEmbedder())
    router.fit(model_rows(30, 0), MODEL_CARDS)
    path = router.save(tmp_path / "router.pt")
    for loaded in (AgentRouter.load(path, embedder=HashEmbedder()), AgentRouter(checkpoint=str(path), embedder=HashEmbedder())):
        assert (loaded.k, loaded.min_share, loaded.agent_id, loaded.seed, loaded.hidden) == (1, 0.5, "llm", 3, 32)
        assert loaded.checkpoint == str(path) and loaded.describe()["trained"]
    overridden = AgentRouter.load(path, k=2, embedder=HashEmbedder())
    assert (overridden.k, overridden.min_share) == (2, 0.5)
    built = AgentRouter(checkpoint=str(path), min_share=0.25, embedder=HashEmbedder())
    assert (built.k, built.min_share, built.agent_id) == (1, 0.25, "llm")


class _RunsCode:
    """Unpickled, it calls a function of its choosing: here one that leaves a file behind."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.marker,))


def test_a_checkpoint_is_loaded_without_running_code_from_it(model_router: AgentRouter, tmp_path: Path) -> None:
    # AgentRouter.load unpickled whatever the file held (weights_only=False): a crafted checkpoint ran its code
    import torch

    evil = tmp_path / "evil.pt"
    torch.save({"format": "orchestra.agent-router/1", "payload": _RunsCode(tmp_path / "ran")}, evil)
    for load in (lambda: AgentRouter.load(evil, embedder=HashEmbedder()), lambda: AgentRouter(checkpoint=str(evil))):
        with pytest.raises(CheckpointError, match="loading would run"):
            load()
    assert not (tmp_path / "ran").exists()
    path = model_router.save(tmp_path / "safe.pt")
    torch.load(path, weights_only=True)  # tensors and plain data only
    queries = [make_query("math", 5)]
    again = AgentRouter.load(path, embedder=HashEmbedder())
    np.testing.assert_allclose(again.distribution(queries, MODEL_CARDS)[0], model_router.distribution(queries, MODEL_CARDS)[0], atol=1e-6)


def test_a_bad_checkpoint_or_option_is_a_typed_error_naming_it(model_router: AgentRouter, tmp_path: Path) -> None:
    # a checkpoint missing a field was a raw KeyError 'options', an unknown option a raw TypeError
    import torch

    from orchestra.errors import ConfigurationError

    torch.save({"format": "orchestra.agent-router/1"}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="missing 'options'"):
        AgentRouter.load(tmp_path / "partial.pt", embedder=HashEmbedder())
    path = model_router.save(tmp_path / "router.pt")
    with pytest.raises(ConfigurationError, match="bogus"):
        AgentRouter.load(path, bogus=1, embedder=HashEmbedder())


def test_a_checkpoint_trained_on_a_python_embedder_needs_it_given(model_router: AgentRouter, tmp_path: Path) -> None:
    """Loaded without its embedder, a router trained on one only Python can give took the project's MiniLM
    (another width: a CheckpointError at the first decision; the same width: routing on unrelated vectors)."""
    path = model_router.save(tmp_path / "router.pt")
    with pytest.raises(CheckpointError, match="embeddings of 'HashEmbedder', which only Python can give"):
        AgentRouter.load(path)


def test_an_agent_router_loaded_from_a_relative_path_records_the_whole_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """AgentRouter.load("router.pt") recorded "router.pt": a replay from another folder could not rebuild it."""
    router = AgentRouter(hidden=16, epochs=1, embedder=HashEmbedder())
    router.fit(model_rows(10, 0), MODEL_CARDS)
    router.save(tmp_path / "router.pt")
    monkeypatch.chdir(tmp_path)
    assert AgentRouter.load("router.pt", embedder=HashEmbedder()).checkpoint == str(tmp_path / "router.pt")
