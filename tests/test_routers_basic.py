"""The baseline agent routers: all, fixed, embedding (with a small bag-of-words embedder standing in for MiniLM)."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest

from orchestra import Orchestra
from orchestra.cards import AgentCard
from orchestra.errors import CardError, PolicyError, UnknownAgentError
from orchestra.policies import RoutingPolicy
from orchestra.routing import Dispatch, Finish, RouterState, load_router
from orchestra.testing import InMemoryStore
from orchestra.routers.basic import MAX_QUERY_CHARS, AllRouter, EmbeddingRouter, FixedRouter


class WordEmbedder:
    """Hashed bag of words, L2-normalised: similar texts share words. Counts what it encodes."""

    dim = 256

    def __init__(self) -> None:
        self.encoded: list[str] = []

    def encode(self, texts, batch_size: int = 64) -> np.ndarray:
        self.encoded.extend(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                bucket = int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim
                out[row, bucket] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


CARDS = (
    AgentCard(id="weather", description="Weather forecast, rain, temperature and wind for a city."),
    AgentCard(id="music", description="Plays a song, an album or an artist; adds music to playlists."),
    AgentCard(id="bank", description="Bank account balance, transfers and card payments."),
)


def state(query: str, cards=CARDS, policy: RoutingPolicy | None = None) -> RouterState:
    return RouterState(query=query, agents=tuple(cards), models=(), registry_version=1, policy=policy or RoutingPolicy())


def test_all_router_dispatches_every_agent_with_the_whole_query():
    decision = AllRouter().decide(state("  what is   the weather "))
    assert isinstance(decision, Dispatch)
    assert [c.agent_id for c in decision.calls] == ["weather", "music", "bank"]
    assert {c.query for c in decision.calls} == {"  what is   the weather "}  # as the user typed it


def test_all_router_refuses_empty_query_and_empty_registry():
    assert AllRouter().decide(state("   ")).out_of_scope
    assert AllRouter().decide(state("hello", cards=())).out_of_scope


def test_fixed_router_leaves_an_unregistered_agent_to_the_runtimes_unknown_agent_error():
    decision = FixedRouter("bank, gone").decide(state("balance please"))
    assert isinstance(decision, Dispatch) and [c.agent_id for c in decision.calls] == ["bank", "gone"]

    app = Orchestra(store=InMemoryStore())
    app.registry.add_agent(AgentCard(id="bank", description="Balances."), implementation=lambda query: "42 EUR")
    result = app.workflow("fixed", agent_ids=["bank", "gone"]).run("balance please")
    assert result.status == "ok" and result.answer == "42 EUR"
    assert [(s.kind, s.agent_id, s.error["type"]) for s in app.store.get_run(result.run_id).steps if s.error] == [
        ("error", "gone", "UnknownAgentError")
    ]
    # a typo in every id fails the run, typed and recorded, instead of answering "out of scope"
    result = app.workflow("fixed", agent_ids=["bnak"]).run("balance please")
    assert result.status == "error" and isinstance(result.error, UnknownAgentError) and "'bnak'" in str(result.error)


@pytest.mark.parametrize("ids", [[], "", ["a", "a"]])
def test_fixed_router_refuses_bad_configuration(ids):
    with pytest.raises(PolicyError):
        FixedRouter(ids)


def test_entry_points_build_the_basic_routers():
    assert isinstance(load_router("all"), AllRouter)
    assert load_router("fixed", agent_ids=["bank"]).agent_ids == ("bank",)
    assert isinstance(load_router("embedding", k=2), EmbeddingRouter)


def test_embedding_router_ranks_by_similarity_and_keeps_top_k():
    router = EmbeddingRouter(k=1, threshold=0.1, embedder=WordEmbedder())
    decision = router.decide(state("will it rain in the city tomorrow, what temperature"))
    assert isinstance(decision, Dispatch)
    assert [c.agent_id for c in decision.calls] == ["weather"]
    assert [s.id for s in decision.scores][0] == "weather"
    assert len(decision.scores) == 3  # every candidate is scored


def test_embedding_router_out_of_scope_below_threshold():
    router = EmbeddingRouter(threshold=0.5, embedder=WordEmbedder())
    decision = router.decide(state("xylophone zebra quantum"))
    assert isinstance(decision, Finish) and decision.out_of_scope
    assert decision.answer and decision.scores


def test_policy_overrides_k_and_threshold():
    router = EmbeddingRouter(k=3, threshold=0.0, embedder=WordEmbedder())
    decision = router.decide(state("rain music balance", policy=RoutingPolicy(max_agents=2)))
    assert isinstance(decision, Dispatch) and len(decision.calls) == 2
    refused = router.decide(state("rain music balance", policy=RoutingPolicy(min_score=0.99)))
    assert isinstance(refused, Finish) and refused.out_of_scope


def test_onboarded_agent_is_used_at_next_decision_and_only_it_is_embedded():
    embedder = WordEmbedder()
    router = EmbeddingRouter(k=1, threshold=0.1, embedder=embedder)
    first = router.decide(state("book a taxi to the airport"))
    taxi = AgentCard(id="taxi", description="Books a taxi or a cab ride to the airport or an address.")
    embedder.encoded.clear()
    second = router.decide(state("book a taxi to the airport", cards=(*CARDS, taxi)))
    assert isinstance(second, Dispatch) and second.calls[0].agent_id == "taxi"
    assert not (isinstance(first, Dispatch) and first.calls[0].agent_id == "taxi")
    # only the new card and the query were embedded again
    assert taxi.routing_text() in embedder.encoded
    assert all(card.routing_text() not in embedder.encoded for card in CARDS)


def test_examples_count_in_similarity():
    card = AgentCard(id="pay", description="Handles things.", examples=("pay my electricity bill",))
    router = EmbeddingRouter(k=1, threshold=0.3, embedder=WordEmbedder())
    decision = router.decide(state("pay the electricity bill", cards=(*CARDS, card)))
    assert isinstance(decision, Dispatch) and decision.calls[0].agent_id == "pay"


def test_huge_query_is_read_truncated_and_recorded_but_reaches_the_agents_whole():
    """The router reads at most MAX_QUERY_CHARS of it, with whitespace collapsed; the agents it chooses get the
    user's text as typed (a pasted document, table or code reached them cut at 2,000 characters on one line)."""
    query = "weather\n| a | b |\n" * 1000
    for router in (EmbeddingRouter(threshold=-1.0, embedder=WordEmbedder()), AllRouter(), FixedRouter(agent_ids=["weather"])):
        decision = router.decide(state(query))
        assert isinstance(decision, Dispatch)
        assert all(call.query == query for call in decision.calls)
    assert decision.meta["truncated_from_chars"] > MAX_QUERY_CHARS


