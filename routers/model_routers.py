"""Model routers: which model should back an LLM agent for this query, under a cost-quality knob.

A `ModelRouter` predicts, for each query and each model card, a quality in [0, 1] and a cost in USD, then picks
the model of best utility::

    utility = (1 - w) * quality - w * normalised_cost,   w = state.policy.cost_weight in [0, 1]

where ``normalised_cost = (cost - min) / (max - min)`` over the candidate models of that query (0 when all cost
the same), so that ``w`` means the same thing whatever the price scale: ``w = 0`` takes the best predicted
quality, ``w = 1`` the cheapest model. ``decide`` returns a `Dispatch` with one call of the LLM agent it serves,
``model_id`` set to the chosen model, and a score (utility, with predicted quality and cost) for every model.

Costs are predicted alike for every router: the mean recorded cost of the model on training queries of the
same task (else of any task); a model never seen in training costs what its card says (``card_costs``, e.g.
routerbench's measured mean per query, else its prices with ``len(text) / 4`` tokens and a 256-token answer).
When a trained model's card prices have changed since training (``registry.update_model``), its trained mean
is scaled by the new price over the price at training (`price_scale`).

Baselines on the same harness (entry-point names in brackets): random [random], cheapest [cheapest], most
expensive [largest], best single model on train [best-single], k nearest neighbours on query embeddings [knn],
an MLP on embeddings [mlp], matrix factorisation [mf] (RouteLLM's MF, generalised from a strong/weak pair to N
models), and the oracle [oracle] (benchmark only: it reads the test outcomes). Queries are embedded with the
project's offline MiniLM from their *last* `DEFAULT_TEXT_WINDOW` characters: RouterBench prompts share a long
few-shot prefix and put the question at the end.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self, cast

import numpy as np

from orchestra.bench.models import ModelQuery, check_cost_target, estimate_cost
from orchestra.cards import ModelCard
from orchestra.errors import CheckpointError, ConfigurationError, DataError, DecisionError, OrchestraError, PolicyError
from orchestra.routing import BaseRouter, Call, CandidateScore, Dispatch, RouterState

from .basic import check_embedder, check_unique_ids, check_whole_numbers

__all__ = [
    "DEFAULT_TEXT_WINDOW",
    "BestSingleRouter",
    "HashingEmbedder",
    "CheapestRouter",
    "KnnRouter",
    "LargestRouter",
    "MfRouter",
    "MlpRouter",
    "ModelRouter",
    "OracleRouter",
    "RandomRouter",
    "checkpoint_embedder",
    "checkpoint_kind",
    "damaged_checkpoint",
    "load_checkpoint",
    "normalise_costs",
    "save_checkpoint",
    "torch_threads",
    "utility",
]

DEFAULT_TEXT_WINDOW = 400
"""Characters embedded from the end of each query."""

QueryLike = str | ModelQuery


def normalise_costs(costs: np.ndarray) -> np.ndarray:
    """Min-max normalise each row of a (queries, models) cost matrix over its candidates (0 when flat)."""
    low = costs.min(axis=1, keepdims=True)
    span = costs.max(axis=1, keepdims=True) - low
    return np.where(span > 0, (costs - low) / np.where(span > 0, span, 1.0), 0.0)


def utility(quality: np.ndarray, costs: np.ndarray, w: float) -> np.ndarray:
    """``(1 - w) * quality - w * normalised cost`` for a cost weight ``w`` in [0, 1]."""
    check_weight(w)
    return (1.0 - w) * quality - w * normalise_costs(costs)


def check_weight(w: float) -> float:
    """``w`` as a float; `PolicyError` unless it is a number in [0, 1] (a flag is not one: True passed for 1)."""
    if isinstance(w, bool) or not isinstance(w, (int, float, np.floating)) or math.isnan(w) or not 0.0 <= w <= 1.0:
        raise PolicyError(f"cost weight w must lie in [0, 1], got {w!r}")
    return float(w)


def check_training_data(router: str, train: Sequence[ModelQuery], val: Sequence[ModelQuery], cards: Sequence[ModelCard]) -> None:
    """Raise `DataError` for model-routing training data a router cannot learn from: no queries, no model cards,
    a model card given twice, or a query (train or val) with no outcome of any model in ``cards``. Such a query
    says nothing about the models being trained (GraphRouter failed on it with a raw ``max()`` error; a repeated
    card gave the router two columns of one model)."""
    if not train:
        raise DataError(f"{router}: no training queries")
    if not cards:
        raise DataError(f"{router}: no model cards to train on")
    ids = [card.id for card in cards]
    check_unique_ids(ids, f"{router}: model cards", "model")
    known = set(ids)
    for row in [*train, *val]:
        if not row.outcomes:
            raise DataError(f"{router}: training query {row.id!r} has no outcomes")
        if known.isdisjoint(row.outcomes):
            raise DataError(
                f"{router}: training query {row.id!r} has outcomes only of models not among the cards "
                f"({sorted(row.outcomes)[:5]}); the cards are {ids[:10]}"
            )
    # a card never scored in training got a made-up quality (kNN 0.5, an untrained column for MF and the MLP)
    # and, cheap, could win at w > 0 over every model that was scored
    scored = {model_id for row in train for model_id in row.outcomes}
    unscored = [model_id for model_id in ids if model_id not in scored]
    if unscored:
        raise DataError(
            f"{router}: model card(s) {unscored[:5]} have no outcome in the training queries; train without them "
            "and onboard them after training (add_model, or the router's card-based routing of unseen models; "
            "orchestra bench models: --holdout-models)"
        )


def training_prices(cards: Sequence[ModelCard]) -> dict[str, tuple[float, float]]:
    """The input and output prices (USD per million tokens) of the priced cards a router is trained with, by id."""
    return {card.id: (card.input_price_per_mtok, card.output_price_per_mtok) for card in cards if card.priced}  # type: ignore[misc]


def price_scale(card: ModelCard, trained: Mapping[str, tuple[float, float]], texts: Sequence[str]) -> np.ndarray:
    """Per query text, what a call to ``card``'s model costs at its card's prices now over what it cost at the
    prices its card had when the router was trained (``trained``, from `training_prices`): the factor to apply
    to the mean cost measured in training. 1 when either price is unknown (an unpriced card, a router loaded from
    a checkpoint that kept no prices) or unchanged: the measured mean then stands as it is."""
    before = trained.get(card.id)
    if before is None or not card.priced or before == (card.input_price_per_mtok, card.output_price_per_mtok):
        return np.ones(len(texts))
    old = card.with_changes(input_price_per_mtok=before[0], output_price_per_mtok=before[1])
    scale = np.ones(len(texts))
    for i, text in enumerate(texts):
        was = estimate_cost(old, text, None)
        if was:  # a model free at training has no ratio to scale by
            scale[i] = float(estimate_cost(card, text, None) or 0.0) / was
    return scale


def choice_meta(router: str, w: float, quality: float, cost: float) -> dict[str, Any]:
    """The decision meta of a model choice, the same from every router that backs an LLM agent with a model:
    the router, the cost weight it was asked at and the chosen model's predicted quality and cost (USD)."""
    return {"router": router, "cost_weight": w, "predicted_quality": float(quality), "predicted_cost_usd": float(cost)}


