"""Benchmark a router of your own on Orchestra's harness, beside the shipped ones: an agent router on CLINC150 and
on a routing set of your own, a model router on RouterBench, from the command line and from Python.

    .venv/bin/python examples/benchmark_your_own_router.py [DATA_FOLDER]

DATA_FOLDER holds the canonical sets (default: ``../shared/data`` beside the repository; see its README for the
formats). Two routers are written here, each small, learned and honest:

- `CentroidRouter`, an agent router: the TF-IDF centroid of each agent's card and training queries; a query goes
  to the agents whose centroid is nearest (the best, and any other within ``join`` of it, at most ``k``), or is
  refused (out of scope) when no centroid is within ``min_similarity``. Its ``fit`` is the one the agent bench
  calls (`orchestra.bench.agents.TrainableRouter`), so the bench trains it on what the regime allows.
- `TfidfQualityRouter`, a model router: a ridge regression from the TF-IDF of a prompt's last 400 characters to
  each model's recorded score, on `ModelRouter` (`orchestra.routers.model_routers`), which adds the costs, the cost
  weight w and the decision.

The command line names each by its import path, ``--router examples.benchmark_your_own_router:CentroidRouter``:
no package, entry point or registration is needed, only a module Python can import (here the repository is put on
``PYTHONPATH``, as you would put your own folder). `register_router` gives a shorter name in this process, which
the in-process command line (``typer.testing.CliRunner``) sees as well.

What runs, in about 45 s on 2 cores (a minute the first time, when MiniLM is exported to ONNX):

1. CLINC150, few-shot (5 examples per agent), the first `CLINC_LIMIT` test and out-of-scope test queries: the
   centroid router through the real ``orchestra`` command in its own process, the shipped ``embedding`` router
   (frozen MiniLM) in-process, ``orchestra bench compare`` on the two reports; the set hit and top-1 printed and
   written are checked against those recomputed here from each predictions file, and the centroid router scored
   from Python (`run_agent_bench`) gives the command's figures.
2. A five-agent set written here in the same format: both routers on it, supervised; then four broken copies of
   it (no test split, a gold agent that is no card, a card id given twice, a blank query), each refused with a
   `DataError` naming the file, the line and the field.
3. RouterBench, the first `ROUTERBENCH_LIMIT` test queries at a few cost weights: the ridge router and
   ``best-single`` through ``orchestra bench models`` in its own process, ``knn`` from Python with the hashing
   embedder (the command line's MiniLM would embed the 2,205 training prompts first: minutes), all three
   compared with `compare_reports`.

The subsets keep it quick: the figures are those of 100 queries, not the sets' (run ``orchestra bench agents``
without ``--limit`` for those; the set router's are in the README).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import Ridge
from typer.testing import CliRunner

from orchestra import (
    AgentCard,
    BaseRouter,
    Call,
    CandidateScore,
    DataError,
    DecisionError,
    Dispatch,
    Finish,
    RouterState,
    register_router,
)
from orchestra.bench.agents import RoutingExample, load_agent_set, run_agent_bench
from orchestra.bench.compare import compare_reports, load_reports, print_comparison
from orchestra.bench.models import run_model_bench
from orchestra.cli import app as orchestra_cli
from orchestra.routers.model_routers import HashingEmbedder, ModelRouter

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPOSITORY.parent / "shared" / "data"
MODULE = "examples.benchmark_your_own_router"
"""This file's import path: what ``--router MODULE:Class`` names, with the repository on ``PYTHONPATH``."""
CLINC_LIMIT = 100
ROUTERBENCH_LIMIT = 100
WEIGHTS = "0,0.05,0.1,0.3,1"
"""Cost weights of the model runs (the bench adds its scenarios' 0.5 and 0.8): few, so that timing each decision
at each weight stays short; AIQ over a coarser grid is a little lower than over the default one."""


