"""The knowledge agent: answers from a local collection of Markdown documents by embedding retrieval.

Documents are split into passages at their headings; passages and queries are embedded with Orchestra's offline
embedder (all-MiniLM-L6-v2, `orchestra.embeddings`). The best passages that clear a similarity threshold are the
answer, each with its source; when the agent's card names a model, they are summarised through
``context.models`` (recorded like every model call). When no passage clears the threshold the agent says it
does not know, rather than guess. The shipped collection is Orchestra's own documentation (``docs/*.md``).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orchestra.agent import AgentContext, AgentReply
from orchestra.cards import AgentCard
from orchestra.errors import ModelError
from orchestra.model import ChatOptions, Message

__all__ = ["DOCS_DIR", "KNOWLEDGE_CARD", "KnowledgeBase", "Passage", "answer", "default_knowledge_base"]

DOCS_DIR = Path(__file__).with_name("docs")
"""Orchestra's own documentation: the collection the default knowledge agent answers from."""

DEFAULT_THRESHOLD = 0.35
"""Cosine below which a passage is not an answer. MiniLM puts unrelated questions under ~0.2 and questions a
passage answers above ~0.45; 0.35 keeps the gap on both sides."""

SUMMARY_SYSTEM = (
    "Answer the user's question using only the passages below. Quote facts exactly; be brief. If the passages "
    "do not answer the question, say you do not know."
)


@dataclass(frozen=True)
class Passage:
    """One section of one document."""

    source: str
    """``file.md#Heading``: where the passage comes from."""
    title: str
    text: str


@dataclass(frozen=True)
class Hit:
    passage: Passage
    score: float


def split_markdown(text: str, source: str) -> list[Passage]:
    """Passages of a Markdown document, one per heading section (a document without headings is one passage)."""
    passages: list[Passage] = []
    document_title = source
    title = source
    lines: list[str] = []

    def flush() -> None:
        body = "\n".join(lines).strip()
        if body:
            heading = title if title == document_title else f"{document_title}: {title}"
            anchor = "" if title == document_title else "#" + re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
            passages.append(Passage(source=f"{source}{anchor}", title=heading, text=body))

    for line in text.splitlines():
        heading = re.match(r"^(#{1,6})\s+(.*\S)\s*$", line)
        if heading:
            flush()
            if len(heading.group(1)) == 1:
                document_title = heading.group(2)
            title, lines = heading.group(2), []
        else:
            lines.append(line)
    flush()
    return passages


class KnowledgeBase:
    """Passages of the Markdown files in ``directory``, embedded on first search."""

    def __init__(
        self, directory: str | Path = DOCS_DIR, *, threshold: float = DEFAULT_THRESHOLD, embedder: Any = None
    ) -> None:
        self.directory = Path(directory)
        self.threshold = threshold
        self._embedder = embedder
        self._lock = threading.Lock()
        self._passages: list[Passage] | None = None
        self._matrix: np.ndarray | None = None

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from orchestra.embeddings import get_embedder

            self._embedder = get_embedder()
        return self._embedder

    @property
    def passages(self) -> list[Passage]:
        if self._passages is None:
            found: list[Passage] = []
            for path in sorted(self.directory.glob("*.md")):
                found += split_markdown(path.read_text(encoding="utf-8"), path.name)
            self._passages = found
        return self._passages

    def _vectors(self) -> np.ndarray:
        with self._lock:
            if self._matrix is None:
                # title + text: the heading carries the topic that short sections leave implicit
                texts = [f"{passage.title}. {passage.text}" for passage in self.passages]
                self._matrix = self.embedder.encode(texts) if texts else np.zeros((0, 1), dtype=np.float32)
            return self._matrix

    def search(self, query: str, k: int = 3) -> list[Hit]:
        """The ``k`` most similar passages that clear the threshold, best first (empty: nothing relevant)."""
        matrix = self._vectors()
        if not len(matrix) or not query.strip():
            return []
        scores = matrix @ self.embedder.encode([query])[0]
        order = np.argsort(-scores)[:k]
        return [Hit(self.passages[i], float(scores[i])) for i in order if scores[i] >= self.threshold]

    def answer(self, query: str, context: AgentContext | None = None, *, k: int = 2) -> AgentReply:
        """The best passages with their sources, summarised by the card's model when it has one."""
        hits = self.search(query, k=k)
        meta: dict[str, Any] = {
            "sources": [hit.passage.source for hit in hits],
            "scores": [round(hit.score, 4) for hit in hits],
        }
        if not hits:
            return AgentReply(
                answer="I don't know: nothing in my documents (Orchestra's documentation) answers that.",
                meta=meta | {"known": False},
                declined=True,
            )
        extract = "\n\n".join(f"{hit.passage.text}\n(source: {hit.passage.source})" for hit in hits)
        model_id = (context.model_id or context.card.model) if context is not None else None
        if context is None or not model_id:
            return AgentReply(answer=extract, meta=meta | {"known": True})
        passages = "\n\n".join(f"[{hit.passage.source}]\n{hit.passage.text}" for hit in hits)
        messages = [
            Message(role="system", content=f"{SUMMARY_SYSTEM}\n\n{passages}"),
            Message(role="user", content=query),
        ]
        try:
            result = context.models.chat(model_id, messages, ChatOptions(max_tokens=200), purpose="summarise")
        except ModelError as exc:
            # the passages are the answer either way; a failed summary only loses the polish
            return AgentReply(answer=extract, meta=meta | {"known": True, "summary_error": exc.to_record()})
        sources = ", ".join(hit.passage.source for hit in hits)
        return AgentReply.from_chat(
            result.model_copy(update={"text": f"{result.text.strip()}\n(sources: {sources})"}), **meta, known=True
        )


_DEFAULT: KnowledgeBase | None = None
_DEFAULT_LOCK = threading.Lock()


def default_knowledge_base() -> KnowledgeBase:
    """The process-wide knowledge base over Orchestra's own docs."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = KnowledgeBase()
        return _DEFAULT


def answer(query: str, context: AgentContext | None = None) -> AgentReply:
    """The knowledge agent over Orchestra's docs (the function behind `KNOWLEDGE_CARD`)."""
    return default_knowledge_base().answer(query, context)


KNOWLEDGE_CARD = AgentCard(
    id="knowledge",
    name="Orchestra documentation",
    description=(
        "Answers questions about Orchestra itself from its documentation: concepts (agents, model cards, the "
        "registry, routers, aggregators, budgets), the orchestra command line, onboarding agents and models at "
        "runtime, replaying runs, the trace store and the embedded local model. Cites the document it answers from "
        "and says when the documentation does not cover a question."
    ),
    skills=("orchestra documentation", "how-to", "concepts"),
    examples=(
        "how do I replay a run?",
        "what does the trace store keep?",
        "how do I add an agent at runtime?",
        "which routers does Orchestra ship?",
        "how do I install the local model?",
        "what is a model card?",
        "how do I set a budget for a run?",
        "which environment variables does Orchestra read?",
    ),
    backend="function",
    function="orchestra.agents.knowledge:answer",
)
"""The knowledge agent's card: routers read its description and examples."""