@contextlib.contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the previous count. The routers' networks
    are small: on a shared CPU, handing their tiny kernels between threads costs far more than it saves (a
    GraphRouter epoch burns ~14x the CPU with 2 threads than with 1 on a loaded 2-core machine)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ---------------------------------------------------------------------------------------------- checkpoints
# The routers' torch checkpoints hold tensors, numbers, strings, None and lists, tuples and dicts of them only, and
# are read with torch's ``weights_only``: unpickling anything else could run code from the file.


def _plain(value: Any) -> Any:
    """``value`` with numpy arrays as tensors and numpy scalars as Python numbers, all the way down."""
    import torch

    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {_plain(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(item) for item in value)
    return value


def save_checkpoint(path: str | Path, data: Mapping[str, Any]) -> Path:
    """Write a router's checkpoint ``data`` (a dict with its ``"format"``, ``orchestra.<router>/<version>``) to
    ``path`` as plain data that `load_checkpoint` reads back; the folder is created when missing."""
    import torch

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"cannot create the folder of checkpoint {str(path)!r}: {exc.strerror or exc}") from None
    torch.save(_plain(dict(data)), path)
    return path


def _kind_of(found: object) -> str | None:
    """The router named by a checkpoint format ``orchestra.<router>/<version>``; ``None`` for anything else."""
    return found.removeprefix("orchestra.").partition("/")[0] if isinstance(found, str) and found.startswith("orchestra.") else None


def load_checkpoint(path: str | Path, expected_format: str) -> dict[str, Any]:
    """The data a router saved with `save_checkpoint`, read without running code from the file. `CheckpointError`
    when the file is missing, unreadable, unsafe, of an older format, or not of ``expected_format``."""
    import torch

    path = Path(path)
    kind = _kind_of(expected_format) or expected_format
    if not path.is_file():
        raise CheckpointError(f"{kind} checkpoint {str(path)!r} " + ("is a folder" if path.is_dir() else "does not exist"))
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises anything from EOFError to its C++ errors on a bad file
        raise CheckpointError(f"{str(path)!r} is not {with_article(kind)} checkpoint: {_unreadable(path, exc)}") from None
    found = data.get("format") if isinstance(data, dict) else None
    if found != expected_format:
        other = _kind_of(found)
        if other and other != kind:
            raise CheckpointError(f"{str(path)!r} is {with_article(other)} checkpoint, not {with_article(kind)} one")
        if other:
            raise CheckpointError(f"{str(path)!r} is a {kind} checkpoint of format {found!r}, this version reads "
                                  f"{expected_format!r}: retrain the router and save it again")
        raise CheckpointError(f"{str(path)!r} is not {with_article(kind)} checkpoint (format {expected_format!r})")
    return cast(dict[str, Any], data)  # its format was read from it: a dict


def checkpoint_kind(path: str | Path) -> str | None:
    """Which router's checkpoint ``path`` is (``"set-router"``, ``"graph-router"``, ...), read safely; ``None`` when
    it is none that can be told. For error messages: a file given to the wrong loader."""
    import zipfile

    import torch

    try:
        names = zipfile.ZipFile(path).namelist()
        if "meta.npy" in names:
            return "set-router"
        if not any(name.endswith("/data.pkl") for name in names):
            return None
        found = torch.load(Path(path), map_location="cpu", weights_only=True).get("format")
    except Exception:  # noqa: BLE001 - an unreadable file is of no kind that can be told
        return None
    return _kind_of(found)


def damaged_checkpoint(path: str | Path, kind: str, exc: Exception) -> CheckpointError:
    """The error for a checkpoint of the right format that lacks or garbles a field (``exc`` says which)."""
    what = f"missing {exc.args[0]!r}" if isinstance(exc, KeyError) and exc.args else f"{type(exc).__name__}: {exc}"
    return CheckpointError(f"{str(path)!r} is a damaged {kind} checkpoint ({what}): retrain the router and save it again")


def check_load_options(cls: type, options: Mapping[str, Any]) -> None:
    """`ConfigurationError` naming an option given to ``cls.load`` that its constructor does not take (not a raw
    `TypeError` from building the router)."""
    takes = _constructor_defaults(cls)
    unknown = sorted(set(options) - set(takes))
    if unknown:
        raise ConfigurationError(
            f"router {getattr(cls, 'name', cls.__name__)!r} takes no option {', '.join(map(repr, unknown))}; "
            f"its options: {', '.join(sorted(takes))}"
        )


def with_article(kind: str) -> str:
    """``kind`` with its article, as the name is read aloud: an agent-router, an mlp, an mf, a knn, a set-router."""
    return f"{'an' if kind[0] in 'aeio' or kind in ('mlp', 'mf') else 'a'} {kind}"


def _unreadable(path: Path, exc: Exception) -> str:
    """Why torch could not read ``path`` safely, told without loading it unsafely."""
    import pickle
    import zipfile

    import torch

    if path.stat().st_size == 0:
        return "the file is empty"
    if not zipfile.is_zipfile(path):
        return "not a file torch.save wrote, or one cut short"
    if isinstance(exc, pickle.UnpicklingError):
        try:  # lists the code the file would call when unpickled, without calling it
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001 - a damaged archive: say so below
            names = []
        if names and all(name.startswith("numpy") for name in names):
            return ("it was saved by an older Orchestra, whose checkpoints held numpy objects that a safe load "
                    "refuses: retrain the router and save it again")
        if names:
            return f"it holds Python objects ({', '.join(names[:5])}) that loading would run: refused"
    if checkpoint_kind(path) == "set-router":
        return "it is a set-router checkpoint (.npz)"
    return f"torch cannot read it ({str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__})"


def _constructor_defaults(cls: type) -> dict[str, Any]:
    """Every option of ``cls``'s constructor chain with its default (a subclass's default wins)."""
    defaults: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        init = vars(klass).get("__init__")
        if init is None or klass is object:
            continue
        for parameter in inspect.signature(init).parameters.values():
            if parameter.default is not parameter.empty:
                defaults[parameter.name] = parameter.default
    return defaults


