"""Test doubles that ship with Orchestra: a scripted model, a function router, an in-memory store, and a guard
that refuses real network calls.

    from orchestra.testing import ScriptedModel, FunctionRouter, InMemoryStore
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from orchestra.errors import ModelOutputError
from orchestra.model import ChatChunk, ChatOptions, ChatResult, Message
from orchestra.routing import BaseRouter, Dispatch, Finish, RouterState

if TYPE_CHECKING:
    # loaded by __getattr__ below at run time; named here so that type checkers see the class, not Any
    from orchestra.store.memory import InMemoryStore

__all__ = ["FunctionRouter", "InMemoryStore", "NetworkBlocked", "ScriptedModel", "ScriptedModels", "no_network"]

Script = Sequence[str | BaseException] | Callable[[list[Message]], str]


class ScriptedModel:
    """A model that answers from a script: a list of replies (or exceptions to raise) served in order, or a
    function of the messages. Counts tokens as whitespace-separated words and records every call.

    When a list runs out, ``repeat_last=True`` (the default) serves its last item again at every further call (a
    last exception is raised again); ``repeat_last=False`` raises `ModelOutputError` ("ran out of replies")
    instead, as an empty list always does."""

    def __init__(
        self,
        id: str = "scripted",
        script: Script = ("ok",),
        *,
        input_price_per_mtok: float | None = None,
        output_price_per_mtok: float | None = None,
        latency_s: float = 0.0,
        repeat_last: bool = True,
    ) -> None:
        self.id = id
        self._script = script
        self._input_price = input_price_per_mtok
        self._output_price = output_price_per_mtok
        self._priced_by_card = input_price_per_mtok is None and output_price_per_mtok is None
        self.latency_s = latency_s
        self.repeat_last = repeat_last
        self.calls: list[tuple[list[Message], ChatOptions]] = []
        self._lock = threading.Lock()

    def _take(self, messages: list[Message], options: ChatOptions | None) -> Any:
        """Record the call and take its scripted reply under one lock, so concurrent calls get the replies in the
        order they were made (taken apart, four threads all got the last reply)."""
        with self._lock:
            self.calls.append((list(messages), options or ChatOptions()))
            if callable(self._script):
                return None
            index = len(self.calls) - 1
            if index >= len(self._script):
                if not self.repeat_last or not self._script:
                    return ModelOutputError(f"scripted model {self.id!r} ran out of replies", model_id=self.id)
                index = len(self._script) - 1
            return self._script[index]

    def _reply(self, messages: list[Message], item: Any) -> str:
        if callable(self._script):
            return self._script(messages)
        if isinstance(item, BaseException):
            raise item
        return item  # type: ignore[no-any-return]

    def _result(self, messages: list[Message], text: str) -> ChatResult:
        prompt = sum(len(m.content.split()) for m in messages)
        completion = len(text.split())
        cost = None
        if self._input_price is not None and self._output_price is not None:
            cost = (prompt * self._input_price + completion * self._output_price) / 1e6
        return ChatResult(
            text=text,
            model_id=self.id,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_usd=cost,
            latency_ms=self.latency_s * 1000,
            finish_reason="stop",
        )

    def chat(self, messages: list[Message], options: ChatOptions | None = None) -> ChatResult:
        item = self._take(messages, options)
        if self.latency_s:
            import time

            time.sleep(self.latency_s)
        return self._result(messages, self._reply(messages, item))

    async def achat(self, messages: list[Message], options: ChatOptions | None = None) -> ChatResult:
        item = self._take(messages, options)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        return self._result(messages, self._reply(messages, item))

    def stream(self, messages: list[Message], options: ChatOptions | None = None) -> Iterator[ChatChunk]:
        result = self.chat(messages, options)
        words = result.text.split(" ")
        for i, word in enumerate(words):
            yield ChatChunk(delta=word if i == 0 else " " + word)
        yield ChatChunk(delta="", result=result)

    async def astream(self, messages: list[Message], options: ChatOptions | None = None) -> AsyncIterator[ChatChunk]:
        result = await self.achat(messages, options)
        words = result.text.split(" ")
        for i, word in enumerate(words):
            yield ChatChunk(delta=word if i == 0 else " " + word)
        yield ChatChunk(delta="", result=result)


class FunctionRouter(BaseRouter):
    """A router from a function ``fn(state) -> Dispatch | Finish``; ``multi_round`` as given."""

    name = "function"

    def __init__(self, fn: Callable[[RouterState], Dispatch | Finish], *, multi_round: bool = False, name: str = "function") -> None:
        self.fn = fn
        self.multi_round = multi_round  # type: ignore[misc]
        self.name = name  # type: ignore[misc]

    def decide(self, state: RouterState) -> Dispatch | Finish:
        return self.fn(state)


class NetworkBlocked(RuntimeError):
    """Raised by `no_network` when code tries to reach a host that is not on this machine."""


_LOOPBACK = ("127.", "::1", "localhost")
_GUARDED = ("connect", "connect_ex", "sendto")
"""The socket methods that reach another host: a stream's connection, and a datagram's (``sendto``)."""


@contextmanager
def no_network() -> Iterator[None]:
    """Refuse every connection and datagram except to loopback addresses (local model servers, local databases):
    ``connect``, ``connect_ex`` and ``sendto`` to any other host raise `NetworkBlocked`.

    Async clients connect inside a task group (httpx and ``AsyncOpenAI`` through anyio), which raises the refusal
    as an ``ExceptionGroup`` holding the `NetworkBlocked`: inside the block, match it with ``except*
    NetworkBlocked`` (pytest: ``excinfo.group_contains(NetworkBlocked)``). A group holding nothing but refusals
    that leaves the block is raised as its first `NetworkBlocked`, so ``pytest.raises(NetworkBlocked)`` around the
    block catches sync and async code alike."""
    originals = {name: getattr(socket.socket, name) for name in _GUARDED}

    def check(sock: socket.socket, address: Any) -> None:
        host = address[0] if isinstance(address, tuple) else str(address)
        if sock.family != socket.AF_UNIX and not str(host).startswith(_LOOPBACK):
            raise NetworkBlocked(f"tests may not reach {host!r}; only loopback is allowed")

    def connect(sock: socket.socket, address: Any) -> Any:
        check(sock, address)
        return originals["connect"](sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> Any:
        check(sock, address)
        return originals["connect_ex"](sock, address)

    def sendto(sock: socket.socket, data: Any, *flags_and_address: Any) -> Any:
        check(sock, flags_and_address[-1])  # sendto(data, address) or sendto(data, flags, address)
        return originals["sendto"](sock, data, *flags_and_address)

    guards = {"connect": connect, "connect_ex": connect_ex, "sendto": sendto}
    for name in _GUARDED:
        setattr(socket.socket, name, guards[name])
    try:
        yield
    except BaseExceptionGroup as group:
        refusals, others = group.split(NetworkBlocked)
        if refusals is None or others is not None:
            raise
        refusal: BaseException = refusals
        while isinstance(refusal, BaseExceptionGroup):
            refusal = refusal.exceptions[0]
        raise refusal from group
    finally:
        for name in _GUARDED:
            setattr(socket.socket, name, originals[name])


def __getattr__(name: str) -> Any:
    # The in-memory store lives with the other stores; imported lazily to keep this module light.
    if name == "InMemoryStore":
        from orchestra.store.memory import InMemoryStore

        return InMemoryStore
    raise AttributeError(name)


class ScriptedModels:
    """A model factory for `Orchestra(model_factory=...)` that serves `ScriptedModel`s by card id and refuses
    every other card: a test can never reach a real model by accident."""

    def __init__(self, models: Sequence[ScriptedModel] | dict[str, ScriptedModel] = ()) -> None:
        self.models = dict(models) if isinstance(models, dict) else {model.id: model for model in models}

    def __call__(self, card: Any, retry: Any) -> ScriptedModel:
        from orchestra.errors import ModelUnavailableError

        model = self.models.get(card.id)
        if model is None:
            raise ModelUnavailableError(f"no scripted model for card {card.id!r} in this test", model_id=card.id)
        if model._priced_by_card:
            # priced like the card says, as the real client is: again at each card change (the runtime asks
            # its factory anew when a card is updated), so a new price is charged from then on
            model._input_price, model._output_price = card.input_price_per_mtok, card.output_price_per_mtok
        return model

    def total_calls(self) -> int:
        return sum(len(model.calls) for model in self.models.values())
