"""Router-R1's protocol and rewards: the tag grammar, strict ``<search>`` parsing, the format reward, exact match
and F1 on the last answer, the cost reward and the total reward.

The trajectory the rules read is the router's completion: its turns (``<think>…</think>`` followed by
``<search>Model-Name:query</search>`` or ``<answer>…</answer>``) with the ``<information>…</information>`` blocks
the environment appended after each search, without the prompt.

Rules, as in the paper's reference code (Zhang et al., NeurIPS 2025, ``ulab-uiuc/Router-R1``), checked here in
the same order; the format reward is 0 when every rule holds and −1 on the first violation found:

- at least one complete tag pair; the opening and closing counts of ``think``, ``search``, ``information``
  and ``answer`` are equal (``unbalanced_tags``);
- no tag inside another tag's content (``nested_tags``);
- no empty think (``""`` or the placeholder ``"..."``: ``empty_think``);
- exactly one answer, at least one think, as many information blocks as searches
  (``answer_count``, ``missing_think``, ``search_information_mismatch``);
- the completion starts with ``<think>`` and ends with ``</answer>`` (``not_think_first``, ``not_answer_last``);
- every search is ``Model-Name:query`` with a non-empty name and query, no placeholder (``LLM-Name``,
  ``Your-Query``) and the model's name not copied into the query (``malformed_search``);
- every searched name is the exact id of a pool model (``unknown_model``).

Differences from the reference code, on purpose:

- **Colons in the query.** The reference rejects a search with more than one colon and its route service keeps
  only the text between the first and second colon. Here the name and the query are split on the *first* colon
  only and the rest, colons included, is the query (``"gpt-4:what is 2:3 as a ratio?"`` asks ``gpt-4`` about
  ``"what is 2:3 as a ratio?"``). ``FormatRules(single_colon_only=True)`` restores the reference rule.
  Model ids that themselves contain a colon (``ollama:llama3``) are matched exactly as a prefix before the
  split, so they stay routable; names are never matched loosely.
- **Exact names.** The reference lower-cases the name and maps a few spellings to one model; here only the exact
  pool id counts (an unknown name is a violation and the router tells the model so in an ``<information>``).
- **Answer scoring.** The reference also tries symbolic math equivalence (optional ``math_verify``) before
  SQuAD exact match; that is left out: answers here are short texts and option letters.
- **Total reward.** The reference multiplies by the answer score from F1 or EM (``reward_metric``); here
  `total_reward` takes the correctness in [0, 1] the caller chose (EM by default in `score_trajectory`), and
  a correctness of 0 gives 0, so cost counts only when the answer is right (the published rule).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "TAGS",
    "CostNormalizer",
    "FormatCheck",
    "FormatRules",
    "RewardBreakdown",
    "SearchRequest",
    "Violation",
    "answer_em",
    "answer_f1",
    "check_format",
    "exact_match",
    "extract_last_answer",
    "f1_score",
    "format_reward",
    "normalize_answer",
    "parse_search",
    "score_trajectory",
    "tag_pairs",
    "token_spans",
    "total_reward",
    "trajectory_cost",
    "truncate_tokens",
]

TAGS = ("think", "search", "information", "answer")
"""The four tags of the protocol."""

Violation = Literal[
    "no_tags",
    "unbalanced_tags",
    "nested_tags",
    "empty_think",
    "answer_count",
    "missing_think",
    "search_information_mismatch",
    "not_think_first",
    "not_answer_last",
    "malformed_search",
    "unknown_model",
]

_PAIR = re.compile(r"<(think|search|information|answer)>(.*?)</\1>", re.DOTALL)
_ANY_TAG = re.compile(r"</?(?:think|search|information|answer)>")
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_PLACEHOLDERS = ("llm-name", "model-name", "your-query")

# Token counts are needed for the 600-token observation limit and the loss-mask spans. Without the router's own
# tokenizer at hand, words and single punctuation marks approximate BPE tokens well enough for bounding text
# (a BPE tokenizer gives a few more tokens, never wildly fewer); the rollout export uses a real tokenizer's
# offsets when one is given.
_TOKEN = re.compile(r"\w+|[^\w\s]")


def tag_pairs(text: str) -> list[tuple[str, str]]:
    """Every complete ``<tag>content</tag>`` pair of the protocol in ``text``, in order, as (tag, content)."""
    return _PAIR.findall(text)


def token_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the approximate tokens of ``text`` (words and single punctuation marks)."""
    return [match.span() for match in _TOKEN.finditer(text)]


def truncate_tokens(text: str, max_tokens: int) -> tuple[str, bool]:
    """``text`` cut after its first ``max_tokens`` approximate tokens; also whether it was cut."""
    spans = token_spans(text)
    if len(spans) <= max_tokens:
        return text, False
    return text[: spans[max_tokens - 1][1]] if max_tokens > 0 else "", True


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SearchRequest(_Frozen):
    """One ``<search>`` the router wrote, parsed strictly."""

    raw: str
    """The search's content as written."""
    model: str | None
    """The exact pool id named, or ``None`` when the name is unknown or the search is malformed."""
    name: str
    """The name as written (before the first colon), stripped."""
    query: str
    """Everything after the first colon, stripped; colons inside are kept."""
    problem: Literal["malformed_search", "unknown_model"] | None = None
    detail: str = ""
    """Why the search was refused, in words (shown to the router in its ``<information>``)."""

    @property
    def ok(self) -> bool:
        return self.problem is None


