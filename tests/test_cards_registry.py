"""Cards, policies and the registry: validation names the field, changes persist and are versioned."""

from __future__ import annotations

import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestra import AgentCard, Budget, CardError, ConfigurationError, DuplicateIdError, FallbackPolicy, ModelCard, NotFoundError, PolicyError, Registry, RetryPolicy, RoutingPolicy, load_cards
from orchestra.store import SqlStore
from orchestra.testing import InMemoryStore
from orchestra.trace import Store


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"id": "a"}, "description"),
        ({"id": "a", "description": "   "}, "description"),
        ({"id": "bad id with spaces", "description": "x"}, "id"),
        ({"id": "a", "description": "x", "backend": "function"}, None),
        ({"id": "a", "description": "x", "colour": "red"}, "colour"),
        ({"id": "a", "description": "x", "backend": "telepathy"}, "backend"),
    ],
)
def test_malformed_agent_cards_name_the_field(data: dict, field: str | None) -> None:
    with pytest.raises(CardError) as caught:
        AgentCard.parse(data)
    assert caught.value.field == field
    if field:
        assert field in str(caught.value)


def test_a_misspelt_field_is_named_beside_the_missing_one() -> None:
    with pytest.raises(CardError) as caught:
        AgentCard.parse({"id": "a", "descriptoin": "x"})
    assert caught.value.field == "description" and "also field 'descriptoin': Extra inputs are not permitted" in str(caught.value)


def test_model_card_prices_and_cost() -> None:
    with pytest.raises(CardError, match="input_price_per_mtok"):
        ModelCard.parse({"id": "m", "description": "x", "input_price_per_mtok": -1})
    unpriced = ModelCard(id="m", description="x")
    assert unpriced.cost_usd(1000, 1000) is None  # unknown, never 0
    priced = ModelCard(id="m", description="x", input_price_per_mtok=2.0, output_price_per_mtok=6.0)
    assert priced.cost_usd(1_000_000, 500_000) == pytest.approx(5.0)
    assert priced.model == "m"


def test_policies_refuse_out_of_range_values() -> None:
    with pytest.raises(PolicyError, match="cost_weight"):
        RoutingPolicy(cost_weight=1.5)
    with pytest.raises(PolicyError, match="max_rounds"):
        Budget(max_rounds=0)
    with pytest.raises(PolicyError, match="max_calls"):
        Budget(max_calls=True)  # a flag is not a count
    with pytest.raises(PolicyError, match=r"^RetryPolicy: .*max_backoff_s \(1.0\) is below initial_backoff_s \(5.0\)"):
        RetryPolicy(initial_backoff_s=5, max_backoff_s=1)


@pytest.mark.parametrize(
    "policy, field, value",
    [
        (Budget, "max_cost_usd", True),  # a flag is not an amount (it became 1.0)
        (Budget, "max_cost_usd", "1"),
        (Budget, "max_seconds", False),
        (Budget, "max_rounds", "2"),
        (RetryPolicy, "max_attempts", True),  # it became 1
        (RetryPolicy, "timeout_s", "30"),
        (RetryPolicy, "jitter_s", True),
        (RoutingPolicy, "cost_weight", True),
        (RoutingPolicy, "max_agents", "3"),
        (RoutingPolicy, "min_score", True),
    ],
)
def test_numeric_policy_fields_refuse_flags_and_strings(policy: type, field: str, value: object) -> None:
    with pytest.raises(PolicyError, match=rf"^{policy.__name__}\.{field}: .*\(got {re.escape(repr(value))}\)$"):
        policy(**{field: value})
    with pytest.raises(PolicyError, match=rf"^{policy.__name__}\.{field}: "):  # a policy read from a config file
        policy.model_validate({field: value})
    assert policy(**{field: 1}) == policy.model_validate({field: 1})  # an int is still a number


def test_a_policy_read_from_a_config_file_raises_the_policy_error_not_pydantics() -> None:
    with pytest.raises(PolicyError, match=r"^Budget\.max_rounds: .*\(got 0\)$"):
        Budget.model_validate({"max_rounds": 0})
    with pytest.raises(PolicyError, match=r"^RetryPolicy\.max_attempts: "):
        RetryPolicy.model_validate_json('{"max_attempts": true}')
    assert Budget.model_validate({"max_cost_usd": 0.5, "max_seconds": 30}) == Budget(max_cost_usd=0.5, max_seconds=30)