class RecordsGivenOptions:
    """Base of the routers that take ``checkpoint=``: each constructor call records the names of the options it
    was given (``_given_options``), so that `adopt_checkpoint` overrides the saved options with exactly those.
    Without it an option given at its default value (``KnnRouter(checkpoint=path, k=100)``, 100 being the
    default) could not be told from one left out, and the saved value won without a word."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording(self: Any, *args: Any, **options: Any) -> None:
            if "_given_options" not in vars(self):  # the outermost constructor's call: what the caller gave
                try:
                    bound = signature.bind(self, *args, **options).arguments
                except TypeError:  # the constructor itself says what is wrong
                    bound = {}
                names = set()
                for name, value in bound.items():
                    kind = signature.parameters[name].kind
                    names |= set(value) if kind is inspect.Parameter.VAR_KEYWORD else set() if name == "self" else {name}
                vars(self)["_given_options"] = frozenset(names)
            init(self, *args, **options)

        cls.__init__ = recording  # type: ignore[method-assign]


def adopt_checkpoint(router: Any, checkpoint: str | Path, embedder: Any) -> None:
    """Make ``router``, just built with ``checkpoint=...``, the router its class's ``load(checkpoint)`` gives: the
    saved options and state, except the options given to the constructor beside ``checkpoint``, which override
    the saved ones as ``load``'s keyword options do (`RecordsGivenOptions` records which were given; for a class
    without it, an option counts as given when it differs from its default)."""
    recorded = vars(router).get("_given_options")
    defaults = _constructor_defaults(type(router))
    given = {
        name: getattr(router, name)
        for name, default in defaults.items()
        if name not in ("checkpoint", "embedder") and name in vars(router)
        and (name in recorded if recorded is not None else getattr(router, name) != default)
    }
    loaded = type(router).load(checkpoint, embedder=embedder, **given)
    vars(router).update(vars(loaded))


class HashingEmbedder:
    """A deterministic, model-free stand-in for the project's `Embedder`: hashed bags of lower-cased words and
    character trigrams, L2-normalised. No semantics, but texts sharing words land close together: enough for
    tests and for machines without the embedding package. Same ``encode(texts) -> (n, dim)`` and ``dim``."""

    def __init__(self, dim: int = 256) -> None:
        self.dim = int(dim)
        """Width of one embedding."""

    @property
    def name(self) -> str:
        """``hashing-<dim>``: what a checkpoint records, and all it takes to build the same embedder again."""
        return f"hashing-{self.dim}"

    def _bucket(self, token: str) -> tuple[int, float]:
        import hashlib

        digest = int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(), "little")
        return digest % self.dim, 1.0 if (digest >> 32) & 1 else -1.0

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit rows of shape (len(texts), dim), float32; an empty text gives a zero row."""
        import re

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            words = re.findall(r"\w+", text.lower())
            grams = [w[k : k + 3] for w in words for k in range(max(1, len(w) - 2))]
            for token in [*words, *(f"#{g}" for g in grams)]:
                j, sign = self._bucket(token)
                out[i, j] += sign
            norm = np.linalg.norm(out[i])
            if norm > 0:
                out[i] /= norm
        return out


DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
"""The name of the project's offline embedder (`orchestra.embeddings.get_embedder`), a router's when given none."""


def embedder_name(embedder: Any) -> str:
    """What a router's embeddings come from, as its checkpoint records it: the embedder's ``name`` (the project's
    `Embedder` and `HashingEmbedder` have one), else its class's; ``None`` stands for the project's MiniLM."""
    if embedder is None:
        return DEFAULT_EMBEDDER
    name = getattr(embedder, "name", None)
    return name if isinstance(name, str) and name else type(embedder).__name__


def checkpoint_embedder(recorded: Any, given: Any, path: str | Path, kind: str) -> Any:
    """The embedder for a router loaded from ``path``, whose checkpoint recorded the embedder it was trained on
    as ``recorded`` (`embedder_name`; ``None`` in checkpoints saved before it was kept: no check), with
    ``given`` the one passed to ``load`` (``None``: none). The project's MiniLM (returned as ``None``, the default)
    and `HashingEmbedder` are rebuilt from the name, so the command line and the UI, which cannot pass an
    embedder, serve routers trained on either. `CheckpointError` when ``given`` is another embedder than the
    recorded one, or when none is given and only Python can give it: another encoder's vectors of the same
    width would pass the width check and route at random."""
    if recorded is None:
        return given
    if not isinstance(recorded, str):
        raise CheckpointError(f"{str(path)!r} is a damaged {kind} checkpoint (its embedder is {recorded!r})")
    if given is not None:
        if embedder_name(given) != recorded:
            raise CheckpointError(
                f"{kind} checkpoint {str(path)!r} was trained on embeddings of {recorded!r}, but the embedder given "
                f"is {embedder_name(given)!r}: give it the embedder it was trained on"
            )
        return given
    if recorded == DEFAULT_EMBEDDER:
        return None
    hashing = re.fullmatch(r"hashing-([1-9][0-9]{0,5})", recorded)
    if hashing:
        return HashingEmbedder(int(hashing.group(1)))
    raise CheckpointError(
        f"{kind} checkpoint {str(path)!r} was trained on embeddings of {recorded!r}, which only Python can give: "
        "load it with embedder= that embedder (the command line and the UI build only the project's MiniLM "
        "and the hashing embedder)"
    )


