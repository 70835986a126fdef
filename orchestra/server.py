"""An OpenAI-compatible HTTP endpoint for a workflow, and the registry over HTTP (``orchestra serve``).

Any OpenAI client (the ``openai`` SDK, LangChain's ``ChatOpenAI``, curl) talks to a routed workflow as if it were
one model; each request is one run, stored and replayable like any other. Agents and models are onboarded over
HTTP while the server runs, and routing uses them at its next decision::

    POST   /v1/chat/completions          a run: the last user message is the query, earlier user and assistant
                                         messages its history; ``"stream": true`` sends server-sent events
    GET    /v1/models                    the one model served (the workflow's name)
    GET    /orchestra/agents             the registry's agent cards
    POST   /orchestra/agents             onboard cards (one card or a list; ``?update=true`` replaces)
    DELETE /orchestra/agents/{id}        remove an agent
    GET    /orchestra/models             ... and the same for model cards
    GET    /orchestra/runs/{run_id}      a stored run: its record and its trace as a tree
    POST   /orchestra/runs/{run_id}/resume   resume a run that failed or was stopped (`orchestra.resume`): 201 with
                                         the new run as GET gives it, whatever its status, plus ``resumed_from`` and
                                         how many steps were ``served`` from the record and ran ``live``; optional
                                         body ``{"budget": {...}, "reject": [...]}``: the limits given replacing the
                                         recorded ones (as ``orchestra resume --budget``), and the agents of a run
                                         that waited for approval whose calls are not approved (``--reject``)

A chat completion carries Orchestra's account of the run beside the OpenAI fields, under ``"orchestra"``: the
run and session ids, every decision (rationale, calls, candidates and scores), every agent's answer, the cost
and the latency. Requests may add three fields OpenAI does not have (``extra_body`` in the SDK), this request's
`RoutingPolicy`: ``cost_weight`` (w in [0, 1]), ``max_agents`` (k) and ``min_score``. System and developer messages
are not part of a routed run (routers read the user's query and the conversation), so they are left out, and the
response says so.

Bad input answers 400 with OpenAI's error body (``{"error": {"message", "type", "param", "code"}}``), its
``param`` the field (``tools``, ``n`` above 1 and a JSON ``response_format`` too: a routed run cannot honour them), 404 for an
unknown model, id or run, 409 for an id the registry holds or a run that cannot be resumed (an ok run with no
failed step, a run still running: the message says why); nothing is stored. A run that fails
while answering is stored with its error and answers 502 (a model or an agent failed: the upstream of this
gateway) or 500 (a budget ran out, a router failed), with the run id. A run that paused for approval (an agent
whose card ``requires_approval``) answers 409 with code ``approval_required`` and its run id: resuming it approves.
Both say ``x-should-retry: false``, which OpenAI's clients obey: their default retries of a 409 or a 5xx would each
be a new run, its agents called again.
A client that disconnects before the answer stops its run (stored as interrupted). A server told to stop (`serve`:
SIGTERM, Ctrl-C) gives the runs under way a grace period, then stops them the same way and answers their clients 503
with code ``server_shutdown`` and the run id, to resume.

With an API key (``api_key=``; ``orchestra serve --api-key`` or ``$ORCHESTRA_API_KEY``) every route asks for
``Authorization: Bearer KEY``, what OpenAI's clients send as their ``api_key``, and answers 401 without it. A
card that reaches into the server (a function agent's Python to import and call; a model card's ``api_key_env``,
a secret of the server's environment sent to the card's ``base_url``; its ``gguf_path``, a file on the server's
disk) is onboarded over HTTP only with the key (403 without one). A body that is not declared JSON answers 415: a
web page can POST plain text to a server on localhost without the browser asking first, but not JSON. Only the
origins given (``allow_origins``, ``orchestra serve --allow-origin``) may call the server from a browser.

FastAPI and uvicorn come with the ``serve`` extra. The module imports them only in `create_app` and `serve`,
so the rest of Orchestra runs without them.
"""

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestra.cards import AgentCard, ModelCard
from orchestra.errors import (
    AgentError,
    ApprovalRequired,
    ConfigurationError,
    DuplicateIdError,
    ModelError,
    NotFoundError,
    OrchestraError,
    PolicyError,
    UnknownRouterError,
)
from orchestra.policies import Budget, RoutingPolicy
from orchestra.routing import Turn
from orchestra.trace import new_id

