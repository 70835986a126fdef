"""The model client against a fake OpenAI-compatible server on 127.0.0.1: calls, streams, usage and cost,
retries, timeouts, errors, fallbacks, structured output and API-key hygiene."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from orchestra.cards import ModelCard
from orchestra.client import FallbackChatModel, OpenAIChatModel, extract_json, model_for_card, response_format_for
from orchestra.errors import ModelError, ModelOutputError, ModelTimeoutError, ModelUnavailableError
from orchestra.model import ChatOptions, Message
from orchestra.policies import RetryPolicy

FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.02, jitter_s=0.0, timeout_s=2.0)
HELLO = [Message(role="system", content="Be brief."), Message(role="user", content="Say hi")]
SECRET = "sk-test-0123456789abcdefSECRET"


def completion(text: str | None = "hi there", prompt_tokens: int = 12, completion_tokens: int = 3) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "fake",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def chunk(
    delta: str | None = None, *, finish: str | None = None, usage: dict[str, int] | None = None
) -> dict[str, Any]:
    choices = (
        []
        if delta is None and finish is None
        else [{"index": 0, "delta": {"content": delta} if delta is not None else {}, "finish_reason": finish}]
    )
    body: dict[str, Any] = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "fake",
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = usage
    return body


class FakeOpenAI:
    """A scripted OpenAI-compatible server: each request takes the next behaviour from the script (or the
    default reply) and is recorded with its headers and JSON body."""

    def __init__(self) -> None:
        self.script: deque[dict[str, Any]] = deque()
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                fake.requests.append(
                    {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "json": body, "at": time.monotonic()}
                )
                behaviour = fake.script.popleft() if fake.script else {"body": completion()}
                try:
                    time.sleep(behaviour.get("delay", 0))
                    if "stream" in behaviour:
                        self.send_response(200)
                        self.send_header("Content-Type", "text/event-stream")
                        self.send_header("Connection", "close")
                        self.end_headers()
                        for item in behaviour["stream"]:
                            self.wfile.write(f"data: {json.dumps(item)}\n\n".encode())
                            self.wfile.flush()
                        if behaviour.get("done", True):  # a server that dies mid-answer sends no [DONE]
                            self.wfile.write(b"data: [DONE]\n\n")
                        self.close_connection = True
                        return
                    payload = json.dumps(behaviour.get("body", {})).encode()
                    self.send_response(behaviour.get("status", 200))
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for header, value in behaviour.get("headers", {}).items():
                        self.send_header(header, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def push(self, *behaviours: dict[str, Any]) -> None:
        self.script.extend(behaviours)

    def reset(self) -> None:
        self.script.clear()
        self.requests.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    yield fake
    fake.close()


@pytest.fixture
def fake(server: FakeOpenAI) -> FakeOpenAI:
    server.reset()
    return server


def card(fake: FakeOpenAI, **changes: Any) -> ModelCard:
    fields: dict[str, Any] = {
        "id": "fake-model",
        "model": "fake-7b",
        "base_url": fake.base_url,
        "description": "a scripted test model",
        "input_price_per_mtok": 1.0,
        "output_price_per_mtok": 2.0,
    }
    return ModelCard.parse(fields | changes)


def dead_port_card() -> ModelCard:
    import socket

    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return ModelCard(id="dead", base_url=f"http://127.0.0.1:{port}/v1", description="nothing listens here")


# -- calls, usage and cost -------------------------------------------------------------------------------


def test_chat_returns_text_usage_and_cost(fake: FakeOpenAI) -> None:
    fake.push({"body": completion("hello!", prompt_tokens=1000, completion_tokens=500)})
    result = OpenAIChatModel(card(fake), FAST_RETRY).chat(HELLO, ChatOptions(max_tokens=20, temperature=0.3, seed=7))
    assert result.text == "hello!"
    assert (result.prompt_tokens, result.completion_tokens) == (1000, 500)
    assert result.cost_usd == pytest.approx((1000 * 1.0 + 500 * 2.0) / 1e6)
    assert result.model_id == "fake-model" and result.attempts == 1 and result.finish_reason == "stop"
    sent = fake.requests[0]["json"]
    assert fake.requests[0]["path"] == "/v1/chat/completions"
    assert sent["model"] == "fake-7b"
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}]
    assert (sent["max_tokens"], sent["temperature"], sent["seed"]) == (20, 0.3, 7)
    assert "response_format" not in sent


def test_cost_is_none_not_zero_when_price_unknown(fake: FakeOpenAI) -> None:
    fake.push({"body": completion(prompt_tokens=10, completion_tokens=5)})
    unpriced = card(fake, input_price_per_mtok=None, output_price_per_mtok=None)
    result = OpenAIChatModel(unpriced, FAST_RETRY).chat(HELLO)
    assert result.cost_usd is None
    assert (result.prompt_tokens, result.completion_tokens) == (10, 5)


def test_zero_price_costs_zero(fake: FakeOpenAI) -> None:
    free = card(fake, input_price_per_mtok=0.0, output_price_per_mtok=0.0)
    assert OpenAIChatModel(free, FAST_RETRY).chat(HELLO).cost_usd == 0.0


async def test_async_chat(fake: FakeOpenAI) -> None:
    fake.push({"body": completion("async hi", prompt_tokens=4, completion_tokens=2)})
    result = await OpenAIChatModel(card(fake), FAST_RETRY).achat(HELLO)
    assert result.text == "async hi" and result.prompt_tokens == 4 and result.cost_usd == pytest.approx(8e-6)


def test_async_client_survives_successive_event_loops(fake: FakeOpenAI) -> None:
    import asyncio

    model = OpenAIChatModel(card(fake), FAST_RETRY)
    assert asyncio.run(model.achat(HELLO)).text == "hi there"
    assert asyncio.run(model.achat(HELLO)).text == "hi there"


# -- streaming -----------------------------------------------------------------------------------------------

STREAM = [chunk("Hel"), chunk("lo"), chunk(" world"), chunk(finish="stop"), chunk(usage={
    "prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12})]  # fmt: skip


def test_stream_yields_deltas_then_result_with_usage(fake: FakeOpenAI) -> None:
    fake.push({"stream": STREAM})
    chunks = list(OpenAIChatModel(card(fake), FAST_RETRY).stream(HELLO))
    assert [c.delta for c in chunks[:-1]] == ["Hel", "lo", " world"]
    assert all(c.result is None for c in chunks[:-1])
    result = chunks[-1].result
    assert result is not None and result.text == "Hello world" and result.finish_reason == "stop"
    assert (result.prompt_tokens, result.completion_tokens) == (9, 3)
    assert result.cost_usd == pytest.approx((9 + 6) / 1e6)
    sent = fake.requests[0]["json"]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


def test_stream_counts_tokens_when_server_omits_usage(fake: FakeOpenAI) -> None:
    fake.push({"stream": [chunk("a"), chunk("b"), chunk("c"), chunk("d", finish="stop")]})
    result = list(OpenAIChatModel(card(fake), FAST_RETRY).stream(HELLO))[-1].result
    assert result is not None and result.text == "abcd"
    assert result.completion_tokens == 4
    assert result.prompt_tokens > 0  # estimated from the messages' length


def test_a_stream_that_ends_empty_names_the_context_window_when_the_prompt_is_too_long(fake: FakeOpenAI) -> None:
    """llama.cpp's server ends a stream without a chunk when the prompt does not fit its context."""
    small = card(fake).with_changes(context_window=256)
    fake.push({"stream": []}, {"stream": []})
    options = ChatOptions(max_tokens=16)
    with pytest.raises(ModelOutputError, match=r"streamed nothing; the prompt \(about \d+ tokens\) likely exceeds its context window of 256"):
        list(OpenAIChatModel(small, FAST_RETRY).stream([Message(role="user", content="a longer word " * 100)], options))
    with pytest.raises(ModelOutputError, match=r"streamed nothing$"):  # a short prompt: no such guess
        list(OpenAIChatModel(small, FAST_RETRY).stream(HELLO, options))


