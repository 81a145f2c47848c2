"""Embeddings after the graph: Matryoshka truncation, L2 normalization, output precision."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._types import FloatArray, OutputPrecision
from .errors import InputError

PRECISIONS: tuple[str, ...] = ("float32", "float16", "binary", "ubinary")


def check_truncate_dim(truncate_dim: int | None, allowed: Sequence[int], available: int) -> int:
    """The output width: `available` when None; else one of the allowed Matryoshka dims, at most `available`."""
    if truncate_dim is None:
        return available
    usable = [d for d in allowed if d <= available]
    if truncate_dim in allowed and truncate_dim not in usable:
        raise InputError(f"truncate_dim {truncate_dim} is wider than this bundle's {available}-d head (built with "
                         f"--dims {available}); use one of {usable}, or a bundle built without --dims")
    if truncate_dim not in usable:
        raise InputError(f"truncate_dim must be one of {usable} for this bundle, got {truncate_dim!r}")
    return int(truncate_dim)


def l2_normalize(rows: FloatArray, eps: float = 1e-12) -> FloatArray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return (rows / np.maximum(norms, eps)).astype(np.float32)


def truncate_and_normalize(embeddings: FloatArray, dim: int) -> FloatArray:
    """Matryoshka order: slice the first `dim` columns, then L2-normalize (not the other way round)."""
    return l2_normalize(embeddings[:, :dim])


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def to_precision(embeddings: FloatArray, precision: OutputPrecision) -> np.ndarray:
    """float32/float16 rows, or sign bits packed 8 dims per byte (dim d -> byte d // 8, bit 7 - d % 8).

    "ubinary" is uint8; "binary" is the same bits as int8 offset by -128 (the sentence-transformers
    convention). A dimension's bit is 1 when its value is > 0.
    """
    check_precision(precision)
    if precision == "float32":
        return embeddings.astype(np.float32, copy=False)
    if precision == "float16":
        return embeddings.astype(np.float16)
    packed = np.packbits(embeddings > 0, axis=1)
    return packed if precision == "ubinary" else (packed.astype(np.int16) - 128).astype(np.int8)


def similarity(a: np.ndarray, b: np.ndarray, metric: str = "cosine") -> FloatArray:
    """(N, D) x (M, D) -> (N, M) float32. "cosine" normalizes first; "dot" assumes unit-norm rows already.

    A 1-D input is treated as one row.
    """
    left = np.atleast_2d(np.asarray(a, dtype=np.float32))
    right = np.atleast_2d(np.asarray(b, dtype=np.float32))
    if left.shape[1] != right.shape[1]:
        raise InputError(f"embedding widths differ: {left.shape[1]} vs {right.shape[1]}; truncate both to the same dim")
    if metric == "cosine":
        left, right = l2_normalize(left), l2_normalize(right)
    elif metric != "dot":
        raise InputError(f"metric must be 'cosine' or 'dot', got {metric!r}")
    return (left @ right.T).astype(np.float32)
