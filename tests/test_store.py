"""The trace store contract, run against every store: in memory, SQLite in a file, and PostgreSQL when
``ORCHESTRA_TEST_PG_URL`` names a server (``.ci/run`` starts one)."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from orchestra.errors import DuplicateIdError, NotFoundError, StoreError
from orchestra.registry import Registry
from orchestra.store import InMemoryStore, SqlStore, default_db_url, open_store
from orchestra.store import sql as sqlstore_module
from orchestra.trace import RegistryEvent, RunRecord, StepRecord, Store

PG_URL = os.environ.get("ORCHESTRA_TEST_PG_URL")
T0 = datetime(2026, 5, 20, 12, 0, 0, 123456, tzinfo=UTC)

Opener = Callable[[], Store]
"""Opens the store under test; for SQL stores, each call opens the same database again."""


@pytest.fixture(scope="module")
def pg_admin() -> Iterator[object]:
    if not PG_URL:
        pytest.skip("ORCHESTRA_TEST_PG_URL is not set")
    import sqlalchemy as sa

    engine = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


def _pg_opener(pg_admin: object) -> Iterator[Opener]:
    import sqlalchemy as sa

    # each test gets a schema of its own, so tests neither see nor wipe anything else in the database
    schema = f"test_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as connection:  # type: ignore[attr-defined]
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = sa.make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    opened: list[SqlStore] = []

    def opener() -> Store:
        store = SqlStore(url)
        opened.append(store)
        return store

    try:
        yield opener
    finally:
        for store in opened:
            store.close()
        with pg_admin.connect() as connection:  # type: ignore[attr-defined]
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))


def _sqlite_opener(tmp_path: Path) -> Iterator[Opener]:
    opened: list[SqlStore] = []

    def opener() -> Store:
        store = SqlStore(f"sqlite:///{tmp_path / 'orchestra.db'}")
        opened.append(store)
        return store

    yield opener
    for store in opened:
        store.close()


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def open_same(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    if request.param == "memory":
        store = InMemoryStore()
        yield lambda: store
    elif request.param == "sqlite":
        yield from _sqlite_opener(tmp_path)
    else:
        yield from _pg_opener(request.getfixturevalue("pg_admin"))


@pytest.fixture
def store(open_same: Opener) -> Store:
    return open_same()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def open_sql(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    if request.param == "sqlite":
        yield from _sqlite_opener(tmp_path)
    else:
        yield from _pg_opener(request.getfixturevalue("pg_admin"))


def _run(**fields: object) -> RunRecord:
    return RunRecord.model_validate({"session_id": "s1", "query": "what is 2+2?", "router": "all", **fields})


def _step(run_id: str, **fields: object) -> StepRecord:
    return StepRecord.model_validate({"run_id": run_id, "kind": "call", **fields})


def _full_run() -> RunRecord:
    return RunRecord(
        id="run-1",
        session_id="session-1",
        query="Plan a trip to Lisbon, and what is 17 * 23? — ünïcode ✓",
        router="embedding",
        status="running",
        registry_version=7,
        started_at=T0,
        replay_of="run-0",
        replay_mode="counterfactual",
        meta={"router": {"top_k": 2, "threshold": 0.3}, "budget": {"max_rounds": 3}, "pid": 1, "history": 0},
    )


# -- the contract --------------------------------------------------------------------------------------------


def test_round_trip_keeps_every_field(store: Store) -> None:
    run = _full_run()
    store.start_run(run)
    decision = StepRecord(
        id="step-decision",
        run_id=run.id,
        kind="decision",
        round=1,
        request={"query": run.query, "candidates": ["travel", "calculator"], "registry_version": 7},
        response={
            "decision": {"kind": "dispatch", "calls": [{"agent_id": "travel", "query": "trip", "weight": 0.5}]},
            "scores": {"travel": 0.91, "calculator": 0.12},
            "rationale": "two sub-questions",
        },
        latency_ms=1.25,
        created_at=T0 + timedelta(milliseconds=3),
    )
    call = StepRecord(
        id="step-call",
        run_id=run.id,
        kind="model_call",
        parent_id="step-decision",
        round=1,
        agent_id="travel",
        model_id="gpt-4o-mini",
        request={"messages": [{"role": "user", "content": "trip"}], "options": {"temperature": 0.0}},
        response={"text": "Go in May.", "finish_reason": "stop"},
        prompt_tokens=12,
        completion_tokens=4,
        cost_usd=0.000123456789,
        latency_ms=812.5,
        error={"type": "ModelTimeoutError", "code": "model_timeout", "message": "timed out after 30 s"},
        created_at=T0 + timedelta(seconds=1),
    )
    returned = [store.append_step(decision), store.append_step(call)]
    assert [step.seq for step in returned] == [1, 2]

    trace = store.get_run(run.id)
    assert trace.run.model_dump() == run.model_dump()
    assert [step.model_dump() for step in trace.steps] == [step.model_dump() for step in returned]

    finished = run.model_copy(
        update={
            "status": "error",
            "answer": "Go in May; 391.",
            "error": {"type": "BudgetExceeded", "code": "budget_exceeded", "message": "max_rounds"},
            "finished_at": T0 + timedelta(seconds=2),
            "prompt_tokens": 12,
            "completion_tokens": 4,
            "cost_usd": 0.000123456789,
            "latency_ms": 2000.5,
        }
    )
    store.finish_run(finished)
    assert store.get_run(run.id).run.model_dump() == finished.model_dump()


def test_unknown_price_stays_none_and_times_come_back_in_utc(store: Store) -> None:
    paris = timezone(timedelta(hours=2))
    run = _run(started_at=datetime(2026, 5, 20, 14, 0, tzinfo=paris))
    store.start_run(run)
    store.append_step(_step(run.id, cost_usd=None, created_at=datetime(2026, 5, 20, 14, 0, 1, tzinfo=paris)))
    trace = store.get_run(run.id)
    assert trace.run.cost_usd is None and trace.steps[0].cost_usd is None
    assert trace.run.started_at == datetime(2026, 5, 20, 12, 0, tzinfo=UTC)
    assert trace.run.started_at.utcoffset() == timedelta(0)
    assert trace.steps[0].created_at == datetime(2026, 5, 20, 12, 0, 1, tzinfo=UTC)


def test_payloads_come_back_as_json_in_every_store(store: Store) -> None:
    run = _run(meta={"shape": (1, 2), "at": T0})
    store.start_run(run)
    store.append_step(_step(run.id, request={"pair": ("a", "b"), "nested": {"n": None, "x": 1.5}}))
    trace = store.get_run(run.id)
    assert trace.run.meta == {"shape": [1, 2], "at": "2026-05-20T12:00:00.123456Z"}
    assert trace.steps[0].request == {"pair": ["a", "b"], "nested": {"n": None, "x": 1.5}}


def test_parallel_appends_to_one_run_are_numbered_without_gaps(store: Store) -> None:
    run = _run()
    store.start_run(run)
    threads, per_thread = 8, 25
    returned: list[StepRecord] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def append(worker: int) -> None:
        barrier.wait()
        for index in range(per_thread):
            step = store.append_step(_step(run.id, agent_id=f"agent-{worker}", request={"index": index}))
            with lock:
                returned.append(step)

    workers = [threading.Thread(target=append, args=(worker,)) for worker in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    total = threads * per_thread
    assert sorted(step.seq for step in returned) == list(range(1, total + 1))
    stored = store.get_run(run.id).steps
    assert [step.seq for step in stored] == list(range(1, total + 1))
    assert {step.id: step.seq for step in stored} == {step.id: step.seq for step in returned}
    # each thread's own steps keep the order it appended them in
    for worker in range(threads):
        mine = [step.request["index"] for step in stored if step.agent_id == f"agent-{worker}"]
        assert mine == list(range(per_thread))


def test_two_store_objects_appending_to_one_run_share_one_numbering(open_sql: Opener) -> None:
    # two store objects stand for two processes: they share no lock, only the database
    first, second = open_sql(), open_sql()
    run = _run()
    first.start_run(run)
    seqs: list[int] = []
    lock = threading.Lock()

    def append(store: Store) -> None:
        for _ in range(20):
            seq = store.append_step(_step(run.id)).seq
            with lock:
                seqs.append(seq)  # type: ignore[arg-type]

    workers = [threading.Thread(target=append, args=(store,)) for store in (first, second) * 3]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sorted(seqs) == list(range(1, 121))
    assert [step.seq for step in second.get_run(run.id).steps] == list(range(1, 121))


def test_list_runs_filters_orders_newest_first_and_pages(store: Store) -> None:
    specs = [
        ("a", "all", "ok"),
        ("a", "embedding", "error"),
        ("b", "all", "ok"),
        ("b", "all", "running"),
        ("a", "all", "ok"),
    ]
    made = []
    for index, (session, router, status) in enumerate(specs):
        started = T0 + timedelta(minutes=index)
        run = _run(id=f"run-{index}", session_id=session, router=router, status=status, started_at=started)
        store.start_run(run)
        made.append(run)
    # equal start times are ordered by id, descending, in every store
    store.start_run(_run(id="run-tie-a", session_id="c", started_at=T0))
    store.start_run(_run(id="run-tie-b", session_id="c", started_at=T0))

    def ids(**filters: object) -> list[str]:
        return [run.id for run in store.list_runs(**filters)]  # type: ignore[arg-type]

    assert ids() == ["run-4", "run-3", "run-2", "run-1", "run-tie-b", "run-tie-a", "run-0"]
    assert ids(session_id="a") == ["run-4", "run-1", "run-0"]
    assert ids(status="ok") == ["run-4", "run-2", "run-0"]
    assert ids(router="embedding") == ["run-1"]
    assert ids(session_id="a", router="all", status="ok") == ["run-4", "run-0"]
    assert ids(session_id="nobody") == []
    assert ids(limit=2) == ["run-4", "run-3"]
    assert ids(limit=2, offset=2) == ["run-2", "run-1"]
    assert ids(limit=10, offset=6) == ["run-0"]
    assert ids(limit=0) == []
    assert store.list_runs(session_id="b", status="ok")[0].model_dump() == made[2].model_dump()


def test_runs_are_found_by_the_start_of_their_id(store: Store) -> None:
    for run_id in ("ab12", "ab34", "ac56", "a_%1"):
        store.start_run(_run(id=run_id))
    assert sorted(run.id for run in store.list_runs(id_prefix="ab")) == ["ab12", "ab34"]
    assert [run.id for run in store.list_runs(id_prefix="ac56")] == ["ac56"]
    assert [run.id for run in store.list_runs(id_prefix="a_%")] == ["a_%1"]  # LIKE's wildcards are plain text
    assert store.list_runs(id_prefix="b") == []


def test_registry_events_are_ordered_and_versions_unique(store: Store) -> None:
    for version in (2, 1, 3, 4):
        card = None if version == 4 else {"id": f"agent-{version}", "description": "x", "skills": ["a"]}
        event = RegistryEvent(version=version, kind="agent", card_id=f"agent-{version}", card=card, at=T0)
        store.append_registry_events([event])
    assert [event.version for event in store.registry_events()] == [1, 2, 3, 4]
    assert [event.version for event in store.registry_events(after_version=2)] == [3, 4]
    assert [event.version for event in store.registry_events(up_to_version=2)] == [1, 2]
    assert [event.version for event in store.registry_events(after_version=1, up_to_version=3)] == [2, 3]
    assert store.registry_events(after_version=4) == []
    assert store.registry_events()[3].card is None
    assert store.registry_events()[0].model_dump() == RegistryEvent(
        version=1, kind="agent", card_id="agent-1", card={"id": "agent-1", "description": "x", "skills": ["a"]}, at=T0
    ).model_dump()

    with pytest.raises(DuplicateIdError) as caught:
        store.append_registry_events([RegistryEvent(version=3, kind="model", card_id="m", card=None)])
    assert caught.value.kind == "registry version" and caught.value.id == "3"
    assert [event.card_id for event in store.registry_events()] == ["agent-1", "agent-2", "agent-3", "agent-4"]


def test_a_batch_of_registry_events_is_stored_whole_or_not_at_all(store: Store) -> None:
    def event(version: int, card_id: str) -> RegistryEvent:
        return RegistryEvent(version=version, kind="agent", card_id=card_id, card=None, at=T0)

    store.append_registry_events([event(1, "a"), event(2, "b")])
    for batch, clash in (([event(3, "c"), event(2, "x"), event(4, "d")], "2"), ([event(3, "c"), event(3, "d")], "3")):
        with pytest.raises(DuplicateIdError) as caught:
            store.append_registry_events(batch)
        assert caught.value.id == clash
        assert [(e.version, e.card_id) for e in store.registry_events()] == [(1, "a"), (2, "b")]
    store.append_registry_events([])
    store.append_registry_events([event(3, "c")])
    assert [e.version for e in store.registry_events()] == [1, 2, 3]


def test_a_stale_registry_batch_that_clashes_stores_nothing(open_same: Opener) -> None:
    first, second = Registry(open_same()), Registry(open_same())
    second.add_agent({"id": "echo", "description": "Repeats.", "backend": "function", "function": "builtins:str"})
    batch = [
        {"id": "calculator", "description": "Sums.", "backend": "function", "function": "math:fsum"},
        {"id": "echo", "description": "Also repeats.", "backend": "function", "function": "builtins:repr"},
    ]
    with pytest.raises(DuplicateIdError) as caught:
        first.add_agents(batch)  # ``first`` has not seen ``echo`` yet: only the store can tell
    assert caught.value.id == "echo"
    fresh = Registry(open_same())
    assert [card.id for card in fresh.agents()] == ["echo"] and fresh.version == 1
    assert [card.id for card in first.agents()] == ["echo"] and first.version == 1
    first.add_agents(batch[:1])
    assert Registry(open_same()).version == 2


def test_registry_persists_through_the_store(open_same: Opener) -> None:
    registry = Registry(open_same())
    registry.add_agent({"id": "calculator", "description": "Sums.", "backend": "function", "function": "math:fsum"})
    registry.add_agent({"id": "echo", "description": "Repeats.", "backend": "function", "function": "builtins:str"})
    registry.remove_agent("echo")
    again = Registry(open_same())
    assert again.version == registry.version == 3
    assert [card.id for card in again.agents()] == ["calculator"]
    assert [card.id for card in Registry.at_version(open_same(), 2).agents()] == ["calculator", "echo"]


def test_unknown_and_duplicate_ids_are_typed_errors(store: Store) -> None:
    with pytest.raises(NotFoundError) as caught:
        store.get_run("no-such-run")
    assert caught.value.kind == "run" and caught.value.id == "no-such-run"
    with pytest.raises(NotFoundError):
        store.append_step(_step("no-such-run"))
    with pytest.raises(NotFoundError):
        store.finish_run(_run(id="no-such-run", status="ok"))

    run = _run(id="run-dup")
    store.start_run(run)
    with pytest.raises(DuplicateIdError) as duplicate:
        store.start_run(_run(id="run-dup", query="another"))
    assert duplicate.value.kind == "run"
    step = store.append_step(_step(run.id, id="step-dup"))
    with pytest.raises(DuplicateIdError):
        store.append_step(_step(run.id, id="step-dup"))
    # nothing already stored was lost or renumbered
    trace = store.get_run(run.id)
    assert trace.run.query == "what is 2+2?"
    assert [s.model_dump() for s in trace.steps] == [step.model_dump()]
    assert store.append_step(_step(run.id)).seq == 2


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_mark_interrupted_only_touches_dead_processes_of_this_host(store: Store) -> None:
    host = socket.gethostname()
    dead, alive = _dead_pid(), os.getpid()
    runs = {
        "dead": _run(id="dead", meta={"pid": dead, "host": host}),
        "alive": _run(id="alive", meta={"pid": alive, "host": host}),
        "elsewhere": _run(id="elsewhere", meta={"pid": dead, "host": host + "-other"}),
        "unknown": _run(id="unknown"),
        "finished": _run(id="finished", meta={"pid": dead, "host": host}),
    }
    for run in runs.values():
        store.start_run(run)
    store.append_step(_step("dead", response={"answer": "partial"}))
    store.finish_run(runs["finished"].model_copy(update={"status": "ok", "answer": "4"}))

    assert store.mark_interrupted() == 1
    statuses = {run.id: run.status for run in store.list_runs()}
    assert statuses == {
        "dead": "interrupted",
        "alive": "running",
        "elsewhere": "running",
        "unknown": "running",
        "finished": "ok",
    }
    interrupted = store.get_run("dead")
    assert interrupted.run.error is not None and interrupted.run.error["type"] == "Interrupted"
    assert [step.response for step in interrupted.steps] == [{"answer": "partial"}]
    assert store.mark_interrupted() == 0


def test_page_arguments_are_checked(store: Store) -> None:
    from orchestra.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="limit"):
        store.list_runs(limit=-1)
    with pytest.raises(ConfigurationError, match="offset"):
        store.list_runs(offset=-1)


# -- SQL only: durability, schema, URLs ----------------------------------------------------------------------


def test_data_survives_dropping_the_store_and_reopening(open_sql: Opener) -> None:
    first = open_sql()
    run = _run(meta={"pid": os.getpid(), "host": socket.gethostname()})
    first.start_run(run)
    steps = [first.append_step(_step(run.id, request={"i": i})) for i in range(3)]
    del first  # a "crash": no finish_run, no close

    reopened = open_sql()
    trace = reopened.get_run(run.id)
    assert trace.run.status == "running"
    assert [step.model_dump() for step in trace.steps] == [step.model_dump() for step in steps]
    assert reopened.append_step(_step(run.id)).seq == 4


CRASHING_RUN = """
import os, socket, sys, types
# Load the store modules without orchestra/__init__.py, which imports the whole framework (seconds on a busy
# machine); the code under test is the same files.
package = types.ModuleType("orchestra")
package.__path__ = [sys.argv[2]]
sys.modules["orchestra"] = package
from orchestra.store import open_store
from orchestra.trace import RunRecord, StepRecord
store = open_store(sys.argv[1])
meta = {"pid": os.getpid(), "host": socket.gethostname()}
run = RunRecord(id="crashed", session_id="s", query="q", router="all", meta=meta)
store.start_run(run)
for index in range(5):
    store.append_step(StepRecord(run_id=run.id, kind="call", agent_id="a", response={"index": index}))
