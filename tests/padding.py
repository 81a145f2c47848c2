"""The documented bound of batching on text rows (docs/serve.md): a text embedded in any batch equals the same
text alone to float noise, because batches hold one token length and are never padded (padded batches moved
full-size int8 rows by 5.7e-3). The check, shared by the test-bundle test (tests/runtime/test_padding_bound.py)
and the opt-in full-size one (tests/converters/test_full_size.py)."""

from __future__ import annotations

import numpy as np

import edgeclip

BATCHED_MAX_DIFF = 1e-6  # max abs difference per value, int8 and fp32 (full-size int8, AVX2: 7.5e-8)
BATCHED_MIN_COSINE = 1 - 1e-6


def batch_drift(model: edgeclip.EdgeClip, count: int = 48, seed: int = 0) -> tuple[float, float]:
    """(max abs difference, min cosine) between texts of 3-60 words alone and embedded 16 at a time."""
    rng = np.random.default_rng(seed)
    words = "the seal sleeps on a warm rock near the harbour while boats come in at dawn and gulls call".split()
    texts = [" ".join(rng.choice(words, int(rng.integers(3, 60)))) for _ in range(count)]
    alone = np.stack([model.encode_text([t])[0] for t in texts])
    batched = model.encode_text(texts, batch_size=16)
    return float(np.abs(alone - batched).max()), float((alone * batched).sum(axis=1).min())