def test_blank_description_is_refused_by_the_card():
    with pytest.raises(CardError):
        AgentCard.parse({"id": "x", "description": "   "})


def test_router_options_are_checked_by_name_and_type() -> None:
    from orchestra.errors import ConfigurationError
    from orchestra.routing import load_router

    with pytest.raises(ConfigurationError, match="router 'embedding' takes no option 'foo'; its options: k, threshold"):
        load_router("embedding", foo=1)
    with pytest.raises(ConfigurationError, match="router 'fixed' needs option 'agent_ids'"):
        load_router("fixed")
    with pytest.raises(ConfigurationError, match="router 'embedding' option 'k': Input should be a valid integer"):
        load_router("embedding", k="three")
    # options a subclass passes on to its base class are checked against the base's parameters
    with pytest.raises(ConfigurationError, match="router 'knn' takes no option 'foo'"):
        load_router("knn", k=3, foo=1)
    assert load_router("knn", k=3, text_window=200).k == 3


@pytest.mark.parametrize(
    ("name", "factory", "problem"),
    [("mine", 42, "factory must be"), ("", AllRouter, "name must be"), (7, AllRouter, "name must be"), (" all", AllRouter, "name must be")],
)
def test_register_router_refuses_a_name_or_factory_it_could_never_serve(name: object, factory: object, problem: str) -> None:
    """A factory that cannot be called failed the first load_router with a bare TypeError; a name that is no string
    broke available_routers() (str and int do not sort), so every unknown router's error and `orchestra routers`."""
    from orchestra.errors import ConfigurationError
    from orchestra.routing import available_routers, register_router

    with pytest.raises(ConfigurationError, match=problem):
        register_router(name, factory)  # type: ignore[arg-type]
    assert "mine" not in available_routers() and all(isinstance(known, str) for known in available_routers())


