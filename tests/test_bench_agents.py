"""`orchestra bench agents`: data loading, regimes, holdout onboarding, predictions and metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from orchestra.bench.agents import agents_command, few_shot_sample, load_agent_set, run_agent_bench, RoutingExample
from orchestra.bench.metrics import latency_summary, oos_metrics, set_metrics
from orchestra.errors import ConfigurationError, DataError
from orchestra.routers.basic import EmbeddingRouter
from orchestra.routers.set_router import SetRouter

from test_routers_basic import WordEmbedder
from test_set_router import CARDS, OOS, TRAIN

TEST = [
    {"query": "will it rain in lisbon", "agents": ["GetWeather"]},
    {"query": "play a song by the beatles", "agents": ["PlayMusic"]},
    {"query": "book a table for five at a pizza restaurant", "agents": ["BookRestaurant"]},
    {"query": "play some jazz music and then what is the temperature in rome", "agents": ["PlayMusic", "GetWeather"]},
]


def write_set(root: Path, *, oos: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "agents.jsonl").write_text("".join(json.dumps({"id": c.id, "description": c.description}) + "\n" for c in CARDS))
    (root / "train.jsonl").write_text("".join(json.dumps({"query": r.query, "agents": list(r.agents)}) + "\n" for r in TRAIN))
    (root / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in TEST))
    if oos:
        (root / "oos_train.jsonl").write_text("".join(json.dumps({"query": r.query, "agents": []}) + "\n" for r in OOS))
        (root / "oos_test.jsonl").write_text(json.dumps({"query": "what is the capital of peru", "agents": []}) + "\n")
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_set(tmp_path_factory.mktemp("agents") / "tiny")


def test_metrics():
    gold = [["a"], ["b"], ["a", "b"], []]
    pred = [["a", "c"], ["c"], ["b", "a"], []]
    m = set_metrics(gold, pred)
    assert m["n"] == 3 and m["set_hit"] == pytest.approx(2 / 3) and m["top1"] == pytest.approx(2 / 3)
    assert m["exact_set"] == pytest.approx(1 / 3) and m["mean_set_size"] == pytest.approx(5 / 3)
    assert m["micro_f1"] == pytest.approx(2 * (3 / 5) * (3 / 4) / (3 / 5 + 3 / 4))
    o = oos_metrics(gold, pred)
    assert o == {"n_oos": 1, "oos_precision": 1.0, "oos_recall": 1.0}
    assert latency_summary([1.0, 2.0, 3.0])["p50_ms"] == 2.0


def test_run_supervised_writes_predictions_in_order(dataset, tmp_path):
    out = tmp_path / "pred.jsonl"
    router = SetRouter(embedder=WordEmbedder(), oos_threshold=0.5)
    report = run_agent_bench(dataset, router, regime="supervised", predictions=out)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["query"] for line in lines] == [r["query"] for r in TEST] + ["what is the capital of peru"]
    assert all(set(line) >= {"query", "predicted", "latency_ms"} for line in lines)
    assert report["test"]["n"] == 4 and report["test"]["set_hit"] == 1.0
    assert set(lines[3]["predicted"]) == {"PlayMusic", "GetWeather"}
    assert "oos" in report and report["n_train_rows"] == len(TRAIN)


def test_regimes_limit_what_is_trained(dataset):
    router = SetRouter(embedder=WordEmbedder())
    report = run_agent_bench(dataset, router, regime="zero-shot", limit=2)
    assert router.head is None and report["test"]["n"] == 2 and report["n_train_rows"] == 0
    report = run_agent_bench(dataset, router, regime="few-shot", shots=2)
    assert report["n_train_rows"] == 6 and router.head is not None


def test_holdout_agents_are_onboarded_and_reported_apart(dataset):
    router = SetRouter(embedder=WordEmbedder())
    report = run_agent_bench(dataset, router, regime="few-shot", shots=3, holdout_agents=1, seed=1)
    held = report["holdout_agents"]
    assert len(held) == 1 and held[0] not in router.head.agent_ids
    assert report["onboarded"]["n"] + report["known"]["n"] == report["test"]["n"]


def test_routers_without_fit_are_used_as_they_are(dataset):
    class TaggedEmbedder(WordEmbedder):
        backend = "word-counts"

    report = run_agent_bench(dataset, EmbeddingRouter(threshold=-1.0, embedder=TaggedEmbedder()), regime="supervised")
    assert report["fit_seconds"] == 0.0 and report["test"]["n"] == 4
    assert report["embedding_backend"] == "word-counts"


def test_cli_command_prints_table_and_writes_json(dataset, tmp_path, monkeypatch):
    from orchestra import routing

    monkeypatch.setitem(routing._IN_PROCESS, "set-test", lambda **options: SetRouter(embedder=WordEmbedder(), **options))
    app = typer.Typer()
    app.command()(agents_command)
    out = tmp_path / "m.json"
    result = CliRunner().invoke(app, ["--data", str(dataset), "--router", "set-test", "--regime", "few-shot",
                                      "--shots", "2", "--json", str(out), "--predictions", str(tmp_path / "p.jsonl"),
                                      "--option", "k=2", "--option", "oos_threshold=null"])
    assert result.exit_code == 0, result.output
    assert "set hit" in result.output and "out of scope" in result.output
    report = json.loads(out.read_text())
    assert report["regime"] == "few-shot"
    assert report["router_config"]["k"] == 2 and report["router_config"]["oos_threshold"] is None
    from orchestra.cli import app as orchestra_cli

    bad = CliRunner().invoke(orchestra_cli, ["bench", "agents", "--data", str(dataset), "--router", "set-test", "--option", "k"])
    assert bad.exit_code == 2 and bad.output.strip() == "ConfigurationError: --option expects key=value, got 'k'"


def test_bad_data_is_a_data_error_naming_file_and_line(tmp_path):
    root = write_set(tmp_path / "bad", oos=False)
    with (root / "test.jsonl").open("a") as handle:
        handle.write("{not json\n")
    with pytest.raises(DataError, match=r"test\.jsonl:5"):
        load_agent_set(root)
    root = write_set(tmp_path / "dup", oos=False)
    with (root / "agents.jsonl").open("a") as handle:
        handle.write(json.dumps({"id": "GetWeather", "description": "again"}) + "\n")
    with pytest.raises(DataError, match=r"agents\.jsonl:4.*GetWeather"):
        load_agent_set(root)
    root = write_set(tmp_path / "blank", oos=False)
    (root / "agents.jsonl").write_text(json.dumps({"id": "x", "description": "  "}) + "\n")
    with pytest.raises(DataError, match=r"agents\.jsonl:1.*description"):
        load_agent_set(root)
    root = write_set(tmp_path / "unknown", oos=False)
    (root / "train.jsonl").write_text(json.dumps({"query": "hi", "agents": ["Nobody"]}) + "\n")
    with pytest.raises(DataError, match=r"train\.jsonl:1.*Nobody"):
        load_agent_set(root)
    root = write_set(tmp_path / "empty", oos=False)
    (root / "test.jsonl").write_text(json.dumps({"query": "", "agents": []}) + "\n")
    with pytest.raises(DataError, match=r"test\.jsonl:1.*query"):
        load_agent_set(root)
    with pytest.raises(DataError, match="not found|not a directory"):
        load_agent_set(tmp_path / "missing")
    (tmp_path / "notest").mkdir()
    (tmp_path / "notest" / "agents.jsonl").write_text(json.dumps({"id": "a", "description": "d"}) + "\n")
    with pytest.raises(DataError, match=r"test\.jsonl: file not found"):
        load_agent_set(tmp_path / "notest")


def test_few_shot_sample_is_seeded_and_bounded():
    rows = [RoutingExample(query=f"q{i}", agents=("a",)) for i in range(10)] + [RoutingExample(query="b1", agents=("b",))]
    first = few_shot_sample(rows, ["a", "b"], 3, seed=7)
    assert first == few_shot_sample(rows, ["a", "b"], 3, seed=7)
    assert len(first) == 4


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not (SHARED / "agents").is_dir(), reason="../shared/data is not beside the repository")
@pytest.mark.parametrize(
    ("name", "agents", "train", "test"),
    [("clinc150", 150, 15000, 4500), ("mixsnips", 7, 13084, 2199), ("banking77", 77, 10003, 3080)],
)
def test_every_shared_agent_set_loads(name, agents, train, test):
    data = load_agent_set(SHARED / "agents" / name)
    assert (len(data.cards), len(data.split("train")), len(data.split("test"))) == (agents, train, test)


@pytest.mark.skipif(not (SHARED / "models").is_dir(), reason="../shared/data is not beside the repository")
@pytest.mark.parametrize(("name", "models", "train", "test"), [("routerbench", 11, 2205, 945), ("llmrouter", 9, 5608, 381)])
def test_every_shared_model_set_loads(name, models, train, test):
    from orchestra.bench.fusion import load_fusion_set
    from orchestra.bench.models import load_model_set

    data = load_model_set(SHARED / "models" / name)
    assert (len(data.cards), len(data.train), len(data.test)) == (models, train, test)
    assert [len(part) for part in load_fusion_set(SHARED / "models" / name)[:3]] == [models, train, test]


def test_llm_router_decisions_are_counted_by_outcome(dataset):
    """An LLM router through the bench: unknown ids and unreadable answers are counted, never crash the run."""
    from orchestra.routers.tcar import TCARRouter
    from orchestra.testing import ScriptedModel

    from test_tcar import ROUTER_MODEL, DirectAccess, answer

    # the first answer goes to the bench's untimed warm-up decision, which no metric counts
    script = [answer(["NoSuchAgent"]), answer(["GetWeather"]), answer(["PlayMusic", "NoSuchAgent"]), "not json at all",
              answer([], out=True), answer([], out=True)]
    model = ScriptedModel(id=ROUTER_MODEL.id, script=script)
    report = run_agent_bench(
        dataset, TCARRouter(embedder=WordEmbedder()), regime="zero-shot", model_access=DirectAccess(model), models=(ROUTER_MODEL,)
    )
    assert report["test"]["n"] == 4 and report["dropped_ids"] == 1
    assert report["finish_reasons"]["router model answer unreadable"] == 1
    assert report["finish_reasons"]["the router model judged the request out of scope"] == 2
    assert report["cpu_time"]["p50_ms"] >= 0.0


def test_agent_labels_that_are_not_card_ids_are_renamed_everywhere(tmp_path):
    # banking77 has the label "reverted_card_payment?": a card id may not hold "?"
    root = write_set(tmp_path / "labels", oos=False)
    for name in ("agents.jsonl", "train.jsonl", "test.jsonl"):
        path = root / name
        path.write_text(path.read_text().replace('"GetWeather"', '"GetWeather?"'))
    data = load_agent_set(root)
    assert data.renamed == {"GetWeather?": "GetWeather"}
    assert "GetWeather" in [card.id for card in data.cards]
    assert any(row.agents == ("GetWeather",) or row.agents == ["GetWeather"] for row in data.split("test"))
    report = run_agent_bench(root, SetRouter(embedder=WordEmbedder()), regime="supervised", predictions=tmp_path / "p.jsonl")
    assert report["renamed_agents"] == {"GetWeather?": "GetWeather"}
    first = json.loads((tmp_path / "p.jsonl").read_text().splitlines()[0])
    assert first["gold"] == ["GetWeather"] and first["predicted"][0] == "GetWeather"


def test_a_failed_decision_counts_as_wrong_never_as_out_of_scope(dataset):
    """A router model that is down fails that decision: counted, scored wrong, and not taken for an out-of-scope
    answer (which would flatter out-of-scope recall)."""
    from orchestra.errors import ModelUnavailableError
    from orchestra.routers.tcar import TCARRouter
    from orchestra.testing import ScriptedModel

    from test_tcar import ROUTER_MODEL, DirectAccess, answer

    down = ModelUnavailableError("connection refused", model_id=ROUTER_MODEL.id)
    # the first answer goes to the untimed warm-up; the last one to the out-of-scope test query
    script = [answer(["GetWeather"]), answer(["GetWeather"]), down, down, down, down]
    model = ScriptedModel(id=ROUTER_MODEL.id, script=script)
    report = run_agent_bench(
        dataset, TCARRouter(embedder=WordEmbedder()), regime="zero-shot", model_access=DirectAccess(model), models=(ROUTER_MODEL,)
    )
    assert report["router_errors"] == 4
    assert report["test"]["set_hit"] == 0.25 and report["oos"]["oos_recall"] == 0.0


def test_an_output_inside_the_data_root_is_refused_not_only_inside_the_set(tmp_path, monkeypatch):
    from orchestra.bench import check_output

    root = tmp_path / "data"
    (root / "agents" / "clinc").mkdir(parents=True)
    monkeypatch.setenv("ORCHESTRA_DATA_DIR", str(root))
    for path in (root / "agents" / "x.json", root / "p.jsonl", root / "agents" / "clinc" / "test.jsonl"):
        with pytest.raises(ConfigurationError, match="inside the data folder"):
            check_output(path, data=root / "agents" / "clinc", option="--json")
        assert not path.exists()
    check_output(tmp_path / "out" / "p.jsonl", data=root / "agents" / "clinc", option="--json")
    monkeypatch.setenv("ORCHESTRA_DATA_DIR", str(tmp_path / "absent"))  # no data root: the set's folder still counts
    with pytest.raises(ConfigurationError, match="inside the data folder"):
        check_output(root / "agents" / "clinc" / "p.jsonl", data=root / "agents" / "clinc", option="--json")
    check_output(root / "p.jsonl", data=root / "agents" / "clinc", option="--json")


def test_run_options_are_checked_before_any_training(dataset, tmp_path):
    router = lambda: SetRouter(embedder=WordEmbedder())  # noqa: E731
    for kwargs, error, match in [
        ({"limit": 0}, DataError, "--limit must be 1 or more"),
        ({"limit": -1}, DataError, "--limit must be 1 or more"),
        ({"shots": -1}, DataError, "--shots must be at least 1"),
        ({"predictions": tmp_path}, ConfigurationError, "is a directory"),
        ({"predictions": dataset / "test.jsonl"}, ConfigurationError, "inside the data folder"),
    ]:
        before = (dataset / "test.jsonl").read_bytes()
        with pytest.raises(error, match=match):
            run_agent_bench(dataset, router(), regime="supervised", **kwargs)
        assert (dataset / "test.jsonl").read_bytes() == before
    with pytest.raises(DataError, match="bench models"):
        run_agent_bench(dataset, "graph-router", regime="supervised")
    with pytest.raises(DataError, match="does not evaluate a saved checkpoint"):
        run_agent_bench(dataset, "set", regime="supervised", router_options={"checkpoint": "x.pt"})
    root = write_set(tmp_path / "notrain", oos=False)
    (root / "train.jsonl").unlink()
    with pytest.raises(DataError, match="use --regime zero-shot"):
        run_agent_bench(root, router(), regime="supervised")
    (root / "test.jsonl").write_text("\n")
    with pytest.raises(DataError, match=r"test\.jsonl: holds no queries"):
        load_agent_set(root)
    (root / "test.jsonl").write_text(json.dumps({"query": "   ", "agents": []}) + "\n")
    with pytest.raises(DataError, match=r"test\.jsonl:1.*query"):
        load_agent_set(root)
    (root / "test.jsonl").write_text(json.dumps({"query": "rain?", "agents": ["GetWeather", "GetWeather"]}) + "\n")
    with pytest.raises(DataError, match=r"test\.jsonl:1: field 'agents'.*'GetWeather'.*more than once"):
        load_agent_set(root)


def test_rows_labelled_out_of_scope_count_as_such_in_any_split(tmp_path):
    """The format marks out of scope with "agents": [] in any split: such train rows train the refusal, such test
    rows are scored as out-of-scope queries; a misspelt "agents" field is no out-of-scope label."""
    root = write_set(tmp_path / "inline", oos=False)
    with (root / "train.jsonl").open("a") as handle:
        handle.writelines(json.dumps({"query": row.query, "agents": []}) + "\n" for row in OOS)
    with (root / "test.jsonl").open("a") as handle:
        handle.write(json.dumps({"query": "what is the capital of peru", "agents": []}) + "\n")

    seen: dict[str, list] = {}

    class Recording(SetRouter):
        def fit(self, agents, train_rows, regime, shots, *, oos_rows=(), seed=0):
            seen["train"], seen["oos"] = list(train_rows), list(oos_rows)
            return super().fit(agents, train_rows, regime, shots, oos_rows=oos_rows, seed=seed)

    report = run_agent_bench(root, Recording(embedder=WordEmbedder(), oos_threshold=0.5), regime="supervised")
    assert all(row.agents for row in seen["train"]) and [row.query for row in seen["oos"]] == [row.query for row in OOS]
    assert report["test"]["n"] == len(TEST) and report["oos"]["n_oos"] == 1

    (root / "oos_test.jsonl").write_text(json.dumps({"query": "play a song", "agents": ["PlayMusic"]}) + "\n")
    with pytest.raises(DataError, match="out-of-scope file holds a query for agents"):
        load_agent_set(root)
    (root / "oos_test.jsonl").unlink()
    (root / "test.jsonl").write_text(json.dumps({"query": "what is 5 times 5", "agent": ["PlayMusic"]}) + "\n")
    with pytest.raises(DataError, match="'agents'"):
        load_agent_set(root)


def test_an_llm_router_without_a_model_is_refused_before_training(dataset):
    from orchestra.routers.tcar import TCARRouter

    with pytest.raises(ConfigurationError, match="pass --model"):
        run_agent_bench(dataset, TCARRouter(embedder=WordEmbedder()), regime="zero-shot")


def test_a_routing_example_built_in_python_names_its_bad_field_in_a_data_error():
    # it raised pydantic's ValidationError, which no caller of the project's typed errors catches
    with pytest.raises(DataError, match="'agents'.*more than once"):
        RoutingExample(query="q", agents=("a", "a"))
    with pytest.raises(DataError, match="'query'"):
        RoutingExample(query="   ", agents=())


def test_run_agent_bench_refuses_an_unknown_regime_with_a_data_error(tmp_path):
    with pytest.raises(DataError, match="fewshot"):
        run_agent_bench(write_set(tmp_path / "set"), SetRouter(embedder=WordEmbedder()), regime="fewshot")


def test_a_trained_router_is_scored_as_given_without_retraining(tmp_path):
    """run_agent_bench retrained every instance: a loaded SetRouter's head was replaced."""
    folder = write_set(tmp_path / "set")
    router = SetRouter(embedder=WordEmbedder())
    trained = run_agent_bench(folder, router, regime="supervised")
    head = router.head
    given = run_agent_bench(folder, router, regime="supervised", train=False)
    assert router.head is head and given["fit_seconds"] == 0 and given["trained_by_bench"] is False
    assert (given["regime"], given["shots"]) == ("as given", None)  # not the bench's regime: it trained nothing
    assert given["test"] == trained["test"] and given["oos"] == trained["oos"]
    with pytest.raises(DataError, match="object is not a router"):
        run_agent_bench(folder, object())


