"""Write a router of your own, train it, save it, and serve it by name: in a workflow, in an exact replay that
rebuilds it from its checkpoint, in a counterfactual replay with a shipped router, and from the command line.

    .venv/bin/python examples/custom_router.py

`KeywordRouter` learns which agent a query is for from the agents' own cards: a TF-IDF vectorizer and a logistic
regression (scikit-learn) fitted on each card's description and example queries. It dispatches to the most
probable agent with every candidate's probability and the words that decided it, and refuses (`Finish`, out of
scope) a query that shares no word with anything it learnt, or whose best agent is too unsure. `save` writes a
JSON checkpoint (no pickle) and `describe()` names that file, so a run records where its router came from and an
exact replay, in another `Orchestra`, rebuilds the same router from it and checks every decision.

`register_router` makes the router known by name in this process: `app.workflow("my-router", checkpoint=...)`,
`replay`, and the CLI invoked in-process (here through `typer.testing.CliRunner`) find it there. An `orchestra`
command started as its own process does not: a package makes its router known everywhere with an entry point,

    [project.entry-points."orchestra.routers"]
    my-router = "mypkg.routing:KeywordRouter"

and without one, that process's exact replay serves the recorded decisions unchecked and says so (step 7 below).

Runs offline in about 25 s (most of it loading MiniLM for the embedding router of step 4) with the ``embed`` extra,
which brings scikit-learn: the agents are the shipped calculator, clock and documentation agents (function agents,
no model), and the trace goes to a SQLite file (pass a URL as the first argument to use another store that
a second `Orchestra` and the command line can open again: SQLite or PostgreSQL, not ``memory://``).
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
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from orchestra import (
    AgentCard,
    BaseRouter,
    Call,
    CandidateScore,
    CheckpointError,
    ConfigurationError,
    DecisionError,
    Dispatch,
    Finish,
    Orchestra,
    PassThrough,
    RouterState,
    register_router,
    replay,
)
from orchestra.agents.calculator import CALCULATOR_CARD
from orchestra.agents.clock import CLOCK_CARD
from orchestra.agents.knowledge import KNOWLEDGE_CARD
from orchestra.cli import app as orchestra_cli

VECTORIZER_OPTIONS: dict[str, Any] = {"stop_words": "english", "sublinear_tf": True, "token_pattern": r"(?u)\b\w+\b|%"}
"""Words, digits and "%" included ("12%" says calculator). English stop words are left out: kept, the router would
learn that "what is" means calculator or clock, from how the cards' examples happen to be phrased."""


