"""Nearest neighbours over a Store: a coarse pass over sign bits, then exact rescoring.

The coarse pass ranks every item by Hamming distance between its sign bits and the query's (dim/8
bytes a row, held in memory: 128 MB for a million 1024-d items), keeps the best `candidates`, and
rescoring reads only those rows' stored vectors from the database and ranks them by dot product
(the stored vectors are unit rows, so this is cosine). `exact=True` scores every stored vector
instead: slower, and it reads them all, but it is the reference the default is measured against.
An index small enough (IN_MEMORY_BYTES of float16 vectors: 32k items at 1024 dims, 512k at 64) keeps
its vectors in memory and is always searched exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .store import Store

CANDIDATES = 400  # rescored after the sign-bit pass (bench.index: recall@10 1.0 at 100k with 200, 0.81 at 10k)
IN_MEMORY_BYTES = 64 * 2**20  # float16 bytes: a smaller index is searched exactly, from a float32 copy in memory
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def hamming(bits: np.ndarray, query: np.ndarray) -> np.ndarray:
    """(N, B) uint8 rows vs (B,) uint8 -> (N,) differing bits."""
    xor = np.bitwise_xor(bits, query)
    counts = np.bitwise_count(xor) if hasattr(np, "bitwise_count") else _POPCOUNT[xor]
    return counts.sum(axis=1, dtype=np.int32)


@dataclass(frozen=True)
class Hit:
    rowid: int
    score: float  # cosine (rescored or exact); for binary indexes, 1 - 2 * hamming / dim


class Searcher:
    """Keeps the sign bits in memory, reloaded when the database changes (an indexer may be writing)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._version: int | None = None
        self._rowids = np.zeros(0, np.int64)
        self._is_text = np.zeros(0, bool)
        self._bits = np.zeros((0, store.settings.dim // 8), np.uint8)
        self._vectors: np.ndarray | None = None  # (N, dim) float32, for indexes under IN_MEMORY_BYTES

    def _refresh(self) -> None:
        version = self.store.version()
        if version != self._version:
            self._rowids, self._is_text, self._bits = self.store.scan_bits()
            self._vectors = None
            if len(self._rowids) * self.store.settings.dim * 2 <= IN_MEMORY_BYTES and self.store.settings.precision != "binary":
                self._vectors = self.store.vectors(self._rowids)[1]  # small: exact search costs little
            self._version = version

    def search(self, query: np.ndarray, k: int, kind: str | None = None, exact: bool = False,
               candidates: int | None = None) -> list[Hit]:
        self._refresh()
        keep = np.ones(len(self._rowids), bool) if kind is None else (self._is_text == (kind == "text"))
        rowids = self._rowids[keep]
        if len(rowids) == 0:
            return []
        query = np.asarray(query, np.float32)
        dim = self.store.settings.dim
        if self.store.settings.precision == "binary":  # nothing to rescore with
            distance = hamming(self._bits[keep], np.packbits(query > 0))
            best = _top(-distance.astype(np.float32), k)
            return [Hit(int(rowids[i]), float(1 - 2 * distance[i] / dim)) for i in best]
        if self._vectors is not None and len(self._vectors) == len(self._rowids):
            scores = (self._vectors if kind is None else self._vectors[keep]) @ query  # no copy unless filtering
            best = _top(scores, k)
            return [Hit(int(rowids[i]), float(scores[i])) for i in best]
        if exact:
            pool = rowids
        else:
            distance = hamming(self._bits[keep], np.packbits(query > 0))
            pool = rowids[_top(-distance.astype(np.float32), candidates or max(100 * k, CANDIDATES))]
        present, vectors = self.store.vectors(pool)
        scores = vectors @ query
        best = _top(scores, k)
        return [Hit(present[i], float(scores[i])) for i in best]


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, best first (ties: lower index first)."""
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, np.int64)
    part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    return part[np.lexsort((part, -scores[part]))]