def test_bench_agents_saves_the_router_it_trained(tmp_path):
    """`bench agents --save PATH`: the router the bench trained, written to serve from the command line (no more
    'a router trained in Python'); a router with nothing to save, or train=False, is refused before routing."""
    folder = write_set(tmp_path / "set")
    path = tmp_path / "out" / "set.npz"
    report = run_agent_bench(folder, SetRouter(embedder=WordEmbedder()), regime="supervised", save=path)
    assert report["saved"] == str(path)
    loaded = SetRouter.load(path, embedder=WordEmbedder())
    again = run_agent_bench(folder, loaded, regime="supervised", train=False)
    assert again["test"] == report["test"] and again["oos"] == report["oos"]
    with pytest.raises(ConfigurationError, match="keeps no trained checkpoint"):
        run_agent_bench(folder, EmbeddingRouter(embedder=WordEmbedder()), save=tmp_path / "e.npz")
    with pytest.raises(ConfigurationError, match="train=False"):
        run_agent_bench(folder, loaded, train=False, save=tmp_path / "again.npz")


def test_a_test_set_all_out_of_scope_prints_no_latency_rather_than_zero(tmp_path, capsys):
    """Latency is timed on in-scope test queries; with none the report read "p50 0.0 ms"."""
    from orchestra.bench.agents import print_report

    folder = write_set(tmp_path / "set")
    (folder / "test.jsonl").write_text(json.dumps({"query": "what is the capital of peru", "agents": []}) + "\n")
    report = run_agent_bench(folder, SetRouter(embedder=WordEmbedder()), regime="supervised")
    print_report(report)
    out = capsys.readouterr().out
    assert "no in-scope test query to time" in out and "p50 0.0 ms" not in out