class KeywordRouter(BaseRouter):
    """Routes a query to the agent whose card's words it shares, weighted by a logistic regression over TF-IDF
    features trained on every card's description and example queries.

    Out of scope (a `Finish`) when no word of the query was seen in training, or when the best agent's probability
    is under ``min_confidence``. Agents onboarded after training are not scored (their ids are in the decision's
    meta): retrain and save again to route to them."""

    name = "my-router"  # the name it is registered under: a replay rebuilds the router a run recorded by this name
    needs_training = True
    checkpoint_format = "examples.keyword-router/1"
    """Names the file `save` writes; with `load`, it tells `load_router(..., checkpoint=PATH)` to build by `load`."""

    def __init__(self, min_confidence: float = 0.4, regularisation: float = 10.0) -> None:
        if not 0.0 <= min_confidence < 1.0:
            raise ConfigurationError(f"KeywordRouter min_confidence must be in [0, 1), got {min_confidence}")
        if regularisation <= 0:
            raise ConfigurationError(f"KeywordRouter regularisation must be positive, got {regularisation}")
        self.min_confidence = min_confidence
        self.regularisation = regularisation
        """Inverse regularisation strength (scikit-learn's ``C``): larger trusts the few examples more."""
        self.checkpoint: str | None = None
        """The file this router was saved to or loaded from; described, so a replay rebuilds the router from it."""
        self._vectorizer: TfidfVectorizer | None = None
        self._classifier: LogisticRegression | None = None

    @property
    def agent_ids(self) -> list[str]:
        """The agents it was trained for, in the classifier's order (empty before `fit`)."""
        return [] if self._classifier is None else [str(agent_id) for agent_id in self._classifier.classes_]

    def fit(self, agents: Sequence[AgentCard]) -> KeywordRouter:
        """Learn each agent's words from its card: the description and every example query are its documents."""
        texts, labels = [], []
        for card in agents:
            for text in (card.description, *card.examples):
                texts.append(text)
                labels.append(card.id)
        if len(set(labels)) < 2:
            raise ConfigurationError(f"KeywordRouter.fit needs the cards of at least two agents, got {sorted(set(labels))}")
        self._vectorizer = TfidfVectorizer(**VECTORIZER_OPTIONS)
        features = self._vectorizer.fit_transform(texts)
        self._classifier = LogisticRegression(C=self.regularisation, max_iter=1000).fit(features, labels)
        self.checkpoint = None  # retrained: no file holds this router until it is saved
        return self

    def rank(self, query: str) -> tuple[list[tuple[str, float, list[str]]], list[str]]:
        """Every trained agent with its probability for ``query`` and the query's words that raised it most, best
        first; and the query's words the router knows (none: nothing it learnt speaks to the query)."""
        if self._vectorizer is None or self._classifier is None:
            raise DecisionError("KeywordRouter is not trained: fit it on agent cards, or load it from a checkpoint")
        features = self._vectorizer.transform([query])
        probabilities = self._classifier.predict_proba(features)[0]
        vocabulary = self._vectorizer.get_feature_names_out()
        columns, weights = features.indices, features.data
        known = sorted(str(vocabulary[column]) for column in columns)
        coefficients = self._classifier.coef_
        if coefficients.shape[0] == 1:  # two agents: scikit-learn keeps one row, for the second class
            coefficients = np.vstack([-coefficients[0], coefficients[0]])
        ranked = []
        for row, agent_id in enumerate(self.agent_ids):
            pull = coefficients[row, columns] * weights
            evidence = [str(vocabulary[columns[i]]) for i in np.argsort(-pull) if pull[i] > 0][:3]
            ranked.append((agent_id, float(probabilities[row]), evidence))
        ranked.sort(key=lambda item: -item[1])
        return ranked, known

    def decide(self, state: RouterState) -> Dispatch | Finish:
        """The most probable agent the registry holds now, or out of scope; every trained agent is scored."""
        ranked, known = self.rank(state.query)
        present = {card.id for card in state.agents}
        candidates = [item for item in ranked if item[0] in present]
        scores = tuple(CandidateScore(id=agent_id, score=round(p, 6), detail={"words": ", ".join(words) or None})
                       for agent_id, p, words in candidates)
        meta = {
            "known_words": known,
            "untrained_agents": sorted(present - set(self.agent_ids)),
            "missing_agents": sorted(set(self.agent_ids) - present),
        }
        if not known or not candidates or candidates[0][1] < self.min_confidence:
            why = ("no word of the query was in the cards it learnt from" if not known
                   else "none of the agents it was trained for is registered" if not candidates
                   else f"best agent {candidates[0][0]} at p={candidates[0][1]:.2f} < min_confidence {self.min_confidence}")
            return Finish(answer=f"None of this team's agents handles that request ({why}).", rationale=why, scores=scores,
                          out_of_scope=True, meta=meta)
        best, p, words = candidates[0]
        runner_up = f"; next {candidates[1][0]} p={candidates[1][1]:.2f}" if len(candidates) > 1 else ""
        return Dispatch(calls=(Call(agent_id=best, query=state.query),), scores=scores, meta=meta,
                        rationale=f"{best} p={p:.2f} from {', '.join(repr(word) for word in words) or 'its prior'}{runner_up}")

    def describe(self) -> dict[str, Any]:
        """Its options and its checkpoint: what `replay` rebuilds it from (``load_router(name, **this)``, "name" and
        "trained" left out). A router trained here and never saved says so with no checkpoint: its runs replay
        from their record."""
        return {"name": self.name, "min_confidence": self.min_confidence, "regularisation": self.regularisation,
                "checkpoint": self.checkpoint,
                "trained": None if self._vectorizer is None else {"agents": self.agent_ids, "words": len(self._vectorizer.vocabulary_)}}

    def save(self, path: str | Path) -> Path:
        """Write what it learnt to ``path`` as JSON (vocabulary, idf, coefficients; options), and describe that
        file from now on."""
        if self._vectorizer is None or self._classifier is None:
            raise DecisionError("KeywordRouter.save: nothing to save, the router is not trained")
        path = Path(path).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "format": self.checkpoint_format,
            "options": {"min_confidence": self.min_confidence, "regularisation": self.regularisation},
            "vocabulary": {word: int(column) for word, column in self._vectorizer.vocabulary_.items()},
            "idf": self._vectorizer.idf_.tolist(),
            "agent_ids": self.agent_ids,
            "coef": self._classifier.coef_.tolist(),
            "intercept": self._classifier.intercept_.tolist(),
        }))
        self.checkpoint = str(path)
        return path

    @classmethod
    def load(cls, path: str | Path, **options: Any) -> KeywordRouter:
        """The router `save` wrote to ``path``; an option given here overrides the saved one. `CheckpointError`
        names a file that is missing or is not one of these checkpoints."""
        try:
            saved = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{str(path)!r} is not a {cls.checkpoint_format} checkpoint: {exc}") from None
        if not isinstance(saved, dict) or saved.get("format") != cls.checkpoint_format:
            raise CheckpointError(f"{str(path)!r} is not a {cls.checkpoint_format} checkpoint")
        router = cls(**{**saved["options"], **options})
        router._vectorizer = TfidfVectorizer(**VECTORIZER_OPTIONS)
        router._vectorizer.vocabulary_ = saved["vocabulary"]
        router._vectorizer.idf_ = np.asarray(saved["idf"])
        router._classifier = LogisticRegression(C=router.regularisation)
        router._classifier.classes_ = np.asarray(saved["agent_ids"])
        router._classifier.coef_ = np.asarray(saved["coef"])
        router._classifier.intercept_ = np.asarray(saved["intercept"])
        router.checkpoint = str(Path(path).expanduser().resolve())
        return router


