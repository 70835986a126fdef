"""A model pool that answers from RouterBench's recorded responses, so Router-R1 runs end to end offline.

RouterBench (``<data>/models/routerbench/{train,test}.jsonl``) recorded, for every question, each model's raw
response, its 0/1 score and its real USD cost. `RecordedPool` answers "model M, this question" with M's recorded
response and cost, and answers honestly that it has no recorded answer when the question matches no row or M
was not recorded on it.

The prompts share a long few-shot prefix and end with the question; a consulted model's sub-question is matched
against that final question by word overlap. A run can be *bound* to its row (`RecordedPool.bind`) so that the
sub-questions of that run are answered from it whenever they are about it.

Use it as the agent behind Router-R1's pool agent::

    pool = RecordedPool.from_data(data_dir("..."))
    registry.add_agent(pool_agent_card(), implementation=pool)
    for card in pool.model_cards():
        registry.add_model(card)

or per model as a `ChatModel` (`RecordedPool.chat_model`).
"""

from __future__ import annotations

import ast
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestra.agent import AgentContext, AgentReply
from orchestra.bench import read_jsonl
from orchestra.cards import ModelCard
from orchestra.errors import DataError
from orchestra.model import ChatOptions, ChatResult, Message
from orchestra.routers.r1_rewards import token_spans

__all__ = ["NO_RECORD", "RecordedChatModel", "RecordedPool", "RecordedRow", "final_question", "recorded_text"]

NO_RECORD = "No recorded answer: this model was not recorded on a question like this one, so it cannot help here."
"""What the pool says when it has nothing recorded (an honest reply, never an invented one). It does not name
the model: routers copy what they read, and a query repeating a model's name breaks Router-R1's format."""

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    "a an the of to in on and or is are was were be by for with as at it this that which what who from print "
    "only single choice without explanation answer".split()
)


def final_question(prompt: str) -> str:
    """The question at the end of a RouterBench prompt (the last paragraph after the few-shot examples)."""
    blocks = [block.strip() for block in prompt.strip().split("\n\n") if block.strip()]
    return blocks[-1] if blocks else prompt.strip()


def recorded_text(response: str | None) -> str | None:
    """A recorded response as text: RouterBench stores them as the repr of a list of strings."""
    if response is None:
        return None
    try:
        value = ast.literal_eval(response)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return response.strip()
    if isinstance(value, (list, tuple)):
        return "\n".join(str(item) for item in value).strip()
    return str(value).strip()


def _words(text: str) -> list[str]:
    return [word for word in _WORD.findall(text.lower()) if word not in _STOP]


@dataclass(frozen=True)
class RecordedRow:
    """One RouterBench question with every model's recorded outcome."""

    id: str
    prompt: str
    question: str
    task: str
    outcomes: dict[str, dict[str, Any]]

    def answer_of(self, model_id: str) -> str | None:
        outcome = self.outcomes.get(model_id)
        return recorded_text(outcome.get("response")) if outcome else None


