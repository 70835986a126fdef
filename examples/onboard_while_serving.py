"""The deployment as it runs: `orchestra serve` answering in one process, the `orchestra` CLI onboarding, updating
and removing agents and models in others, and the Python API in a third reading what the server did, all on one
store, with no restart.

    .venv/bin/python examples/onboard_while_serving.py [STORE_URL]

Runs offline, on loopback. The server is a real `orchestra serve` subprocess (embedding router) on a SQLite file,
or on the store URL given (for PostgreSQL the example makes a schema of its own and drops it after). The agents are
Python functions the server imports by name; one, the quarterly report, takes as long as the example holds it,
which is how a run is kept under way while the other processes act:

1. an agent onboarded by the CLI while a run is under way: that run keeps the registry its decision saw; the next
   request (answered while the first still runs) routes to the new agent;
2. its card updated (`agents add --update`): the next request routes by the new description, and the server lists it;
3. the agent removed by the CLI between the server's decision and its call: it is not called, the others answer;
4. two CLI processes adding the same id at once: one wins, the other is refused; bad card files are refused naming
   the field, and nothing is stored;
5. a model onboarded from flags (`models add --gguf`), listed by the server at once;
6. the Python API reading the server's runs and the registry's history (what changed and when; who changed it is
   not recorded), and replaying a run exactly;
7. SIGTERM while a run is under way: after its grace period the server stops the run (stored as interrupted, its
   client answered 503 with the run's id) and exits; the Python API resumes the run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
HOLD = "ORCHESTRA_EXAMPLE_HOLD"
"""The environment variable naming the file whose existence holds the report agent."""

TEAM = """
- id: units
  description: Converts distances between kilometres and miles.
  examples: ["how many miles is 42 km"]
  backend: function
  function: examples.openai_client:convert_units
- id: wordcount
  description: Counts the words and characters of a text.
  examples: ["how many words are in 'to be or not to be'"]
  backend: function
  function: examples.openai_client:count_words
- id: report
  description: Compiles the quarterly sales report from the ledger; takes a while.
  examples: ["compile the quarterly sales report"]
  backend: function
  function: examples.onboard_while_serving:compile_report