HELD_OUT = [  # written for this example, never seen in training; None: no agent of the team should take it
    ("what is 12% of 350?", "calculator"), ("compute 48 times 12", "calculator"),
    ("how much is 1,000 divided by 8?", "calculator"), ("square root of 2 plus 3", "calculator"),
    ("what day of the week is 2025-07-04?", "clock"), ("how many days until 2025-12-25?", "clock"),
    ("what time is it in Europe/Paris?", "clock"), ("what date is 2 weeks after 2025-03-01?", "clock"),
    ("how do I onboard a new agent?", "knowledge"), ("what does an exact replay do?", "knowledge"),
    ("how do I list the stored runs?", "knowledge"), ("what is a budget in orchestra?", "knowledge"),
    ("write a haiku about autumn leaves", None), ("who won the 1998 football world cup?", None),
    ("translate good morning into French", None),
]
QUERIES = ["what is 12% of 350?", "what day of the week is 2025-07-04?", "write a haiku about autumn leaves"]
CLI_QUERY = "how many days between 2024-01-01 and 2024-03-01?"


def heldout_accuracy(router: KeywordRouter, agents: Sequence[AgentCard]) -> dict[str, Any]:
    """How the router decides the held-out queries: right agent (or out of scope) per query."""
    chosen = []
    for query, _ in HELD_OUT:
        decision = router.decide(RouterState(query=query, agents=tuple(agents), models=(), registry_version=0))
        chosen.append(decision.calls[0].agent_id if isinstance(decision, Dispatch) else None)
    in_scope = [(want, got) for (_, want), got in zip(HELD_OUT, chosen) if want is not None]
    out_scope = [got for (_, want), got in zip(HELD_OUT, chosen) if want is None]
    return {"in_scope": len(in_scope), "right": sum(want == got for want, got in in_scope),
            "out_of_scope": len(out_scope), "refused": sum(got is None for got in out_scope)}


def run_facts(app: Orchestra, run_id: str) -> dict[str, Any]:
    """One stored run as the test reads it: status, answer, decision, and the router its record describes."""
    trace = app.store.get_run(run_id)
    made = trace.decisions()
    decision = made[0] if made else None  # none: the router's decision failed (the run's error says why)
    return {
        "run_id": run_id, "status": trace.run.status, "answer": trace.run.answer, "router": trace.run.meta["router"],
        "replay_mode": trace.run.replay_mode, "replay_of": trace.run.replay_of,
        "kind": decision and decision.kind, "agents": [call.agent_id for call in decision.calls] if isinstance(decision, Dispatch) else [],
        "scores": {score.id: score.score for score in decision.scores} if decision else {}, "rationale": decision and decision.rationale,
        "out_of_scope": isinstance(decision, Finish) and decision.out_of_scope,
        "error": (trace.run.error or {}).get("type"), "error_message": (trace.run.error or {}).get("message"),
    }