class ModelRouter(RecordsGivenOptions, BaseRouter):
    """Base of model routers: predicts quality and cost per (query, model) and picks the best utility.

    Subclasses implement `_fit_quality` and `_quality` (for models seen in training); the base class handles
    costs, tasks, embeddings, unseen models and the decision. A model not seen in training gets the quality
    column of the seen model whose card description is most similar (baselines cannot do better without
    retraining; GraphRouter overrides this with a new graph node).
    """

    name: ClassVar[str] = "model-router"
    needs_training: ClassVar[bool] = True
    checkpoint_format: ClassVar[str | None] = None
    """``orchestra.<name>/<version>`` of the router's checkpoints (`save`, `load`); ``None``: it keeps none."""

    def __init__(
        self,
        agent_id: str | None = None,
        *,
        text_window: int = DEFAULT_TEXT_WINDOW,
        seed: int = 0,
        embedder: Any = None,
        checkpoint: str | None = None,
    ) -> None:
        self.checkpoint = checkpoint
        """The file this router was loaded from (`load`); given to a router that keeps checkpoints, it is loaded."""
        self.agent_id = agent_id
        """The LLM agent whose model this router chooses; ``None``: the first agent with ``backend == "model"``."""
        self.text_window = int(text_window)
        self.seed = int(seed)
        check_embedder(embedder)
        self.embedder = embedder
        """Anything with ``encode(texts) -> (n, dim)`` unit rows; ``None``: the project's offline MiniLM."""
        self.model_ids: list[str] = []
        """Models seen in training, in the column order of the quality predictors."""
        self.card_costs: dict[str, float | None] = {}
        self.trained_prices: dict[str, tuple[float, float]] = {}
        """Input and output prices of each priced card at training, by id, so that a price changed since scales
        the trained mean cost (`price_scale`); empty for a router loaded from a checkpoint that kept none."""
        self.embedding_dim: int | None = None
        """Width of the embeddings it was trained on (set by the first encoding, kept in its checkpoint): an
        embedder of another width is refused rather than met with a shape error at the first decision."""
        self._task_model_cost: dict[tuple[str, str], float] = {}
        self._model_cost: dict[str, float] = {}
        self.tasks: list[str] = []
        self._task_centroids: np.ndarray | None = None
        self._card_vectors: dict[tuple[str, str], np.ndarray] = {}
        self.fitted = False

    # ------------------------------------------------------------------------------------------ training
    def fit(
        self,
        train: Sequence[ModelQuery],
        cards: Sequence[ModelCard],
        *,
        val: Sequence[ModelQuery] = (),
        weights: Sequence[float] = (),
        card_costs: Mapping[str, float | None] | None = None,
        seed: int | None = None,
    ) -> Self:
        """Learn from queries with recorded outcomes of the models in ``cards``; ``val`` is for model
        selection, ``weights`` the cost weights the router will be asked about (GraphRouter trains for them)."""
        if seed is not None:
            self.seed = int(seed)
        check_training_data(self.name, train, val, cards)
        self.model_ids = [card.id for card in cards]
        self.card_costs = dict(card_costs or {})
        self.trained_prices = training_prices(cards)
        self._fit_costs(train)
        self._fit_tasks(train)
        self._fit_quality(list(train), list(val), list(cards), [check_weight(w) for w in weights])
        self.fitted = True
        return self

    def _fit_costs(self, train: Sequence[ModelQuery]) -> None:
        sums: dict[tuple[str, str], list[float]] = {}
        for row in train:
            for model_id, outcome in row.outcomes.items():
                if outcome.cost is None:
                    continue
                sums.setdefault(("", model_id), []).append(outcome.cost)
                if row.task:
                    sums.setdefault((row.task, model_id), []).append(outcome.cost)
        means = {key: float(np.mean(values)) for key, values in sums.items()}
        self._model_cost = {m: c for (task, m), c in means.items() if task == ""}
        self._task_model_cost = {key: c for key, c in means.items() if key[0] != ""}

    def _fit_tasks(self, train: Sequence[ModelQuery]) -> None:
        # the task centroids infer an untagged query's task from its embedding: a router that embeds nothing never
        # reads them (it used to embed every training query for them, minutes of MiniLM on routerbench)
        self.tasks = sorted({row.task for row in train if row.task}) if self.uses_embeddings else []
        if not self.tasks:
            self._task_centroids = None
            return
        vectors = self.embed_queries(train)
        labels = np.array([row.task for row in train])
        centroids = np.stack([vectors[labels == task].mean(axis=0) for task in self.tasks])
        self._task_centroids = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)

    def _fit_quality(
        self, train: list[ModelQuery], val: list[ModelQuery], cards: list[ModelCard], weights: list[float]
    ) -> None:
        """Learn the quality predictor (subclasses)."""

    # ------------------------------------------------------------------------------------------ inputs
    def _texts_and_tasks(self, queries: Sequence[QueryLike]) -> tuple[list[str], list[str | None]]:
        texts = [q.query if isinstance(q, ModelQuery) else str(q) for q in queries]
        tasks = [(q.task or None) if isinstance(q, ModelQuery) else None for q in queries]
        return texts, tasks

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``texts`` with this router's embedder (the project's MiniLM unless one was given)."""
        if self.embedder is None:
            from orchestra.embeddings import get_embedder

            self.embedder = get_embedder()
        vectors = np.asarray(self.embedder.encode(list(texts)), dtype=np.float32)
        if vectors.ndim == 2 and vectors.shape[0]:
            if self.embedding_dim is None:
                self.embedding_dim = int(vectors.shape[1])
            elif vectors.shape[1] != self.embedding_dim:
                raise CheckpointError(
                    f"{self.name}: trained on {self.embedding_dim}-dimensional embeddings, but its embedder "
                    f"({type(self.embedder).__name__}) gives {vectors.shape[1]}: give it the embedder it was trained with"
                )
        return vectors

    def _window(self, text: str) -> str:
        text = text.strip()
        return text[-self.text_window :] if self.text_window > 0 else text

    def embed_queries(self, queries: Sequence[QueryLike]) -> np.ndarray:
        """Unit embeddings of the queries' last ``text_window`` characters, shape (n, dim)."""
        texts, _ = self._texts_and_tasks(queries)
        return self.encode([self._window(t) for t in texts])

    def infer_tasks(self, embeddings: np.ndarray, tasks: Sequence[str | None]) -> list[str]:
        """Each query's task: the given one, else the training task whose centroid is nearest."""
        if self._task_centroids is None:
            return [task or "" for task in tasks]
        nearest = np.argmax(embeddings @ self._task_centroids.T, axis=1)
        return [task or self.tasks[int(nearest[i])] for i, task in enumerate(tasks)]

    def card_vectors(self, cards: Sequence[ModelCard]) -> np.ndarray:
        """Unit embeddings of the cards' routing text (id and description), cached by id and text."""
        missing = [c for c in cards if (c.id, c.routing_text()) not in self._card_vectors]
        if missing:
            vectors = self.encode([c.routing_text() for c in missing])
            for card, vector in zip(missing, vectors, strict=True):
                self._card_vectors[(card.id, card.routing_text())] = vector
        return np.stack([self._card_vectors[(c.id, c.routing_text())] for c in cards])

    # ------------------------------------------------------------------------------------------ prediction
    def _not_trained(self) -> DecisionError:
        """The error of a decision asked of a router that has not learnt yet, saying how to give it what it learnt."""
        return DecisionError(
            f"router {self.name!r} is not trained: call fit(), or pass checkpoint=PATH of a saved router (--option checkpoint=PATH)"
        )

    def _costs(self, texts: Sequence[str], tasks: Sequence[str], cards: Sequence[ModelCard]) -> np.ndarray:
        """Predicted USD per (query, card): the mean cost measured in training (by task, else overall, else the
        set's ``card_costs``), scaled by `price_scale` when the card's prices changed since training (a measured
        mean beats a card estimate, but the user who updates a price expects it to count); a card with no such
        mean costs its price estimate."""
        costs = np.full((len(texts), len(cards)), np.nan)
        for j, card in enumerate(cards):
            base = self._model_cost.get(card.id)
            if base is None:
                base = self.card_costs.get(card.id)
            scale = price_scale(card, self.trained_prices, texts)
            for i, task in enumerate(tasks):
                value = self._task_model_cost.get((task, card.id), base)
                if value is None:
                    value = estimate_cost(card, texts[i], None)
                elif scale[i] != 1.0:
                    value = value * scale[i]
                costs[i, j] = np.nan if value is None else value
        if np.isnan(costs).any():
            # an unpriced, unseen model is assumed as dear as the dearest known candidate (never free)
            fallback = np.nanmax(costs, axis=1, keepdims=True) if not np.isnan(costs).all() else np.ones((len(texts), 1))
            costs = np.where(np.isnan(costs), np.nan_to_num(fallback, nan=1.0), costs)
        return costs

    def _quality(self, embeddings: np.ndarray, tasks: list[str], texts: list[str]) -> np.ndarray:
        """Predicted quality of each seen model (columns in ``self.model_ids`` order), shape (n, len(seen))."""
        raise NotImplementedError

    def _map_columns(self, seen_quality: np.ndarray, cards: Sequence[ModelCard]) -> np.ndarray:
        index = {m: j for j, m in enumerate(self.model_ids)}
        unseen = [c for c in cards if c.id not in index]
        nearest: dict[str, int] = {}
        if unseen and self.model_ids:
            seen_cards = [c for c in cards if c.id in index]
            if seen_cards:
                sims = self.card_vectors(unseen) @ self.card_vectors(seen_cards).T
                for u, card in enumerate(unseen):
                    nearest[card.id] = index[seen_cards[int(np.argmax(sims[u]))].id]
        columns = []
        for card in cards:
            j = index.get(card.id, nearest.get(card.id))
            columns.append(seen_quality[:, j] if j is not None else np.full(len(seen_quality), 0.5))
        return np.stack(columns, axis=1) if columns else np.zeros((len(seen_quality), 0))

    def predict(self, queries: Sequence[QueryLike], model_cards: Sequence[ModelCard]) -> tuple[np.ndarray, np.ndarray]:
        """Predicted quality in [0, 1] and cost in USD for each query and model card: two (n, m) arrays."""
        if self.needs_training and not self.fitted:
            raise self._not_trained()
        if not model_cards:
            raise DecisionError(f"router {self.name!r}: no model cards to choose from")
        texts, given_tasks = self._texts_and_tasks(queries)
        embeddings = self.embed_queries(queries) if self.uses_embeddings else np.zeros((len(texts), 1), np.float32)
        tasks = self.infer_tasks(embeddings, given_tasks) if self.uses_embeddings else [t or "" for t in given_tasks]
        quality = self._map_columns(self._quality(embeddings, tasks, texts), model_cards)
        return np.clip(quality, 0.0, 1.0), self._costs(texts, tasks, model_cards)

    uses_embeddings: ClassVar[bool] = True
    break_ties: ClassVar[bool] = False
    """Whether a tie of utilities goes to the better model, then to the cheaper, rather than to the first card.
    Only the oracle's ties are real (several models answer right); a learned router's are mostly an onboarded
    model's copied prediction, whose price says nothing of its quality."""

    def utilities(
        self, queries: Sequence[QueryLike], model_cards: Sequence[ModelCard], w: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(utility, quality, cost), each (n, m), at cost weight ``w``."""
        quality, costs = self.predict(queries, model_cards)
        return utility(quality, costs, w), quality, costs

    def route_batch(
        self, queries: Sequence[QueryLike], model_cards: Sequence[ModelCard], w: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Chosen model index per query and the (utility, quality, cost) matrices behind the choice."""
        check_weight(w)
        values, quality, costs = self.utilities(queries, model_cards, w)
        if not self.break_ties:
            return np.argmax(values, axis=1), values, quality, costs
        tied = values >= values.max(axis=1, keepdims=True) - 1e-12
        quality_of_tied = np.where(tied, quality, -np.inf)
        best = quality_of_tied >= quality_of_tied.max(axis=1, keepdims=True) - 1e-12
        return np.argmin(np.where(best, costs, np.inf), axis=1), values, quality, costs

    def route_one(
        self, query: str, model_cards: Sequence[ModelCard], w: float, *, task: str | None = None
    ) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """One query's choice: (index, utility row, quality row, cost row)."""
        item: QueryLike = ModelQuery(id="q", query=query, task=task) if task else query
        chosen, values, quality, costs = self.route_batch([item], model_cards, w)
        return int(chosen[0]), values[0], quality[0], costs[0]

    def calibrate_cost_weight(
        self,
        queries: Sequence[QueryLike],
        model_cards: Sequence[ModelCard],
        *,
        mean_cost: float | None = None,
        share: tuple[str, float] | None = None,
        tolerance: float = 1e-6,
    ) -> float:
        """The cost weight w that meets a target on ``queries`` (RouteLLM's threshold calibration): the smallest w
        at which the mean *predicted* cost of the chosen models is at most ``mean_cost`` USD, or at which the share
        of queries routed to ``share[0]`` is at most ``share[1]``; so the best quality the target allows. Found by
        bisection over [0, 1] to ``tolerance``, on queries like those the router will serve (unlabelled ones will
        do: nothing but the router's predictions is read). A chosen model's cost never rises with w, so the mean
        cost and the most expensive model's share fall as w grows; another model's share need not, and then the
        w found is one where it crosses the target. `PolicyError` for no target or two, a share outside [0, 1] or
        of a model not among ``model_cards``, a negative cost, and a target no w in [0, 1] meets."""
        column = check_cost_target(self.name, [card.id for card in model_cards], mean_cost=mean_cost, share=share)
        if not queries:
            raise PolicyError(f"{self.name}: no queries to calibrate the cost weight on")

        def meets(w: float) -> bool:
            chosen, _, _, costs = self.route_batch(queries, model_cards, w)
            if share is not None:
                return float(np.mean(chosen == column)) <= share[1] + 1e-12
            # check_cost_target let exactly one target through: the mean cost
            return float(costs[np.arange(len(chosen)), chosen].mean()) <= cast(float, mean_cost) + 1e-15

        if meets(0.0):
            return 0.0
        if not meets(1.0):
            wanted = f"a mean cost of ${mean_cost:g}" if share is None else f"a share of {share[1]:g} for {share[0]!r}"
            raise PolicyError(f"{self.name}: no cost weight in [0, 1] reaches {wanted} on these queries (w = 1 picks the cheapest)")
        low, high = 0.0, 1.0  # low fails, high meets
        while high - low > tolerance:
            middle = (low + high) / 2
            low, high = (low, middle) if meets(middle) else (middle, high)
        return high

    # ------------------------------------------------------------------------------------------ decision
    def _served_agent(self, state: RouterState) -> str:
        if self.agent_id is not None:
            if state.agent(self.agent_id) is None:
                raise DecisionError(f"{self.name}: agent {self.agent_id!r} is not in the registry")
            return self.agent_id
        for card in state.agents:
            if card.backend == "model":
                return card.id
        raise DecisionError(f"{self.name}: no agent with backend 'model' to choose a model for")

    def decide(self, state: RouterState) -> Dispatch:
        """Choose the model behind the served LLM agent for ``state.query`` at ``state.policy.cost_weight``."""
        agent_id = self._served_agent(state)
        cards = list(state.models)
        if not cards:
            raise DecisionError(f"{self.name}: the registry holds no model cards to choose from")
        w = check_weight(state.policy.cost_weight)
        chosen, values, quality, costs = self.route_one(state.query, cards, w)
        order = np.argsort(-values, kind="stable")
        scores = tuple(
            CandidateScore(
                id=cards[j].id,
                score=float(values[j]),
                detail={"quality": float(quality[j]), "cost_usd": float(costs[j])},
            )
            for j in order
        )
        model_id = cards[chosen].id
        rationale = (
            f"{model_id}: predicted quality {quality[chosen]:.3f} at ${costs[chosen]:.6f}/query, "
            f"best utility {values[chosen]:.3f} at cost weight w={w:g}"
        )
        return Dispatch(
            calls=(Call(agent_id=agent_id, query=state.query, model_id=model_id),),
            rationale=rationale,
            scores=scores,
            meta=choice_meta(self.name, w, quality[chosen], costs[chosen]),
        )

    # ------------------------------------------------------------------------------------------ checkpoints
    def _checkpoint_state(self) -> dict[str, Any]:
        """What the router learnt beyond the shared tables, as tensors and plain data (subclasses)."""
        raise ConfigurationError(f"router {self.name!r} keeps no checkpoint")

    def _restore_state(self, state: Mapping[str, Any]) -> None:
        """Take back what `_checkpoint_state` saved (subclasses)."""

    def save(self, path: str | Path) -> Path:
        """Write the trained router (its options, costs, tasks and what it learnt) to ``path``, as tensors and
        plain data that `load` reads without running code from the file; the folder is created when missing."""
        if self.checkpoint_format is None:
            raise ConfigurationError(f"router {self.name!r} keeps no checkpoint")
        if not self.fitted:
            raise DecisionError(f"{self.name}: nothing to save, the router is not trained")
        options = _constructor_defaults(type(self))
        return save_checkpoint(path, {
            "format": self.checkpoint_format,
            "options": {key: value for key, value in self.describe().items() if key in options and key not in ("embedder", "checkpoint")},
            "model_ids": self.model_ids,
            "card_costs": self.card_costs,
            "model_cost": self._model_cost,
            "task_model_cost": [[task, model, cost] for (task, model), cost in self._task_model_cost.items()],
            "tasks": self.tasks,
            "task_centroids": self._task_centroids,
            "embedding_dim": self.embedding_dim,
            "embedder": embedder_name(self.embedder),
            "trained_prices": {model_id: list(prices) for model_id, prices in self.trained_prices.items()},
            "state": self._checkpoint_state(),
        })

    @classmethod
    def load(cls, path: str | Path, *, expected_models: Sequence[str] | None = None, **options: Any) -> Self:
        """A router saved by `save`, with the options it was saved with; an option given here overrides the saved
        one. With ``expected_models`` (the model ids it will route among, without the ones to onboard by card), a
        checkpoint trained for another set raises `CheckpointError` naming them."""
        if cls.checkpoint_format is None:
            raise ConfigurationError(f"router {cls.name!r} keeps no checkpoint")
        options.pop("checkpoint", None)  # this call is the loading: the router must not load the file again
        check_load_options(cls, options)
        data = load_checkpoint(path, cls.checkpoint_format)
        try:
            return cls._from_checkpoint(data, path, expected_models, options)
        except OrchestraError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as exc:
            raise damaged_checkpoint(path, cls.name, exc) from None

    @classmethod
    def _from_checkpoint(
        cls, data: Mapping[str, Any], path: str | Path, expected_models: Sequence[str] | None, options: Mapping[str, Any]
    ) -> Self:
        trained = list(data["model_ids"])
        if expected_models is not None and set(expected_models) != set(trained):
            missing = sorted(set(trained) - set(expected_models))
            extra = sorted(set(expected_models) - set(trained))
            raise CheckpointError(
                f"{cls.name} checkpoint {str(path)!r} was trained for models {sorted(trained)}; expected "
                f"{sorted(expected_models)} (not in the expected set: {missing}; not in the checkpoint: {extra}). "
                "Retrain, or load for the trained set and onboard new models by card with add_model()"
            )
        embedder = checkpoint_embedder(data.get("embedder"), options.get("embedder"), path, cls.name)
        router = cls(**{**data["options"], **options, "embedder": embedder})
        router.model_ids, router.tasks = trained, list(data["tasks"])
        router.card_costs, router._model_cost = dict(data["card_costs"]), dict(data["model_cost"])
        router._task_model_cost = {(task, model): cost for task, model, cost in data["task_model_cost"]}
        centroids = data["task_centroids"]
        router._task_centroids = None if centroids is None else centroids.numpy()
        # absent from checkpoints saved before they were kept: no width check, no price scaling
        router.embedding_dim = data.get("embedding_dim")
        router.trained_prices = {model_id: tuple(prices) for model_id, prices in data.get("trained_prices", {}).items()}
        router._restore_state(data["state"])
        router.fitted = True
        # described, so that a replay rebuilds this router from the file, from whatever folder it runs in
        router.checkpoint = str(Path(path).expanduser().resolve())
        return router

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name, "agent_id": self.agent_id, "text_window": self.text_window, "seed": self.seed,
            "checkpoint": self.checkpoint,
            "trained": bool(self.needs_training and self.fitted),
        }


