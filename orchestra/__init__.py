"""Orchestra: multi-agent LLM applications built around routing.

Deciding which agents and models answer each query, at what cost, and merging what they say::

    from orchestra import AgentCard, Orchestra

    app = Orchestra()                                   # SQLite trace store under ~/.orchestra
    app.registry.add_agent(AgentCard(id="echo", description="Repeats the request.", backend="function",
                                     function="mypkg.agents:echo"))
    result = app.workflow("embedding").run("say hello")
"""

import importlib
from typing import TYPE_CHECKING, Any

from orchestra.agent import Agent, AgentContext, AgentReply, FunctionAgent, LLMAgent, RefiningAgent
from orchestra.aggregate import Aggregated, Aggregator, Fuse, PassThrough, Refine, WeightedVote
from orchestra.cards import AgentCard, ModelCard, load_cards, parse_cards
from orchestra.errors import (
    AgentError,
    ApprovalRequired,
    BudgetExceeded,
    CardError,
    CheckpointError,
    ConfigurationError,
    DataError,
    DecisionError,
    DuplicateIdError,
    LocalRuntimeMissing,
    ModelError,
    ModelOutputError,
    ModelTimeoutError,
    ModelUnavailableError,
    NotFoundError,
    OrchestraError,
    PolicyError,
    ReplayMismatch,
    RunCancelled,
    RunError,
    StoreError,
    UnknownAgentError,
    UnknownRouterError,
)
from orchestra.model import ChatChunk, ChatModel, ChatOptions, ChatResult, Message
from orchestra.policies import Budget, FallbackPolicy, RetryPolicy, RoutingPolicy
from orchestra.registry import Registry, RegistrySnapshot
from orchestra.replay import aresume, astream_resume, replay, resume, stream_resume
from orchestra.routing import (
    BaseRouter,
    Call,
    CandidateScore,
    Decision,
    Dispatch,
    Finish,
    ModelAccess,
    Observation,
    Router,
    RouterState,
    Turn,
    available_routers,
    load_router,
    register_router,
    router_answers_itself,
    router_loads_checkpoint,
    router_needs_training,
)
from orchestra.trace import RegistryEvent, RunRecord, RunTrace, StepRecord, Store

if TYPE_CHECKING:
    from orchestra.runtime import Orchestra, RunEvent, RunResult, Workflow

_RUNTIME_NAMES = ("Orchestra", "RunEvent", "RunResult", "Workflow")


def __getattr__(name: str) -> Any:
    # The runtime brings LangGraph (about a second to import): it loads at the first use of one of its names, so
    # `orchestra --help`, cards, the registry and the store start without it.
    if name in _RUNTIME_NAMES:
        runtime = importlib.import_module("orchestra.runtime")
        for runtime_name in _RUNTIME_NAMES:
            globals()[runtime_name] = getattr(runtime, runtime_name)
        return globals()[name]
    raise AttributeError(f"module 'orchestra' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentCard",
    "AgentContext",
    "AgentError",
    "AgentReply",
    "Aggregated",
    "Aggregator",
    "ApprovalRequired",
    "BaseRouter",
    "Budget",
    "BudgetExceeded",
    "Call",
    "CandidateScore",
    "CardError",
    "ChatChunk",
    "ChatModel",
    "ChatOptions",
    "ChatResult",
    "CheckpointError",
    "ConfigurationError",
    "DataError",
    "Decision",
    "DecisionError",
    "Dispatch",
    "DuplicateIdError",
    "FallbackPolicy",
    "Finish",
    "FunctionAgent",
    "Fuse",
    "LLMAgent",
    "LocalRuntimeMissing",
    "Message",
    "ModelAccess",
    "ModelCard",
    "ModelError",
    "ModelOutputError",
    "ModelTimeoutError",
    "ModelUnavailableError",
    "NotFoundError",
    "Observation",
    "Orchestra",
    "OrchestraError",
    "PassThrough",
    "PolicyError",
    "Refine",
    "RefiningAgent",
    "Registry",
    "RegistryEvent",
    "RegistrySnapshot",
    "ReplayMismatch",
    "RetryPolicy",
    "Router",
    "RouterState",
    "RoutingPolicy",
    "RunCancelled",
    "RunError",
    "RunEvent",
    "RunRecord",
    "RunResult",
    "RunTrace",
    "StepRecord",
    "Store",
    "StoreError",
    "Turn",
    "UnknownAgentError",
    "UnknownRouterError",
    "WeightedVote",
    "Workflow",
    "aresume",
    "astream_resume",
    "available_routers",
    "load_cards",
    "load_router",
    "parse_cards",
    "register_router",
    "replay",
    "resume",
    "router_answers_itself",
    "router_loads_checkpoint",
    "router_needs_training",
    "stream_resume",
]