def main(store_url: str | None = None) -> dict[str, Any]:
    # in-process registration: what workflow(name), replay and the in-process CLI look routers up in
    register_router(KeywordRouter.name, KeywordRouter)
    with tempfile.TemporaryDirectory() as tmp:
        url = store_url or f"sqlite:///{Path(tmp) / 'example.db'}"
        app = Orchestra(store=url)
        for card in (CALCULATOR_CARD, CLOCK_CARD, KNOWLEDGE_CARD):
            app.registry.ensure_agent(card)

        # 1. train on the registry's cards, check it on queries it never saw, save it
        trained = KeywordRouter().fit(app.registry.agents())
        accuracy = heldout_accuracy(trained, app.registry.agents())
        checkpoint = trained.save(Path(tmp) / "routers" / "my-router.json")
        learnt = trained.describe()["trained"]
        print(f"1. trained on {len(learnt['agents'])} agents' cards ({learnt['words']} words); held out: "
              f"{accuracy['right']}/{accuracy['in_scope']} routed right, {accuracy['refused']}/{accuracy['out_of_scope']} "
              f"out-of-scope refused; saved to {checkpoint.name}")

        # 2. a workflow builds it by name from the file, as the CLI and the UI do
        workflow = app.workflow("my-router", checkpoint=str(checkpoint), aggregator=PassThrough())
        runs = []
        for query in QUERIES:
            result = workflow.run(query)
            facts = run_facts(app, result.run_id)
            runs.append(facts)
            print(f"2. {query!r}: {facts['kind']} {facts['agents']} -> {result.answer!r}\n"
                  f"   {facts['rationale']}; scores {facts['scores']}")

        # 3. exact replay in a fresh Orchestra on the same store: the router is rebuilt from the run's record
        fresh = Orchestra(store=url)
        exact = [run_facts(fresh, replay(fresh, run["run_id"]).run_id) for run in runs]
        for original, again in zip(runs, exact):
            served = again["router"].get("recorded", False)  # True would mean: decisions served, not made again
            print(f"3. exact replay of {original['run_id'][:8]}: {again['status']}, same answer {again['answer'] == original['answer']}, "
                  f"router served from record: {served}, checkpoint {Path(again['router']['checkpoint']).name}")

        # 4. counterfactual: the same queries, live, with a shipped router
        counterfactual = [run_facts(fresh, replay(fresh, run["run_id"], router="embedding", k=1).run_id) for run in runs]
        for original, other in zip(runs, counterfactual):
            print(f"4. {original['agents'] or 'out of scope'} by my-router; embedding: {other['agents'] or 'out of scope'} "
                  f"(scores {other['scores']})")

        # 5. the command line, in this process: it finds the router registered above
        cli = CliRunner()
        chat = cli.invoke(orchestra_cli, ["chat", "--router", "my-router", "--option", f"checkpoint={checkpoint}",
                                          "--aggregator", "pass-through", "--profile", "none", "--db", url, "--quiet", CLI_QUERY])
        cli_run = run_facts(fresh, fresh.store.list_runs(limit=1)[0].id)
        print(f"5. orchestra chat --router my-router: exit {chat.exit_code}, {cli_run['answer']!r} by {cli_run['agents']}")
        cli_replay = cli.invoke(orchestra_cli, ["replay", cli_run["run_id"], "--profile", "none", "--db", url])
        cli_replayed = run_facts(fresh, fresh.store.list_runs(limit=1)[0].id)
        print(f"   orchestra replay {cli_run['run_id'][:8]}: exit {cli_replay.exit_code}, {cli_replayed['replay_mode']}, "
              f"router served from record: {cli_replayed['router'].get('recorded', False)}")

        # 6. the checkpoint is the router: retrained on other cards and saved over the file, the exact replay
        #    rebuilds a different router, whose first decision is caught as a mismatch
        KeywordRouter().fit([CALCULATOR_CARD, CLOCK_CARD]).save(checkpoint)
        tampered = run_facts(fresh, replay(fresh, runs[0]["run_id"]).run_id)
        print(f"6. exact replay after the checkpoint was overwritten: {tampered['status']} ({tampered['error']}: "
              f"{tampered['error_message']})")

        # 7. an `orchestra` process of its own knows no router "my-router" (no entry point): it serves the record
        command = [sys.executable, "-m", "orchestra.cli", "replay", runs[1]["run_id"], "--profile", "none", "--db", url]
        other_process = subprocess.run(command, capture_output=True, text=True, env=os.environ | {"COLUMNS": "200"}, timeout=120)
        warning = next((line for line in other_process.stderr.splitlines() if "not rebuilt" in line), "")
        served_elsewhere = run_facts(fresh, fresh.store.list_runs(limit=1)[0].id)
        print(f"7. orchestra replay in its own process: exit {other_process.returncode}, {warning.strip()!r}")

        return {
            "trained_agents": trained.agent_ids, "heldout": accuracy, "checkpoint": str(checkpoint), "runs": runs,
            "exact": exact, "counterfactual": counterfactual,
            "cli_chat": {"exit_code": chat.exit_code, "stdout": chat.stdout.strip(), "run": cli_run},
            "cli_replay": {"exit_code": cli_replay.exit_code, "stderr": cli_replay.stderr, "run": cli_replayed},
            "tampered": tampered,
            "other_process": {"exit_code": other_process.returncode, "warning": warning, "run": served_elsewhere},
        }


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
