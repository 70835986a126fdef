"""The embedder's caches: a text is embedded once, then served from memory or, in a new process, from disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from orchestra.embeddings import DiskCache, Embedder


class CountingModel:
    """A stand-in sentence encoder: deterministic unit vectors, counting what it is asked to encode."""

    def __init__(self) -> None:
        self.encoded: list[str] = []

    def get_embedding_dimension(self) -> int:
        return 8

    def encode(self, texts, **_: object) -> np.ndarray:
        self.encoded += list(texts)
        rows = np.array([[hash((t, i)) % 97 + 1 for i in range(8)] for t in texts], dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_texts_are_embedded_once_and_survive_a_restart_through_the_disk_cache(tmp_path: Path) -> None:
    model = CountingModel()
    embedder = Embedder(model, disk_cache=DiskCache(tmp_path / "e.sqlite", "m"))
    first = embedder.encode(["a", "b", "a"])
    assert model.encoded == ["a", "b"] and np.allclose(first[0], first[2])
    embedder.encode(["b", "c"])
    assert model.encoded == ["a", "b", "c"]

    restarted_model = CountingModel()
    restarted = Embedder(restarted_model, disk_cache=DiskCache(tmp_path / "e.sqlite", "m"))
    again = restarted.encode(["a", "b", "d"])
    assert restarted_model.encoded == ["d"]
    assert np.allclose(again[:2], first[:2])


def test_the_disk_cache_is_keyed_by_model(tmp_path: Path) -> None:
    Embedder(CountingModel(), disk_cache=DiskCache(tmp_path / "e.sqlite", "model-one")).encode(["x"])
    other = CountingModel()
    Embedder(other, disk_cache=DiskCache(tmp_path / "e.sqlite", "model-two")).encode(["x"])
    assert other.encoded == ["x"]
