"""Trace-store write speed: steps appended per second, one transaction per step, as a run writes them.

    nice -n 10 .venv/bin/python benchmarks/bench_store.py            # in memory, SQLite file (WAL), PostgreSQL if
                                                                     # ORCHESTRA_TEST_PG_URL is set
Prints a table and writes ``benchmarks/results/store.json``. Target: 2,000 steps/s or more on SQLite.

Every append is committed on its own, exactly as the runtime does it (no batching here that the runtime would
not do). The SQLite store runs WAL with ``synchronous=NORMAL``: a commit is in the WAL file when it returns, so a
crash of the process loses nothing; only a crash of the OS or a power cut can lose the last commits since the
last checkpoint. The ``synchronous=FULL`` row shows what an fsync per commit would cost.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestra.store import InMemoryStore, SqlStore
from orchestra.trace import RunRecord, StepRecord, Store

RESULTS = Path(__file__).resolve().parent / "results" / "store.json"
TARGET_STEPS_PER_S = 2000
SQLITE_NORMAL = "sqlite file, WAL, synchronous=NORMAL"
AGENTS = [f"agent-{index}" for index in range(8)]
ANSWER = (
    "Lisbon in May is mild (18-24 °C) and dry. Fly into LIS; the metro's red line reaches the centre in 20 minutes. "
    "Stay in Baixa or Príncipe Real; book Belém and Sintra on weekdays to avoid queues. 17 × 23 = 391."
)


def realistic_steps(run_id: str, count: int) -> list[StepRecord]:
    """What a routed run writes: a decision with every candidate's score, then for each dispatched agent an agent
    call and the model call under it (messages in, text out, tokens, cost, latency)."""
    steps: list[StepRecord] = []
    while len(steps) < count:
        decision = StepRecord(
            run_id=run_id,
            kind="decision",
            round=1,
            request={"query": "Plan a trip to Lisbon and compute 17*23", "registry_version": 12, "candidates": AGENTS},
            response={
                "decision": {
                    "kind": "dispatch",
                    "calls": [
                        {"agent_id": agent, "query": "sub-query for " + agent, "weight": 0.5} for agent in AGENTS[:2]
                    ],
                },
                "scores": [
                    {"agent_id": agent, "score": 0.9 - 0.1 * index, "reason": "cosine"}
                    for index, agent in enumerate(AGENTS)
                ],
                "rationale": "top-2 above threshold 0.30",
            },
            latency_ms=2.4,
        )
        steps.append(decision)
        for agent in AGENTS[:2]:
            call = StepRecord(
                run_id=run_id,
                kind="call",
                parent_id=decision.id,
                round=1,
                agent_id=agent,
                request={"query": "sub-query for " + agent},
                response={"answer": ANSWER},
                latency_ms=850.0,
            )
            model_call = StepRecord(
                run_id=run_id,
                kind="model_call",
                parent_id=call.id,
                round=1,
                agent_id=agent,
                model_id="gpt-4o-mini",
                request={
                    "messages": [
                        {"role": "system", "content": "You are a travel planner. Answer in three sentences. " * 3},
                        {"role": "user", "content": "sub-query for " + agent},
                    ],
                    "options": {"temperature": 0.0, "max_tokens": 512, "timeout_s": 30},
                },
                response={"text": ANSWER, "finish_reason": "stop"},
                prompt_tokens=96,
                completion_tokens=71,
                cost_usd=0.0000570,
                latency_ms=845.2,
            )
            steps.extend([model_call, call])
    return steps[:count]


def measure(store: Store, steps: int, threads: int) -> dict[str, float]:
    """Append ``steps`` steps to one run from ``threads`` threads; every append is its own transaction."""
    run = RunRecord(session_id="bench", query="Plan a trip to Lisbon and compute 17*23", router="embedding")
    store.start_run(run)
    todo = realistic_steps(run.id, steps)
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(chunk: list[StepRecord]) -> None:
        mine = []
        for step in chunk:
            began = time.perf_counter()
            store.append_step(step)
            mine.append(time.perf_counter() - began)
        with lock:
            latencies.extend(mine)

    chunks = [todo[index::threads] for index in range(threads)]
    workers = [threading.Thread(target=worker, args=(chunk,)) for chunk in chunks]
    began, cpu_began = time.perf_counter(), time.process_time()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu_began
    store.finish_run(run.model_copy(update={"status": "ok", "answer": ANSWER}))
    stored = store.get_run(run.id).steps
    assert [step.seq for step in stored] == list(range(1, steps + 1)), "steps lost or misnumbered"
    latencies.sort()
    return {
        "steps": steps,
        "threads": threads,
        "seconds": round(elapsed, 4),
        "steps_per_s": round(steps / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 3),
        "p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))] * 1000, 3),
        # CPU time of this process per step: what the machine's load does not change much (the wall-clock rate
        # does, on a shared machine); steps per CPU-second is the rate on an otherwise idle core
        "cpu_ms_per_step": round(cpu / steps * 1000, 4),
        "steps_per_cpu_s": round(steps / cpu, 1) if cpu > 0 else None,
    }


def sqlite_full_sync(path: str) -> SqlStore:
    """The SQLite store with an fsync at every commit (``synchronous=FULL``), for comparison only."""
    from sqlalchemy import event

    store = SqlStore(f"sqlite:///{path}")

    @event.listens_for(store.engine, "connect")
    def _full(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA synchronous=FULL")

    store.engine.dispose()  # reconnect, so every pooled connection gets the setting
    return store


def postgres_settings(url: str) -> dict[str, str]:
    """The server settings that decide what a commit costs, recorded beside its figures."""
    store = SqlStore(url)
    with store.engine.connect() as connection:
        names = ("server_version", "fsync", "synchronous_commit")
        settings = {name: connection.exec_driver_sql(f"SHOW {name}").scalar_one() for name in names}
    store.close()
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="steps per measurement (default 3000)")
    parser.add_argument("--threads", type=int, default=8, help="threads for the parallel measurement (default 8)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="orchestra-bench-store-")
    backends: list[tuple[str, Callable[[], Store]]] = [
        ("memory", InMemoryStore),
        (SQLITE_NORMAL, lambda: SqlStore(f"sqlite:///{tmp}/normal.db")),
        ("sqlite file, WAL, synchronous=FULL", lambda: sqlite_full_sync(f"{tmp}/full.db")),
    ]
    pg_url = os.environ.get("ORCHESTRA_TEST_PG_URL")
    if pg_url:
        backends.append(("postgresql", lambda: SqlStore(pg_url)))

    rows = []
    for name, make in backends:
        store = make()
        for threads in (1, args.threads):
            # a short warm-up so connection set-up and statement compilation are not timed
            measure(store, 50, threads)
            result = measure(store, args.steps, threads)
            rows.append({"store": name, **result})
            print(f"  {name:<38} threads={threads:<2} {result['steps_per_s']:>9,.0f} steps/s", file=sys.stderr)
        close = getattr(store, "close", None)
        if close:
            close()

    header = (
        f"{'store':<38} {'threads':>7} {'steps/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/step':>12}"
        f" {'steps/CPU-s':>12}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['store']:<38} {row['threads']:>7} {row['steps_per_s']:>10,.0f} {row['p50_ms']:>8.3f}"
            f" {row['p99_ms']:>8.3f} {row['cpu_ms_per_step']:>12.4f} {row['steps_per_cpu_s'] or 0:>12,.0f}"
        )
    sqlite_single = next(row for row in rows if row["store"] == SQLITE_NORMAL and row["threads"] == 1)
    verdict = "meets" if sqlite_single["steps_per_s"] >= TARGET_STEPS_PER_S else "MISSES"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    load_text = f"; load average {load:.1f} on {os.cpu_count()} CPUs" if load is not None else ""
    print(
        f"\nSQLite (WAL, NORMAL), one thread: {sqlite_single['steps_per_s']:,.0f} steps/s wall clock "
        f"({sqlite_single['steps_per_cpu_s'] or 0:,.0f} per CPU-second) — {verdict} the target of "
        f"{TARGET_STEPS_PER_S:,}/s{load_text}"
    )

    report = {
        "benchmark": "trace store appends, one transaction per step",
        "target_steps_per_s_sqlite": TARGET_STEPS_PER_S,
        "meets_target": sqlite_single["steps_per_s"] >= TARGET_STEPS_PER_S,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_1min": round(load, 2) if load is not None else None,
        },
        "postgresql": postgres_settings(pg_url) if pg_url else None,
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
