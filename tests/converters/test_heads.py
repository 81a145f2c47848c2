"""Small-device heads (--dims): the graph returns the normalized Matryoshka prefix, and the runtime knows it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
import edgeclip  # noqa: E402
from converters.__main__ import main as converters_main  # noqa: E402
from converters.build import BuildOptions, build_bundle  # noqa: E402
from converters.errors import ConverterError  # noqa: E402
from edgeclip.cli import info_text  # noqa: E402

TEXTS = ["a red bicycle", "un vélo rouge", "красный велосипед", "赤い自転車"]


@pytest.fixture(scope="module")
def head_bundle(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("head") / "bundle"
    build_bundle(str(tiny_checkpoint), out, BuildOptions(variants=("int8",), head_dim=32))
    return out


def test_manifest_records_the_head(head_bundle: Path) -> None:
    bundle = edgeclip.Bundle.open(head_bundle)
    for tower in ("text", "vision"):
        for variant in bundle.tower(tower).variants.values():
            assert variant.output_dim == 32 and variant.normalized
            assert variant.outputs[0].shape == ("batch", 32)
    assert "32-d head (built with --dims 32; model width 64); truncate_dim one of [16, 32]" in info_text(bundle)


def test_head_equals_slice_then_normalize_of_the_full_graph(head_bundle: Path, tiny_bundle: Path) -> None:
    head = edgeclip.load(head_bundle, variant="fp32")
    full = edgeclip.load(tiny_bundle, variant="fp32")
    image = np.random.default_rng(3).integers(0, 256, (300, 420, 3), dtype=np.uint8)
    for encode in (lambda m, **k: m.encode_text(TEXTS, **k), lambda m, **k: m.encode_image([image], **k)):
        full_rows = encode(full, truncate_dim=None)
        expected = full_rows[:, :32] / np.linalg.norm(full_rows[:, :32], axis=1, keepdims=True)
        np.testing.assert_allclose(encode(head), expected, atol=1e-5)
        np.testing.assert_allclose(encode(head, truncate_dim=16), encode(full, truncate_dim=16), atol=1e-5)


def test_runtime_refuses_a_wider_truncate_dim(head_bundle: Path) -> None:
    model = edgeclip.load(head_bundle)
    with pytest.raises(edgeclip.InputError, match="truncate_dim 64 is wider than this bundle's 32-d head"):
        model.encode_text("x", truncate_dim=64)


@pytest.mark.parametrize("dims", [48, 64, 0])
def test_build_refuses_dims_that_are_not_a_smaller_matryoshka_dim(tiny_checkpoint: Path, tmp_path: Path, dims: int) -> None:
    with pytest.raises(ConverterError, match=rf"--dims {dims}: choose one of .*\[16, 32\]"):
        build_bundle(str(tiny_checkpoint), tmp_path / "b", BuildOptions(head_dim=dims))
    assert not (tmp_path / "b").exists()
    assert converters_main(["build", str(tiny_checkpoint), "--out", str(tmp_path / "c"), "--dims", str(dims)]) == 2
