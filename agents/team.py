"""The default team: useful offline, with no API key.

- ``calculator``: exact arithmetic (safe parsing, no ``eval`` of user text);
- ``clock``: dates and times;
- ``knowledge``: Orchestra's own documentation, by embedding retrieval;
- ``chat``: a general conversational agent on the embedded local model (SmolLM2-135M-Instruct);
- and the local model for the refining agent that merges their answers (`refining_model_id`).

When the local runtime is not installed, only the tool agents are registered and the notes say how to install
the rest. `default_profile` is the ``orchestra.profiles`` entry point ``default`` (``orchestra chat --profile
default``).
"""

from __future__ import annotations

import logging
from typing import Any

from orchestra.agents import calculator, clock, knowledge
from orchestra.cards import AgentCard
from orchestra.errors import LocalRuntimeMissing, NotFoundError
from orchestra.local import LOCAL_MODEL_ID, local_model_card
from orchestra.registry import Registry

__all__ = ["CHAT_CARD", "default_profile", "install_default_team", "refining_model_id", "tool_cards"]

log = logging.getLogger(__name__)

CHAT_CARD = AgentCard(
    id="chat",
    name="General chat",
    description=(
        "A general conversational assistant on a small local language model: greetings, small talk, short "
        "explanations, rephrasing, brainstorming and simple writing such as a short poem or a friendly message. "
        "Not reliable for facts, arithmetic or dates (other agents do those exactly)."
    ),
    skills=("conversation", "writing", "rephrasing"),
    examples=(
        "hello, how are you?",
        "tell me a joke",
        "write a two-line poem about the sea",
        "rephrase this more politely: send me the file",
        "give me three ideas for a birthday party",
        "thanks, that helps!",
        "what can you do?",
        "write a short story about a dragon and a knight",
    ),
    backend="model",
    model=LOCAL_MODEL_ID,
    system_prompt=(
        "You are a friendly, concise assistant. Answer in one to three sentences. If you are not sure of a fact, "
        "say so instead of guessing."
    ),
)
"""The general chat agent's card (backed by the local model)."""


def tool_cards() -> list[tuple[AgentCard, object]]:
    """The tool agents' cards with their in-process implementations; they need no model."""
    return [
        (calculator.CALCULATOR_CARD, calculator.answer),
        (clock.CLOCK_CARD, clock.answer),
        (knowledge.KNOWLEDGE_CARD, knowledge.answer),
    ]


def _settle_agent(registry: Registry, card: AgentCard, implementation: Any = None) -> AgentCard | None:
    """A profile's agent: added when the registry never held it. One it holds keeps its stored card (a user's
    update stands) and gets the implementation that lives in this process; one a user removed stays removed."""
    if not registry.has_held("agent", card.id):
        return registry.add_agent(card, implementation)
    try:
        stored = registry.agent(card.id)
    except NotFoundError:
        return None
    if implementation is not None and stored.backend == card.backend:
        return registry.ensure_agent(stored, implementation)  # the same card: attaches the implementation only
    return stored


def _install(registry: Registry, *, local_model: bool) -> tuple[list[AgentCard], list[str]]:
    cards: list[AgentCard] = []
    notes: list[str] = []
    registry.refresh()  # what the profile keeps or leaves alone is the registry as stored, not a stale view of it
    for card, implementation in tool_cards():
        settled = _settle_agent(registry, card, implementation)
        if settled is not None:
            cards.append(settled)
    if not local_model:
        return cards, notes
    try:
        model_card = local_model_card()
    except LocalRuntimeMissing as missing:
        notes.append(
            f"Local model unavailable, registered the tool agents only (calculator, clock, knowledge). {missing}"
        )
        return cards, notes
    # the local model's card describes this machine's install (its GGUF path moves with the environment), so a
    # held card follows it; one a user removed stays removed like an agent
    removed = registry.has_held("model", model_card.id) and all(model.id != model_card.id for model in registry.models())
    if removed:
        return cards, notes
    registry.ensure_model(model_card)
    settled = _settle_agent(registry, CHAT_CARD)
    if settled is not None:
        cards.append(settled)
    return cards, notes


def install_default_team(registry: Registry, *, local_model: bool = True) -> list[AgentCard]:
    """Register the default team in ``registry`` and return its agent cards there. Idempotent, and it never undoes
    a user's change: a card the registry never held is added, one it holds keeps its stored version (and gets its
    in-process implementation), one a user removed stays removed. With ``local_model`` (the default) the embedded
    local model card and the chat agent are registered too when the local runtime is installed; otherwise a logged
    warning says how to install it."""
    cards, notes = _install(registry, local_model=local_model)
    for note in notes:
        log.warning("%s", note)
    return cards


def default_profile(registry: Registry) -> list[str]:
    """The ``default`` profile: installs the default team and returns notes for the user (empty when all is well);
    the caller shows them (the CLI and the UI do), so they are not logged as well, which printed them twice."""
    _, notes = _install(registry, local_model=True)
    return notes


def refining_model_id(registry: Registry | None = None) -> str | None:
    """The model the refining agent should run on: the local model when it is registered (or, without a
    registry, installed); ``None`` when it is not available."""
    if registry is not None:
        return LOCAL_MODEL_ID if any(model.id == LOCAL_MODEL_ID for model in registry.models()) else None
    try:
        local_model_card()
    except LocalRuntimeMissing:
        return None
    return LOCAL_MODEL_ID