class CentroidRouter(BaseRouter):
    """Nearest TF-IDF centroid per agent: the card's description and examples, and the training queries labelled
    with the agent, each a unit vector, averaged. An agent it was not trained on is scored by its card alone."""

    name = "centroid"

    def __init__(self, k: int = 3, join: float = 0.8, min_similarity: float = 0.15) -> None:
        self.k = k
        self.join = join
        """Another agent joins the set when its similarity is at least ``join`` times the best one's."""
        self.min_similarity = min_similarity
        self._vectorizer: TfidfVectorizer | None = None
        self._centroids: dict[str, np.ndarray] = {}
        self._matrix: tuple[tuple[str, ...], np.ndarray] | None = None  # the candidates' centroids, stacked

    def fit(
        self,
        agents: Sequence[AgentCard],
        train_rows: Sequence[RoutingExample],
        regime: str,
        shots: int,
        *,
        oos_rows: Sequence[RoutingExample] = (),
        seed: int = 0,
    ) -> CentroidRouter:
        """What `orchestra bench agents` calls: the cards (with their example queries in the few-shot and
        supervised regimes) and the training rows that regime allows. Out-of-scope rows are not used: refusal is
        a similarity threshold."""
        texts = {card.id: [card.description, *card.examples] for card in agents}
        for row in train_rows:
            for agent_id in row.agents:
                if agent_id in texts:
                    texts[agent_id].append(row.query)
        self._vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        self._vectorizer.fit([text for group in texts.values() for text in group])
        self._centroids = {agent_id: self._centroid(group) for agent_id, group in texts.items()}
        self._matrix = None
        return self

    def _centroid(self, texts: Sequence[str]) -> np.ndarray:
        assert self._vectorizer is not None
        mean = np.asarray(self._vectorizer.transform(texts).mean(axis=0)).ravel()
        norm = np.linalg.norm(mean)
        return mean / norm if norm else mean

    def decide(self, state: RouterState) -> Dispatch | Finish:
        """The agents of the nearest centroids, every candidate scored; out of scope below ``min_similarity``."""
        if self._vectorizer is None:
            raise DecisionError("CentroidRouter is not trained: call fit (orchestra bench agents does)")
        ids = tuple(card.id for card in state.agents)
        for card in state.agents:  # onboarded after training: its card is all there is
            if card.id not in self._centroids:
                self._centroids[card.id] = self._centroid([card.description, *card.examples])
        if self._matrix is None or self._matrix[0] != ids:
            self._matrix = (ids, np.stack([self._centroids[agent_id] for agent_id in ids]))
        similarities = (self._vectorizer.transform([state.query]) @ self._matrix[1].T).ravel()
        order = np.argsort(-similarities, kind="stable")
        scores = tuple(CandidateScore(id=ids[i], score=round(float(similarities[i]), 6)) for i in order)
        best = float(similarities[order[0]])
        if best < self.min_similarity:
            why = f"best similarity {best:.3f} < min_similarity {self.min_similarity}"
            return Finish(answer="No agent here handles that.", rationale=f"no agent fits: {why}", scores=scores, out_of_scope=True)
        chosen = [i for i in order[: self.k] if similarities[i] >= self.join * best]
        return Dispatch(calls=tuple(Call(agent_id=ids[i], query=state.query, weight=float(similarities[i])) for i in chosen),
                        rationale=f"nearest centroids ({best:.3f} for {ids[order[0]]})", scores=scores)

    def describe(self) -> dict[str, Any]:
        """Its options, and what it learnt (a summary: the bench's report and a run's trace show it)."""
        trained = None if self._vectorizer is None else {"agents": len(self._centroids), "terms": len(self._vectorizer.vocabulary_)}
        return {"name": self.name, "k": self.k, "join": self.join, "min_similarity": self.min_similarity, "trained": trained}


class TfidfQualityRouter(ModelRouter):
    """Each model's score predicted by a ridge regression on the TF-IDF of the prompt's last ``text_window``
    characters (RouterBench prompts share a long prefix: the question is at the end). `ModelRouter` does the rest:
    the cost of each model (its mean on training queries), the utility at cost weight w, the decision."""

    name = "tfidf-quality"
    uses_embeddings = False  # no MiniLM: it reads words

    def __init__(self, agent_id: str | None = None, *, alpha: float = 1.0, **options: Any) -> None:
        super().__init__(agent_id, **options)
        self.alpha = alpha
        """Ridge regularisation."""

    def _fit_quality(self, train, val, cards, weights) -> None:  # type: ignore[no-untyped-def]
        texts = [self._window(row.query) for row in train]
        self._vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2).fit(texts)
        # a model with no outcome on a query counts its mean score there
        means = [np.mean([row.outcomes[m].score for row in train if m in row.outcomes] or [0.0]) for m in self.model_ids]
        scores = np.array([[row.outcomes[m].score if m in row.outcomes else means[j] for j, m in enumerate(self.model_ids)]
                           for row in train])
        self._ridge = Ridge(alpha=self.alpha).fit(self._vectorizer.transform(texts), scores)

    def _quality(self, embeddings: np.ndarray, tasks: list[str], texts: list[str]) -> np.ndarray:
        return np.asarray(self._ridge.predict(self._vectorizer.transform([self._window(t) for t in texts])))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "alpha": self.alpha}


