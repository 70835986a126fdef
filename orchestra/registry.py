"""The registry of agents and models. Changes take effect at the next routing decision of every workflow.

Every change bumps the version and is appended to the store as a `RegistryEvent`, so the registry survives
restarts, and an exact replay sees the cards as they were when the run was made.

Several processes may each hold a `Registry` on one store. A change is checked against the registry as stored
when it is appended, not against this process's possibly stale view: an agent is never stored naming a model
another process removed meanwhile, a model is never removed while an agent another process added names it, and an
update made on an older card than the stored one is refused instead of silently undoing the newer change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from orchestra.cards import AgentCard, ModelCard
from orchestra.errors import CardError, ConfigurationError, DuplicateIdError, NotFoundError
from orchestra.trace import RegistryEvent, Store

if TYPE_CHECKING:
    from orchestra.agent import Agent

__all__ = ["Registry", "RegistrySnapshot"]

logger = logging.getLogger(__name__)

AgentImplementation: TypeAlias = "Agent | Callable[..., Any]"
"""An agent object (`Agent`: ``run`` and ``arun``) or a function of the query."""


def _check_implementation(agent_id: str, implementation: object) -> None:
    # refused when it is added: otherwise every run routed to the agent would fail ("42 is not a callable object")
    methods = [name for name in ("run", "arun") if callable(getattr(implementation, name, None))]
    if len(methods) == 1:  # meant as an Agent, which is called through both
        missing = "arun" if methods == ["run"] else "run"
        raise CardError(
            f"agent {agent_id!r}: its implementation ({type(implementation).__name__}) has a {methods[0]}() method "
            f"but no {missing}(): an Agent needs both (a plain callable fn(query) -> str needs neither)"
        )
    if not methods and not callable(implementation):
        raise CardError(
            f"agent {agent_id!r}: its implementation {implementation!r:.80} is neither a callable fn(query) -> str "
            "nor an Agent (an object with run() and arun())"
        )


@dataclass(frozen=True)
class RegistrySnapshot:
    """The registry at one version: what a decision saw."""

    version: int
    agents: tuple[AgentCard, ...]
    models: tuple[ModelCard, ...]

    def agent(self, agent_id: str) -> AgentCard | None:
        """The agent's card in this view, or ``None``."""
        return next((card for card in self.agents if card.id == agent_id), None)

    def model(self, model_id: str) -> ModelCard | None:
        """The model's card in this view, or ``None``."""
        return next((card for card in self.models if card.id == model_id), None)


