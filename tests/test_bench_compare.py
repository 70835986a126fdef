"""Routers side by side: `orchestra bench compare`, and the benches run over several routers (``--router a,b``)."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestra import routing
from orchestra.bench import router_names
from orchestra.bench.compare import compare_reports, gap_recovery_cost, load_reports
from orchestra.cli import app
from orchestra.errors import ConfigurationError, DataError
from orchestra.routers.model_routers import BestSingleRouter, CheapestRouter, OracleRouter
from orchestra.routers.set_router import SetRouter

from test_bench_agents import write_set as write_agent_set
from test_bench_models import write_set as write_model_set
from test_routers_basic import WordEmbedder


@pytest.fixture
def model_routers(monkeypatch):
    # in-process names, so the test does not depend on the installed entry points
    for name, factory in (("best-single", BestSingleRouter), ("cheapest", CheapestRouter), ("oracle", OracleRouter)):
        monkeypatch.setitem(routing._IN_PROCESS, name, factory)


def test_gap_recovery_cost_reads_the_hull_between_the_cheapest_and_the_best_single_model() -> None:
    report = {
        "single_models": [{"model": "weak", "quality": 0.5, "cost_usd": 1.0}, {"model": "strong", "quality": 0.9, "cost_usd": 10.0}],
        "best_single": {"model": "strong", "quality": 0.9, "cost_usd": 10.0},
        # (6, 0.7) lies under the hull: mixing the (4, 0.8) and (1, 0.5) points does better for less
        "points": [{"cost_usd": 1.0, "quality": 0.5}, {"cost_usd": 4.0, "quality": 0.8}, {"cost_usd": 6.0, "quality": 0.7},
                   {"cost_usd": 10.0, "quality": 0.9}],
    }
    assert gap_recovery_cost(report, 0.5) == pytest.approx(3.0)  # quality 0.7 on the chord from (1, .5) to (4, .8)
    assert gap_recovery_cost(report, 0.8) == pytest.approx(5.2)  # 0.82 on the chord from (4, .8) to (10, .9)
    report["points"] = [{"cost_usd": 2.0, "quality": 0.85}]
    assert gap_recovery_cost(report, 0.5) == pytest.approx(2.0)  # its one point already recovers it
    assert gap_recovery_cost(report, 1.0) is None  # and never reaches the best single model
    with pytest.raises(ValueError, match="share"):
        gap_recovery_cost(report, 0.0)


def test_bench_models_over_several_routers_compares_them_and_writes_every_report(tmp_path, model_routers) -> None:
    data = write_model_set(tmp_path / "set")
    out = tmp_path / "out" / "three.json"
    result = CliRunner().invoke(app, ["bench", "models", "--data", str(data), "--router", "best-single,cheapest,oracle",
                                      "--weights", "0,1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "3 routers on set test (4 queries)" in result.output and "oracle (bound)" in result.output
    written = json.loads(out.read_text())
    assert [report["router"] for report in written["reports"]] == ["best-single", "cheapest", "oracle"]
    rows = {row["router"]: row for row in written["comparison"]["rows"]}
    # best-single goes from small (0.5 at $0.001) at w = 1 to big (1.0 at $0.01) at w = 0: half the gap costs
    # $0.0055, 55% of big's cost; cheapest never leaves small
    assert rows["best-single"]["gap_recovery"]["0.5"]["share_of_best_single_cost"] == pytest.approx(0.55)
    assert rows["best-single"]["gap_recovery"]["0.8"]["cost_usd"] == pytest.approx(0.0082)
    assert rows["cheapest"]["gap_recovery"]["0.5"] is None and rows["cheapest"]["cost_reaching_best_single"] is None
    # the oracle (every query right, for $0.0055) is shown as a bound and never marked best
    assert rows["oracle"]["bound"] and rows["oracle"]["aiq"] > rows["best-single"]["aiq"]
    assert written["comparison"]["best"]["aiq"] == ["best-single"]
    assert written["comparison"]["best"]["cost_reaching_best_single"] == ["best-single"]
    # the file reads back: `bench compare` gives the same comparison from it, sources naming each report
    again = compare_reports(load_reports([out]))
    assert [row["router"] for row in again["rows"]] == ["best-single", "cheapest", "oracle"]
    assert again["rows"][2]["source"] == f"{out} (report 3)" and again["best"] == written["comparison"]["best"]


def test_bench_compare_prints_reports_of_separate_runs_and_refuses_what_cannot_stand_side_by_side(tmp_path, model_routers) -> None:
    data = write_model_set(tmp_path / "set")
    runner = CliRunner()
    for name in ("best-single", "cheapest"):
        run = runner.invoke(app, ["bench", "models", "--data", str(data), "--router", name, "--weights", "0,1",
                                  "--json", str(tmp_path / f"{name}.json")])
        assert run.exit_code == 0, run.output
    limited = runner.invoke(app, ["bench", "models", "--data", str(data), "--router", "oracle", "--limit", "2",
                                  "--json", str(tmp_path / "limited.json")])
    assert limited.exit_code == 0, limited.output
    single = json.loads((tmp_path / "best-single.json").read_text())
    assert "reports" not in single and single["router"] == "best-single"  # one router's report is as it was

    result = runner.invoke(app, ["bench", "compare", str(tmp_path / "best-single.json"), str(tmp_path / "cheapest.json"),
                                 "--json", str(tmp_path / "cmp.json")])
    assert result.exit_code == 0, result.output
    assert "2 routers on set test (4 queries)" in result.output and "not reached" in result.output
    assert json.loads((tmp_path / "cmp.json").read_text())["best"]["aiq"] == ["best-single"]

    def refused(*files: Path | str, extra: tuple[str, ...] = ()) -> str:
        outcome = runner.invoke(app, ["bench", "compare", *map(str, files), *extra])
        assert outcome.exit_code == 2, outcome.output
        return outcome.output

    assert "a --limit run only with one of the same limit" in refused(tmp_path / "best-single.json", tmp_path / "limited.json")
    assert "the same report is given twice" in refused(tmp_path / "cheapest.json", tmp_path / "cheapest.json")
    assert "file not found" in refused(tmp_path / "missing.json")
    (tmp_path / "fusion.json").write_text(json.dumps({"set": "set", "fused_accuracy": 0.9}))
    assert "not a report of `orchestra bench models`" in refused(tmp_path / "fusion.json")
    (tmp_path / "broken.json").write_text("{")
    assert "not valid JSON" in refused(tmp_path / "broken.json")
    other = json.loads((tmp_path / "cheapest.json").read_text()) | {"set": "another"}
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert "on the same set" in refused(tmp_path / "cheapest.json", tmp_path / "other.json")
    kept = (tmp_path / "cheapest.json").read_text()
    assert "is one of the reports compared" in refused(tmp_path / "best-single.json", tmp_path / "cheapest.json",
                                                        extra=("--json", str(tmp_path / "cheapest.json")))
    assert (tmp_path / "cheapest.json").read_text() == kept  # a comparison never overwrites its own input


def test_bench_agents_over_several_routers_scopes_options_and_compares(tmp_path, monkeypatch) -> None:
    data = write_agent_set(tmp_path / "tiny")
    # a partial keeps SetRouter's signature, so its options are checked by name
    monkeypatch.setitem(routing._IN_PROCESS, "set-a", partial(SetRouter, embedder=WordEmbedder()))
    monkeypatch.setitem(routing._IN_PROCESS, "set-b", partial(SetRouter, embedder=WordEmbedder()))
    out = tmp_path / "agents.json"
    result = CliRunner().invoke(app, ["bench", "agents", "--data", str(data), "--router", "set-a,set-b", "--json", str(out),
                                      "--option", "k=2", "--option", "set-b:k=1", "--option", "set-b:oos_threshold=null"])
    assert result.exit_code == 0, result.output
    assert "2 routers on tiny test (4 queries)" in result.output
    written = json.loads(out.read_text())
    configs = {report["router"]: report["router_config"] for report in written["reports"]}
    assert configs["set-a"]["k"] == 2 and configs["set-b"]["k"] == 1  # the scoped option overrides the shared one
    assert configs["set-b"]["oos_threshold"] is None and configs["set-a"]["oos_threshold"] is not None
    rows = {row["router"]: row for row in written["comparison"]["rows"]}
    assert rows["set-b"]["mean_set_size"] <= 1.0 < rows["set-a"]["mean_set_size"]
    assert rows["set-b"]["oos_recall"] == 0.0  # no out-of-scope threshold: the out-of-scope query gets an agent

    # several routers, one router's output: refused before anything runs, as is a misspelt router or option
    for args, message in (
        (["--predictions", str(tmp_path / "p.jsonl")], "--predictions writes one router's output"),
        (["--save", str(tmp_path / "r.npz")], "--save writes one router's output"),
        (["--option", "set-c:k=1"], "is for router 'set-c', which --router set-a,set-b does not run"),
        (["--option", "set-a:bogus=1"], "takes no option 'bogus'"),
    ):
        refused = CliRunner().invoke(app, ["bench", "agents", "--data", str(data), "--router", "set-a,set-b", *args])
        assert refused.exit_code == 2 and message in refused.output, refused.output
    assert not (tmp_path / "p.jsonl").exists() and not (tmp_path / "r.npz").exists()


def test_router_names_split_and_scope_options() -> None:
    assert router_names("knn", {"k": 5}) == {"knn": {"k": 5}}
    assert router_names("knn, mlp", {"knn:k": 5, "seed": 1}) == {"knn": {"seed": 1, "k": 5}, "mlp": {"seed": 1}}
    # one router may be named in its own option's scope, as it would be beside others
    assert router_names("knn", {"knn:k": 5}) == {"knn": {"k": 5}}
    for text, options, message in (("knn,,mlp", {}, "several separated by commas"), ("knn,knn", {}, "knn twice"),
                                   ("knn", {"mlp:k": 1}, "which --router knn does not run"),
                                   ("knn", {"knn:": 1}, "names no option")):
        with pytest.raises(ConfigurationError, match=message):
            router_names(text, options)


def test_compare_refuses_model_reports_beside_agent_reports() -> None:
    model_report = {"set": "s", "router": "m", "n_test": 1, "points": [], "single_models": [], "best_single": {}}
    agent_report = {"data": "/x/s", "router": "a", "regime": "supervised", "test": {"n": 1, "set_hit": 1.0}}
    with pytest.raises(DataError, match="compare model routers and agent routers apart"):
        compare_reports([("m.json", model_report), ("a.json", agent_report)])


def test_an_option_scoped_to_a_router_named_by_import_path_reaches_it() -> None:
    # the router's name holds a colon itself: the option's scope ends at the last one (mypkg.routing:Mine:k=5)
    assert router_names("knn,mypkg.routing:Mine", {"mypkg.routing:Mine:k": 5, "seed": 1}) == {
        "knn": {"seed": 1}, "mypkg.routing:Mine": {"seed": 1, "k": 5}}
    with pytest.raises(ConfigurationError, match="for router 'mypkg.routing:Other'"):
        router_names("knn,mypkg.routing:Mine", {"mypkg.routing:Other:k": 5})