# ---------------------------------------------------------------------------------------------- baselines


class RandomRouter(ModelRouter):
    """A uniformly random model per query, whatever ``w`` (seeded)."""

    name = "random"
    needs_training = False
    uses_embeddings = False

    def __init__(self, agent_id: str | None = None, **options: Any) -> None:
        super().__init__(agent_id, **options)
        self._rng = np.random.default_rng(self.seed)

    def _fit_quality(
        self, train: list[ModelQuery], val: list[ModelQuery], cards: list[ModelCard], weights: list[float]
    ) -> None:
        self._rng = np.random.default_rng(self.seed)

    def _quality(self, embeddings: np.ndarray, tasks: list[str], texts: list[str]) -> np.ndarray:
        return self._rng.random((len(texts), max(1, len(self.model_ids))))

    def predict(self, queries: Sequence[QueryLike], model_cards: Sequence[ModelCard]) -> tuple[np.ndarray, np.ndarray]:
        texts, tasks = self._texts_and_tasks(queries)
        tasks_ = [t or "" for t in tasks]
        return self._rng.random((len(texts), len(model_cards))), self._costs(texts, tasks_, model_cards)

    def utilities(
        self, queries: Sequence[QueryLike], model_cards: Sequence[ModelCard], w: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        quality, costs = self.predict(queries, model_cards)
        return quality.copy(), quality, costs


class _CostOnlyRouter(ModelRouter):
    needs_training = False
    uses_embeddings = False
    sign: ClassVar[float] = -1.0

    def predict(self, queries: Sequence[QueryLike], model_cards: Sequence[ModelCard]) -> tuple[np.ndarray, np.ndarray]:
        texts, tasks = self._texts_and_tasks(queries)
        costs = self._costs(texts, [t or "" for t in tasks], model_cards)
        return np.full(costs.shape, np.nan), costs

    def utilities(
        self, queries: Sequence[QueryLike], model_cards: Sequence[ModelCard], w: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        quality, costs = self.predict(queries, model_cards)
        return self.sign * normalise_costs(costs), np.nan_to_num(quality, nan=0.0), costs


class CheapestRouter(_CostOnlyRouter):
    """Always the model of lowest predicted cost, whatever ``w``."""

    name = "cheapest"
    sign = -1.0


class LargestRouter(_CostOnlyRouter):
    """Always the model of highest predicted cost (the largest, as a price proxy), whatever ``w``."""

    name = "largest"
    sign = 1.0


class BestSingleRouter(ModelRouter):
    """The same quality for every query: each model's mean score on train. At ``w = 0`` this is the best single
    model; along ``w`` it walks the single models' cost-quality trade-off."""

    name = "best-single"
    uses_embeddings = False

    def _fit_quality(
        self, train: list[ModelQuery], val: list[ModelQuery], cards: list[ModelCard], weights: list[float]
    ) -> None:
        self._mean = np.array(
            [np.mean([r.outcomes[m].score for r in train if m in r.outcomes] or [0.0]) for m in self.model_ids]
        )

    def _quality(self, embeddings: np.ndarray, tasks: list[str], texts: list[str]) -> np.ndarray:
        return np.tile(self._mean, (len(texts), 1))


def _score_matrix(rows: Sequence[ModelQuery], model_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Scores (n, m) with 0 where missing, and the mask of recorded outcomes."""
    scores = np.zeros((len(rows), len(model_ids)), dtype=np.float32)
    mask = np.zeros_like(scores)
    for i, row in enumerate(rows):
        for j, m in enumerate(model_ids):
            outcome = row.outcomes.get(m)
            if outcome is not None:
                scores[i, j] = outcome.score
                mask[i, j] = 1.0
    return scores, mask


class KnnRouter(ModelRouter):
    """Quality = each model's mean score over the ``k`` training queries nearest by cosine similarity."""

    name = "knn"
    checkpoint_format = "orchestra.knn/1"

    def __init__(self, agent_id: str | None = None, *, k: int = 100, **options: Any) -> None:
        check_whole_numbers("knn", {"k": (k, 1)})  # 2.5 became 2 without a word
        super().__init__(agent_id, **options)
        self.k = int(k)
        if self.checkpoint:
            adopt_checkpoint(self, self.checkpoint, self.embedder)

    def _checkpoint_state(self) -> dict[str, Any]:
        return {"vectors": self._vectors, "scores": self._scores, "mask": self._mask}

    def _restore_state(self, state: Mapping[str, Any]) -> None:
        self._vectors, self._scores, self._mask = (state[key].numpy() for key in ("vectors", "scores", "mask"))

    def _fit_quality(
        self, train: list[ModelQuery], val: list[ModelQuery], cards: list[ModelCard], weights: list[float]
    ) -> None:
        rows = train + val  # kNN has nothing to select on validation: use every labelled query
        self._vectors = self.embed_queries(rows)
        self._scores, self._mask = _score_matrix(rows, self.model_ids)

    def _quality(self, embeddings: np.ndarray, tasks: list[str], texts: list[str]) -> np.ndarray:
        k = min(self.k, len(self._vectors))
        sims = embeddings @ self._vectors.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        total = self._scores[top].sum(axis=1)
        count = self._mask[top].sum(axis=1)
        return np.where(count > 0, total / np.maximum(count, 1), 0.5)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "k": self.k}


class _TorchQualityRouter(ModelRouter):
    """Shared training of the neural quality predictors: BCE against recorded scores (missing outcomes masked),
    AdamW, early stopping on validation loss, best state kept."""

    def __init__(
        self,
        agent_id: str | None = None,
        *,
        epochs: int = 200,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 256,
        patience: int = 20,
        **options: Any,
    ) -> None:
        check_whole_numbers(type(self).__name__, {"epochs": (epochs, 1), "batch_size": (batch_size, 1), "patience": (patience, 0)})
        if not lr > 0 or not weight_decay >= 0:
            raise PolicyError(f"{type(self).__name__}: 'lr' > 0 and 'weight_decay' >= 0 are required, got {lr!r} and {weight_decay!r}")
        super().__init__(agent_id, **options)
        self.epochs, self.lr, self.weight_decay = int(epochs), float(lr), float(weight_decay)
        self.batch_size, self.patience = int(batch_size), int(patience)

    def _network(self, dim: int, n_models: int) -> Any:
        raise NotImplementedError

    def _fit_quality(
        self, train: list[ModelQuery], val: list[ModelQuery], cards: list[ModelCard], weights: list[float]
    ) -> None:
        with torch_threads(1):
            self._train(train, val)

    def _train(self, train: list[ModelQuery], val: list[ModelQuery]) -> None:
        import torch

        torch.manual_seed(self.seed)
        if not val:  # carve a validation slice so that early stopping has something to watch
            cut = max(1, len(train) // 10)
            train, val = train[cut:], train[:cut]
        x = torch.from_numpy(self.embed_queries(train))
        y, m = (torch.from_numpy(a) for a in _score_matrix(train, self.model_ids))
        xv = torch.from_numpy(self.embed_queries(val))
        yv, mv = (torch.from_numpy(a) for a in _score_matrix(val, self.model_ids))
        self._dim = int(x.shape[1])
        self._net = self._network(self._dim, len(self.model_ids))
        optimiser = torch.optim.AdamW(self._net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none")
        generator = torch.Generator().manual_seed(self.seed)
        best, best_state, waited = math.inf, copy.deepcopy(self._net.state_dict()), 0
        for _ in range(self.epochs):
            self._net.train()
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), self.batch_size):
                batch = order[start : start + self.batch_size]
                loss = (loss_fn(self._net(x[batch]), y[batch]) * m[batch]).sum() / m[batch].sum().clamp(min=1)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            self._net.eval()
            with torch.no_grad():
                val_loss = float((loss_fn(self._net(xv), yv) * mv).sum() / mv.sum().clamp(min=1))
            if val_loss < best - 1e-5:
                best, best_state, waited = val_loss, copy.deepcopy(self._net.state_dict()), 0
            else:
                waited += 1
                if waited >= self.patience:
                    break
        self._net.load_state_dict(best_state)
        self._net.eval()
        self.best_val_loss = best

    def _quality(self, embeddings: np.ndarray, tasks: list[str], texts: list[str]) -> np.ndarray:
        import torch

        with torch.no_grad():
            return torch.sigmoid(self._net(torch.from_numpy(np.ascontiguousarray(embeddings)))).numpy()

    def _checkpoint_state(self) -> dict[str, Any]:
        return {"net": self._net.state_dict(), "dim": self._dim, "best_val_loss": self.best_val_loss}

    def _restore_state(self, state: Mapping[str, Any]) -> None:
        self._dim, self.best_val_loss = int(state["dim"]), float(state["best_val_loss"])
        self._net = self._network(self._dim, len(self.model_ids))
        self._net.load_state_dict(state["net"])
        self._net.eval()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "epochs": self.epochs, "lr": self.lr, "weight_decay": self.weight_decay,
                "batch_size": self.batch_size, "patience": self.patience}


class MlpRouter(_TorchQualityRouter):
    """An MLP from the query embedding to one correctness logit per model."""

    name = "mlp"
    checkpoint_format = "orchestra.mlp/1"

    def __init__(self, agent_id: str | None = None, *, hidden: int = 256, dropout: float = 0.2, **options: Any) -> None:
        check_whole_numbers("MlpRouter", {"hidden": (hidden, 1)})
        if not 0 <= dropout < 1:
            raise PolicyError(f"MlpRouter 'dropout' must lie in [0, 1), got {dropout!r}")
        super().__init__(agent_id, **options)
        self.hidden, self.dropout = int(hidden), float(dropout)
        if self.checkpoint:
            adopt_checkpoint(self, self.checkpoint, self.embedder)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "hidden": self.hidden, "dropout": self.dropout}

    def _network(self, dim: int, n_models: int) -> Any:
        from torch import nn

        return nn.Sequential(
            nn.Linear(dim, self.hidden), nn.ReLU(), nn.Dropout(self.dropout), nn.Linear(self.hidden, n_models)
        )


