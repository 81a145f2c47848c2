"""The searcher on synthetic unit vectors: the coarse pass + rescoring, exact, binary, in-memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeclip.index import search as search_module
from edgeclip.index.search import Searcher, hamming
from edgeclip.index.store import IndexSettings, Row, Store


def store_of(path: Path, vectors: np.ndarray, precision: str = "float16", kinds: list[str] | None = None) -> Store:
    store = Store(path, create=IndexSettings("sha", "m", {}, vectors.shape[1], precision))
    store.put([Row(f"i{n}", (kinds or ["image"] * len(vectors))[n], f"/p/{n}", "fp", "h", "", v) for n, v in enumerate(vectors)])
    return store


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    rows = rng.standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_hamming_counts_differing_bits() -> None:
    bits = np.array([[0b10110000, 0], [0, 0], [255, 255]], np.uint8)
    assert hamming(bits, np.array([0b10000000, 0], np.uint8)).tolist() == [2, 1, 15]


@pytest.mark.parametrize("in_memory", [True, False])
def test_coarse_then_rescore_equals_exact_when_the_pool_holds_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                         in_memory: bool) -> None:
    monkeypatch.setattr(search_module, "IN_MEMORY_BYTES", 2**30 if in_memory else 0)
    rng = np.random.default_rng(0)
    vectors = unit(rng, 300, 64)
    searcher = Searcher(store_of(tmp_path / "s.db", vectors))
    stored = vectors.astype(np.float16).astype(np.float32)
    for q in unit(rng, 5, 64):
        expected = np.argsort(-(stored @ q), kind="stable")[:10] + 1  # rowids from 1
        for exact in (True, False):
            hits = searcher.search(q, 10, exact=exact, candidates=300)
            assert [h.rowid for h in hits] == expected.tolist()
            np.testing.assert_allclose([h.score for h in hits], np.sort(stored @ q)[::-1][:10], atol=1e-5)
        few = searcher.search(q, 10, candidates=20)  # a small pool: best-first, from the stored scores
        assert [h.score for h in few] == sorted((h.score for h in few), reverse=True) and len(few) == 10


def test_kind_filter_and_binary_scores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search_module, "IN_MEMORY_BYTES", 0)
    rng = np.random.default_rng(1)
    vectors = unit(rng, 40, 64)
    kinds = ["text" if n % 4 == 0 else "image" for n in range(40)]
    searcher = Searcher(store_of(tmp_path / "k.db", vectors, kinds=kinds))
    assert {(h.rowid - 1) % 4 for h in searcher.search(vectors[0], 50, kind="text")} == {0}
    binary = Searcher(store_of(tmp_path / "b.db", vectors, precision="binary"))
    top = binary.search(vectors[7], 3)
    assert top[0].rowid == 8 and top[0].score == 1.0  # its own bits: distance 0


def test_a_search_sees_rows_committed_by_another_connection(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    writer = store_of(tmp_path / "w.db", unit(rng, 5, 32))
    searcher = Searcher(Store(tmp_path / "w.db"))
    assert len(searcher.search(unit(rng, 1, 32)[0], 50)) == 5
    writer.put([Row("new", "image", "/p/new", "fp", "h", "", unit(rng, 1, 32)[0])])
    assert len(searcher.search(unit(rng, 1, 32)[0], 50)) == 6