# ---------------------------------------------------------------------------------------------- a set of one's own
OWN_AGENTS = {
    "weather": "Weather forecasts and current conditions for a city: rain, temperature, wind, snow.",
    "calculator": "Arithmetic and percentages: sums, products, tips, conversions of numbers.",
    "translator": "Translates words and sentences between languages.",
    "calendar": "Creates, moves and lists meetings and reminders in the user's calendar.",
    "music": "Plays songs, albums and playlists; skips, pauses and sets the volume.",
}
OWN_TRAIN = {
    "weather": ["will it rain in lisbon tomorrow", "how hot is it in cairo today", "is snow expected in oslo this week",
                "what's the wind like in chicago", "do i need an umbrella in paris", "forecast for berlin on saturday"],
    "calculator": ["what is 17 times 23", "add 450 and 1290", "what is 15 percent of 80", "divide 144 by 12",
                   "how much is a 20 percent tip on 65 dollars", "square root of 729"],
    "translator": ["translate good morning into spanish", "how do you say thank you in japanese",
                   "what does danke mean in english", "translate where is the station to french",
                   "say happy birthday in italian", "english for 'je ne sais pas'"],
    "calendar": ["schedule a meeting with anna at 3pm", "move my dentist appointment to friday",
                 "what meetings do i have tomorrow", "remind me to call mum at 6", "cancel the standup on monday",
                 "add a lunch with tom next tuesday"],
    "music": ["play some jazz", "skip this song", "turn the volume up", "play the album abbey road",
              "pause the music", "shuffle my running playlist"],
}
OWN_TEST = [
    ("is it going to rain in madrid", ["weather"]), ("temperature in tokyo right now", ["weather"]),
    ("what is 38 times 12", ["calculator"]), ("15 percent tip on 42 dollars", ["calculator"]),
    ("translate see you soon into german", ["translator"]), ("how do you say cheese in french", ["translator"]),
    ("book a meeting with the team on thursday", ["calendar"]), ("what is on my calendar today", ["calendar"]),
    ("play something by miles davis", ["music"]), ("next song please", ["music"]),
    ("play some jazz and remind me to call anna at 5", ["music", "calendar"]),
]
OWN_OUT_OF_SCOPE = ["who won the 1998 world cup", "write me a poem about autumn", "what is my bank balance"]


def write_set(folder: Path, agents: dict[str, str], train: dict[str, list[str]], test: Sequence[tuple[str, list[str]]],
              out_of_scope: Sequence[str]) -> Path:
    """A routing set in the canonical format (``../shared/data/README.md``): agents.jsonl, train.jsonl, test.jsonl
    and oos_test.jsonl, one JSON object a line."""
    folder.mkdir(parents=True, exist_ok=True)

    def lines(name: str, rows: Sequence[dict[str, Any]]) -> None:
        (folder / name).write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")

    lines("agents.jsonl", [{"id": agent_id, "description": text} for agent_id, text in agents.items()])
    lines("train.jsonl", [{"query": query, "agents": [agent_id]} for agent_id, queries in train.items() for query in queries])
    lines("test.jsonl", [{"query": query, "agents": gold} for query, gold in test])
    lines("oos_test.jsonl", [{"query": query, "agents": []} for query in out_of_scope])
    return folder