class _MatrixFactorisation:
    """RouteLLM's MF scorer, ``classifier(P[model] * proj(query))``, for N models at once, with a per-model bias
    (RouteLLM's pairwise difference cancels biases; a per-model correctness score needs one)."""

    def __new__(cls, dim: int, n_models: int, rank: int) -> Any:
        import torch
        from torch import nn

        class MF(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.models = nn.Parameter(torch.randn(n_models, rank) * 0.1)
                self.projection = nn.Linear(dim, rank, bias=False)
                self.classifier = nn.Linear(rank, 1, bias=False)
                self.bias = nn.Parameter(torch.zeros(n_models))

            def forward(self, x: Any) -> Any:
                query = self.projection(x)  # (n, rank)
                models = nn.functional.normalize(self.models, dim=1)  # as RouteLLM, unit model embeddings
                return self.classifier(query[:, None, :] * models[None, :, :]).squeeze(-1) + self.bias

        return MF()


class MfRouter(_TorchQualityRouter):
    """Matrix factorisation (RouteLLM's MF generalised to N models): a learned vector per model, a projection of
    the query embedding, their elementwise product through a linear classifier, one correctness logit per model."""

    name = "mf"
    checkpoint_format = "orchestra.mf/1"

    def __init__(self, agent_id: str | None = None, *, rank: int = 128, **options: Any) -> None:
        check_whole_numbers("MfRouter", {"rank": (rank, 1)})
        super().__init__(agent_id, **options)
        self.rank = int(rank)
        if self.checkpoint:
            adopt_checkpoint(self, self.checkpoint, self.embedder)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "rank": self.rank}

    def _network(self, dim: int, n_models: int) -> Any:
        return _MatrixFactorisation(dim, n_models, self.rank)