def test_a_router_built_by_its_load_takes_checkpoint_without_its_constructor_naming_it(tmp_path, monkeypatch) -> None:
    """A user's router with ``checkpoint_format`` and a ``load`` classmethod is built by ``load(PATH, ...)``: its
    constructor need not take ``checkpoint`` (it was refused "takes no option 'checkpoint'"), the other options are
    still checked against the constructor, and a file its ``load`` cannot read is a `CheckpointError` naming it (it
    was a bare FileNotFoundError, which crashed an exact replay instead of serving the record with the reason)."""
    import json

    from orchestra import PassThrough, replay
    from orchestra.errors import CheckpointError, ConfigurationError
    from orchestra import routing
    from orchestra.routing import Call

    class SavedFixed:
        name = "saved-fixed-test"
        checkpoint_format = "tests.saved-fixed/1"

        def __init__(self, agent_id: str = "weather") -> None:
            self.agent_id, self.checkpoint = agent_id, None

        @classmethod
        def load(cls, path, **options):
            router = cls(**{**json.loads(open(path).read()), **options})
            router.checkpoint = str(path)
            return router

        def describe(self):
            return {"name": self.name, "agent_id": self.agent_id, "checkpoint": self.checkpoint}

        def decide(self, state):
            return Dispatch(calls=(Call(agent_id=self.agent_id, query=state.query),), rationale="saved")

    monkeypatch.setitem(routing._IN_PROCESS, SavedFixed.name, SavedFixed)
    saved = tmp_path / "router.json"
    saved.write_text(json.dumps({"agent_id": "taxi"}))
    built = load_router(SavedFixed.name, checkpoint=str(saved))
    assert (built.agent_id, built.checkpoint) == ("taxi", str(saved))
    assert load_router(SavedFixed.name, checkpoint=str(saved), agent_id="weather").agent_id == "weather"
    with pytest.raises(ConfigurationError, match="takes no option 'k'; its options: agent_id"):
        load_router(SavedFixed.name, checkpoint=str(saved), k=3)
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*gone.json"):
        load_router(SavedFixed.name, checkpoint=str(tmp_path / "gone.json"))

    app = Orchestra(store="memory://")
    app.registry.add_agent(AgentCard(id="taxi", description="Books taxis.", backend="function", function="x:y"),
                           implementation=lambda query: "booked")
    run = app.workflow(SavedFixed.name, checkpoint=str(saved), aggregator=PassThrough()).run("a taxi please")
    assert run.status == "ok" and app.store.get_run(run.run_id).run.meta["router"]["checkpoint"] == str(saved)
    rebuilt = app.store.get_run(replay(app, run.run_id).run_id).run
    assert rebuilt.status == "ok" and "recorded" not in rebuilt.meta["router"]  # rebuilt from the file, decided again
    saved.unlink()
    served = app.store.get_run(replay(app, run.run_id).run_id).run
    assert served.status == "ok" and served.meta["router"]["recorded"] is True
    assert "CheckpointError" in served.meta["router"]["why"] and "router.json" in served.meta["router"]["why"]


def test_a_router_named_by_import_path_is_built_without_registering_it(tmp_path, monkeypatch):
    """`--router mypkg.routing:MyRouter`: a router of one's own on the command line without an entry point (the only
    way a process other than the one that called register_router could name it)."""
    from orchestra.errors import ConfigurationError, UnknownRouterError

    (tmp_path / "own_routing_by_path.py").write_text(
        "from orchestra import BaseRouter, Call, Dispatch\n"
        "class Longest(BaseRouter):\n"
        "    name = 'longest'\n"
        "    def __init__(self, k: int = 1):\n"
        "        self.k = k\n"
        "    def decide(self, state):\n"
        "        best = max(state.agents, key=lambda card: len(card.description))\n"
        "        return Dispatch(calls=(Call(agent_id=best.id, query=state.query),))\n"
        "def make(**options):\n"
        "    return Longest(**options)\n"
        "ANSWER = 42\n"
        "class NoDecide:\n"
        "    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    router = load_router("own_routing_by_path:Longest", k=2)
    assert type(router).__name__ == "Longest" and router.k == 2
    assert load_router("own_routing_by_path:make").k == 1  # a factory function, as register_router takes
    with pytest.raises(ConfigurationError, match="takes no option 'j'"):  # its options are checked as a registered one's
        load_router("own_routing_by_path:Longest", j=1)
    with pytest.raises(UnknownRouterError, match=r"cannot import 'no_such_routing_module'.*PYTHONPATH=\."):
        load_router("no_such_routing_module:Router")
    (tmp_path / "own_routing_needing_more.py").write_text("import not_installed_dependency_of_mine\n")
    with pytest.raises(UnknownRouterError, match="No module named 'not_installed_dependency_of_mine'") as missing:
        load_router("own_routing_needing_more:Router")
    assert "PYTHONPATH" not in str(missing.value)  # the module was found: what it imports is missing
    with pytest.raises(UnknownRouterError, match="has no such attribute"):
        load_router("own_routing_by_path:Missing")
    for not_a_router in ("ANSWER", "NoDecide"):
        with pytest.raises(UnknownRouterError, match="not a router class or a function returning a router"):
            load_router(f"own_routing_by_path:{not_a_router}")
    with pytest.raises(UnknownRouterError, match="^unknown router 'no-such-router'; available: "):
        load_router("no-such-router")  # a plain name is not imported