def test_a_hand_written_sets_mistakes_name_the_file_the_line_and_the_field(tmp_path):
    root = write_set(tmp_path / "unknown", oos=False)
    (root / "test.jsonl").write_text(json.dumps({"query": "hi", "agents": ["GetWheather"]}) + "\n")
    with pytest.raises(DataError, match=r"test\.jsonl:1: field 'agents': unknown agent id\(s\) \['GetWheather'\]"):
        load_agent_set(root)
    root = write_set(tmp_path / "dup", oos=False)
    with (root / "agents.jsonl").open("a") as handle:
        handle.write(json.dumps({"id": "GetWeather", "description": "again"}) + "\n")
    # the file's words: it said the id "is already registered", though nothing is registered when a set is read
    with pytest.raises(DataError, match=r"agents\.jsonl:4: field 'id': agent id 'GetWeather' is given twice \(first on line 1\)$"):
        load_agent_set(root)
    root = write_set(tmp_path / "blank", oos=False)
    (root / "train.jsonl").write_text(json.dumps({"query": " \t", "agents": ["GetWeather"]}) + "\n")
    with pytest.raises(DataError, match=r"train\.jsonl:1: field 'query': .*query must not be blank$"):
        load_agent_set(root)
    root = write_set(tmp_path / "no-test", oos=False)
    (root / "test.jsonl").unlink()
    with pytest.raises(DataError, match=r"test\.jsonl: file not found \(an agent set needs its test split"):
        load_agent_set(root)