"""
REVERSE = """
id: reverse
description: Spells a word or text backwards.
examples: ["spell 'hello' backwards"]
backend: function
function: examples.openai_client:spell_backwards
"""
REVERSE_V2 = """
id: reverse
description: Spells a word or text backwards, and mirrors text so that it reads right to left.
examples: ["spell 'hello' backwards", "mirror 'stressed'"]
backend: function
function: examples.openai_client:spell_backwards
"""
BAD_CARDS = {
    "empty_description": "id: blank\ndescription: ''\nbackend: function\nfunction: examples.openai_client:count_words\n",
    "duplicate_id": "- {id: twice, description: One., backend: function, function: examples.openai_client:count_words}\n"
                    "- {id: twice, description: Two., backend: function, function: examples.openai_client:count_words}\n",
    "bad_backend": "id: lambda\ndescription: Runs in the cloud.\nbackend: lambda\n",
}


def compile_report(query: str) -> str:
    """The quarterly sales report: a slow job, which takes as long as the file named by $ORCHESTRA_EXAMPLE_HOLD
    exists (a minute at most)."""
    hold = os.environ.get(HOLD)
    deadline = time.monotonic() + 60
    while hold and Path(hold).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return "Q3 sales report: 1,284 orders, 96,310.00 EUR"


class Deployment:
    """The processes of the example around one store: the server, CLI commands, and this process's `Orchestra`."""

    def __init__(self, store_url: str, tmp: Path) -> None:
        self.store_url, self.tmp = store_url, tmp
        self.hold = tmp / "hold"
        # the server and the CLI import the agents by their dotted names (examples.openai_client:...)
        self.env = {**os.environ, "ORCHESTRA_DB_URL": store_url, HOLD: str(self.hold),
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        found = shutil.which("orchestra", path=str(Path(sys.executable).parent))
        self.orchestra = [found] if found else [sys.executable, "-m", "orchestra.cli"]
        self.server: subprocess.Popen[str] | None = None
        self.log = (tmp / "server.log").open("w")
        """The server's stderr: its uvicorn log, read back if it fails to start."""
        self.base_url = ""
        self.pool = ThreadPoolExecutor(max_workers=8)

    # -- the processes -------------------------------------------------------------------------------------------

    def cli(self, *args: str) -> Future[dict[str, Any]]:
        """``orchestra ARGS`` in a process of its own (started now): its exit code, stdout and stderr."""

        def run() -> dict[str, Any]:
            done = subprocess.run([*self.orchestra, *args], env=self.env, capture_output=True, text=True, timeout=120)
            return {"exit_code": done.returncode, "stdout": done.stdout.strip(), "stderr": " ".join(done.stderr.split())}

        return self.pool.submit(run)

    def card_file(self, name: str, text: str) -> str:
        """``text`` written to the card file ``NAME.yaml``; its path."""
        path = self.tmp / f"{name}.yaml"
        path.write_text(text)
        return str(path)

    def start_server(self) -> None:
        """`orchestra serve` on a free port, started (`wait_for_server` waits for it to answer)."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.server = subprocess.Popen(
            [*self.orchestra, "serve", "--profile", "none", "--router", "embedding", "--option", "k=2", "--option", "threshold=0.25",
             "--aggregator", "pass-through", "--budget", "max_parallel_calls=1", "--shutdown-grace", "1", "--port", str(port)],
            env=self.env, stdout=subprocess.DEVNULL, stderr=self.log, text=True,
        )
        self.base_url = f"http://127.0.0.1:{port}"

    def wait_for_server(self) -> None:
        """Returns once the server answers (it loads and warms the sentence encoder before it listens)."""
        assert self.server is not None
        wait_until(lambda: self.server.poll() is not None or self._answers(), "the server to listen", timeout=180)
        if self.server.poll() is not None:
            raise RuntimeError(f"orchestra serve exited ({self.server.returncode}): {(self.tmp / 'server.log').read_text()[-2000:]}")

    def _answers(self) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{self.base_url}/v1/models", timeout=1).status_code == 200
        return False

    def ask(self, question: str) -> dict[str, Any]:
        """One chat completion from the server: its status, answer, the agents that answered and the run's account."""
        response = httpx.post(f"{self.base_url}/v1/chat/completions", timeout=60,
                              json={"model": "orchestra", "messages": [{"role": "user", "content": question}]})
        body = response.json()
        account = body.get("orchestra", {})  # a refusal names its run there too
        return {
            "status": response.status_code, "answer": body["choices"][0]["message"]["content"] if "choices" in body else None,
            "error": body["error"]["code"] if "error" in body else None,
            "agents": [o["agent_id"] for o in account.get("observations", []) if o["error"] is None],
            "failed": {o["agent_id"]: o["error"]["type"] for o in account.get("observations", []) if o["error"]},
            "out_of_scope": account.get("out_of_scope"), "run_id": account.get("run_id"),
        }

    def listed(self, kind: str) -> dict[str, Any]:
        """The server's ``GET /orchestra/agents`` (or models): the cards by id, with their descriptions."""
        body = httpx.get(f"{self.base_url}/orchestra/{kind}", timeout=10).json()
        return {card["id"]: card["description"] for card in body["data"]}

    @contextlib.contextmanager
    def report_held(self) -> Iterator[None]:
        """The report agent answers only once this block has ended."""
        self.hold.touch()
        try:
            yield
        finally:
            self.hold.unlink(missing_ok=True)

    def close(self) -> None:
        """Release the report agent, kill the server if it still runs, end the threads."""
        self.hold.unlink(missing_ok=True)
        if self.server is not None and self.server.poll() is None:
            self.server.kill()
            self.server.wait()
        self.pool.shutdown()
        self.log.close()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Returns once ``condition()`` holds; `TimeoutError` naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:g} s for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """``url`` with a schema of the example's own as its search path, dropped at the end: the example neither sees
    nor changes anything else in that database."""
    import sqlalchemy as sa

    schema = f"orchestra_example_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield sa.make_url(url).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def main(store_url: str | None = None) -> dict[str, Any]:
    """Run the deployment on ``store_url`` (a SQLite file in a temporary folder by default); what happened, for the
    tests."""
    # this process imports the agents by their dotted names too (the resumed report runs here): this file is
    # examples.onboard_while_serving
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        url = store_url or f"sqlite:///{Path(tmp) / 'served.db'}"
        if url.startswith("postgresql"):
            url = stack.enter_context(postgres_schema(url))
        deployment = Deployment(url, Path(tmp))
        stack.callback(deployment.close)
        return _run(deployment)