@pytest.mark.parametrize("models, message", [
    (("backup", ""), r"FallbackPolicy\.models\.1: .*\(got ''\)"),
    (("bad id",), r"FallbackPolicy\.models\.0: .*\(got 'bad id'\)"),
    (("a", "b", "a"), r"FallbackPolicy\.models: .*model 'a' is given twice"),
])  # fmt: skip
def test_fallback_models_must_be_card_ids_each_given_once(models: tuple[str, ...], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        FallbackPolicy(models=models)
    assert FallbackPolicy(models=["gpt-4o-mini", "local:qwen"]).models == ("gpt-4o-mini", "local:qwen")


def test_registry_persists_versions_and_refuses_duplicates() -> None:
    store = InMemoryStore()
    registry = Registry(store)
    registry.add_model(ModelCard(id="m", description="model"))
    registry.add_agent(AgentCard(id="a", description="agent", model="m"))
    with pytest.raises(DuplicateIdError, match="'a'"):
        registry.add_agent(AgentCard(id="a", description="again"))
    with pytest.raises(CardError, match="no model card with id 'missing'"):
        registry.add_agent(AgentCard(id="b", description="x", model="missing"))
    registry.update_agent(AgentCard(id="a", description="better agent", model="m"))
    with pytest.raises(ConfigurationError, match=r"model 'm' is the model of agent\(s\) a"):
        registry.remove_model("m")  # as adding "a" without "m" is refused, so is leaving "a" without it
    assert registry.version == 3 and [m.id for m in Registry(store).models()] == ["m"]
    registry.update_agent(AgentCard(id="a", description="better agent", backend="function", function="math:fsum"))
    registry.remove_model("m")
    with pytest.raises(NotFoundError):
        registry.remove_agent("nope")
    assert registry.version == 5

    reopened = Registry(store)  # a restart: the registry comes back from the store
    assert reopened.version == 5 and reopened.agent("a").description == "better agent" and reopened.models() == []
    old = Registry.at_version(store, 2)
    assert old.agent("a").description == "agent" and [m.id for m in old.models()] == ["m"]


def test_an_agent_moved_to_another_backend_loses_its_old_implementation() -> None:
    registry = Registry(InMemoryStore())
    registry.add_model(ModelCard(id="m1", description="a model"))
    upper = lambda q: q.upper()  # noqa: E731
    registry.add_agent(AgentCard(id="upper", description="Shouts.", backend="function", function="builtins:str"), implementation=upper)
    registry.update_agent(AgentCard(id="upper", description="Shouts louder.", backend="function", function="builtins:str"))
    assert registry.implementation("upper") is upper  # same backend: kept
    registry.update_agent(AgentCard(id="upper", description="Now a model agent.", model="m1"))
    assert registry.implementation("upper") is None  # it would have gone on answering instead of the model


def test_an_implementation_that_cannot_answer_is_refused_when_it_is_added() -> None:
    """It was accepted, and every run routed to the agent then failed: "TypeError: 42 is not a callable object"."""

    class RunOnly:
        def run(self, query, context):  # type: ignore[no-untyped-def]
            return query

    class Both(RunOnly):
        async def arun(self, query, context):  # type: ignore[no-untyped-def]
            return query

    registry = Registry()
    card = AgentCard(id="echo", description="Echoes.")
    with pytest.raises(CardError, match=r"^agent 'echo': its implementation 42 is neither a callable"):
        registry.add_agent(card, implementation=42)  # type: ignore[arg-type]
    with pytest.raises(CardError, match=r"^agent 'echo': its implementation \(RunOnly\) has a run\(\) method but no arun\(\)"):
        registry.add_agent(card, implementation=RunOnly())  # type: ignore[arg-type]
    assert registry.agents() == []  # nothing was added
    registry.add_agent(card, implementation=lambda query: query)
    with pytest.raises(CardError, match="'echo'.*neither a callable"):
        registry.update_agent(card, implementation="not code")  # type: ignore[arg-type]
    registry.update_agent(card, implementation=Both())  # type: ignore[arg-type]
    assert isinstance(registry.implementation("echo"), Both)


def test_registry_sees_changes_made_by_another_process() -> None:
    store = InMemoryStore()
    ui, cli = Registry(store), Registry(store)
    cli.add_agent(AgentCard(id="new", description="onboarded from the CLI"), implementation=lambda q: q)
    assert ui.refresh() == 1 and ui.agent("new").description == "onboarded from the CLI"
    ui.add_agent(AgentCard(id="other", description="from the UI"), implementation=lambda q: q)
    cli.add_agent(AgentCard(id="third", description="from the CLI again"), implementation=lambda q: q)  # version clash resolved
    assert Registry(store).version == 3 and {a.id for a in Registry(store).agents()} == {"new", "other", "third"}


def test_a_change_another_process_made_first_wins() -> None:
    """Two processes with stale views: the second add of one id is refused, as in one process, and an update
    of a card another process removed is NotFound; nothing is overwritten."""
    store = InMemoryStore()
    ui, cli = Registry(store), Registry(store)
    ui.add_agent(AgentCard(id="x", description="from the UI"), implementation=lambda q: q)
    with pytest.raises(DuplicateIdError, match="'x'"):
        cli.add_agent(AgentCard(id="x", description="from the CLI"), implementation=lambda q: q)
    assert Registry(store).agent("x").description == "from the UI" and cli.agent("x").description == "from the UI"
    cli.add_model(ModelCard(id="m", description="a model"))
    ui.refresh()
    cli.remove_model("m")
    with pytest.raises(NotFoundError):
        ui.update_model(ModelCard(id="m", description="changed"))
    assert Registry(store).models() == [] and Registry(store).version == 3


def test_a_failed_change_loses_nothing_already_stored(tmp_path) -> None:
    store = InMemoryStore()
    registry = Registry(store)
    registry.add_agent(AgentCard(id="keep", description="kept"), implementation=lambda q: q)
    bad = tmp_path / "cards.yaml"
    bad.write_text("- id: fine\n  description: ok\n- id: broken\n")
    with pytest.raises(CardError, match=r"card 2 of 2: AgentCard: field 'description'"):
        load_cards(bad, AgentCard)
    assert [a.id for a in Registry(store).agents()] == ["keep"]


def test_batch_onboarding_is_all_or_nothing() -> None:
    store = InMemoryStore()
    registry = Registry(store)
    registry.add_model(ModelCard(id="m", description="a model"))
    registry.add_agent(AgentCard(id="keep", description="kept", model="m"))
    fine = AgentCard(id="fine", description="fine", model="m")
    for batch, error, match in [
        ([fine, AgentCard(id="stray", description="names a missing model", model="gone")], CardError, "'gone'"),
        ([fine, AgentCard(id="keep", description="clashes")], DuplicateIdError, r"'keep' is already registered; update_agent\(\)"),
        ([fine, fine], CardError, "'fine' is given twice"),
        ([fine, {"id": "no description"}], CardError, "description"),
    ]:
        with pytest.raises(error, match=match):
            registry.add_agents(batch)
        for view in (registry, Registry(store)):  # neither memory nor the store took the good card
            assert [a.id for a in view.agents()] == ["keep"] and view.version == 2
    changed = registry.add_agents([AgentCard(id="keep", description="replaced", model="m"), fine], update=True)
    assert [card.id for card in changed] == ["keep", "fine"] and registry.version == 4
    assert Registry(store).agent("keep").description == "replaced"

    with pytest.raises(DuplicateIdError, match="'m'"):
        registry.add_models([ModelCard(id="n", description="new"), ModelCard(id="m", description="again")])
    assert [m.id for m in Registry(store).models()] == ["m"]
    registry.add_models([ModelCard(id="n", description="new"), ModelCard(id="m", description="again")], update=True)
    assert {m.id: m.description for m in Registry(store).models()} == {"m": "again", "n": "new"}


def test_cards_built_in_python_get_the_same_typed_errors() -> None:
    import math

    with pytest.raises(CardError) as caught:
        AgentCard(id="a", description="")
    assert caught.value.field == "description"
    for fields, field, message in [
        ({"input_price_per_mtok": -1}, "input_price_per_mtok", "greater than or equal to 0"),
        ({"output_price_per_mtok": math.inf}, "output_price_per_mtok", "finite number"),  # inf was stored as null
        ({"base_url": "not a url"}, "base_url", "http:// or https://"),
    ]:
        with pytest.raises(CardError, match=message) as caught:
            ModelCard(id="m", description="a model", **fields)
        assert caught.value.field == field
    with pytest.raises(CardError) as caught:
        AgentCard(id="e", description="remote", backend="endpoint", endpoint="ftp://host/agent")
    assert caught.value.field == "endpoint"
    with pytest.raises(PolicyError, match="finite"):
        RoutingPolicy(min_score=math.nan)


def test_a_stored_card_that_no_longer_validates_is_kept_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    """A card stored before a check was added (here an endpoint that is not http) still loads: the application
    starts, the card is kept as stored, a warning says to update it."""
    from orchestra.trace import RegistryEvent

    store = InMemoryStore()
    old = {"id": "m", "description": "a model", "base_url": "not a url"}
    store.append_registry_events([RegistryEvent(version=1, kind="model", card_id="m", card=old)])
    registry = Registry(store)
    assert registry.model("m").base_url == "not a url" and "no longer validates" in caplog.text
    registry.update_model(ModelCard(id="m", description="a model", base_url="http://127.0.0.1:9/v1"))
    assert Registry(store).model("m").base_url == "http://127.0.0.1:9/v1"


PG_URL = os.environ.get("ORCHESTRA_TEST_PG_URL")


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def open_same(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Opens one store again on each call, as each process sharing it would (in memory: the same object)."""
    if request.param == "memory":
        memory = InMemoryStore()
        yield lambda: memory
        return
    if request.param == "sqlite":
        url: object = f"sqlite:///{tmp_path / 'orchestra.db'}"
        schema = None
    else:
        if not PG_URL:
            pytest.skip("ORCHESTRA_TEST_PG_URL is not set")
        import sqlalchemy as sa

        admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        schema = f"test_{uuid.uuid4().hex[:12]}"  # a schema of its own: nothing else in the database is seen
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        url = sa.make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    opened: list[SqlStore] = []

    def opener() -> Store:
        opened.append(SqlStore(url))  # type: ignore[arg-type]
        return opened[-1]

    yield opener
    for store in opened:
        store.close()
    if schema is not None:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _model(model_id: str, description: str = "a model") -> ModelCard:
    return ModelCard(id=model_id, description=description)


def _agent(agent_id: str, model: str, description: str = "an agent") -> AgentCard:
    return AgentCard(id=agent_id, description=description, model=model)


def test_a_stale_view_never_breaks_the_cross_card_rules(open_same: Callable[[], Store]) -> None:
    """Each change is checked against the registry as stored when it is appended, as a fresh registry would
    check it, not against a view another process has since changed."""
    setup = Registry(open_same())
    setup.add_models([_model("mA"), _model("mB")])
    stale, other = Registry(open_same()), Registry(open_same())

    other.remove_model("mA")  # the stale view still holds mA
    with pytest.raises(CardError, match="no model card with id 'mA'"):
        stale.add_agent(_agent("onA", "mA"))
    with pytest.raises(CardError, match="'mA'"):  # a batch too, and none of it is stored
        stale.add_agents([_agent("fine", "mB"), _agent("onA", "mA")])

    stale, other = Registry(open_same()), Registry(open_same())
    other.add_agent(_agent("onB", "mB"))  # the stale view sees no agent on mB
    with pytest.raises(ConfigurationError, match=r"model 'mB' is the model of agent\(s\) onB"):
        stale.remove_model("mB")

    stale, other = Registry(open_same()), Registry(open_same())
    other.add_model(_model("mC"))  # refused on the stale view, accepted as stored
    stale.add_agent(_agent("onC", "mC"))

    fresh = Registry(open_same())
    assert [m.id for m in fresh.models()] == ["mB", "mC"]
    assert [(a.id, a.model) for a in fresh.agents()] == [("onB", "mB"), ("onC", "mC")]
    assert fresh.version == 6 and stale.version == 6


def test_a_stale_update_is_refused_never_a_silent_replacement(open_same: Callable[[], Store]) -> None:
    """update_agent / update_model are made on the card the registry holds: when another process changed that
    card since, the update is refused (it would undo that change unseen); add_*(update=True) replaces whatever
    is stored, as the caller asked."""
    setup = Registry(open_same())
    setup.add_model(_model("m", "original"))
    setup.add_agent(_agent("x", "m", "original"))
    first, first_ui, second = Registry(open_same()), Registry(open_same()), Registry(open_same())
    second.update_agent(_agent("x", "m", "by the second"))
    second.update_model(_model("m", "by the second"))
    with pytest.raises(ConfigurationError, match="agent 'x' changed meanwhile"):
        first.update_agent(_agent("x", "m", "by the first, on the original"))
    with pytest.raises(ConfigurationError, match="model 'm' changed meanwhile"):
        first_ui.update_model(_model("m", "by the first, on the original"))
    fresh = Registry(open_same())
    assert fresh.agent("x").description == "by the second" and fresh.model("m").description == "by the second"

    first.update_agent(_agent("x", "m", "by the first, on the second's"))  # refreshed by the refusal: its view is current
    second.refresh()
    first.add_model(_model("n"))  # a change to another card since second's view does not make its update stale
    second.update_agent(_agent("x", "m", "by the second again"))
    assert Registry(open_same()).agent("x").description == "by the second again"

    adder, other = Registry(open_same()), Registry(open_same())
    other.add_agent(_agent("y", "m", "added by the other"))
    other.add_model(_model("z", "added by the other"))
    assert [card.id for card in adder.add_agents([_agent("y", "m", "by the adder")], update=True)] == ["y"]
    adder.add_models([_model("z", "by the adder")], update=True)
    fresh = Registry(open_same())
    assert fresh.agent("y").description == "by the adder" and fresh.model("z").description == "by the adder"


def test_ensure_is_a_no_op_or_an_update_when_another_process_stored_the_card_meanwhile(open_same: Callable[[], Store]) -> None:
    """The README's set-up run by several workers that start at once (each registry loaded before any stored)."""
    model = ModelCard(id="gpt-4o-mini", description="Fast, cheap general model.", input_price_per_mtok=0.15)
    writer = AgentCard(id="writer", model="gpt-4o-mini", description="Explains facts.")
    units = AgentCard(id="units", description="Converts units.", backend="function", function="builtins:str")
    convert = lambda q: q  # noqa: E731
    workers = [Registry(open_same()) for _ in range(3)]
    for worker in workers:
        assert worker.ensure_model(model) == model
        assert worker.ensure_agent(writer) == writer
        assert worker.ensure_agent(units, convert) == units and worker.implementation("units") is convert
        assert worker.version == 3
    assert Registry(open_same()).version == 3

    old, older = Registry(open_same()), Registry(open_same())
    repriced = model.model_copy(update={"input_price_per_mtok": 0.2})
    workers[0].ensure_model(repriced)
    workers[0].ensure_agent(units.model_copy(update={"description": "Converts units of distance."}))
    assert old.ensure_model(repriced) == repriced and old.version == 5  # stored meanwhile, the same: nothing stored
    assert older.ensure_model(model) == model and older.version == 6  # stored meanwhile, another card: updated
    assert older.ensure_agent(units, convert) == units and older.implementation("units") is convert and older.version == 7
    fresh = Registry(open_same())
    assert fresh.model("gpt-4o-mini") == model and fresh.agent("units") == units and fresh.version == 7


def test_workers_starting_at_once_all_set_up_cleanly(open_same: Callable[[], Store]) -> None:
    """Threads standing for processes, each with its own registry (and, for SQL, its own connection)."""
    model = ModelCard(id="m", description="a model")
    writer = AgentCard(id="writer", model="m", description="Explains facts.")
    workers = [Registry(open_same()) for _ in range(6)]
    start = threading.Barrier(len(workers))
    failures: list[BaseException] = []

    def set_up(registry: Registry) -> None:
        start.wait()
        try:
            registry.ensure_model(model)
            registry.ensure_agent(writer)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=set_up, args=(worker,)) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    fresh = Registry(open_same())
    assert fresh.version == 2 and fresh.models() == [model] and fresh.agents() == [writer]


def test_a_process_drops_its_implementation_when_another_removes_the_agent_or_moves_its_backend(
    open_same: Callable[[], Store],
) -> None:
    """Process A (a server whose profile attached in-process code, as the default team's calculator has) kept
    answering with that code after another process removed the agent and added the id back naming another function,
    or moved it to an endpoint: A's run recorded the new card and called the old code."""
    from orchestra import Orchestra, PassThrough

    app = Orchestra(store=open_same())
    server, cli = app.registry, Registry(open_same())
    stale = lambda query: "stale in-process answer"  # noqa: E731
    card = AgentCard(id="caps", description="Capitalises words.", backend="function", function="string:capwords")
    server.add_agent(card, implementation=stale)
    cli.refresh()
    cli.update_agent(card.model_copy(update={"description": "Capitalises every word."}))
    server.refresh()
    assert server.implementation("caps") is stale  # the same backend: kept, as update_agent keeps it in one process

    cli.remove_agent("caps")
    cli.add_agent(card)  # the id back, answered by the function its card names
    server.refresh()
    assert server.implementation("caps") is None
    result = app.workflow("fixed", aggregator=PassThrough(), agent_ids=["caps"]).run("spell it out")
    assert result.status == "ok" and result.answer == "Spell It Out"

    server.update_agent(card, implementation=stale)
    cli.refresh()
    cli.update_agent(AgentCard(id="caps", description="Capitalises words.", backend="endpoint", endpoint="http://127.0.0.1:9/v1"))
    server.refresh()
    assert server.implementation("caps") is None and server.agent("caps").backend == "endpoint"