class Registry:
    """Agents and models, shared by every workflow of a process; thread-safe.

    With a store, the registry loads its cards from it and appends every change to it."""

    def __init__(self, store: Store | None = None) -> None:
        self._lock = threading.RLock()
        self._agents: dict[str, AgentCard] = {}
        self._models: dict[str, ModelCard] = {}
        self._implementations: dict[str, AgentImplementation] = {}
        # the version of each card's latest change, removals included: what has_held reads and what an update
        # is checked against (a card changed after the view the update was made on is not silently replaced)
        self._last_change: dict[tuple[str, str], int] = {}
        self._version = 0
        self._store = store
        if store is not None:
            self._load(store.registry_events())

    @classmethod
    def at_version(cls, store: Store, version: int) -> Registry:
        """The registry as it was at ``version`` (read-only use: replays)."""
        registry = cls()
        registry._load(store.registry_events(up_to_version=version))
        return registry

    def refresh(self) -> int:
        """Take in changes other processes sharing the store have made; returns the version now."""
        if self._store is not None:
            with self._lock:
                self._load(self._store.registry_events(after_version=self._version))
        return self._version

    def _load(self, events: list[RegistryEvent]) -> None:
        for event in events:
            self._last_change[(event.kind, event.card_id)] = event.version
            table = self._table(event.kind)
            held = table.get(event.card_id)
            if event.card is None:
                table.pop(event.card_id, None)
            else:
                card_type = AgentCard if event.kind == "agent" else ModelCard
                try:
                    table[event.card_id] = card_type.parse(event.card)
                except CardError as exc:
                    # Stored by an older version with laxer checks: keep it as it is (a store never loses a card,
                    # and a refusal here would stop the whole application); the fix is an update.
                    logger.warning("registry v%s: stored %s card %r no longer validates (%s); update it", event.version, event.kind, event.card_id, exc)
                    table[event.card_id] = card_type.model_construct(**event.card)
            if event.kind == "agent" and (held is None or event.card is None or table[event.card_id].backend != held.backend):
                # another process removed the agent (and maybe added the id back) or moved it to another backend:
                # this process's implementation answered for the card it replaced, as remove_agent and
                # update_agent drop it here; kept, it would go on answering in place of what the card now names
                self._implementations.pop(event.card_id, None)
            self._version = max(self._version, event.version)

    # -- reading -----------------------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self._version

    def snapshot(self) -> RegistrySnapshot:
        """The cards and version now, as one consistent view (what a decision sees)."""
        with self._lock:
            return RegistrySnapshot(self._version, tuple(self._agents.values()), tuple(self._models.values()))

    def agent(self, agent_id: str) -> AgentCard:
        """The agent's card; `NotFoundError` when there is none."""
        card = self._agents.get(agent_id)
        if card is None:
            raise NotFoundError("agent", agent_id)
        return card

    def model(self, model_id: str) -> ModelCard:
        """The model's card; `NotFoundError` when there is none."""
        card = self._models.get(model_id)
        if card is None:
            raise NotFoundError("model", model_id)
        return card

    def implementation(self, agent_id: str) -> AgentImplementation | None:
        """The in-process object registered for an agent (a callable or an `Agent`), if any."""
        return self._implementations.get(agent_id)

    def agents(self) -> list[AgentCard]:
        """Every agent card, in the order they were added."""
        return list(self._agents.values())

    def models(self) -> list[ModelCard]:
        """Every model card, in the order they were added."""
        return list(self._models.values())

    def has_held(self, kind: Literal["agent", "model"], card_id: str) -> bool:
        """Whether the registry has ever held this card, including one removed since (what a set-up that must not
        bring back a card a user removed asks)."""
        with self._lock:
            return (kind, card_id) in self._last_change  # every card held has a change, its adding at least

    # -- changing ----------------------------------------------------------------------------------------

    def add_agent(self, card: AgentCard | dict[str, Any], implementation: AgentImplementation | None = None) -> AgentCard:
        """Onboard an agent. ``implementation`` is a Python callable ``fn(query) -> str`` or an `Agent` object,
        for agents that live in this process; otherwise the card's backend says what answers."""
        card = card if isinstance(card, AgentCard) else AgentCard.parse(card)

        def plan() -> list[_Change]:
            if card.id in self._agents:
                raise DuplicateIdError("agent", card.id, hint="update_agent() replaces it")
            self.check_agent(card, implementation)
            return [_Change("agent", card.id, card)]

        with self._lock:
            self._commit(plan)
            if implementation is not None:
                self._implementations[card.id] = implementation
        return card

    def update_agent(
        self, card: AgentCard | dict[str, Any], implementation: AgentImplementation | None = None
    ) -> AgentCard:
        """Replace an agent's card. The in-process implementation stays while the backend stays; a card that
        moves to another backend (a function agent becoming a model agent) drops it unless a new one is given.
        The update is made on the card this registry holds: when another process has changed that card since,
        it is refused (`ConfigurationError`, "changed meanwhile"); `refresh()` and update the card as stored now."""
        card = card if isinstance(card, AgentCard) else AgentCard.parse(card)
        kept: AgentImplementation | None = None

        def plan() -> list[_Change]:
            nonlocal kept
            current = self._agents.get(card.id)
            if current is None:
                raise NotFoundError("agent", card.id)
            self._check_unchanged_since("agent", card.id, base)
            kept = self._implementations.get(card.id) if card.backend == current.backend else None
            self.check_agent(card, implementation or kept)
            return [_Change("agent", card.id, card)]

        with self._lock:
            base = self._version
            self._commit(plan)
            if implementation is not None:
                self._implementations[card.id] = implementation
            elif kept is None:
                self._implementations.pop(card.id, None)
        return card

    def add_agents(self, cards: Iterable[AgentCard | dict[str, Any]], *, update: bool = False) -> list[AgentCard]:
        """Onboard several agents, all or nothing: every card is checked before the first is added (an id twice,
        an id already registered, a model not registered), so one bad card adds none, and the changes are
        stored in one transaction, so a store that fails part way keeps none of them. With ``update``, a card
        whose id is registered replaces that agent instead of being refused: whatever card is stored when the batch
        is appended, one another process added or changed meanwhile included (the caller asked for these cards to
        stand, so the last writer wins, unlike `update_agent`, which is made on the card it read)."""
        parsed = [card if isinstance(card, AgentCard) else AgentCard.parse(card) for card in cards]

        def plan() -> list[_Change]:
            self._check_batch("agent", [card.id for card in parsed], self._agents, update)
            for card in parsed:
                self.check_agent(card, self._implementations.get(card.id))
            return [_Change("agent", card.id, card) for card in parsed]

        self._commit(plan)
        return parsed

    def remove_agent(self, agent_id: str) -> None:
        """Remove an agent (routing stops choosing it at its next decision); `NotFoundError` when there is none."""

        def plan() -> list[_Change]:
            if agent_id not in self._agents:
                raise NotFoundError("agent", agent_id)
            return [_Change("agent", agent_id, None)]

        with self._lock:
            self._commit(plan)
            self._implementations.pop(agent_id, None)

    def add_model(self, card: ModelCard | dict[str, Any]) -> ModelCard:
        """Add a model (a card or its dict); `DuplicateIdError` when its id is taken."""
        card = card if isinstance(card, ModelCard) else ModelCard.parse(card)

        def plan() -> list[_Change]:
            if card.id in self._models:
                raise DuplicateIdError("model", card.id, hint="update_model() replaces it")
            return [_Change("model", card.id, card)]

        self._commit(plan)
        return card

    def update_model(self, card: ModelCard | dict[str, Any]) -> ModelCard:
        """Replace a model's card (the next call uses it); `NotFoundError` when there is no such model. As with
        `update_agent`, an update of a card another process changed since this registry's view is refused.

        New prices count at the next decision of a model router: a model it was trained on is costed at its
        measured mean cost scaled by the new price over the price at training (the router trained in this
        process knows both; one loaded from a checkpoint that kept no prices costs the measured mean as is)."""
        card = card if isinstance(card, ModelCard) else ModelCard.parse(card)

        def plan() -> list[_Change]:
            if card.id not in self._models:
                raise NotFoundError("model", card.id)
            self._check_unchanged_since("model", card.id, base)
            return [_Change("model", card.id, card)]

        with self._lock:
            base = self._version
            self._commit(plan)
        return card

    def add_models(self, cards: Iterable[ModelCard | dict[str, Any]], *, update: bool = False) -> list[ModelCard]:
        """Add several models, all or nothing, as `add_agents` does for agents."""
        parsed = [card if isinstance(card, ModelCard) else ModelCard.parse(card) for card in cards]

        def plan() -> list[_Change]:
            self._check_batch("model", [card.id for card in parsed], self._models, update)
            return [_Change("model", card.id, card) for card in parsed]

        self._commit(plan)
        return parsed

    def remove_model(self, model_id: str) -> None:
        """Remove a model; refused (`ConfigurationError`) while an agent's card names it, as adding that agent would be."""

        def plan() -> list[_Change]:
            if model_id not in self._models:
                raise NotFoundError("model", model_id)
            users = sorted(card.id for card in self._agents.values() if card.backend == "model" and card.model == model_id)
            if users:
                raise ConfigurationError(
                    f"model {model_id!r} is the model of agent(s) {', '.join(users)}: remove them, or update them to "
                    "another model, first"
                )
            return [_Change("model", model_id, None)]

        self._commit(plan)

    def ensure_agent(self, card: AgentCard, implementation: AgentImplementation | None = None) -> AgentCard:
        """Add the agent, or update it when the stored card differs (a no-op when it is the same); attach
        ``implementation`` either way. Meant for a set-up that re-runs, in several processes at once too: the card
        is compared with the one stored when the change is appended, one another process stored meanwhile
        included, and, as the set-up's card is the one it asks for, replaces it when it differs (unlike
        `update_agent`, which is refused on a card changed meanwhile). Returns the card now stored."""
        kept: AgentImplementation | None = None

        def plan() -> list[_Change]:
            nonlocal kept
            current = self._agents.get(card.id)
            if current == card:
                return []
            kept = None
            if current is not None and card.backend == current.backend:
                kept = self._implementations.get(card.id)
            self.check_agent(card, implementation or kept)
            return [_Change("agent", card.id, card)]

        with self._lock:
            self.refresh()  # what the set-up compares with is the stored card, not a view that may be stale
            changed = self._commit(plan)
            if implementation is not None:
                self._implementations[card.id] = implementation
            elif changed and kept is None:
                self._implementations.pop(card.id, None)
            return self._agents[card.id]

    def ensure_model(self, card: ModelCard) -> ModelCard:
        """Add the model, or update it when the stored card differs (a no-op when it is the same), compared with
        the card stored when the change is appended, as `ensure_agent` does. Returns the card now stored."""

        def plan() -> list[_Change]:
            return [] if self._models.get(card.id) == card else [_Change("model", card.id, card)]

        with self._lock:
            self.refresh()  # as ensure_agent: compared with the stored card
            self._commit(plan)
            return self._models[card.id]

    def check_agent(self, card: AgentCard, implementation: AgentImplementation | None = None) -> None:
        """Raise `CardError` when ``card`` cannot be added as it is: a model it names is not registered, a
        function agent has neither ``function`` nor ``implementation``, or ``implementation`` is neither a callable
        nor an `Agent` (``run`` and ``arun``). Adding checks this too."""
        if card.backend == "model" and card.model is not None and card.model not in self._models:
            raise CardError(
                f"AgentCard {card.id!r}: field 'model': no model card with id {card.model!r}; add the model first",
                field="model",
                value=card.model,
            )
        if card.backend == "function" and implementation is None and card.function is None:
            raise CardError(f"AgentCard {card.id!r}: field 'function' is required", field="function")
        if implementation is not None:
            _check_implementation(card.id, implementation)

    @staticmethod
    def _check_batch(kind: str, ids: list[str], registered: dict[str, Any], update: bool) -> None:
        seen: set[str] = set()
        for card_id in ids:
            if card_id in seen:
                raise CardError(f"{kind} id {card_id!r} is given twice", field="id", value=card_id)
            seen.add(card_id)
            if card_id in registered and not update:
                raise DuplicateIdError(kind, card_id, hint=f"update_{kind}() or add_{kind}s(..., update=True) replaces it")

    def _check_unchanged_since(self, kind: str, card_id: str, base: int) -> None:
        changed = self._last_change.get((kind, card_id), 0)
        if changed > base:
            raise ConfigurationError(
                f"{kind} {card_id!r} changed meanwhile: another process changed it (registry v{changed}) after the "
                f"view this update was made on (v{base}), and the update would silently undo that change; refresh() "
                "and update the card as stored now"
            )

    def _commit(self, plan: Callable[[], list[_Change]]) -> list[_Change]:
        """Run ``plan`` (a change's checks, raising to refuse it, returning its changes) against the registry as
        stored, store the changes as consecutive registry events in one transaction, then apply them here; returns
        the changes. Persisting first means that if the store refuses, memory is unchanged and nothing is
        half-applied."""
        with self._lock:
            while True:
                try:
                    changes = plan()
                except ConfigurationError:
                    # refused on this view: the refusal stands only if the store holds nothing newer that a fresh
                    # registry would judge by (a model added meanwhile, a card removed meanwhile)
                    if not self._take_in_news():
                        raise
                    continue
                if not changes:
                    return changes
                events = [
                    RegistryEvent(
                        version=self._version + 1 + offset,
                        kind=change.kind,  # type: ignore[arg-type]
                        card_id=change.card_id,
                        card=None if change.card is None else change.card.model_dump(mode="json"),
                    )
                    for offset, change in enumerate(changes)
                ]
                if self._store is None:
                    break
                try:
                    self._store.append_registry_events(events)
                    break
                except DuplicateIdError:
                    # Another process took these versions, so plan was checked on a stale view: take in its
                    # changes and run every check again, as a fresh registry would (its changes may settle the
                    # matter: an id it added, a model it removed or an agent now naming the model, a card it updated)
                    if not self._take_in_news():  # nothing newer to take in: the store refuses for another reason
                        raise
            for change, event in zip(changes, events, strict=True):
                self._last_change[(change.kind, change.card_id)] = event.version
                table = self._table(change.kind)
                if change.card is None:
                    del table[change.card_id]
                else:
                    table[change.card_id] = change.card
            self._version = events[-1].version
            return changes

    def _take_in_news(self) -> bool:
        """Refresh; whether the store held changes this view had not taken in."""
        before = self._version
        return self.refresh() != before

    def _table(self, kind: str) -> dict[str, Any]:
        return self._agents if kind == "agent" else self._models


@dataclass(frozen=True)
class _Change:
    """One change to the registry, as `Registry._commit` stores it."""

    kind: str
    card_id: str
    card: AgentCard | ModelCard | None
    """The new card; ``None`` removes it."""
