"""The fp32-portable graphs (standard ONNX ops) through OpenVINO, against the PyTorch reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edgeclip

torch = pytest.importorskip("torch")
pytest.importorskip("openvino", reason="the OpenVINO portability test needs the openvino extra (pip install 'edgeclip[openvino]')")
import onnx  # noqa: E402

from converters.build import BuildOptions, build_bundle  # noqa: E402
from converters.checkpoint import load_reference, resolve_source  # noqa: E402
from converters.config import load_clip_config  # noqa: E402


@pytest.fixture(scope="module")
def portable_bundle(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("portable") / "bundle"
    build_bundle(str(tiny_checkpoint), out, BuildOptions(variants=("fp32-portable",)))
    return out


@pytest.fixture()
def openvino_f32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGECLIP_OPENVINO_PRECISION", "f32")  # compare the function itself, not bf16 rounding


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_portable_graphs_hold_only_standard_onnx_ops(portable_bundle: Path) -> None:
    for tower in ("text", "vision"):
        model = onnx.load(str(portable_bundle / f"{tower}.fp32-portable.onnx"), load_external_data=False)
        domains = {node.domain for node in model.graph.node}
        assert domains <= {"", "ai.onnx"}, domains
        fused = onnx.load(str(portable_bundle / f"{tower}.fp32.onnx"), load_external_data=False)
        assert any(node.domain == "com.microsoft" for node in fused.graph.node)  # what the portable graph avoids


def test_openvino_computes_the_text_tower_like_the_reference(portable_bundle: Path, tiny_checkpoint: Path, openvino_f32: None) -> None:
    cfg = load_clip_config(tiny_checkpoint / "config.json")
    reference = load_reference(resolve_source(str(tiny_checkpoint)), "text", cfg)
    model = edgeclip.load(portable_bundle, providers=["OpenVINO"])
    assert model.variant_name("text") == "fp32-portable" and model.providers_in_use("text") == ["OpenVINO (CPU, f32)"]
    rows = [[0, 17, 220, 5, 900, 2], [0, *range(40, 75), 2], [0, 2]]  # a padded batch: the mask matters
    ours = model.run_tokens(rows, batch_size=3)
    ids = torch.full((3, 37), cfg.text.pad_token_id, dtype=torch.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    with torch.no_grad():
        expected = reference(ids).double().numpy()
    assert _cosines(ours, expected).min() > 0.99999
    np.testing.assert_allclose(ours, expected, atol=1e-4)


def test_openvino_computes_the_vision_tower_like_the_reference(portable_bundle: Path, tiny_checkpoint: Path, openvino_f32: None) -> None:
    reference = load_reference(resolve_source(str(tiny_checkpoint)), "vision")
    model = edgeclip.load(portable_bundle, providers=["OpenVINO"])
    pixels = np.random.default_rng(0).standard_normal((2, 3, 512, 512)).astype(np.float32)
    ours = model.run_pixels(pixels, batch_size=2)
    with torch.no_grad():
        expected = reference(torch.from_numpy(pixels)).double().numpy()
    assert _cosines(ours, expected).min() > 0.99999


def test_openvino_default_precision_embeds_close_to_onnx_runtime(portable_bundle: Path) -> None:
    texts, image = ["a seal on a rock", "foca en una roca", "岩の上のアザラシ"], np.full((64, 80, 3), 90, np.uint8)
    ov, ort = edgeclip.load(portable_bundle, providers=["OpenVINO"]), edgeclip.load(portable_bundle, variant="fp32")
    assert _cosines(ov.encode_text(texts), ort.encode_text(texts)).min() > 0.999  # bf16 where the CPU has it
    assert _cosines(ov.encode_image([image]), ort.encode_image([image])).min() > 0.999


def test_openvino_refuses_graphs_it_computes_wrongly(portable_bundle: Path, tiny_bundle: Path) -> None:
    with pytest.raises(edgeclip.BundleError, match="OpenVINO runs only the fp32-portable variant"):
        edgeclip.load(portable_bundle, providers=["OpenVINO"], variant="fp32").encode_text(["x"])
    with pytest.raises(edgeclip.BundleError, match="rebuild it with .*--variants fp32-portable"):
        edgeclip.load(tiny_bundle, providers=["OpenVINO"]).encode_text(["x"])
    with pytest.raises(edgeclip.BundleError, match="OpenVINO stands alone"):
        edgeclip.load(portable_bundle, providers=["OpenVINO", "CPUExecutionProvider"])