async def test_async_stream(fake: FakeOpenAI) -> None:
    fake.push({"stream": STREAM})
    chunks = [c async for c in OpenAIChatModel(card(fake), FAST_RETRY).astream(HELLO)]
    assert "".join(c.delta for c in chunks) == "Hello world"
    assert chunks[-1].result is not None and chunks[-1].result.completion_tokens == 3


def test_a_stream_cut_before_the_model_finished_is_unavailable_not_a_short_answer(fake: FakeOpenAI) -> None:
    """The server closed the connection mid-answer: no final chunk with a finish_reason, no [DONE]."""
    fake.push({"stream": [chunk("Hel"), chunk("lo")], "done": False})
    with pytest.raises(ModelUnavailableError, match=r"'fake-model': the stream ended before the model finished") as caught:
        list(OpenAIChatModel(card(fake), FAST_RETRY).stream(HELLO))
    assert caught.value.model_id == "fake-model"


async def test_an_async_stream_cut_before_the_model_finished_is_unavailable(fake: FakeOpenAI) -> None:
    fake.push({"stream": [chunk("Hel"), chunk("lo")], "done": False})
    with pytest.raises(ModelUnavailableError, match="ended before the model finished"):
        [c async for c in OpenAIChatModel(card(fake), FAST_RETRY).astream(HELLO)]


