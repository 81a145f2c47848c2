"""The documented bound of padding on text rows (docs/serve.md): the check, shared by the test-bundle test
(tests/runtime/test_padding_bound.py) and the opt-in full-size one (tests/converters/test_full_size.py)."""

from __future__ import annotations

import numpy as np

import edgeclip

PADDED_INT8 = 1e-2  # max abs difference per value (measured 5.7e-3)
PADDED_INT8_COSINE = 0.998  # (measured 0.99882)
PADDED_FP32 = 1e-5  # (measured 1.3e-7)


def padded_batch_drift(model: edgeclip.EdgeClip, count: int = 48, seed: int = 0) -> tuple[float, float]:
    """(max abs difference, min cosine) between texts of 3-60 words alone and in length-sorted batches of 16."""
    rng = np.random.default_rng(seed)
    words = "the seal sleeps on a warm rock near the harbour while boats come in at dawn and gulls call".split()
    texts = [" ".join(rng.choice(words, int(rng.integers(3, 60)))) for _ in range(count)]
    alone = np.stack([model.encode_text([t])[0] for t in texts])
    batched = model.encode_text(texts, batch_size=16)
    return float(np.abs(alone - batched).max()), float((alone * batched).sum(axis=1).min())