def broken_sets(good: Path, root: Path) -> dict[str, Path]:
    """Copies of ``good`` each with one mistake a hand-written set makes."""
    def copy(name: str) -> Path:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for path in good.iterdir():
            (folder / path.name).write_bytes(path.read_bytes())
        return folder

    def edit(path: Path, line: int, change: dict[str, Any]) -> None:
        rows = path.read_text(encoding="utf-8").splitlines()
        rows[line - 1] = json.dumps({**json.loads(rows[line - 1]), **change})
        path.write_text("\n".join(rows) + "\n", encoding="utf-8")

    broken = {name: copy(name) for name in ("missing_split", "unknown_agent", "duplicate_card", "empty_query")}
    (broken["missing_split"] / "test.jsonl").unlink()
    edit(broken["unknown_agent"] / "test.jsonl", 3, {"agents": ["calculater"]})
    edit(broken["duplicate_card"] / "agents.jsonl", 4, {"id": "weather"})
    edit(broken["empty_query"] / "train.jsonl", 7, {"query": "  "})
    return broken


# ---------------------------------------------------------------------------------------------- reading results back
def rescore(predictions: Path) -> dict[str, float]:
    """Set hit and top-1 over the in-scope queries of a predictions file, recomputed from its lines: the gold
    agents all in the predicted set; the first predicted agent a gold one. A failed decision counts as wrong."""
    rows = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines() if line.strip()]
    in_scope = [row for row in rows if row["split"] == "test"]
    ok = [row for row in in_scope if "error" not in row]
    hit = sum(set(row["gold"]) <= set(row["predicted"]) for row in ok)
    top1 = sum(bool(row["predicted"]) and row["predicted"][0] in row["gold"] for row in ok)
    return {"n": len(in_scope), "set_hit": hit / len(in_scope), "top1": top1 / len(in_scope),
            "n_oos": sum(row["split"] == "oos_test" for row in rows)}


def table_row(text: str, label: str) -> list[str]:
    """The cells of the printed table's row that starts with ``label`` (rich draws cells between │)."""
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if cells and cells[0].rstrip("*") == label:
            return [cell.rstrip("*") for cell in cells]
    raise AssertionError(f"no row {label!r} in:\n{text}")


def orchestra_command(*arguments: str) -> str:
    """Run the ``orchestra`` command in its own process, as from a shell in the repository with the repository on
    PYTHONPATH, and return what it printed. One bench at a time: two at once on 2 cores would each time the other's
    work in their latencies."""
    command = [str(Path(sys.executable).with_name("orchestra")), *arguments]
    path = os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=300,
                          env=os.environ | {"PYTHONPATH": path, "COLUMNS": "200"})
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{done.stderr}"
    return done.stdout