def test_a_router_whose_fit_the_bench_cannot_call_is_told_the_signature_it_calls(dataset):
    class CardsOnly(EmbeddingRouter):
        """An agent router that learns from the cards alone: its fit takes only them."""

        def fit(self, agents):
            return self

    with pytest.raises(DataError) as refused:
        run_agent_bench(dataset, CardsOnly(embedder=WordEmbedder()), regime="supervised")
    message = str(refused.value)
    # it read "a model router is benchmarked with `orchestra bench models`", which this one is not
    assert "fit(agents, train_rows, regime, shots, *, oos_rows=(), seed=0)" in message and "CardsOnly.fit(agents)" in message
    assert "train=False" in message
    report = run_agent_bench(dataset, CardsOnly(embedder=WordEmbedder()).fit([]), train=False)  # scored as it is
    assert report["test"]["n"] == 4 and report["trained_by_bench"] is False


def test_the_report_says_which_class_options_file_and_embedder_made_the_router(dataset, tmp_path, monkeypatch):
    from orchestra.cli import app as orchestra_cli

    (tmp_path / "own_agent_routing.py").write_text(
        "from orchestra.routers.basic import EmbeddingRouter\n"
        "from test_routers_basic import WordEmbedder\n"
        "class Mine(EmbeddingRouter):\n"
        "    name = 'mine'\n"
        "    def __init__(self, k: int = 3):\n"
        "        super().__init__(k=k, threshold=-1.0, embedder=WordEmbedder())\n"
        "    def describe(self):\n"
        "        return {'name': self.name}  # says nothing of k: the report's router_source does\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "report.json"
    # named on the command line by its import path, its option scoped to it
    run = CliRunner().invoke(orchestra_cli, ["bench", "agents", "--data", str(dataset), "--router", "own_agent_routing:Mine",
                                             "--option", "own_agent_routing:Mine:k=1", "--json", str(out)])
    assert run.exit_code == 0, run.output
    report = json.loads(out.read_text())
    source = report["router_source"]
    assert report["router"] == "own_agent_routing:Mine" and report["test"]["mean_set_size"] == 1.0
    assert source["class"] == "own_agent_routing:Mine" and source["options"] == {"k": 1}
    assert re.fullmatch(r"[0-9a-f]{16}", source["source_sha256"]) and source["orchestra"]
    assert report["embedder"] == "WordEmbedder"
    # another version of the file is another digest; a router given built records no options (it took none here)
    (tmp_path / "own_agent_routing.py").write_text((tmp_path / "own_agent_routing.py").read_text() + "# changed\n")
    import own_agent_routing

    given = run_agent_bench(dataset, own_agent_routing.Mine(k=1), regime="supervised")["router_source"]
    assert given["options"] is None and given["source_sha256"] != source["source_sha256"]
