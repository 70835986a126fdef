"""The model contract: one chat call and its async twin. Every model, local or remote, fits it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ChatChunk", "ChatModel", "ChatOptions", "ChatResult", "Message"]


class Message(BaseModel):
    """One chat message."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class ChatOptions(BaseModel):
    """Options of one chat call."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=512, gt=0)
    stop: tuple[str, ...] = ()
    json_schema: dict[str, Any] | None = None
    """Constrain the answer to this JSON schema where the server supports it (llama.cpp, vLLM); the client
    validates the answer against it either way and raises `ModelOutputError` when it does not conform (unless
    ``check_schema`` is off)."""
    check_schema: bool = True
    """Off: the schema only steers the server's decoding, and the answer comes back as the model wrote it, for a
    caller that reads it strictly itself (TCAR drops and records an agent id the schema would refuse, where a
    server that ignores the schema wrote one)."""
    timeout_s: float | None = Field(default=None, gt=0)
    """Overrides the retry policy's per-attempt timeout for this call."""
    seed: int | None = None


class ChatResult(BaseModel):
    """What one chat call returned, with what it cost."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str
    model_id: str
    """The model card id that actually answered (after fallbacks)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    """USD, or ``None`` when the model's price is unknown (never 0 for unknown)."""
    latency_ms: float = 0.0
    attempts: int = 1
    """Attempts made, retries and fallbacks included."""
    finish_reason: str | None = None


class ChatChunk(BaseModel):
    """One piece of a streamed answer; the last one carries the complete `ChatResult`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    delta: str
    result: ChatResult | None = None


@runtime_checkable
class ChatModel(Protocol):
    """What a model is to Orchestra: one chat call plus its async twin (and optional streaming)."""

    @property
    def id(self) -> str:
        """The model card's id."""
        # read-only here, as `Router.name` is, so that a frozen dataclass's field or a property satisfies it too
        ...

    def chat(self, messages: list[Message], options: ChatOptions | None = None) -> ChatResult:
        """One chat completion; a failure is a `ModelError` subclass (timeout, unavailable, bad output)."""
        ...

    async def achat(self, messages: list[Message], options: ChatOptions | None = None) -> ChatResult:
        """The async twin of `chat`."""
        ...


class StreamingChatModel(ChatModel, Protocol):
    def stream(self, messages: list[Message], options: ChatOptions | None = None) -> Iterator[ChatChunk]: ...

    def astream(self, messages: list[Message], options: ChatOptions | None = None) -> AsyncIterator[ChatChunk]: ...
