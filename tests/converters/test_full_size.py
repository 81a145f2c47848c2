"""Full-size random checkpoint -> bundle on this machine (opt-in: --run-slow; ~10 min, ~7 GB RAM)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")

from converters.build import BuildOptions, build_bundle  # noqa: E402
from converters.checkpoint import WEIGHTS_FILE, official_inventory, read_safetensors_header  # noqa: E402
from converters.config import load_clip_config  # noqa: E402
from converters.make_checkpoint import make_checkpoint  # noqa: E402


@pytest.mark.slow
def test_full_size_checkpoint_builds_a_valid_bundle(tmp_path: Path) -> None:
    checkpoint = make_checkpoint(tmp_path / "full", size="full", seed=0)
    header = read_safetensors_header(checkpoint / WEIGHTS_FILE)
    assert len(header) == 999
    assert {k: s for k, (_, s) in header.items()} == official_inventory(load_clip_config(checkpoint / "config.json"))
    bundle = build_bundle(str(checkpoint), tmp_path / "bundle", BuildOptions(variants=("fp32", "int8")))
    text, vision = bundle.variant("text", "fp32"), bundle.variant("vision", "fp32")
    assert [f.path for f in text.files] == ["text.fp32.onnx", "text.fp32.onnx.data"]  # > 2 GB
    for variant in (text, vision):
        for case in variant.validation["reference"].values():
            assert case["max_abs_diff"] <= 1e-4 and case["min_cosine"] >= 0.99999
    # a text embeds the same alone or in any batch (docs/serve.md), measured where padding moved rows most
    import edgeclip
    from padding import BATCHED_MAX_DIFF, BATCHED_MIN_COSINE, batch_drift

    for variant in ("int8", "fp32"):
        drift, cosine = batch_drift(edgeclip.load(bundle.directory, variant=variant))
        assert drift <= BATCHED_MAX_DIFF and cosine >= BATCHED_MIN_COSINE, (variant, drift, cosine)