def test_stream_retries_opening_on_503(fake: FakeOpenAI) -> None:
    fake.push({"status": 503, "body": {"error": {"message": "busy"}}}, {"stream": STREAM})
    result = list(OpenAIChatModel(card(fake), FAST_RETRY).stream(HELLO))[-1].result
    assert result is not None and result.text == "Hello world" and result.attempts == 2


# -- retries: 5xx, 429 and timeouts only --------------------------------------------------------------------


def test_retries_500_then_succeeds(fake: FakeOpenAI) -> None:
    fake.push(
        {"status": 500, "body": {"error": {"message": "boom"}}}, {"status": 502, "body": {}}, {"body": completion("ok")}
    )
    result = OpenAIChatModel(card(fake), FAST_RETRY).chat(HELLO)
    assert result.text == "ok" and result.attempts == 3
    assert len(fake.requests) == 3


def test_retries_429(fake: FakeOpenAI) -> None:
    fake.push({"status": 429, "body": {"error": {"message": "slow down"}}}, {"body": completion("ok")})
    result = OpenAIChatModel(card(fake), FAST_RETRY).chat(HELLO)
    assert result.attempts == 2 and len(fake.requests) == 2


def test_persistent_5xx_is_unavailable_after_all_attempts(fake: FakeOpenAI) -> None:
    fake.push(*[{"status": 500, "body": {"error": {"message": "down"}}}] * 3)
    with pytest.raises(ModelUnavailableError) as caught:
        OpenAIChatModel(card(fake), FAST_RETRY).chat(HELLO)
    assert len(fake.requests) == 3
    assert caught.value.model_id == "fake-model" and caught.value.attempts == 3  # type: ignore[attr-defined]
    assert "HTTP 500" in str(caught.value) and "down" in str(caught.value)


def test_timeout_is_retried_then_typed(fake: FakeOpenAI) -> None:
    policy = FAST_RETRY.model_copy(update={"max_attempts": 2})
    fake.push({"delay": 0.6, "body": completion()}, {"delay": 0.6, "body": completion()})
    with pytest.raises(ModelTimeoutError) as caught:
        OpenAIChatModel(card(fake), policy).chat(HELLO, ChatOptions(timeout_s=0.2))
    assert len(fake.requests) == 2
    assert caught.value.model_id == "fake-model" and "0.2" in str(caught.value)


def test_timeout_then_success(fake: FakeOpenAI) -> None:
    fake.push({"delay": 0.6, "body": completion()}, {"body": completion("second")})
    result = OpenAIChatModel(card(fake), FAST_RETRY).chat(HELLO, ChatOptions(timeout_s=0.2))
    assert result.text == "second" and result.attempts == 2


@pytest.mark.parametrize("status", [400, 404, 422])
def test_client_errors_are_not_retried(fake: FakeOpenAI, status: int) -> None:
    fake.push({"status": status, "body": {"error": {"message": f"bad request {status}"}}})
    with pytest.raises(ModelError) as caught:
        OpenAIChatModel(card(fake), FAST_RETRY).chat(HELLO)
    assert type(caught.value) is ModelError
    assert len(fake.requests) == 1
    assert f"HTTP {status}" in str(caught.value) and f"bad request {status}" in str(caught.value)


def test_connection_refused_is_unavailable() -> None:
    with pytest.raises(ModelUnavailableError) as caught:
        OpenAIChatModel(dead_port_card(), FAST_RETRY).chat(HELLO)
    assert caught.value.model_id == "dead" and caught.value.attempts == 3  # type: ignore[attr-defined]


# -- garbage and structured output ------------------------------------------------------------------------