class FormatRules(_Frozen):
    """Options of the format check."""

    single_colon_only: bool = False
    """The reference rule: a search with more than one colon is malformed (see the module docstring)."""


def parse_search(content: str, pool: Iterable[str], rules: FormatRules | None = None) -> SearchRequest:
    """Parse a search's content ``Model-Name:query`` against the exact ids of ``pool``.

    The name and the query are split on the first colon; a pool id containing colons is recognised when the
    content starts with that exact id followed by a colon. The query is never cut at a later colon."""
    rules = rules or FormatRules()
    raw = content
    content = content.strip()
    pool_ids = list(pool)

    def refuse(problem: Literal["malformed_search", "unknown_model"], name: str, query: str, detail: str) -> SearchRequest:
        return SearchRequest(raw=raw, model=None, name=name, query=query, problem=problem, detail=detail)

    if ":" not in content:
        return refuse("malformed_search", content, "", "a search must be Model-Name:query (no colon found)")
    if rules.single_colon_only and content.count(":") != 1:
        name, query = content.split(":", 1)
        return refuse("malformed_search", name, query, "a search must hold exactly one colon")
    name, query = (part.strip() for part in content.split(":", 1))
    # Longest exact id first, so "a:b" wins over "a" when both are in the pool.
    for pool_id in sorted((p for p in pool_ids if ":" in p), key=len, reverse=True):
        if content.startswith(pool_id + ":"):
            name, query = pool_id, content[len(pool_id) + 1 :].strip()
            break
    if not name or not query:
        return refuse("malformed_search", name, query, "both the model name and the query must be non-empty")
    lowered = content.lower()
    if any(placeholder in lowered for placeholder in _PLACEHOLDERS):
        return refuse("malformed_search", name, query, "replace the placeholders with a model name and a real question")
    if name.lower() in query.lower():
        return refuse("malformed_search", name, query, "the query repeats the model's name; ask a question instead")
    if name not in pool_ids:
        return refuse("unknown_model", name, query, f"there is no model named {name!r}; use one of: {', '.join(pool_ids)}")
    return SearchRequest(raw=raw, model=name, name=name, query=query)


class FormatCheck(_Frozen):
    """The format reward of one trajectory, with the violation that decided it."""

    reward: float
    """0.0 when the trajectory follows the protocol, −1.0 otherwise."""
    violations: tuple[Violation, ...] = ()
    """Every rule broken (the reward is −1 when there is any)."""

    @property
    def valid(self) -> bool:
        return not self.violations


def check_format(completion: str, pool: Iterable[str], rules: FormatRules | None = None) -> FormatCheck:
    """The published format reward of a trajectory, with every rule it breaks."""
    pool_ids = list(pool)
    violations: list[Violation] = []
    pairs = _PAIR.findall(completion)
    if not pairs:
        violations.append("no_tags")
    if any(completion.count(f"<{tag}>") != completion.count(f"</{tag}>") for tag in TAGS):
        violations.append("unbalanced_tags")
    counts: Counter[str] = Counter()
    for tag, content in pairs:
        counts[tag] += 1
        if _ANY_TAG.search(content):
            violations.append("nested_tags")
        if tag == "think" and content.strip() in ("", "..."):
            violations.append("empty_think")
        if tag == "search":
            request = parse_search(content, pool_ids, rules)
            if request.problem is not None:
                violations.append(request.problem)
    if pairs:
        if counts["answer"] != 1:
            violations.append("answer_count")
        if counts["think"] == 0:
            violations.append("missing_think")
        if counts["search"] != counts["information"]:
            violations.append("search_information_mismatch")
        stripped = completion.strip()
        if not stripped.startswith("<think>"):
            violations.append("not_think_first")
        if not stripped.endswith("</answer>"):
            violations.append("not_answer_last")
    unique = tuple(dict.fromkeys(violations))
    return FormatCheck(reward=-1.0 if unique else 0.0, violations=unique)


def format_reward(completion: str, pool: Iterable[str], rules: FormatRules | None = None) -> float:
    """0.0 for a trajectory that follows the protocol, −1.0 otherwise."""
    return check_format(completion, pool, rules).reward


# -- answers -------------------------------------------------------------------------------------------------


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles (a, an, the), single spaces."""
    text = text.lower()
    text = "".join(char for char in text if char not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def extract_last_answer(completion: str) -> str | None:
    """The content of the last ``<answer>`` block, stripped, or ``None`` when there is none."""
    found = _ANSWER.findall(completion)
    return found[-1].strip() if found else None


def exact_match(prediction: str, golds: str | Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised gold answer."""
    golds = [golds] if isinstance(golds, str) else list(golds)
    normalised = normalize_answer(prediction)
    return 1.0 if any(normalize_answer(gold) == normalised for gold in golds) else 0.0