os._exit(9)  # die mid-run: no finish_run, no close, no interpreter clean-up
"""


def test_a_process_killed_mid_run_loses_nothing_and_is_marked_interrupted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'orchestra.db'}"
    package_dir = str(Path(sqlstore_module.__file__).resolve().parents[1])
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_RUN, url, package_dir], capture_output=True, text=True, timeout=60
    )
    assert crashed.returncode == 9, crashed.stderr

    store = SqlStore(url)
    assert store.get_run("crashed").run.status == "running"
    assert store.mark_interrupted() == 1
    trace = store.get_run("crashed")
    assert trace.run.status == "interrupted"
    assert [(step.seq, step.response["index"]) for step in trace.steps] == [(i + 1, i) for i in range(5)]
    store.close()


def test_migration_creates_exactly_the_declared_schema(open_sql: Opener) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from orchestra.store.sql import metadata

    store = open_sql()
    assert isinstance(store, SqlStore)
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []
        assert context.get_current_revision() == "0001"
    # opening an up-to-date database again changes nothing
    assert open_sql().registry_events() == []


def test_sqlite_is_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    import sqlalchemy as sa

    store = SqlStore(f"sqlite:///{tmp_path / 'o.db'}")
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0
    store.start_run(_run(session_id="s-once"))
    store.start_run(_run(session_id="s-once", query="second query"))
    with store.engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT id, title FROM sessions")).all()
    assert rows == [("s-once", "what is 2+2?")]
    store.close()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://orchestra:s3cr3t-pw@127.0.0.1:1/orchestra",
        "postgresql://orchestra:s3cr3t-pw@127.0.0.1:1/orchestra",
        "nosuchdb+driver://orchestra:s3cr3t-pw@localhost/db",
        "mysql://orchestra:s3cr3t-pw@127.0.0.1:1/db",
    ],
)
def test_bad_url_is_a_store_error_naming_the_url_without_its_password(url: str) -> None:
    with pytest.raises(StoreError) as caught:
        SqlStore(url)
    message = str(caught.value)
    assert "s3cr3t-pw" not in message
    assert "://orchestra:***@" in message


@pytest.mark.parametrize(
    ("url", "reason"),
    [("not a url", "not a valid database URL"), ("sqlite:////no/such/folder/orchestra.db", "unable to open")],
)
def test_unusable_url_is_a_store_error_that_says_why(url: str, reason: str) -> None:
    with pytest.raises(StoreError, match=reason) as caught:
        SqlStore(url)
    assert repr(url) in str(caught.value)


def test_a_postgres_url_without_the_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in sys.modules if name.partition(".")[0] == "psycopg"] + ["psycopg"]:
        monkeypatch.setitem(sys.modules, name, None)  # installed without the postgres extra
    with pytest.raises(StoreError, match=r"database driver missing: .*psycopg.*; pip install 'orchestra-routing\[postgres\]'"):
        SqlStore("postgresql+psycopg://orchestra@127.0.0.1:1/orchestra")


def test_password_never_reaches_the_error_chain() -> None:
    with pytest.raises(StoreError) as caught:
        open_store("postgresql+psycopg://orchestra:s3cr3t-pw@127.0.0.1:1/orchestra")
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert "s3cr3t-pw" not in repr(caught.value)


def test_open_store_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home" / "nested"
    monkeypatch.setenv("ORCHESTRA_HOME", str(home))
    monkeypatch.delenv("ORCHESTRA_DB_URL", raising=False)
    assert default_db_url() == f"sqlite:///{home / 'orchestra.db'}"
    store = open_store()
    assert isinstance(store, SqlStore) and (home / "orchestra.db").exists()
    store.close()

    monkeypatch.setenv("ORCHESTRA_DB_URL", f"sqlite:///{tmp_path / 'other.db'}")
    store = open_store()
    assert (tmp_path / "other.db").exists()
    store.close()

    assert isinstance(open_store("memory://"), InMemoryStore)
    in_memory = open_store("sqlite://")
    in_memory.start_run(_run(id="m"))
    assert in_memory.get_run("m").run.id == "m"
    assert isinstance(open_store("sqlite:///:memory:"), SqlStore)


def test_a_nul_character_in_a_model_answer_does_not_lose_the_step(store: Store) -> None:
    # PostgreSQL cannot hold NUL: it keeps U+FFFD there; the other stores keep the text as it was
    run = _run(query="garbage\x00in")
    store.start_run(run)
    store.append_step(_step(run.id, response={"text": "a\x00b", "literal": "\\u0000"}))
    trace = store.get_run(run.id)
    assert trace.run.query in ("garbage\x00in", "garbage\ufffdin")
    assert trace.steps[0].response["text"] in ("a\x00b", "a\ufffdb")
    assert trace.steps[0].response["literal"] == "\\u0000"


def test_ids_neither_repeat_after_a_users_random_seed_nor_across_a_fork() -> None:
    import random

    from orchestra.trace import new_id

    random.seed(0)
    first = new_id()
    random.seed(0)
    assert new_id() != first
    assert len(first) == 32 and int(first, 16) >= 0
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child writes its next id and leaves at once
        os.write(write, new_id().encode())
        os._exit(0)
    os.waitpid(child, 0)
    assert os.read(read, 64).decode() != new_id()


# -- audit mends ---------------------------------------------------------------------------------------------


@pytest.fixture
def short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlstore_module, "SQLITE_BUSY_TIMEOUT_MS", 200)


@contextlib.contextmanager
def _write_lock_held(path: Path) -> Iterator[None]:
    """Another writer (a backup, a sqlite3 shell) holding SQLite's write lock."""
    import sqlite3

    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_write_lock_held_past_the_busy_timeout_is_a_store_error_and_reads_do_not_wait(
    tmp_path: Path, short_busy_timeout: None
) -> None:
    path = tmp_path / "orchestra.db"
    store = SqlStore(f"sqlite:///{path}")
    store.start_run(_run(id="before"))
    with _write_lock_held(path):
        # opening an up-to-date store and reading need no write lock (WAL): they neither wait nor fail
        reader = SqlStore(f"sqlite:///{path}")
        assert [run.id for run in reader.list_runs()] == ["before"]
        with pytest.raises(StoreError, match=r"database is locked by another writer for more than 0\.2 s"):
            store.append_step(_step("before"))
        with pytest.raises(StoreError, match="locked by another writer"):
            store.start_run(_run(id="during"))
    # the store is usable again once the lock is released
    assert store.append_step(_step("before")).seq == 1
    store.start_run(_run(id="after"))
    reader.close()
    store.close()