def test_no_choices_is_output_error(fake: FakeOpenAI) -> None:
    fake.push({"body": {"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": []}})
    with pytest.raises(ModelOutputError, match="no choices"):
        OpenAIChatModel(card(fake), FAST_RETRY).chat(HELLO)
    assert len(fake.requests) == 1  # garbage is not retried


@pytest.mark.parametrize("text", [None, "", "   "])
def test_empty_answer_is_output_error(fake: FakeOpenAI, text: str | None) -> None:
    fake.push({"body": completion(text)})
    with pytest.raises(ModelOutputError, match="empty"):
        OpenAIChatModel(card(fake), FAST_RETRY).chat(HELLO)


def test_an_answer_refused_after_it_came_back_carries_what_it_was_billed(fake: FakeOpenAI) -> None:
    """The server answered (and billed the call), then the client refused the answer: the error says what it cost."""
    import pickle

    fake.push({"body": completion("   ", prompt_tokens=1000, completion_tokens=500)})
    with pytest.raises(ModelOutputError, match="empty") as caught:
        OpenAIChatModel(card(fake), FAST_RETRY).chat(HELLO)
    error = caught.value
    assert (error.prompt_tokens, error.completion_tokens) == (1000, 500)
    assert error.cost_usd == pytest.approx((1000 * 1.0 + 500 * 2.0) / 1e6)  # the card's prices, as a ChatResult
    record = error.to_record()
    assert (record["prompt_tokens"], record["completion_tokens"]) == (1000, 500)
    assert record["cost_usd"] == pytest.approx(0.002)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.prompt_tokens, copy.completion_tokens, copy.cost_usd) == (1000, 500, error.cost_usd)
    # an unpriced card: the tokens are known, the cost is not
    fake.push({"body": completion("", prompt_tokens=10, completion_tokens=1)})
    with pytest.raises(ModelOutputError) as unpriced:
        OpenAIChatModel(card(fake, input_price_per_mtok=None, output_price_per_mtok=None), FAST_RETRY).chat(HELLO)
    assert (unpriced.value.prompt_tokens, unpriced.value.cost_usd) == (10, None)
    assert "cost_usd" not in unpriced.value.to_record()


def test_a_call_that_got_no_answer_was_billed_nothing_and_its_record_says_nothing_of_it(fake: FakeOpenAI) -> None:
    fake.push({"status": 400, "body": {"error": {"message": "bad"}}})
    with pytest.raises(ModelError) as caught:
        OpenAIChatModel(card(fake), FAST_RETRY).chat(HELLO)
    assert (caught.value.prompt_tokens, caught.value.completion_tokens, caught.value.cost_usd) == (0, 0, None)
    assert set(caught.value.to_record()) == {"type", "code", "message"}


DECISION_SCHEMA = {
    "title": "decision",
    "type": "object",
    "properties": {
        "agent": {"type": "string", "enum": ["calculator", "clock"]},
        "reason": {"type": "string", "maxLength": 40},
    },
    "required": ["agent", "reason"],
    "additionalProperties": False,
}


def test_json_requested_and_not_json_is_output_error(fake: FakeOpenAI) -> None:
    fake.push({"body": completion("Sure! The calculator, because it adds.")})
    with pytest.raises(ModelOutputError, match="not JSON") as caught:
        OpenAIChatModel(card(fake), FAST_RETRY).chat(HELLO, ChatOptions(json_schema=DECISION_SCHEMA))
    assert caught.value.model_id == "fake-model"


def test_json_in_a_fence_is_accepted_and_unwrapped(fake: FakeOpenAI) -> None:
    fake.push({"body": completion('```json\n{"agent": "clock", "reason": "dates"}\n```')})
    result = OpenAIChatModel(card(fake), FAST_RETRY).chat(HELLO, ChatOptions(json_schema=DECISION_SCHEMA))
    assert json.loads(result.text) == {"agent": "clock", "reason": "dates"}


def test_json_that_breaks_the_schema_is_output_error(fake: FakeOpenAI) -> None:
    fake.push({"body": completion('{"agent": "astrologer", "reason": "stars"}')})
    with pytest.raises(ModelOutputError, match="agent"):
        OpenAIChatModel(card(fake), FAST_RETRY).chat(HELLO, ChatOptions(json_schema=DECISION_SCHEMA))