def main(data: str | Path | None = None) -> dict[str, Any]:
    data = Path(data) if data else DEFAULT_DATA
    clinc, routerbench = data / "agents" / "clinc150", data / "models" / "routerbench"
    cli = CliRunner()
    register_router("centroid", CentroidRouter)  # the short name, in this process
    register_router("tfidf-quality", TfidfQualityRouter)
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        few_shot = ["--regime", "few-shot", "--shots", "5", "--limit", str(CLINC_LIMIT)]

        # 1. CLINC150: ours through the real command, in its own process, named by its import path; beside it the
        # shipped `embedding` router (frozen MiniLM), in this process
        print(orchestra_command("bench", "agents", "--data", str(clinc), "--router", f"{MODULE}:CentroidRouter",
                                *few_shot, "--option", "min_similarity=0.15",
                                "--predictions", str(out / "centroid.jsonl"), "--json", str(out / "centroid.json")))
        theirs = cli.invoke(orchestra_cli, ["bench", "agents", "--data", str(clinc), "--router", "embedding", *few_shot,
                                            "--predictions", str(out / "embedding.jsonl"), "--json", str(out / "embedding.json")])
        assert theirs.exit_code == 0, theirs.output
        compared = cli.invoke(orchestra_cli, ["bench", "compare", str(out / "centroid.json"), str(out / "embedding.json"),
                                              "--json", str(out / "compare.json")])
        assert compared.exit_code == 0, compared.output
        print(compared.output)
        reports = {name: json.loads((out / f"{name}.json").read_text()) for name in ("centroid", "embedding")}
        comparison = json.loads((out / "compare.json").read_text())
        clinc_facts: dict[str, Any] = {"comparison_rows": [row["router"] for row in comparison["rows"]], "routers": {}}
        for name, label in (("centroid", f"{MODULE}:CentroidRouter"), ("embedding", "embedding")):
            report = reports[name]
            # the same figures three ways: the report, the comparison's printed table, the predictions file
            printed = table_row(compared.output, label)
            clinc_facts["routers"][name] = {
                "report": {key: report["test"][key] for key in ("n", "set_hit", "top1")} | {"n_oos": report["oos"]["n_oos"]},
                "printed": {"set_hit": float(printed[2]), "top1": float(printed[3])},
                "rescored": rescore(out / f"{name}.jsonl"),
                "source": report["router_source"],
                "config": report["router_config"],
                "trained_by_bench": report["trained_by_bench"],
            }
        # from Python: the same router, trained and scored by the same harness, gives the command's figures
        in_python = run_agent_bench(clinc, CentroidRouter(min_similarity=0.15), regime="few-shot", shots=5, limit=CLINC_LIMIT)
        clinc_facts["python"] = {key: in_python["test"][key] for key in ("n", "set_hit", "top1", "exact_set", "micro_f1")}
        clinc_facts["command"] = {key: reports["centroid"]["test"][key] for key in ("n", "set_hit", "top1", "exact_set", "micro_f1")}
        result["clinc150"] = clinc_facts

        # 2. a set of one's own, in the same format, both routers supervised; then broken copies of it
        own = write_set(out / "own-set", OWN_AGENTS, OWN_TRAIN, OWN_TEST, OWN_OUT_OF_SCOPE)
        side_by_side = cli.invoke(orchestra_cli, ["bench", "agents", "--data", str(own), "--router", "centroid,embedding",
                                                  "--regime", "supervised", "--json", str(out / "own.json")])
        assert side_by_side.exit_code == 0, side_by_side.output
        print(side_by_side.output)
        own_reports = json.loads((out / "own.json").read_text())["reports"]
        result["own_set"] = {report["router"]: {"n": report["test"]["n"], "n_oos": report["oos"]["n_oos"],
                                                "set_hit": report["test"]["set_hit"], "top1": report["test"]["top1"],
                                                "n_train_rows": report["n_train_rows"]} for report in own_reports}
        refused: dict[str, Any] = {}
        for name, folder in broken_sets(own, out / "broken").items():
            try:
                load_agent_set(folder)
                raise AssertionError(f"{name}: the broken set was read")
            except DataError as exc:
                typed = type(exc).__name__, str(exc)
            run = cli.invoke(orchestra_cli, ["bench", "agents", "--data", str(folder), "--router", "centroid"])
            refused[name] = {"error": typed[0], "message": typed[1].replace(str(folder), "SET"),
                             "exit_code": run.exit_code, "cli": " ".join(run.output.split())}
            print(f"{name}: {typed[0]}: {refused[name]['message']}")
        result["broken"] = refused

        # 3. RouterBench: the ridge router and best-single through `orchestra bench models`, knn from Python
        printed_models = orchestra_command("bench", "models", "--data", str(routerbench), "--router",
                                           f"{MODULE}:TfidfQualityRouter,best-single", "--limit", str(ROUTERBENCH_LIMIT),
                                           "--weights", WEIGHTS, "--option", f"{MODULE}:TfidfQualityRouter:alpha=1.0",
                                           "--json", str(out / "models.json"))
        knn = run_model_bench(routerbench, "knn", limit=ROUTERBENCH_LIMIT, weights=[float(w) for w in WEIGHTS.split(",")],
                              embedder=HashingEmbedder(), latency_queries=20)
        loaded = load_reports([out / "models.json"]) + [("knn (hashing embedder, Python)", knn)]
        model_comparison = compare_reports(loaded)
        print_comparison(model_comparison)
        result["routerbench"] = {
            "rows": {row["router"]: {"aiq": row["aiq"], "performance_first": row["performance_first"]}
                     for row in model_comparison["rows"]},
            "n_test": model_comparison["n_test"],
            "printed_aiq": float(table_row(printed_models, f"{MODULE}:TfidfQualityRouter")[1]),
            "sources": {report["router"]: report["router_source"] for _, report in loaded},
            "embedders": {report["router"]: report.get("embedder") for _, report in loaded},
        }
    return result


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
