"""Resolution variants: `build --image-size N` resamples the position embeddings, recomputes RoPE and records the size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import edgeclip  # noqa: E402
from converters.__main__ import main as converters_main  # noqa: E402
from converters.build import BuildOptions, build_bundle  # noqa: E402
from converters.errors import ConverterError  # noqa: E402
from converters.resolution import resample_pos_embed  # noqa: E402
from edgeclip.cli import info_text  # noqa: E402


def test_resampling_keeps_cls_and_a_smooth_field() -> None:
    grid = torch.linspace(0, 1, 36)
    field = (grid[:, None] + 2 * grid[None, :]).reshape(1, 36 * 36, 1).repeat(1, 1, 3)  # a plane over the 36x36 grid
    pos = torch.cat([torch.full((1, 1, 3), 7.0), field], dim=1)
    out = resample_pos_embed(pos, 27)
    assert out.shape == (1, 1 + 27 * 27, 3) and torch.equal(out[:, 0], pos[:, 0])  # CLS untouched
    plane = out[0, 1:, 0].reshape(27, 27)
    assert float(plane[0, 0]) < float(plane[-1, -1])
    assert abs(float(plane[-1, -1] - plane[0, 0]) - 3.0) < 0.1  # the corners stay near the plane's corners
    assert torch.equal(resample_pos_embed(pos, 36), pos)  # same grid: unchanged


@pytest.fixture(scope="module")
def small(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("res") / "b384"
    build_bundle(str(tiny_checkpoint), out, BuildOptions(towers=("vision",), variants=("int8",), image_size=384))
    return out


def test_a_384_px_bundle_records_the_size_and_preprocesses_to_it(small: Path) -> None:
    bundle = edgeclip.Bundle.open(small)
    assert bundle.manifest.vision.image_size == 384 and bundle.manifest.vision.source_image_size == 512
    model = edgeclip.load(small, variant="fp32")
    image = np.random.default_rng(0).integers(0, 255, (300, 500, 3), dtype=np.uint8)
    assert model.image_pixels(image).shape == (3, 384, 384)
    rows = model.encode_image([image])
    assert rows.shape == (1, 64) and np.isclose(np.linalg.norm(rows), 1, atol=1e-5)
    figures = bundle.variant("vision", "fp32").validation["reference"]
    assert min(case["min_cosine"] for case in figures.values()) > 0.99999  # the graph is the resized reference
    assert "resolution variant" in info_text(bundle) and "--reference torch" in info_text(bundle)


def test_the_torch_reference_gate_runs_the_model_at_512(small: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    import shutil

    from converters.gate import GateFailed, run_gate

    copy = tmp_path / "b"
    shutil.copytree(small, copy)
    try:
        results = run_gate(copy, "cpu", ("fp32",), reference="torch", checkpoint=str(tiny_checkpoint))
    except GateFailed as failed:  # random weights: a smaller input may well fail; the figures are what matters
        results = failed.results
    figures = results["vision/fp32"]
    # Not the bundle's own 384 px graph (that would be ~1.0): the 512 px model, so the resolution change shows.
    assert figures["cosine_mean"] < 0.9999 and figures["reference_device"].startswith("PyTorch")


def test_unsupported_sizes_are_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ConverterError, match="choose one of 224, 336, 384, 448, 512"):
        build_bundle(str(tiny_checkpoint), tmp_path / "x", BuildOptions(image_size=400))
    with pytest.raises(SystemExit):
        converters_main(["build", str(tiny_checkpoint), "--out", str(tmp_path / "y"), "--image-size", "600"])