def test_json_refused_for_its_schema_or_cut_at_max_tokens_carries_what_it_was_billed(fake: FakeOpenAI) -> None:
    model = OpenAIChatModel(card(fake), FAST_RETRY)
    fake.push({"body": completion('{"agent": "astrologer", "reason": "stars"}', prompt_tokens=40, completion_tokens=9)})
    with pytest.raises(ModelOutputError, match="schema") as caught:
        model.chat(HELLO, ChatOptions(json_schema=DECISION_SCHEMA))
    assert (caught.value.prompt_tokens, caught.value.completion_tokens) == (40, 9)
    assert caught.value.cost_usd == pytest.approx((40 + 18) / 1e6)
    cut = completion('{"agent": "clo', prompt_tokens=40, completion_tokens=8)
    cut["choices"][0]["finish_reason"] = "length"
    fake.push({"body": cut})
    with pytest.raises(ModelOutputError, match="cut off at max_tokens") as caught:
        model.chat(HELLO, ChatOptions(json_schema=DECISION_SCHEMA, max_tokens=8))
    assert (caught.value.prompt_tokens, caught.value.completion_tokens) == (40, 8)
    # streamed: the usage of the stream's last chunk
    fake.push({"stream": [chunk("not json", finish="stop"), chunk(usage={"prompt_tokens": 30, "completion_tokens": 2, "total_tokens": 32})]})
    with pytest.raises(ModelOutputError, match="not JSON") as caught:
        list(model.stream(HELLO, ChatOptions(json_schema=DECISION_SCHEMA)))
    assert (caught.value.prompt_tokens, caught.value.completion_tokens) == (30, 2)


def test_schema_is_sent_llama_cpp_style_for_local_cards(fake: FakeOpenAI) -> None:
    fake.push({"body": completion('{"agent": "clock", "reason": "r"}')})
    local = card(fake, supports_json_schema=True, local=True)
    OpenAIChatModel(local, FAST_RETRY).chat(HELLO, ChatOptions(json_schema=DECISION_SCHEMA))
    assert fake.requests[0]["json"]["response_format"] == {"type": "json_object", "schema": DECISION_SCHEMA}


def test_schema_is_sent_openai_style_for_remote_cards(fake: FakeOpenAI) -> None:
    fake.push({"body": completion('{"agent": "clock", "reason": "r"}')})
    OpenAIChatModel(card(fake, supports_json_schema=True), FAST_RETRY).chat(
        HELLO, ChatOptions(json_schema=DECISION_SCHEMA)
    )
    assert fake.requests[0]["json"]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "decision", "schema": DECISION_SCHEMA, "strict": True},
    }


def test_no_constraint_sent_when_card_lacks_support(fake: FakeOpenAI) -> None:
    fake.push({"body": completion('{"agent": "calculator", "reason": "sums"}')})
    result = OpenAIChatModel(card(fake), FAST_RETRY).chat(HELLO, ChatOptions(json_schema=DECISION_SCHEMA))
    assert "response_format" not in fake.requests[0]["json"]
    assert json.loads(result.text)["agent"] == "calculator"
    assert response_format_for(card(fake), DECISION_SCHEMA) is None


def test_extract_json_rejects_prose_around_json() -> None:
    assert extract_json(' {"a": 1} ')[0] == {"a": 1}
    with pytest.raises(ModelOutputError):
        extract_json('Here you go: {"a": 1}')


# -- API keys --------------------------------------------------------------------------------------------------