def f1_score(prediction: str, gold: str) -> float:
    """Token F1 after normalisation. A yes/no/noanswer on either side scores 0 unless both are equal
    (HotpotQA's rule, kept by the reference)."""
    pred, truth = normalize_answer(prediction), normalize_answer(gold)
    special = ("yes", "no", "noanswer")
    if (pred in special or truth in special) and pred != truth:
        return 0.0
    pred_tokens, truth_tokens = pred.split(), truth.split()
    same = sum((Counter(pred_tokens) & Counter(truth_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(truth_tokens)
    return 2 * precision * recall / (precision + recall)


def answer_em(completion: str, golds: str | Sequence[str]) -> float:
    """Exact match of the trajectory's last answer (0 without an answer)."""
    answer = extract_last_answer(completion)
    return 0.0 if answer is None else exact_match(answer, golds)


def answer_f1(completion: str, golds: str | Sequence[str]) -> float:
    """Best F1 of the trajectory's last answer over the gold answers (0 without an answer)."""
    answer = extract_last_answer(completion)
    golds = [golds] if isinstance(golds, str) else list(golds)
    return 0.0 if answer is None else max((f1_score(answer, gold) for gold in golds), default=0.0)


# -- cost ----------------------------------------------------------------------------------------------------


def trajectory_cost(
    calls: Iterable[tuple[int, float | None, float | None]],
) -> float:
    """Raw cost of a trajectory: the sum over consulted models of completion tokens × output price (USD per
    million tokens), in USD. Each call is ``(completion_tokens, output_price_per_mtok, recorded_cost_usd)``;
    when the price is unknown the recorded cost of the call is used instead (recorded pools), and a call with
    neither counts 0."""
    total = 0.0
    for completion_tokens, output_price, recorded in calls:
        if output_price is not None:
            total += completion_tokens * output_price / 1e6
        elif recorded is not None:
            total += recorded
    return total


class CostNormalizer:
    """The cost reward: square root of the raw cost, min-max scaled by the 5th and 95th percentiles of a
    rolling window of recent trajectories' (square-rooted) costs, inverted and clipped to [0, 1], so the
    cheapest trajectories get 1 and the dearest 0.

    The current cost joins the window before the percentiles are taken (as in the reference); with fewer than
    two costs the window's min and max are used, and a window with no spread gives 0.5."""

    def __init__(self, window: int = 1000, low: float = 0.05, high: float = 0.95, eps: float = 1e-8) -> None:
        if not 0 <= low < high <= 1:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 1, got low={low}, high={high}")
        self.window: deque[float] = deque(maxlen=window)
        self.low, self.high, self.eps = low, high, eps

    def __call__(self, raw_cost: float) -> float:
        value = math.sqrt(max(raw_cost, 0.0))
        self.window.append(value)
        values = np.asarray(self.window, dtype=float)
        if len(values) >= 2:
            lo, hi = np.percentile(values, 100 * self.low), np.percentile(values, 100 * self.high)
        else:
            lo, hi = values.min(), values.max()
        if hi - lo < self.eps:
            return 0.5
        return 1.0 - float(np.clip((value - lo) / (hi - lo), 0.0, 1.0))


def total_reward(format_score: float, correctness: float, cost_reward: float, alpha: float = 0.0) -> float:
    """Router-R1's reward: −1 on a format failure; 0 for a wrong answer; otherwise
    ``(1 + format) · (1 − α) · correctness + α · cost_reward`` (with EM, correctness is 1 for a right answer)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if format_score < 0:
        return -1.0
    if correctness <= 0:
        return 0.0
    return (1.0 + format_score) * (1.0 - alpha) * correctness + alpha * cost_reward


class RewardBreakdown(_Frozen):
    """Every reward term of one trajectory."""

    format: float
    violations: tuple[str, ...] = ()
    answer: str | None
    em: float
    f1: float
    cost_raw: float
    cost_reward: float
    total: float
    alpha: float = Field(ge=0.0, le=1.0)


def score_trajectory(
    completion: str,
    golds: str | Sequence[str],
    pool: Iterable[str],
    *,
    cost_raw: float,
    normalizer: CostNormalizer,
    alpha: float = 0.0,
    metric: Literal["em", "f1"] = "em",
    rules: FormatRules | None = None,
) -> RewardBreakdown:
    """All reward terms of one trajectory; ``metric`` says which answer score drives the total."""
    check = check_format(completion, pool, rules)
    em, f1 = answer_em(completion, golds), answer_f1(completion, golds)
    cost = normalizer(cost_raw)
    total = total_reward(check.reward, em if metric == "em" else f1, cost, alpha)
    return RewardBreakdown(
        format=check.reward,
        violations=check.violations,
        answer=extract_last_answer(completion),
        em=em,
        f1=f1,
        cost_raw=cost_raw,
        cost_reward=cost,
        total=total,
        alpha=alpha,
    )