if TYPE_CHECKING:
    from orchestra.runtime import Orchestra, RunResult, Workflow
    from orchestra.trace import RunRecord

__all__ = ["ChatCompletionRequest", "create_app", "serve"]

_INSTALL_HINT = "pip install 'orchestra-routing[serve]'  (FastAPI and uvicorn)"


class _TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """One message of a chat completion request, as OpenAI's API takes it."""

    model_config = ConfigDict(extra="allow")  # name, tool_calls, ...: accepted, not used

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_TextPart] | None = None
    """Text, or a list of content parts of which only text parts can be routed."""

    def text(self, index: int) -> str:
        """The message's text; `ConfigurationError` naming ``messages[index]`` for a part that is not text."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise ConfigurationError(f"messages[{index}].content: a {part.type!r} part cannot be routed; send text parts only")
        return "".join(part.text or "" for part in self.content)


class ChatCompletionRequest(BaseModel):
    """The body of ``POST /v1/chat/completions``: OpenAI's fields that a routed run can honour, plus
    ``cost_weight``, ``max_agents`` and ``min_score``. Sampling fields (temperature, max_tokens, ...) are accepted
    and left to the agents' own settings: the server answers with a workflow, not one model."""

    model_config = ConfigDict(extra="allow")

    model: str
    """The served workflow's name (``GET /v1/models``)."""
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    cost_weight: float | None = None
    """w in [0, 1] for this request: model routers trade predicted quality against cost with it."""
    max_agents: int | None = None
    """k for this request: at most this many agents per decision."""
    min_score: float | None = None
    """For this request: a candidate scoring below it is not chosen (the query is out of scope when none clears it)."""

    def refuse_what_a_run_cannot_honour(self) -> None:
        """`ConfigurationError` (400) naming a field whose request a routed run would silently not honour: the
        client would wait for tool calls, several choices or JSON that never come."""
        extra = self.model_extra or {}
        for field in ("tools", "functions"):
            if extra.get(field):
                raise ConfigurationError(f"{field}: a routed run cannot call the client's tools (its agents call their own); send none")
        if extra.get("tool_choice") not in (None, "none", "auto"):
            raise ConfigurationError(f"tool_choice: {extra['tool_choice']!r} needs tools, and a routed run takes none")
        if extra.get("n") not in (None, 1):
            raise ConfigurationError(f"n: a routed run gives one answer, so n must be 1, got {extra['n']!r}")
        response_format = extra.get("response_format")
        kind = response_format.get("type") if isinstance(response_format, dict) else response_format
        if kind not in (None, "text"):
            raise ConfigurationError(f"response_format: {kind!r} cannot be promised: the answer is what the agents and the aggregator write (only 'text')")