def test_api_key_from_environment_is_sent_and_never_shown(fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_API_KEY", SECRET)
    keyed = card(fake, api_key_env="FAKE_API_KEY")
    fake.push(
        {"body": completion()},
        {"status": 401, "body": {"error": {"message": f"Incorrect API key provided: {SECRET[:6]}***{SECRET[-4:]}"}}},
        {"status": 400, "body": {"error": {"message": f"echo {SECRET}"}}},
    )
    model = OpenAIChatModel(keyed, FAST_RETRY)
    model.chat(HELLO)
    assert fake.requests[0]["headers"]["authorization"] == f"Bearer {SECRET}"
    for _ in range(2):
        with pytest.raises(ModelError) as caught:
            model.chat(HELLO)
        shown = str(caught.value) + repr(caught.value) + json.dumps(caught.value.to_record())
        assert SECRET not in shown and SECRET[-4:] not in shown and SECRET[:6] not in shown
    # a 401 names the variable to check
    fake.push({"status": 401, "body": {"error": {"message": "no"}}})
    with pytest.raises(ModelError, match="FAKE_API_KEY"):
        model.chat(HELLO)
    assert SECRET not in repr(model) and SECRET not in str(vars(model))


def test_local_endpoint_without_key_env_sends_placeholder(fake: FakeOpenAI) -> None:
    OpenAIChatModel(card(fake), FAST_RETRY).chat(HELLO)
    assert fake.requests[0]["headers"]["authorization"] == "Bearer not-needed"


def test_openai_api_without_key_fails_before_any_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MISSING_KEY_FOR_TEST", raising=False)
    remote = ModelCard(id="gpt-x", description="remote", api_key_env="MISSING_KEY_FOR_TEST")
    with pytest.raises(ModelError, match="MISSING_KEY_FOR_TEST"):
        OpenAIChatModel(remote, FAST_RETRY).chat(HELLO)


# -- fallbacks ---------------------------------------------------------------------------------------------------


def test_fallback_tries_models_in_order(fake: FakeOpenAI) -> None:
    fake.push({"body": completion("from the second")})
    first = OpenAIChatModel(dead_port_card(), FAST_RETRY)
    second = OpenAIChatModel(card(fake, id="second"), FAST_RETRY)
    third = OpenAIChatModel(card(fake, id="third"), FAST_RETRY)
    result = FallbackChatModel([first, second, third]).chat(HELLO)
    assert result.text == "from the second" and result.model_id == "second"
    assert result.attempts == 3 + 1  # three on the dead model, one on the second
    assert len(fake.requests) == 1


def test_fallback_moves_on_after_garbage_and_reports_every_failure(fake: FakeOpenAI) -> None:
    fake.push({"body": completion(None)}, {"status": 400, "body": {"error": {"message": "nope"}}})
    models = [
        OpenAIChatModel(card(fake, id="empty"), FAST_RETRY),
        OpenAIChatModel(card(fake, id="refuses"), FAST_RETRY),
    ]
    with pytest.raises(ModelError) as caught:
        FallbackChatModel(models).chat(HELLO)
    assert "empty" in str(caught.value) and "refuses" in str(caught.value)
    assert caught.value.model_id == "refuses"


def test_when_every_model_fails_the_error_adds_up_what_their_answers_were_billed(fake: FakeOpenAI) -> None:
    fake.push({"body": completion("", prompt_tokens=100, completion_tokens=1)}, {"body": completion(" ", prompt_tokens=50, completion_tokens=2)})
    models = [OpenAIChatModel(card(fake, id="one"), FAST_RETRY), OpenAIChatModel(card(fake, id="two"), FAST_RETRY)]
    with pytest.raises(ModelOutputError, match="every model failed") as caught:
        FallbackChatModel([OpenAIChatModel(dead_port_card(), FAST_RETRY), *models]).chat(HELLO)
    assert (caught.value.prompt_tokens, caught.value.completion_tokens) == (150, 3)
    assert caught.value.cost_usd == pytest.approx((150 * 1.0 + 3 * 2.0) / 1e6)


async def test_async_fallback(fake: FakeOpenAI) -> None:
    fake.push({"body": completion("async second")})
    model = FallbackChatModel(
        [OpenAIChatModel(dead_port_card(), FAST_RETRY), OpenAIChatModel(card(fake, id="b"), FAST_RETRY)]
    )
    result = await model.achat(HELLO)
    assert result.model_id == "b" and result.attempts == 4


def test_fallback_stream_uses_first_model_that_starts(fake: FakeOpenAI) -> None:
    fake.push({"stream": STREAM})
    model = FallbackChatModel(
        [OpenAIChatModel(dead_port_card(), FAST_RETRY), OpenAIChatModel(card(fake, id="b"), FAST_RETRY)]
    )
    chunks = list(model.stream(HELLO))
    assert chunks[-1].result is not None and chunks[-1].result.model_id == "b" and chunks[-1].result.attempts == 4


def test_model_for_remote_card_is_the_openai_client(fake: FakeOpenAI) -> None:
    model = model_for_card(card(fake), FAST_RETRY)
    assert isinstance(model, OpenAIChatModel) and model.id == "fake-model"


def test_raw_control_characters_inside_json_strings_are_tolerated_and_canonicalised() -> None:
    value, text = extract_json('{"reason": "line one\nline two"}')
    assert value == {"reason": "line one\nline two"}
    assert json.loads(text) == value  # strict JSON again


async def test_async_fallback_stream(fake: FakeOpenAI) -> None:
    fake.push({"stream": STREAM})
    model = FallbackChatModel(
        [OpenAIChatModel(dead_port_card(), FAST_RETRY), OpenAIChatModel(card(fake, id="b"), FAST_RETRY)]
    )
    chunks = [chunk async for chunk in model.astream(HELLO)]
    assert "".join(c.delta for c in chunks) == "Hello world"
    assert chunks[-1].result is not None and chunks[-1].result.model_id == "b"


def test_a_schema_left_unchecked_still_steers_the_server_and_comes_back_as_written(fake: FakeOpenAI) -> None:
    fake.push({"body": completion('{"agent": "astrologer", "reason": "stars"}')})
    local = card(fake, supports_json_schema=True, local=True)
    options = ChatOptions(json_schema=DECISION_SCHEMA, check_schema=False)
    result = OpenAIChatModel(local, FAST_RETRY).chat(HELLO, options)
    assert json.loads(result.text)["agent"] == "astrologer"
    assert fake.requests[0]["json"]["response_format"] == {"type": "json_object", "schema": DECISION_SCHEMA}


def test_tcar_through_the_real_client_drops_an_unknown_id_instead_of_refusing_the_query(fake: FakeOpenAI) -> None:
    """A server that ignores the schema names an agent that does not exist and more agents than k: TCAR's strict
    reader keeps the known ones up to k and records the rest, where the client's schema check refused it all."""
    from orchestra.cards import AgentCard
    from orchestra.routing import Dispatch, RouterState
    from orchestra.routers.tcar import TCARRouter

    from test_routers_basic import WordEmbedder

    model = OpenAIChatModel(card(fake), FAST_RETRY)

    class Access:
        def chat(self, model_id, messages, options=None, *, purpose=""):  # type: ignore[no-untyped-def]
            return model.chat(messages, options)

    agents = tuple(AgentCard(id=name, description=f"Answers {name} questions.") for name in ("echo", "upper", "lower"))
    text = json.dumps({"reasoning": "echo it " * 60, "agents": ["weather", "echo", "upper", "lower"], "out_of_scope": False})
    fake.push({"body": completion(text)})
    state = RouterState(query="echo this", agents=agents, models=(card(fake),), registry_version=1, model_access=Access())
    decision = TCARRouter(k=2, embedder=WordEmbedder()).decide(state)
    assert isinstance(decision, Dispatch)
    assert [call.agent_id for call in decision.calls] == ["echo", "upper"]
    assert decision.meta["dropped"] == ["weather"] and decision.meta["beyond_k"] == ["lower"]
    assert decision.meta["raw"] == text


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_429_is_retried_after_the_wait_its_retry_after_header_asks_within_the_policy(fake: FakeOpenAI, asynchronous: bool) -> None:
    """The client retried a 429 after its own backoff (10 ms here), whatever the server's ``Retry-After`` said, so a
    rate-limited provider was asked again at once and refused again. The wait is now at least what the header asks,
    and never more than the policy's ``max_backoff_s``."""
    policy = FAST_RETRY.model_copy(update={"max_backoff_s": 0.4})
    model = OpenAIChatModel(card(fake), policy)

    def gaps(*behaviours: dict[str, Any]) -> list[float]:
        fake.reset()
        fake.push(*behaviours)
        result = asyncio.run(model.achat(HELLO)) if asynchronous else model.chat(HELLO)
        assert result.text == "ok" and result.attempts == len(behaviours)
        return [later["at"] - earlier["at"] for earlier, later in zip(fake.requests, fake.requests[1:])]

    limited = {"status": 429, "body": {"error": {"message": "slow down"}}}
    assert gaps({**limited, "headers": {"Retry-After": "0.25"}}, {"body": completion("ok")})[0] >= 0.25
    assert gaps({**limited, "headers": {"retry-after-ms": "200"}}, {"body": completion("ok")})[0] >= 0.2
    # asked for a minute: waited the policy's 0.4 s at most, not a minute
    assert 0.35 <= gaps({**limited, "headers": {"Retry-After": "60"}}, {"body": completion("ok")})[0] < 5
    # a header that reads as nothing: the policy's own backoff
    assert gaps({**limited, "headers": {"Retry-After": "soon"}}, {"body": completion("ok")})[0] < 0.2
