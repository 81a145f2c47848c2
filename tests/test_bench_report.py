"""The benchmark's arithmetic: FLOP model, floors and target verdicts on hand-made measurements."""

from __future__ import annotations

import pytest

from bench.report import TEXT_LINEAR_PARAMS, VISION_LINEAR_PARAMS, flops, targets


def test_linear_parameter_counts_match_the_spec_shapes() -> None:
    # Text layer: Wqkv 1024x3072, out_proj 1024x1024, fc1 1024x4096, fc2 4096x1024 -> 12,582,912 per layer.
    assert TEXT_LINEAR_PARAMS == 24 * 12_582_912
    # Vision layer: q/k/v 3 x 1024x1024, proj 1024x1024, w1/w2 1024x2730, w3 2730x1024; plus the 3x14x14 patch conv.
    assert VISION_LINEAR_PARAMS == 24 * (4 * 1024 * 1024 + 3 * 1024 * 2730) + 588 * 1024


def test_flops_count_two_per_multiply_add() -> None:
    linear, attention = flops("text", batch=2, tokens=16)
    assert linear == 2 * 2 * 16 * TEXT_LINEAR_PARAMS
    assert attention == 2 * 2 * (2 * 16 * 16 * 1024) * 24  # QK^T and AV, each 2*L*L*width per layer


def _row(engine: str, tower: str, p50: float, tokens: int | None = None, batch: int = 1, rss: float = 300.0) -> dict:
    linear, attention = flops(tower, batch, tokens)
    return {"engine": engine, "tower": tower, "threads": 2, "batch": batch, "tokens": tokens, "p50_s": p50,
            "gflops": (linear + attention) / p50 / 1e9, "peak_rss_mb": rss, "cold_start_s": 1.0, "load_s": 0.5}


def test_targets_use_the_floor_from_the_measured_ceilings() -> None:
    ceilings = {"threads=2": {f"{kind}_gflops@{rows}": value for rows in (16, 128, 512, 1297)
                              for kind, value in (("fp32", 100.0), ("int8", 300.0))}}
    ceilings["threads=2"]["int8_gflops@16_streamed"] = 200.0
    linear, attention = flops("vision", 1, None)
    floor = linear / 300e9 + attention / 100e9
    table = [
        _row("edgeclip-int8", "vision", 1.2 * floor, rss=480.0),
        _row("plain-int8", "vision", 1.25 * floor),
        _row("edgeclip-int8", "text", 0.050, tokens=16, rss=650.0),
    ]
    verdicts = {g["target"]: g for g in targets(table, ceilings)}
    assert verdicts["image int8 latency / floor"]["measured"] == pytest.approx(1.2)
    assert verdicts["image int8 latency / floor"]["met"]
    bound = verdicts["image: plain-int8 latency / floor (largest possible speed-up over it)"]
    assert bound["measured"] == pytest.approx(1.25) and not bound["met"]
    assert verdicts["image int8 speed-up vs plain-int8"]["measured"] == pytest.approx(1.25 / 1.2)
    text_gflops = 2 * 16 * TEXT_LINEAR_PARAMS / 1e9 / 0.050 + 4 * 24 * 16 * 16 * 1024 / 1e9 / 0.050
    in_cache = verdicts["text 16 tokens int8 efficiency vs int8 ceiling@16 (weights in cache)"]
    streamed = verdicts["text 16 tokens int8 efficiency vs int8 ceiling@16 (weights streamed, as the tower's are)"]
    assert in_cache["measured"] == pytest.approx(text_gflops / 300.0)
    assert streamed["measured"] == pytest.approx(text_gflops / 200.0)
    assert verdicts["vision-only int8 process peak RSS (batch 1, every length)"]["met"]
    assert verdicts["text-only int8 process peak RSS (batch 1, every length)"]["measured"] == 650.0