def test_several_stores_migrating_one_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'orchestra.db'}"
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def open_one() -> None:
        barrier.wait()
        try:
            SqlStore(url).close()
        except BaseException as error:  # noqa: BLE001 - collected for the assertion below
            errors.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    store = SqlStore(url)
    store.start_run(_run(id="r"))
    assert [run.id for run in store.list_runs()] == ["r"]
    store.close()


def test_opening_a_new_file_waits_past_the_busy_timeout_for_another_migration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A migration holds the write lock as long as it takes; on a busy machine four processes opening one new file
    at once failed with 'locked by another writer for more than 15 s'. Opening now waits for it (up to two minutes)."""
    import sqlite3

    from orchestra.store import sql as sql_module

    monkeypatch.setattr(sql_module, "SQLITE_BUSY_TIMEOUT_MS", 200)
    path = tmp_path / "orchestra.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN IMMEDIATE")  # another process's migration, still running
    releaser = threading.Timer(1.0, lambda: holder.execute("COMMIT"))
    releaser.start()
    try:
        store = SqlStore(f"sqlite:///{path}")
    finally:
        releaser.join()
        holder.close()
    store.start_run(_run(id="r"))
    assert [run.id for run in store.list_runs()] == ["r"]
    store.close()


def test_a_file_that_is_not_a_database_is_a_one_line_store_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are my notes, not a database\n" * 100)
    with pytest.raises(StoreError, match="cannot open: file is not a database") as caught:
        SqlStore(f"sqlite:///{path}")
    assert "\n" not in str(caught.value)


@pytest.fixture
def pg_role(pg_admin: object) -> Iterator[Callable[[str], str]]:
    """Makes a login role with a password and a database of its own that it may not create tables in; gives the
    URL of that database as the role (``grant`` runs as the admin there first)."""
    import sqlalchemy as sa

    name = f"role_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as connection:  # type: ignore[attr-defined]
        connection.execute(sa.text(f"CREATE ROLE {name} LOGIN PASSWORD 'pw-s3cr3t'"))
        connection.execute(sa.text(f"CREATE DATABASE {name}"))
    admin_url = sa.make_url(PG_URL).set(database=name)
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))

    def url(grant: str = "") -> str:
        if grant:
            with admin.connect() as connection:
                connection.execute(sa.text(grant.format(role=name)))
        return admin_url.set(username=name, password="pw-s3cr3t").render_as_string(hide_password=False)

    try:
        yield url
    finally:
        admin.dispose()
        with pg_admin.connect() as connection:  # type: ignore[attr-defined]
            connection.execute(sa.text(f"DROP DATABASE {name} WITH (FORCE)"))
            connection.execute(sa.text(f"DROP ROLE {name}"))


@pytest.mark.postgres
def test_postgres_refusals_are_one_line_store_errors(pg_role: Callable[[str], str]) -> None:
    import sqlalchemy as sa

    url = pg_role("")
    with pytest.raises(StoreError, match="cannot open: permission denied for schema public") as caught:
        SqlStore(url)
    assert "pw-s3cr3t" not in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(StoreError, match='invalid connection option "foo"'):
        SqlStore(sa.make_url(url).update_query_dict({"foo": "bar"}))
    with pytest.raises(StoreError, match="no schema has been selected to create in"):
        SqlStore(sa.make_url(url).update_query_dict({"options": "-csearch_path=nosuch"}))


@pytest.mark.parametrize("revision", ["0002", "ae1027a6acf"])
def test_a_schema_revision_this_code_does_not_know_is_refused_in_one_line(tmp_path: Path, revision: str) -> None:
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'orchestra.db'}"
    SqlStore(url).close()
    # a newer Orchestra's revision, or another application's alembic_version in the same database
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = :revision"), {"revision": revision})
    engine.dispose()
    message = (
        f"database schema revision {revision} is not one this Orchestra knows (newest: 0001): "
        "it was made by a newer Orchestra or another application"
    )
    with pytest.raises(StoreError, match=re.escape(message)):
        SqlStore(url)


def test_a_lone_surrogate_is_kept_as_a_replacement_character_and_loses_nothing(store: Store) -> None:
    # not UTF-8: SQLite's driver and PostgreSQL refuse it; every store keeps U+FFFD in text and JSON alike (the
    # in-memory store kept the surrogate, so a test passed on it that failed on SQLite)
    run = _run(id="run-\ud800", session_id="session-\udfff", query="garbage \ud800 in")
    store.start_run(run)
    response = {"text": "a\udc00b", "list": ["\ud800"], "emoji": "\U0001f600", "lit": "\\ud800"}
    store.append_step(_step(run.id, response=response, error={"type": "ModelError", "message": "bad \udcff char"}))
    store.finish_run(run.model_copy(update={"status": "ok", "answer": "the answer \ud800"}))
    trace = store.get_run(run.id)
    assert trace.run.status == "ok" and trace.run.id == "run-\ufffd"
    assert trace.run.answer == "the answer \ufffd"
    assert trace.run.query == "garbage \ufffd in"
    assert trace.run.session_id == "session-\ufffd"
    assert trace.steps[0].response == {"text": "a\ufffdb", "list": ["\ufffd"], "emoji": "\U0001f600", "lit": "\\ud800"}
    assert trace.steps[0].error == {"type": "ModelError", "message": "bad \ufffd char"}
    assert [r.id for r in store.list_runs(session_id="session-\udfff")] == [trace.run.id]
    assert [r.id for r in store.list_runs(id_prefix="run-\ud800")] == [trace.run.id]


@pytest.mark.parametrize("home", ["a-file", "a-file/under", "a?query%20#frag/home"])
def test_orchestra_home_that_cannot_hold_the_store_is_a_store_error_and_odd_names_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, home: str
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("ORCHESTRA_HOME", str(tmp_path / home))
    monkeypatch.delenv("ORCHESTRA_DB_URL", raising=False)
    if home.startswith("a-file"):
        with pytest.raises(StoreError, match=re.escape(f"home folder {str(tmp_path / home)!r}")) as caught:
            open_store()
        assert "ORCHESTRA_HOME" in str(caught.value)
        return
    store = open_store()
    store.start_run(_run(id="r"))
    store.close()
    # the file is where ORCHESTRA_HOME says, not cut at the '?' or '#' and with '%20' as it was written
    assert (tmp_path / home / "orchestra.db").is_file()
    assert [run.id for run in open_store(default_db_url()).list_runs()] == ["r"]


def _store_with_an_orphaned_run(url: str) -> None:
    store = SqlStore(url)
    store.start_run(_run(id="orphan", meta={"pid": _dead_pid(), "host": socket.gethostname()}))
    store.close()


def _check_read_only_store_is_listed(url: str) -> None:
    from typer.testing import CliRunner

    from orchestra.cli import app as orchestra_cli

    read_only = SqlStore(url)
    with pytest.warns(UserWarning, match=r"is read-only here: 1 run\(s\) of processes that are gone"):
        assert read_only.mark_interrupted() == 0
    assert [(run.id, run.status) for run in read_only.list_runs()] == [("orphan", "running")]
    read_only.close()
    # the CLI marks orphans on opening: reading a read-only store still works, with the warning on one line
    for command in (["runs", "list"], ["runs", "show", "orphan"]):
        result = CliRunner().invoke(orchestra_cli, [*command, "--db", url])
        assert result.exit_code == 0, result.output
        assert result.output.count("warning: store") == 1 and "orphan" in result.output


def test_a_read_only_sqlite_store_can_still_be_listed(tmp_path: Path) -> None:
    path = tmp_path / "orchestra.db"
    _store_with_an_orphaned_run(f"sqlite:///{path}")
    _check_read_only_store_is_listed(f"sqlite:///file:{path}?mode=ro&uri=true")


@pytest.mark.postgres
def test_a_select_only_postgres_role_can_still_list_the_store(pg_role: Callable[[str], str]) -> None:
    import sqlalchemy as sa

    owner = sa.make_url(PG_URL).set(database=sa.make_url(pg_role("")).database)
    _store_with_an_orphaned_run(owner.render_as_string(hide_password=False))
    _check_read_only_store_is_listed(pg_role("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"))


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://orchestra:p@ss:s3cr3t@127.0.0.1:1/db",
        "postgresql+psycopg://orchestra:p@ss@s3cr3t@127.0.0.1:1/db",
        "postgresql://orchestra:s3cr3t@@127.0.0.1:1/db",
    ],
)
def test_a_password_with_an_unencoded_at_sign_never_shows(url: str) -> None:
    from orchestra.store._common import mask_url

    assert mask_url(url).startswith("postgresql") and "s3cr3t" not in mask_url(url)
    scheme = url.split(":")[0]
    assert mask_url(f"cannot reach {url}: refused") == f"cannot reach {scheme}://orchestra:***@127.0.0.1:1/db: refused"
    with pytest.raises(StoreError, match="its password holds an '@', which must be written %40") as caught:
        SqlStore(url)
    assert "s3cr3t" not in str(caught.value) and "@ss" not in str(caught.value)


def test_id_prefix_matches_case_and_all_on_every_store(store: Store) -> None:
    for run_id in ("ab12", "AB34"):
        store.start_run(_run(id=run_id))
    assert [run.id for run in store.list_runs(id_prefix="ab")] == ["ab12"]
    assert [run.id for run in store.list_runs(id_prefix="AB")] == ["AB34"]
    assert store.list_runs(id_prefix="Ab") == []


def test_numbers_out_of_range_are_typed_errors_on_every_backend(store: Store) -> None:
    from orchestra.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="limit"):
        store.list_runs(limit=2**63)
    with pytest.raises(ConfigurationError, match="offset"):
        store.list_runs(offset=2**63)
    assert store.list_runs(limit=2**63 - 1, offset=2**63 - 1) == []
    if isinstance(store, InMemoryStore):
        return
    # PostgreSQL's integer columns hold 32 bits: SQLite, which would hold more, refuses the same values
    store.start_run(_run(id="big", prompt_tokens=2**31 - 1))
    with pytest.raises(StoreError, match=r"prompt_tokens 2147483648 is out of range"):
        store.start_run(_run(id="bigger", prompt_tokens=2**31))
    with pytest.raises(StoreError, match="completion_tokens"):
        store.finish_run(_run(id="big", status="ok", completion_tokens=2**40))
    with pytest.raises(StoreError, match="prompt_tokens"):
        store.append_step(_step("big", prompt_tokens=2**31))
    assert [run.id for run in store.list_runs()] == ["big"] and store.get_run("big").steps == []


def test_list_runs_keeps_the_traffic_apart_from_its_replays_and_takes_a_time_window(store: Store) -> None:
    """Listing the traffic to evaluate a router on it listed the replays of an earlier evaluation too (an exact
    replay under the original's router, so `router=` could not leave it out), and a time window could only be
    had by paging through every run: ``replays`` and ``since``/``until`` filter in the store, on every backend."""
    from orchestra.errors import ConfigurationError

    for index, (run_id, replay_of, mode) in enumerate([("t0", None, None), ("t1", None, None), ("r0", "t0", "exact"),
                                                       ("t2", None, None), ("c1", "t1", "counterfactual"), ("s1", "t1", "resume")]):
        store.start_run(_run(id=run_id, replay_of=replay_of, replay_mode=mode, started_at=T0 + timedelta(minutes=index)))

    def ids(**filters: object) -> list[str]:
        return [run.id for run in store.list_runs(**filters)]  # type: ignore[arg-type]

    assert ids() == ["s1", "c1", "t2", "r0", "t1", "t0"]
    assert ids(replays=False) == ["t2", "t1", "t0"]  # each query once: no replay, no resume
    assert ids(replays=True) == ["s1", "c1", "r0"]
    assert ids(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=4)) == ["t2", "r0", "t1"]  # until excluded
    assert ids(since=T0 + timedelta(minutes=1), replays=False, limit=1) == ["t2"]
    assert ids(since=T0 + timedelta(minutes=3, seconds=30)) == ["s1", "c1"]
    # a naive time is UTC, as the store keeps times; another offset is the same instant
    assert ids(until=(T0 + timedelta(minutes=1)).replace(tzinfo=None)) == ["t0"]
    assert ids(until=(T0 + timedelta(minutes=1)).astimezone(timezone(timedelta(hours=2)))) == ["t0"]
    with pytest.raises(ConfigurationError, match="'since' must be a datetime, got str"):
        store.list_runs(since="2026-05-20")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="'until'"):
        store.list_runs(until=1.0)  # type: ignore[arg-type]
