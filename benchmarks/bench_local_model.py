"""The embedded local model's speed: generation through Orchestra's client and managed server against llama.cpp
called in-process on the same prompts, the server's cold start, and its peak memory.

    nice -n 10 .venv/bin/python benchmarks/bench_local_model.py [--rounds 3] [--max-tokens 64] [--threads N]

Prints a table and writes ``benchmarks/results/local_model.json``. Target: tokens/s through Orchestra at least
0.85 of in-process llama.cpp.

Both sides load the same GGUF with the same context size and threads, and generate greedily (temperature 0,
fixed seed) on the same prompts, so they produce the same tokens. They take turns prompt by prompt (never at the
same time) so that load from other processes on the machine falls on both alike. Tokens/s is completion tokens
over wall time of the whole call as the caller sees it: for Orchestra that includes HTTP, JSON and the client;
for in-process that is ``Llama.create_chat_completion`` alone, timed inside its process. Peak memory is the
server process's peak resident set (``VmHWM``), read from /proc.

The in-process side runs in a worker process started in its own session, like the server: Linux shares the CPU
fairly between sessions (autogroup scheduling), so on a busy machine a model in the benchmark's own session
would get a smaller share than the server and the ratio would flatter Orchestra.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from orchestra.local import LocalChatModel, LocalServer, default_threads, local_model_card
from orchestra.model import ChatOptions, Message
from orchestra.policies import RetryPolicy

RESULTS = Path(__file__).resolve().parent / "results" / "local_model.json"
TARGET_RATIO = 0.85
PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain what a router does in a computer network.",
    "Give me five tips for learning a new language.",
    "Describe the water cycle for a ten-year-old.",
    "Write a friendly email inviting a colleague to lunch.",
]
SYSTEM = "You are a helpful assistant."
N_CTX = 1024


def _proc_status(pid: int, field: str) -> int | None:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024)
    except OSError:
        return None
    return None


def _messages(prompt: str) -> list[Message]:
    return [Message(role="system", content=SYSTEM), Message(role="user", content=prompt)]


def worker(gguf: str, threads: int, max_tokens: int) -> None:
    """The in-process side: loads the GGUF with llama_cpp and times one chat completion per prompt line."""
    from llama_cpp import Llama

    started = time.perf_counter()
    llama = Llama(gguf, n_ctx=N_CTX, n_threads=threads, n_threads_batch=threads, verbose=False, seed=7)
    print(json.dumps({"load_s": time.perf_counter() - started}), flush=True)
    for line in sys.stdin:
        prompt = json.loads(line)
        started = time.perf_counter()
        reply: Any = llama.create_chat_completion(
            [{"role": m.role, "content": m.content} for m in _messages(prompt)],
            max_tokens=max_tokens,
            temperature=0.0,
            seed=7,
        )
        seconds = time.perf_counter() - started
        print(json.dumps({"tokens": reply["usage"]["completion_tokens"], "seconds": seconds}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="Passes over the prompts (after one warm-up call).")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="Threads for both sides (default: Orchestra's).")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    threads = args.threads or default_threads()

    card = local_model_card()
    assert card.gguf_path is not None
    options = ChatOptions(max_tokens=args.max_tokens, temperature=0.0, seed=7)

    with tempfile.TemporaryDirectory() as state_dir:
        server = LocalServer(card.gguf_path, n_ctx=N_CTX, n_threads=threads, state_dir=state_dir)
        load_before = os.getloadavg()
        cold_start_s = time.perf_counter()
        url = server.ensure()
        cold_start_s = time.perf_counter() - cold_start_s
        rss_idle = _proc_status(server.pid or 0, "VmRSS")
        # what `model_for_card` returns for the local card: the managed server behind the OpenAI client
        client = LocalChatModel(card, RetryPolicy(timeout_s=600), server=server)
        assert url == server.base_url

        worker = subprocess.Popen(
            [sys.executable, __file__, "--worker", card.gguf_path, str(threads), str(args.max_tokens)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # the same scheduling footing as the server (see the module docstring)
        )
        assert worker.stdin is not None and worker.stdout is not None
        in_process_load_s = float(json.loads(worker.stdout.readline())["load_s"])

        def orchestra_call(prompt: str) -> tuple[int, float]:
            started = time.perf_counter()
            result = client.chat(_messages(prompt), options)
            return result.completion_tokens, time.perf_counter() - started

        def in_process_call(prompt: str) -> tuple[int, float]:
            assert worker.stdin is not None and worker.stdout is not None
            worker.stdin.write(json.dumps(prompt) + "\n")
            worker.stdin.flush()
            reply = json.loads(worker.stdout.readline())
            return int(reply["tokens"]), float(reply["seconds"])

        orchestra_call(PROMPTS[0])  # warm-up: first-call allocations on both sides
        in_process_call(PROMPTS[0])
        samples: dict[str, list[tuple[int, float]]] = {"orchestra": [], "in_process": []}
        ratios: list[float] = []
        for round_index in range(args.rounds):
            for index, prompt in enumerate(PROMPTS):
                # alternate who goes first so neither side always meets the same load
                order = [("orchestra", orchestra_call), ("in_process", in_process_call)]
                if (round_index + index) % 2:
                    order.reverse()
                pair: dict[str, tuple[int, float]] = {}
                for name, call in order:
                    pair[name] = call(prompt)
                    samples[name].append(pair[name])
                ratios.append(
                    (pair["orchestra"][0] / pair["orchestra"][1]) / (pair["in_process"][0] / pair["in_process"][1])
                )
        rss_peak = _proc_status(server.pid or 0, "VmHWM")
        in_process_peak = _proc_status(worker.pid, "VmHWM")
        load_after = os.getloadavg()
        worker.stdin.close()
        worker.wait(30)
        server.stop()

    def rate(name: str) -> float:
        tokens = sum(t for t, _ in samples[name])
        seconds = sum(s for _, s in samples[name])
        return tokens / seconds

    orchestra_rate, in_process_rate = rate("orchestra"), rate("in_process")
    ratio = orchestra_rate / in_process_rate
    figures = {
        "tokens_per_s_orchestra": round(orchestra_rate, 2),
        "tokens_per_s_in_process": round(in_process_rate, 2),
        "ratio": round(ratio, 3),
        "ratio_median_per_prompt": round(statistics.median(ratios), 3),
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
        "server_cold_start_s": round(cold_start_s, 2),
        "in_process_model_load_s": round(in_process_load_s, 2),
        "server_rss_idle_mib": rss_idle,
        "server_peak_rss_mib": rss_peak,
        "in_process_worker_peak_rss_mib": in_process_peak,
        "completion_tokens": {name: sum(t for t, _ in values) for name, values in samples.items()},
    }
    report = {
        "benchmark": "local_model",
        "command": "nice -n 10 .venv/bin/python benchmarks/bench_local_model.py " + " ".join(sys.argv[1:]),
        "model": Path(card.gguf_path).name,
        "settings": {
            "rounds": args.rounds,
            "prompts": len(PROMPTS),
            "max_tokens": args.max_tokens,
            "threads": threads,
            "n_ctx": N_CTX,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in load_after],
        },
        "figures": figures,
    }
    rows = [
        ("tokens/s through Orchestra (client + server)", f"{orchestra_rate:.1f}", ""),
        ("tokens/s llama_cpp in-process", f"{in_process_rate:.1f}", ""),
        ("ratio (pooled; median per prompt)", f"{ratio:.3f}; {statistics.median(ratios):.3f}", f">= {TARGET_RATIO}"),
        ("server cold start (s)", f"{cold_start_s:.2f}", ""),
        ("server RSS idle / peak (MiB)", f"{rss_idle} / {rss_peak}", ""),
    ]
    width = max(len(row[0]) for row in rows)
    print(f"{'measure':<{width}}  {'value':>16}  target")
    for label, value, target in rows:
        print(f"{label:<{width}}  {value:>16}  {target}")
    print(f"threads {threads}, {args.rounds} rounds x {len(PROMPTS)} prompts, max_tokens {args.max_tokens}; "
          f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f}")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
