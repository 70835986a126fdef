"""How soon a client of `orchestra serve` reads the answer: time to the first content delta of a streamed chat
completion against the whole answer's time, on the embedded local model, and how long the server takes to start.

    nice -n 10 .venv/bin/python benchmarks/bench_server_stream.py [--rounds 2] [--port 8431]

Two workflows, each served by its own `orchestra serve` process with the offline default team and a fresh
``ORCHESTRA_HOME``: the embedding router, whose one chosen agent's answer is passed through (its model's words are
the answer's), and the ``all`` router with the Refine aggregator, where every agent is asked (a second writing agent, onboarded over
HTTP, answers beside the team's chat agent) and the refining model writes the answer. Each prompt is asked streamed and not streamed, in turns. "first words" is the time from the
request to the first content delta a streamed client receives; "whole answer" the time to its last; "not
streamed" the time of the same request without streaming, which is when a client read anything at all before
answers were streamed. "start" is the time from launching the server to its first answer to ``GET /v1/models``
(the sentence encoder is loaded and warmed before it listens).

Prints a table and writes ``benchmarks/results/server_stream.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import openai

RESULTS = Path(__file__).resolve().parent / "results" / "server_stream.json"
PROMPTS = [
    "Write a haiku about the sea.",
    "Tell me a short story about a robot who learns to paint.",
    "Explain in three sentences why the sky is blue.",
    "Describe a sunrise over the mountains.",
]
WORKFLOWS = {
    "embedding (one agent passed through)": ["--router", "embedding"],
    "all + refine (the refiner writes)": ["--router", "all", "--aggregator", "refine"],
}
POET = {"id": "poet", "description": "Writes short poems and vivid descriptions.", "model": "local-smollm2"}
"""Onboarded over HTTP for the refine workflow: with the team's chat agent, two agents answer, so the refining model
merges them and writes the answer (the team's other agents decline questions like these)."""


def _serve(args: list[str], port: int, home: str) -> tuple[subprocess.Popen[bytes], float]:
    """A server on ``port`` and the seconds it took to answer ``GET /v1/models``."""
    env = {**os.environ, "ORCHESTRA_HOME": home}
    started = time.perf_counter()
    command = [sys.executable, "-m", "orchestra.cli", "serve", "--port", str(port), *args]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    while True:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}: {' '.join(command)}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                return server, time.perf_counter() - started
        except httpx.HTTPError:
            time.sleep(0.2)
        if time.perf_counter() - started > 300:
            server.kill()
            raise SystemExit("the server did not start within 300 s")


def _ask(client: openai.OpenAI, prompt: str, stream: bool) -> dict[str, Any]:
    messages = [{"role": "user", "content": prompt}]
    started = time.perf_counter()
    if not stream:
        completion = client.chat.completions.create(model="orchestra", messages=messages)
        whole = time.perf_counter() - started
        return {"whole_s": whole, "first_s": whole, "chars": len(completion.choices[0].message.content or ""),
                "status": completion.model_extra["orchestra"]["status"]}
    first = None
    text = ""
    status = None
    for chunk in client.chat.completions.create(model="orchestra", messages=messages, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            first = first if first is not None else time.perf_counter() - started
            text += chunk.choices[0].delta.content
        account = chunk.model_extra.get("orchestra") or {}
        status = account.get("status", status)
    whole = time.perf_counter() - started
    return {"whole_s": whole, "first_s": first if first is not None else whole, "chars": len(text), "status": status}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="Times each prompt is asked each way.")
    parser.add_argument("--port", type=int, default=8431)
    options = parser.parse_args()
    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_1m": os.getloadavg()[0]},
                              "rounds": options.rounds, "prompts": PROMPTS, "workflows": {}}
    print(f"{'workflow':40} {'start s':>8} {'first words s':>14} {'whole answer s':>15} {'not streamed s':>15} {'chars':>6}")
    for name, args in WORKFLOWS.items():
        with tempfile.TemporaryDirectory(prefix="orchestra-bench-") as home:
            server, start_s = _serve(args, options.port, home)
            try:
                client = openai.OpenAI(base_url=f"http://127.0.0.1:{options.port}/v1", api_key="unused", max_retries=0, timeout=600)
                if "refine" in args:
                    httpx.post(f"http://127.0.0.1:{options.port}/orchestra/agents", json=POET, timeout=30).raise_for_status()
                _ask(client, "hello", stream=False)  # the local model's server starts with the first model call
                streamed, plain = [], []
                for turn in range(options.rounds):
                    for prompt in PROMPTS:
                        # in turns, each first every other round: load from elsewhere, and the model server's cache
                        # of the prompt it has just read, fall on both alike
                        for stream in ((True, False) if turn % 2 == 0 else (False, True)):
                            (streamed if stream else plain).append(_ask(client, prompt, stream=stream))
            finally:
                server.terminate()
                server.wait(timeout=30)
        row = {
            "start_s": round(start_s, 2),
            "first_words_s_median": round(statistics.median(r["first_s"] for r in streamed), 3),
            "whole_answer_s_median": round(statistics.median(r["whole_s"] for r in streamed), 3),
            "not_streamed_s_median": round(statistics.median(r["whole_s"] for r in plain), 3),
            "chars_median": statistics.median(r["chars"] for r in streamed),
            "ok": sum(r["status"] == "ok" for r in streamed + plain),
            "asked": len(streamed) + len(plain),
            "streamed": streamed,
            "not_streamed": plain,
        }
        report["workflows"][name] = row
        print(f"{name:40} {row['start_s']:>8.1f} {row['first_words_s_median']:>14.2f} {row['whole_answer_s_median']:>15.2f} "
              f"{row['not_streamed_s_median']:>15.2f} {row['chars_median']:>6.0f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
