"""A text embeds the same, to float noise, alone or in any batch (docs/serve.md): batches hold one token
length, never padded. Measured on the full-size int8 graph on an AVX2 CPU: 7.5e-8 (padded batches: 5.7e-3);
the full-size check is opt-in (--run-slow, tests/converters/test_full_size.py), here it runs on the test
bundle, its fp32 and int8 graphs."""

from __future__ import annotations

from pathlib import Path

import pytest

import edgeclip
from padding import BATCHED_MAX_DIFF, BATCHED_MIN_COSINE, batch_drift


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_a_text_in_a_batch_equals_itself_alone(variant: str, tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory,
                                               tiny_checkpoint: Path) -> None:
    bundle = tiny_bundle
    if variant not in edgeclip.Bundle.open(bundle).tower("text").variants:
        from converters.build import BuildOptions, build_bundle

        bundle = tmp_path_factory.mktemp("int8") / "b"
        build_bundle(str(tiny_checkpoint), bundle, BuildOptions(towers=("text",), variants=("int8",)))
    drift, cosine = batch_drift(edgeclip.load(bundle, variant=variant))
    assert drift <= BATCHED_MAX_DIFF and cosine >= BATCHED_MIN_COSINE


def test_batches_are_never_padded() -> None:
    from edgeclip.model import token_budget_batches

    lengths = [5, 7, 5, 9, 7, 7, 30, 5]
    batches = token_budget_batches(lengths, 32, 2048)
    assert sorted(len({lengths[i] for i in b}) for b in batches) == [1, 1, 1, 1]