class RecordedPool:
    """Answers consulted models from recorded responses (an `Agent`; `chat_model` gives per-model `ChatModel`s)."""

    def __init__(self, rows: Iterable[dict[str, Any]], models: Sequence[dict[str, Any]] = (), *, min_overlap: float = 0.5) -> None:
        """``rows``: RouterBench rows (``id``, ``query``, ``task``, ``outcomes``). ``models``: the set's
        ``models.jsonl`` records. ``min_overlap``: word-overlap F1 a sub-question needs with a row's question
        to be answered from it when the run is not bound to a row."""
        self.rows: dict[str, RecordedRow] = {}
        for row in rows:
            question = final_question(row["query"])
            self.rows[row["id"]] = RecordedRow(row["id"], row["query"], question, row.get("task", ""), row["outcomes"])
        self.models = list(models)
        self.min_overlap = min_overlap
        self._by_prompt = {row.prompt.strip(): row.id for row in self.rows.values()}
        self._by_question = {row.question: row.id for row in self.rows.values()}
        self._words = {row_id: Counter(_words(row.question)) for row_id, row in self.rows.items()}
        self._index: dict[str, set[str]] = defaultdict(set)
        for row_id, words in self._words.items():
            for word in words:
                self._index[word].add(row_id)
        self._bound: dict[str, str] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_data(cls, data_dir: str | Path, splits: Sequence[str] = ("train", "test"), **options: Any) -> RecordedPool:
        """The pool of ``<data_dir>/models/routerbench`` (``data_dir`` may also be that folder itself)."""
        folder = Path(data_dir)
        if not (folder / "models.jsonl").exists():
            folder = folder / "models" / "routerbench"
        if not (folder / "models.jsonl").exists():
            raise DataError(f"no RouterBench set at {str(folder)!r}: expected models.jsonl and train/test.jsonl there")
        models = [item for _, item in read_jsonl(folder / "models.jsonl")]
        rows: list[dict[str, Any]] = []
        for split in splits:
            path = folder / f"{split}.jsonl"
            if not path.exists():
                raise DataError(f"RouterBench split {split!r} missing: {str(path)!r}")
            rows += [item for _, item in read_jsonl(path)]
        return cls(rows, models, **options)

    # -- cards ----------------------------------------------------------------------------------------------

    def model_cards(self) -> list[ModelCard]:
        """A model card per recorded model. RouterBench gives no per-token prices, only the mean measured cost
        per query, which goes into the description (prices stay unknown, never 0)."""
        cards = []
        for record in self.models:
            description = record.get("description") or record["id"]
            mean = record.get("mean_cost_per_query_usd")
            if mean is not None:
                description = f"{description.rstrip('.')}. Costs about ${mean:.5f} per query."
            cards.append(
                ModelCard(
                    id=record["id"],
                    description=description,
                    input_price_per_mtok=record.get("input_price_per_mtok"),
                    output_price_per_mtok=record.get("output_price_per_mtok"),
                )
            )
        return cards

    # -- finding the row ------------------------------------------------------------------------------------

    def bind(self, run_key: str, row_id: str) -> None:
        """Answer the sub-questions of run ``run_key`` (its run id) from row ``row_id`` when they are about it;
        ``run_key=""`` binds every run without a binding of its own (runs made one at a time)."""
        if row_id not in self.rows:
            raise DataError(f"no RouterBench row with id {row_id!r}")
        with self._lock:
            self._bound[run_key] = row_id

    def unbind(self, run_key: str) -> None:
        with self._lock:
            self._bound.pop(run_key, None)

    def _overlap(self, query_words: Counter[str], row_id: str) -> float:
        row_words = self._words[row_id]
        same = sum((query_words & row_words).values())
        if same == 0:
            return 0.0
        precision, recall = same / sum(query_words.values()), same / sum(row_words.values())
        return 2 * precision * recall / (precision + recall)

    def lookup(self, query: str, *, row_id: str | None = None) -> tuple[RecordedRow | None, float]:
        """The row a sub-question is about, with the match's strength (1.0 for an exact prompt or question)."""
        text = query.strip()
        exact = self._by_prompt.get(text) or self._by_question.get(text) or self._by_question.get(final_question(text))
        if exact is not None and (row_id is None or exact == row_id):
            return self.rows[exact], 1.0
        query_words = Counter(_words(text))
        if not query_words:
            return None, 0.0
        if row_id is not None:
            # Bound run: a sub-question sharing a fair part of its words with the row's question is about it.
            row_words = self._words[row_id]
            coverage = sum((query_words & row_words).values()) / sum(query_words.values())
            return (self.rows[row_id], coverage) if coverage >= 0.3 else (None, coverage)
        candidates: Counter[str] = Counter()
        for word in query_words:
            ids = self._index.get(word, ())
            if len(ids) <= 200:  # common words say little about which row is meant
                candidates.update(ids)
        best_id, best = None, 0.0
        for candidate, _ in candidates.most_common(50):
            score = self._overlap(query_words, candidate)
            if score > best:
                best_id, best = candidate, score
        if best_id is None or best < self.min_overlap:
            return None, best
        return self.rows[best_id], best

    read_response = staticmethod(recorded_text)
    """A recorded response as text (scorers read recorded responses through the pool)."""

    # -- answering ------------------------------------------------------------------------------------------

    def answer(self, model_id: str, query: str, *, run_key: str | None = None) -> AgentReply:
        """Model ``model_id``'s recorded answer to ``query``, with the recorded cost."""
        with self._lock:
            row_id = self._bound.get(run_key or "", self._bound.get(""))
        row, strength = self.lookup(query, row_id=row_id)
        prompt_tokens = len(token_spans(query))
        text = row.answer_of(model_id) if row is not None else None
        if row is None or text is None:
            return AgentReply(
                answer=NO_RECORD,
                model_id=model_id,
                prompt_tokens=prompt_tokens,
                completion_tokens=0,
                cost_usd=0.0,
                meta={"recorded": False, "row_id": row.id if row else None, "match": round(strength, 3)},
            )
        outcome = row.outcomes[model_id]
        return AgentReply(
            answer=text,
            model_id=model_id,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(token_spans(text)),
            cost_usd=outcome.get("cost"),
            meta={"recorded": True, "row_id": row.id, "match": round(strength, 3), "recorded_score": outcome.get("score")},
        )

    def run(self, query: str, context: AgentContext) -> AgentReply:
        model_id = context.model_id or context.card.model
        if not model_id:
            return AgentReply(answer=NO_RECORD, meta={"recorded": False})
        return self.answer(model_id, query, run_key=context.run_id)

    async def arun(self, query: str, context: AgentContext) -> AgentReply:
        return self.run(query, context)

    def chat_model(self, model_id: str) -> RecordedChatModel:
        """A `ChatModel` answering as ``model_id`` from the recordings (the last user message is the question)."""
        return RecordedChatModel(self, model_id)


class RecordedChatModel:
    """One recorded model as a `ChatModel`."""

    def __init__(self, pool: RecordedPool, model_id: str) -> None:
        self.pool = pool
        self.id = model_id

    def chat(self, messages: list[Message], options: ChatOptions | None = None) -> ChatResult:
        question = next((m.content for m in reversed(messages) if m.role == "user"), "")
        reply = self.pool.answer(self.id, question)
        return ChatResult(
            text=reply.answer,
            model_id=self.id,
            prompt_tokens=sum(len(token_spans(m.content)) for m in messages),
            completion_tokens=reply.completion_tokens,
            cost_usd=reply.cost_usd,
            finish_reason="stop",
        )

    async def achat(self, messages: list[Message], options: ChatOptions | None = None) -> ChatResult:
        return self.chat(messages, options)