class OracleRouter(ModelRouter):
    """The upper bound: quality and cost are the recorded test outcomes (`reveal`). Benchmark use only."""

    name = "oracle"
    uses_embeddings = False
    break_ties = True  # the cheapest correct model, whatever the order of models.jsonl

    def __init__(self, agent_id: str | None = None, **options: Any) -> None:
        super().__init__(agent_id, **options)
        self._by_id: dict[str, ModelQuery] = {}
        self._by_text: dict[str, ModelQuery] = {}

    def reveal(self, rows: Sequence[ModelQuery]) -> None:
        """Give the oracle the outcomes of the queries it will be asked about. A query routed as a row is matched
        by its id (two rows may share a text and not their outcomes), a bare text by its text."""
        self._by_id.update({row.id: row for row in rows})
        self._by_text.update({row.query: row for row in rows})

    def predict(self, queries: Sequence[QueryLike], model_cards: Sequence[ModelCard]) -> tuple[np.ndarray, np.ndarray]:
        texts, _ = self._texts_and_tasks(queries)
        quality = np.zeros((len(texts), len(model_cards)))
        costs = np.zeros_like(quality)
        for i, (query, text) in enumerate(zip(queries, texts, strict=True)):
            row = self._by_id.get(query.id) if isinstance(query, ModelQuery) else None
            if row is None or row.query != text:
                row = self._by_text.get(text)
            if row is None:
                raise DecisionError("oracle: no revealed outcomes for this query (the oracle is benchmark-only)")
            for j, card in enumerate(model_cards):
                outcome = row.outcomes.get(card.id)
                quality[i, j] = outcome.score if outcome else 0.0
                costs[i, j] = outcome.cost if outcome and outcome.cost is not None else np.inf
        finite = np.where(np.isfinite(costs), costs, np.nan)
        dearest = np.nan_to_num(np.nanmax(finite, axis=1, keepdims=True), nan=1.0)
        return quality, np.where(np.isfinite(costs), costs, dearest)