class _Refused(Exception):
    """A request refused at the HTTP level, before Orchestra sees it: no key, the wrong key, a card that reaches into
    the server sent to a server without a key, a body not declared JSON. Answered in OpenAI's error shape with its
    own status."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def _checked_api_key(api_key: str | None) -> str | None:
    """``api_key`` if it can be sent in an ``Authorization`` header; `ConfigurationError` otherwise (the key itself
    is never repeated in the message: it may be a real secret with a typo)."""
    if api_key is None:
        return None
    if not isinstance(api_key, str) or not api_key.strip():
        raise ConfigurationError(f"api_key must be a non-empty string, got {type(api_key).__name__}")
    if not api_key.isascii() or not api_key.isprintable() or any(char.isspace() for char in api_key):
        raise ConfigurationError("api_key must be printable ASCII without spaces: it travels in an Authorization header")
    return api_key


def _reach_into_the_server(card: AgentCard | ModelCard) -> str | None:
    """What of the server's own a card would use, or ``None``: Python to import and call, a secret from its
    environment, a file from its disk."""
    if isinstance(card, AgentCard):
        return f"agent {card.id!r} is a function agent: the server would import and call the Python it names ({card.function})" if card.backend == "function" else None
    if card.api_key_env:
        return f"model {card.id!r} names the server's environment variable {card.api_key_env}: the server would send its value as the key to {card.base_url or 'the default endpoint'}"
    if card.gguf_path:
        return f"model {card.id!r} names a file on the server's disk ({card.gguf_path}) to load as a model"
    return None


def _only_with_a_key(api_key: str | None, cards: Sequence[AgentCard | ModelCard]) -> None:
    """Refuse (403) cards that reach into the server when it has no API key: onboarded by anyone who can reach the
    port, a function card ("os:system") runs their code here, a model card with ``base_url`` theirs and
    ``api_key_env`` ours sends them our key. Checked before any card is added or any function imported."""
    if api_key is not None:
        return
    for card in cards:
        reach = _reach_into_the_server(card)
        if reach:
            raise _Refused(
                403,
                f"{reach}, so onboarding it over HTTP needs a server started with an API key (orchestra serve --api-key); "
                "or add it where the server runs (orchestra agents add / orchestra models add, on the same database)",
                "api_key_required",
            )


def _checked_origins(origins: Sequence[str]) -> tuple[str, ...]:
    """``origins`` as CORS compares them (scheme, host and port, no path: ``http://localhost:3000``);
    `ConfigurationError` naming one that is not, or ``*`` (every web page on the internet could then drive the server
    with its user's browser)."""
    if isinstance(origins, str):
        raise ConfigurationError(f"allow_origins must be a list of origins, got the string {origins!r}")
    checked = []
    for origin in origins:
        if origin == "*" or not isinstance(origin, str):
            raise ConfigurationError(f"allow_origins: {origin!r} is not allowed; name each origin, e.g. http://localhost:3000")
        scheme, _, rest = origin.partition("://")
        if scheme not in ("http", "https") or not rest or "/" in rest or rest != rest.strip():
            raise ConfigurationError(f"allow_origins: {origin!r} is not an origin (scheme://host[:port], no path), e.g. http://localhost:3000")
        checked.append(origin)
    return tuple(checked)


def _is_json(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` declares JSON (``application/json``, ``application/*+json``, any parameters)."""
    media = (content_type or "").split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _error_body(
    message: str, kind: str, *, param: str | None = None, code: str | None = None, run_id: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    if run_id is not None:
        body["orchestra"] = {"run_id": run_id}
    return body


_UNWIND_S = 5.0
"""How long a stopping server waits for the runs it cancelled to be stored as interrupted."""


def _status_of(error: OrchestraError) -> int:
    """The HTTP status for an error raised before a run starts (bad input: nothing was stored)."""
    if isinstance(error, DuplicateIdError):
        return 409
    if isinstance(error, (NotFoundError, UnknownRouterError)):
        return 404
    return 400


def _query_and_history(messages: list[ChatMessage]) -> tuple[str, list[Turn], int]:
    """The query (the last message, which must be the user's), the user and assistant turns before it, and how
    many system or developer messages were left out."""
    last = messages[-1]
    if last.role != "user":
        raise ConfigurationError(f"messages[{len(messages) - 1}].role: the last message must be the user's query, got {last.role!r}")
    history: list[Turn] = []
    left_out = 0
    for index, message in enumerate(messages[:-1]):
        if message.role in ("user", "assistant"):
            history.append(Turn(role=message.role, content=message.text(index)))
        elif message.role == "tool":
            raise ConfigurationError(f"messages[{index}].role: tool messages cannot be routed (the agents call their own tools)")
        else:
            left_out += 1
    query = last.text(len(messages) - 1)
    if not query.strip():
        raise ConfigurationError(f"messages[{len(messages) - 1}].content: the query is empty")
    return query, history, left_out


def _routing(workflow: "Workflow", request: ChatCompletionRequest) -> RoutingPolicy | None:
    """The workflow's routing policy with this request's ``cost_weight``, ``max_agents`` and ``min_score``;
    `PolicyError` names the request's field whose value is out of range."""
    given = (("cost_weight", request.cost_weight), ("max_agents", request.max_agents), ("min_score", request.min_score))
    updates = {name: value for name, value in given if value is not None}
    if not updates:
        return None
    try:
        return RoutingPolicy.model_validate({**workflow.routing.model_dump(), **updates})
    except PolicyError as exc:  # "RoutingPolicy.cost_weight: ..." -> "cost_weight: ...", the request's own name
        raise PolicyError(str(exc).removeprefix("RoutingPolicy.")) from None


def _account(result: "RunResult", left_out: int) -> dict[str, Any]:
    """Orchestra's account of a run, the ``"orchestra"`` field of a completion."""
    account: dict[str, Any] = {
        "run_id": result.run_id,
        "session_id": result.session_id,
        "status": result.status,
        "out_of_scope": result.out_of_scope,
        "cost_usd": result.cost_usd,
        "latency_ms": round(result.latency_ms, 3),
        "decisions": [decision.model_dump(mode="json") for decision in result.decisions],
        "observations": [observation.model_dump(mode="json") for observation in result.observations],
    }
    if left_out:
        account["notes"] = [f"{left_out} system or developer message(s) left out: routers read the user's query and the conversation"]
    return account


def _usage(result: "RunResult") -> dict[str, int]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }


def _failure(result: "RunResult") -> tuple[int, dict[str, Any]]:
    """The status and body of a run that failed while answering (it is stored, with its error)."""
    error = result.error
    if isinstance(error, ApprovalRequired):  # not a failure: the run waits for POST /orchestra/runs/{id}/resume
        status = 409
    else:
        status = 502 if isinstance(error, (ModelError, AgentError)) else 500  # the agents and models are the upstream
    body = _error_body(str(error), type(error).__name__, code=getattr(error, "code", None), run_id=result.run_id)
    return status, body


def create_app(
    orchestra: "Orchestra", workflow: "Workflow", *, name: str = "orchestra", api_key: str | None = None,
    allow_origins: Sequence[str] = (),
) -> Any:
    """A FastAPI application serving ``workflow`` as the OpenAI-compatible model ``name``, with ``orchestra``'s
    registry and runs over HTTP (routes in the module docstring). With ``api_key``, every route asks for
    ``Authorization: Bearer api_key``. ``allow_origins``: web pages served from these origins (``"http://localhost:3000"``)
    may call it from a browser (CORS); no other origin may. Run it with uvicorn (`serve` does), or test it with
    FastAPI's ``TestClient``. Served another way, call `orchestra.embeddings.warm_up_embedder` before it listens, as
    `serve` does: the first request would otherwise wait seconds for the encoder the embedding routers use."""
    try:
        from fastapi import Depends, FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import JSONResponse, Response, StreamingResponse
        from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    except ImportError as exc:
        raise ConfigurationError(f"the HTTP server is not installed ({exc.name}); {_INSTALL_HINT}") from None
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"the served model's name must be a non-empty string, got {name!r}")
    api_key = _checked_api_key(api_key)
    origins = _checked_origins(allow_origins)
    bearer = HTTPBearer(auto_error=False, description="The key the server was started with (`orchestra serve --api-key`).")

    async def authorise(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if api_key is None:
            return
        if credentials is None:
            raise _Refused(401, "no API key: send the server's key as 'Authorization: Bearer KEY' (an OpenAI client's api_key)", "missing_api_key")
        # compare_digest: the time taken must not tell how much of a guessed key was right
        if not secrets.compare_digest(credentials.credentials.encode(), api_key.encode()):
            raise _Refused(401, "the API key is not this server's", "invalid_api_key")

    @contextlib.asynccontextmanager
    async def lifespan(api: Any) -> AsyncIterator[None]:
        yield
        # Stopping: the requests still under way after the grace period were cancelled, and their runs are stored
        # as interrupted as they unwind. Waited for here, or the process, which ends as soon as the server is done
        # (uvicorn raises the SIGTERM it caught again), left them "running" in the store.
        deadline = time.monotonic() + _UNWIND_S
        while orchestra._under_way and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    api = FastAPI(title="Orchestra", summary=f"The routed workflow {name!r} as an OpenAI-compatible model", dependencies=[Depends(authorise)],
                  lifespan=lifespan)

    if origins:
        from fastapi.middleware.cors import CORSMiddleware

        # a browser asks first (a preflight, with no key) whether a page of that origin may send JSON and a key here
        api.add_middleware(CORSMiddleware, allow_origins=list(origins), allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"])

    @api.exception_handler(_Refused)
    async def _refused(request: Request, exc: _Refused) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(_error_body(exc.message, "invalid_request_error", code=exc.code), status_code=exc.status, headers=headers)

    @api.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # OpenAI's clients read {"error": {...}}; FastAPI's own 422 body is a list they would not show
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        return JSONResponse(_error_body(f"{param or 'body'}: {first.get('msg')}", "invalid_request_error", param=param or None), status_code=400)

    @api.exception_handler(OrchestraError)
    async def _orchestra_error(request: Request, exc: OrchestraError) -> JSONResponse:
        return JSONResponse(_error_body(str(exc), type(exc).__name__, code=getattr(exc, "code", None)), status_code=_status_of(exc))

    @api.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        router = getattr(workflow.router, "name", type(workflow.router).__name__)
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "orchestra", "router": router}]}

    @api.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: ChatCompletionRequest, http: Request) -> Any:
        if request.model != name:
            message = f"model: no model {request.model!r} here; this server serves {name!r}"
            return JSONResponse(_error_body(message, "NotFoundError", param="model", code="model_not_found"), status_code=404)
        try:
            request.refuse_what_a_run_cannot_honour()
            query, history, left_out = _query_and_history(request.messages)
            routing = _routing(workflow, request)
        except ConfigurationError as exc:
            # each message starts with the request field it is about; OpenAI's clients read that from "param"
            field = str(exc).partition(":")[0]
            return JSONResponse(_error_body(str(exc), "invalid_request_error", param=field, code=exc.code), status_code=400)
        created = int(time.time())
        if request.stream:
            return StreamingResponse(_events(query, history, routing, created, left_out), media_type="text/event-stream")
        run_id = new_id()  # known before the run ends: a run stopped by the server's shutdown is named to its client
        try:
            result = await _while_connected(http, workflow._arun(query, None, routing, history=history, run_id=run_id))
        except asyncio.CancelledError:
            # the server is stopping and the grace period is over: the client learns it in OpenAI's error shape (not
            # a bare 500 page), with the run to resume
            message = f"the server shut down before the run finished: run {run_id} was stopped and stored as interrupted; resume it (POST /orchestra/runs/{run_id}/resume)"
            return JSONResponse(_error_body(message, "RunCancelled", code="server_shutdown", run_id=run_id), status_code=503,
                                headers={"x-should-retry": "false"})
        if result is None:  # the client left: the run was stopped, and is stored as interrupted
            return Response(status_code=499)
        if result.status != "ok":
            status, body = _failure(result)
            # the run is stored (resume carries it on): OpenAI's clients retry 409 and 5xx by default, and each
            # retry would be another run, its agents called again, a payment paused for approval once more
            return JSONResponse(body, status_code=status, headers={"x-should-retry": "false"})
        return {
            "id": f"chatcmpl-{result.run_id}",
            "object": "chat.completion",
            "created": created,
            "model": name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": result.answer or ""}, "finish_reason": "stop"}],
            "usage": _usage(result),
            "orchestra": _account(result, left_out),
        }

    async def _events(query: str, history: list[Turn], routing: RoutingPolicy | None, created: int, left_out: int) -> AsyncIterator[str]:
        """The run as server-sent events: OpenAI chunks, with each routing event as a chunk without choices
        under ``"orchestra"`` as it happens, the answer in content deltas as it is written (`RunEvent`'s ``answer``
        events), then ``[DONE]``."""

        def chunk(run_id: str, **fields: Any) -> str:
            body = {"id": f"chatcmpl-{run_id}", "object": "chat.completion.chunk", "created": created, "model": name, "choices": [], **fields}
            return f"data: {json.dumps(body, default=str)}\n\n"

        async for event in workflow.astream(query, routing=routing, history=history):
            if event.kind == "run_started":
                yield chunk(event.run_id, choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
            elif event.kind == "run_finished":
                result = event.data["result"]
                if result.status != "ok":
                    _, body = _failure(result)
                    yield f"data: {json.dumps(body)}\n\n"
                else:
                    yield chunk(event.run_id, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}], usage=_usage(result),
                                orchestra=_account(result, left_out))
            elif event.kind == "answer":
                # a client cannot take back text it was sent: after a restart (the model writing the answer failed
                # part way) the whole answer follows what was sent, set apart
                text = ("\n\n" if event.data["restart"] else "") + event.data["delta"]
                yield chunk(event.run_id, choices=[{"index": 0, "delta": {"content": text}, "finish_reason": None}])
            elif event.kind != "token":  # the answer's text comes in answer events; each agent's, with its call event
                yield chunk(event.run_id, orchestra={"event": event.kind, **event.data})
        yield "data: [DONE]\n\n"

    def onboard(kind: Literal["agent", "model"], body: Any, update: bool) -> dict[str, Any]:
        registry = orchestra.registry
        cards = body if isinstance(body, list) else [body]
        if not cards or not all(isinstance(card, dict) for card in cards):
            raise ConfigurationError(f"the body must be one {kind} card (a JSON object) or a non-empty list of them")
        if kind == "agent":
            from orchestra.agent import check_functions

            typed = [AgentCard.parse(card) for card in cards]
            _only_with_a_key(api_key, typed)
            check_functions(typed)  # before any card is added: all or nothing
            added: list[AgentCard] | list[ModelCard] = registry.add_agents(typed, update=update)
        else:
            models = [ModelCard.parse(card) for card in cards]
            _only_with_a_key(api_key, models)
            added = registry.add_models(models, update=update)
        return {"added": [card.model_dump(mode="json") for card in added], "registry_version": registry.version}

    def registry_routes(kind: Literal["agent", "model"]) -> None:
        """GET, POST and DELETE of one kind of card under ``/orchestra/<kind>s``."""
        registry = orchestra.registry
        listed, remove = (registry.agents, registry.remove_agent) if kind == "agent" else (registry.models, registry.remove_model)

        async def list_cards() -> dict[str, Any]:
            # the cards as stored: `orchestra agents add` or another server may have changed them since this server's
            # last run, which is when it last took in their changes
            version = registry.refresh()
            return {"data": [card.model_dump(mode="json") for card in listed()], "registry_version": version}

        async def add_cards(request: Request, update: bool = False) -> dict[str, Any]:
            return onboard(kind, await _json(request), update)

        async def remove_card(card_id: str) -> dict[str, Any]:
            remove(card_id)  # NotFoundError: 404
            return {"removed": card_id, "registry_version": registry.version}

        api.add_api_route(f"/orchestra/{kind}s", list_cards, methods=["GET"], name=f"list_{kind}s")
        api.add_api_route(f"/orchestra/{kind}s", add_cards, methods=["POST"], status_code=201, name=f"add_{kind}s")
        api.add_api_route(f"/orchestra/{kind}s/{{card_id}}", remove_card, methods=["DELETE"], name=f"remove_{kind}")

    registry_routes("agent")
    registry_routes("model")

    @api.get("/orchestra/runs/{run_id}")
    async def get_run(run_id: str) -> dict[str, Any]:
        from orchestra.replay import _stored_run

        trace = _stored_run(orchestra, run_id)  # NotFoundError: 404
        return {"run": trace.run.model_dump(mode="json"), "tree": trace.tree()}

    @api.post("/orchestra/runs/{run_id}/resume", status_code=201, response_model=None)
    async def resume_run(run_id: str, request: Request) -> Any:
        from orchestra.replay import _rejected, _stored_run, aresume

        trace = _stored_run(orchestra, run_id)  # NotFoundError: 404, before the body is read
        budget, reject = _resume_request(await _body(request), trace.run)
        _rejected(trace, reject)  # an agent the run did not wait for is the request's mistake (400), not the run's state
        try:
            result = await aresume(orchestra, run_id, budget=budget, reject=reject)
        except NotFoundError:
            raise
        except ConfigurationError as exc:  # resume's refusal, about the run (nothing stored): a conflict with its state
            return JSONResponse(_error_body(str(exc), type(exc).__name__, code="not_resumable"), status_code=409)
        trace = orchestra.store.get_run(result.run_id)
        served, live = trace.resumed_counts()
        return {"run": trace.run.model_dump(mode="json"), "tree": trace.tree(), "resumed_from": run_id, "served": served, "live": live}

    return api


async def _while_connected(http: Any, run: Awaitable["RunResult"], poll_s: float = 0.25) -> "RunResult | None":
    """``run``'s result, or ``None`` when the client disconnected first: the run is then cancelled (its models
    stop, it is stored as interrupted), so a client that gave up (a timeout, a closed tab) costs nothing more. A
    request cancelled itself (the server shutting down, its grace period over) stops its run the same way before it
    ends."""
    task = asyncio.ensure_future(run)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll_s)
            if done:
                return task.result()
            if await http.is_disconnected():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return None
    except asyncio.CancelledError:
        # the run went on by itself: it would end only when the event loop closed, or not at all
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise


def _resume_request(raw: bytes, recorded: "RunRecord") -> tuple[Budget | None, tuple[str, ...]]:
    """A resume's budget and the agents it leaves unapproved, from its request body: no body, no change (the
    original's budget, every call approved); ``"budget"``: the recorded limits with those given replaced;
    ``"reject"``: agent ids. `ConfigurationError` (400) names a bad body, key or value."""
    if not raw.strip():
        return None, ()
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"the body is not JSON ({exc})") from None
    if not isinstance(body, dict):
        raise ConfigurationError(f"the body must be a JSON object such as {{\"budget\": {{\"max_calls\": 8}}}}, got {type(body).__name__}")
    unknown = sorted(set(body) - {"budget", "reject"})
    if unknown:
        raise ConfigurationError(f"{unknown[0]}: not a field of a resume request (only \"budget\" and \"reject\")")
    reject = body.get("reject") or []
    if not isinstance(reject, list) or not all(isinstance(agent_id, str) for agent_id in reject):
        raise ConfigurationError(f"reject: must be a list of agent ids, got {json.dumps(body.get('reject'))[:60]}")
    given = body.get("budget")
    if given is None:
        return None, tuple(reject)
    if not isinstance(given, dict):
        raise PolicyError(f"budget: must be a JSON object of limits, e.g. {{\"max_calls\": 8}}, got {type(given).__name__}")
    try:
        return recorded.budget(**given), tuple(reject)
    except PolicyError as exc:  # "Budget.max_calls: ..." -> "budget.max_calls: ..."
        raise PolicyError("budget." + str(exc).removeprefix("Budget.")) from None


async def _body(request: Any) -> bytes:
    """The request's body, refused (415) when it has one not declared JSON. Browsers send a plain-text POST to any
    address, localhost included, without asking the server first; a JSON one they ask about first, and this server
    allows no origin but those it was given, so a web page cannot onboard an agent or resume a run behind its user's
    back."""
    raw: bytes = await request.body()
    if raw.strip() and not _is_json(request.headers.get("content-type")):
        raise _Refused(415, f"the body must be sent as JSON (Content-Type: application/json), not {request.headers.get('content-type') or 'undeclared'}",
                       "unsupported_media_type")
    return raw


async def _json(request: Any) -> Any:
    """The request's JSON body; `ConfigurationError` for one that is not JSON."""
    try:
        return json.loads(await _body(request))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"the body is not JSON ({exc})") from None


SHUTDOWN_GRACE_S = 5.0
"""How long `serve` lets the runs under way finish once it is told to stop (SIGTERM, Ctrl-C) before it stops them:
under the 10 s a container runtime waits before it kills a process, so they are stored as interrupted, not left
running by a killed server."""


def serve(
    orchestra: "Orchestra", workflow: "Workflow", *, name: str = "orchestra", host: str = "127.0.0.1", port: int = 8000,
    api_key: str | None = None, allow_origins: Sequence[str] = (), shutdown_grace_s: float = SHUTDOWN_GRACE_S,
) -> None:
    """Serve ``workflow`` over HTTP until interrupted (uvicorn, one process: the registry and the workflow's
    router live in it, and every run goes to ``orchestra``'s store); with ``api_key``, only to its holders;
    ``allow_origins`` as for `create_app`.

    Told to stop (SIGTERM, Ctrl-C), it takes no new request, gives the runs under way ``shutdown_grace_s`` seconds
    to finish, then stops them: each is stored as interrupted (resumable, `POST /orchestra/runs/{id}/resume`) and its
    client answered no more. An agent in the middle of a call of its own (a tool's Python) finishes that call before
    the process ends. The store is closed last when uvicorn returns (Ctrl-C, or SIGTERM under `orchestra serve`, which
    turns it into an exit); called from Python, SIGTERM ends the process inside uvicorn, which raises the signal again
    once the runs are stored, so nothing is lost but the store is not closed."""
    if isinstance(shutdown_grace_s, bool) or not isinstance(shutdown_grace_s, int | float) or not 0 <= shutdown_grace_s < float("inf"):
        raise ConfigurationError(f"shutdown_grace_s must be a number of seconds, 0 or more, got {shutdown_grace_s!r}")
    api = create_app(orchestra, workflow, name=name, api_key=api_key, allow_origins=allow_origins)
    try:
        import uvicorn
    except ImportError as exc:
        raise ConfigurationError(f"the HTTP server is not installed ({exc.name}); {_INSTALL_HINT}") from None
    from orchestra.embeddings import warm_up_embedder

    # before listening: the first request would otherwise wait seconds for the encoder the embedding routers use
    # (a client finds the port closed until the server can answer at speed, as a readiness check expects)
    warm_up_embedder()
    try:
        # without a timeout uvicorn waits for every request under way: a run that does not end kept the server
        # from stopping until it was killed, and the run stayed "running" in the store
        # typed int, but uvicorn hands it to asyncio.wait_for, which takes fractions of a second
        uvicorn.run(api, host=host, port=port, log_level="info", timeout_graceful_shutdown=shutdown_grace_s)  # type: ignore[arg-type]
    finally:
        close = getattr(orchestra.store, "close", None)  # the shipped stores have one; the Store protocol asks none
        if callable(close):
            close()