def _run(d: Deployment) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    started = time.monotonic()
    d.start_server()  # returns at once; the server loads its sentence encoder meanwhile
    # Bad card files are refused by the CLI while the server starts: exit 2, the field named, nothing stored.
    refused = {name: d.cli("agents", "add", d.card_file(name, text)) for name, text in BAD_CARDS.items()}

    from orchestra import AgentCard, Orchestra, load_cards, replay, resume  # the third process: the Python API

    app = Orchestra(store=d.store_url)
    facts["team"] = [card.id for card in app.registry.add_agents(load_cards(d.card_file("team", TEAM), AgentCard))]

    def under_way() -> None:
        """Returns once a run is under way in the server: decided, its report call held."""
        wait_until(lambda: any(step.kind == "decision" for run in app.store.list_runs(status="running", limit=1)
                               for step in app.store.get_run(run.id).steps), "a run to be under way")

    d.wait_for_server()
    facts["server_start_s"], facts["server_pid"] = round(time.monotonic() - started, 1), d.server.pid
    print(f"0. orchestra serve (pid {d.server.pid}) answers after {facts['server_start_s']} s; the team, onboarded from Python "
          f"meanwhile: {facts['team']}")

    # 1. An agent onboarded by the CLI while a run is under way: that run keeps the registry its decision saw; the
    #    next request, answered while the first still runs, routes to the new agent.
    spell = "Spell 'orchestra' backwards"
    facts["before"] = d.ask(spell)
    with d.report_held():
        held = d.pool.submit(d.ask, "Compile the quarterly sales report")
        under_way()
        facts["onboarded"] = d.cli("agents", "add", d.card_file("reverse", REVERSE)).result()
        facts["after"] = d.ask(spell)
        facts["held_still_running"] = not held.done()
    facts["held"] = held.result()
    facts["decisions"] = {name: _decision(app, facts[name]["run_id"]) for name in ("held", "after")}
    print(f"1. before: out of scope {facts['before']['out_of_scope']}; `orchestra agents add reverse.yaml` while a run was under "
          f"way; the next request: {facts['after']['answer']!r} by {facts['after']['agents']} on registry "
          f"v{facts['decisions']['after']['version']} (the first run still going: {facts['held_still_running']}, it ended "
          f"on v{facts['decisions']['held']['version']}, candidates {facts['decisions']['held']['agents']})")

    # 2. Its card updated: the server routes by the new description at once, and lists it.
    mirror = "Mirror the word 'stressed'"
    facts["mirror_before"] = d.ask(mirror)
    facts["updated"] = d.cli("agents", "add", "--update", d.card_file("reverse_v2", REVERSE_V2)).result()
    facts["mirror_after"] = d.ask(mirror)
    facts["listed_after_update"] = d.listed("agents")["reverse"]
    print(f"2. `agents add --update`: {mirror!r} out of scope before: {facts['mirror_before']['out_of_scope']}, after: "
          f"{facts['mirror_after']['answer']!r} by {facts['mirror_after']['agents']}; the server lists {facts['listed_after_update']!r}")

    # 3. Removed between the server's decision and its call: calls go one at a time (max_parallel_calls=1), so the
    #    reverse agent's call waits behind the held report's while the CLI removes it.
    with d.report_held():
        both = d.pool.submit(d.ask, "Compile the quarterly sales report and spell 'ledger' backwards")
        under_way()
        facts["removed"] = d.cli("agents", "remove", "reverse").result()
    facts["removed_mid_run"] = both.result()
    facts["removed_decision"] = _decision(app, facts["removed_mid_run"]["run_id"])
    facts["after_removal"] = d.ask(spell)
    print(f"3. `agents remove reverse` between the decision ({facts['removed_decision']['calls']}) and the call: HTTP "
          f"{facts['removed_mid_run']['status']} {facts['removed_mid_run']['answer']!r}, failed {facts['removed_mid_run']['failed']}; "
          f"the next request: out of scope {facts['after_removal']['out_of_scope']}")

    # 4. Two CLI processes onboard the same id at once: one wins, the other is refused; the server routes to the
    #    winner. The bad card files were refused meanwhile, and nothing of theirs was stored.
    cards = {who: d.card_file(who, REVERSE.replace("Spells a word or text backwards.", f"Spells text backwards ({who}'s card)."))
             for who in ("alice", "bob")}
    racing = {who: d.cli("agents", "add", path) for who, path in cards.items()}
    facts["race"] = {who: future.result() for who, future in racing.items()}
    facts["race_listed"] = d.listed("agents")["reverse"]
    facts["race_answer"] = d.ask(spell)
    facts["refused"] = {name: future.result() for name, future in refused.items()}
    facts["agents_listed"] = sorted(d.listed("agents"))
    winners = [who for who, out in facts["race"].items() if out["exit_code"] == 0]
    losers = [out["stderr"] for out in facts["race"].values() if out["exit_code"] != 0]
    print(f"4. two `agents add` at once: {winners} won ({facts['race_listed']!r}; {facts['race_answer']['answer']!r}), the other: {losers}")
    for name, out in facts["refused"].items():
        print(f"   {name}: exit {out['exit_code']}: {out['stderr']}")

    # 5. A model onboarded from flags (the embedded SmolLM2's GGUF file): the server lists it at once. (The embedding
    #    router routes agents, so no decision of its weighs models.)
    from orchestra.local import find_smollm2_gguf

    facts["model_added"] = d.cli("models", "add", "--gguf", str(find_smollm2_gguf()), "--id", "smollm2-q4").result()
    facts["models_listed"] = sorted(d.listed("models"))
    print(f"5. `models add --gguf ... --id smollm2-q4`: the server lists {facts['models_listed']}")

    # 6. The Python API: the server's runs, the registry's history, an exact replay (on the registry as it was at
    #    the run's decision, though that card was updated and removed since; its embeddings come from the disk
    #    cache the server filled, so this process loads no encoder).
    runs = app.store.list_runs(limit=50)
    facts["runs"] = [(run.status, run.meta.get("pid")) for run in runs]
    facts["history"] = _history(app)
    replayed = replay(app, facts["after"]["run_id"])
    facts["replay"] = {"status": replayed.status, "answer": replayed.answer, "agents": [o.agent_id for o in replayed.observations],
                       "mode": app.store.get_run(replayed.run_id).run.replay_mode}
    print(f"6. {len(runs)} runs, all by the server's pid: {sorted({pid for _, pid in facts['runs']}) == [facts['server_pid']]}; the registry's "
          f"changes (what and when; who is not recorded):")
    for line in facts["history"]:
        print(f"     {line}")
    print(f"   exact replay of run {facts['after']['run_id'][:8]}: {replayed.status} {replayed.answer!r}")

    # 7. SIGTERM while a run is under way: after its grace period (1 s here) the server stops the run, stores it as
    #    interrupted, tells its client so (503, with the run's id) and exits; the Python API resumes the run.
    with d.report_held():
        last = d.pool.submit(d.ask, "Compile the quarterly sales report")
        under_way()
        stopping = time.monotonic()
        d.server.send_signal(signal.SIGTERM)
        wait_until(lambda: last.done(), "the server to answer the run it stopped", timeout=30)
    facts["exit_code"] = d.server.wait(timeout=30)
    facts["stop_s"] = round(time.monotonic() - stopping, 1)
    facts["stopped"] = last.result()
    stopped = app.store.get_run(facts["stopped"]["run_id"]).run
    facts["interrupted"] = {"status": stopped.status, "error": (stopped.error or {}).get("type")}
    resumed = resume(app, stopped.id)
    facts["resumed"] = {"status": resumed.status, "answer": resumed.answer}
    facts["running_left"] = len(app.store.list_runs(status="running"))
    print(f"7. SIGTERM: the client got {facts['stopped']['status']} {facts['stopped']['error']!r}; the server exited "
          f"{facts['exit_code']} after {facts['stop_s']} s; the run: {facts['interrupted']}; resumed here: {resumed.status} "
          f"{resumed.answer!r}")
    facts["seconds"] = round(time.monotonic() - started, 1)
    app.store.close()
    return facts


def _decision(app: Any, run_id: str) -> dict[str, Any]:
    """What a run's first decision saw and chose: the registry version, the candidates, the calls."""
    decision = next(step for step in app.store.get_run(run_id).steps if step.kind == "decision")
    return {"version": decision.request["registry_version"], "agents": decision.request["agents"],
            "calls": [call["agent_id"] for call in decision.response["decision"].get("calls", [])]}


def _history(app: Any) -> list[str]:
    """The registry's changes as stored: version, time, what happened to which card."""
    held: set[tuple[str, str]] = set()
    lines = []
    for event in app.store.registry_events():
        key = (event.kind, event.card_id)
        what = "removed" if event.card is None else "updated" if key in held else "added"
        if event.card is None:
            held.discard(key)
        else:
            held.add(key)
        lines.append(f"v{event.version} {event.at:%H:%M:%S.%f} {event.kind} {event.card_id} {what}")
    return lines


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
