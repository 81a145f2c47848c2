"""Per-row activation scales: the int8 graphs compute what a per-row quantizer says, and an item embeds
the same alone as inside a batch of others (the dynamic-batching server relies on it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import edgeclip  # noqa: E402
from converters.build import BuildOptions, build_bundle  # noqa: E402
from converters.row_scales import apply_row_scales  # noqa: E402


@pytest.fixture(scope="module")
def int8_bundle(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rowscales") / "bundle"
    build_bundle(str(tiny_checkpoint), out, BuildOptions(variants=("int8",)))
    return out


def _quantized_matmul(tmp_path: Path, weight: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y0"], name="mm"), helper.make_node("Add", ["y0", "b"], ["y"], name="bias")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "rows", weight.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "rows", weight.shape[1]])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    fp32 = tmp_path / "mm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), fp32)
    quantize_dynamic(str(fp32), str(tmp_path / "q.onnx"), per_channel=True, reduce_range=True, weight_type=QuantType.QInt8)
    return onnx.load(str(tmp_path / "q.onnx"))


def test_rewritten_matmul_equals_a_numpy_per_row_quantizer(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((64, 48)).astype(np.float32)
    bias = rng.standard_normal(48).astype(np.float32)
    model = _quantized_matmul(tmp_path, weight, bias)
    assert apply_row_scales(model) == 1
    assert not [n for n in model.graph.node if n.op_type in ("DynamicQuantizeLinear", "MatMulInteger")]
    # Rows of very different magnitude, one all zeros: per-tensor scales would crush the small rows.
    x = rng.standard_normal((2, 5, 64)).astype(np.float32) * np.array([1e-3, 1, 50, 0.1, 0], np.float32)[None, :, None]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])  # all fusions on
    out = session.run(None, {"x": x})[0]

    [gemm] = [n for n in model.graph.node if n.op_type == "MatMulIntegerToFloat"]
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    w_int, w_scale, w_zero_point = inits[gemm.input[1]], inits[gemm.input[3]], inits[gemm.input[5]]
    assert w_int.dtype == np.int8 and not w_zero_point.any()
    row_scale = np.maximum(np.abs(x).max(axis=-1, keepdims=True), 1e-12 * 127) / 127
    q = np.clip(np.rint(x / row_scale), -127, 127)
    expected = (q @ w_int.astype(np.float64)) * w_scale * row_scale + bias
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    assert np.all(out[:, 4] == bias)  # the all-zero row: exactly the bias, no NaN from a zero scale
    # and it is close to the float product (the quantization is real, not a no-op)
    exact = x @ weight + bias
    assert 0 < np.abs(out - exact).max() < 0.05 * np.abs(exact).max()


def test_int8_text_is_the_same_alone_and_inside_a_busy_batch(int8_bundle: Path) -> None:
    model = edgeclip.load(int8_bundle, variant="int8")
    assert model.bundle.variant("text", "int8").batch_independent
    query = "a seal resting on a rock"
    alone = model.encode_text([query])
    # batch-mates of other lengths (padding) and magnitudes, the query in the middle
    others = ["x", "a much longer document about harbours, boats and the sea " * 6, "海豹", "!!!", "bridge at night"]
    busy = model.encode_text(others[:3] + [query] + others[3:], batch_size=32)
    np.testing.assert_allclose(busy[3], alone[0], atol=1e-6)


def test_int8_image_is_the_same_alone_and_inside_a_batch(int8_bundle: Path) -> None:
    model = edgeclip.load(int8_bundle, variant="int8")
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (40 + 9 * i, 56, 3), dtype=np.uint8) for i in range(4)]
    images[2] = np.zeros((32, 32, 3), np.uint8)  # a flat, dark batch-mate
    alone = model.encode_image([images[1]])
    batch = model.encode_image(images, batch_size=4)
    np.testing.assert_allclose(batch[1], alone[0], atol=1e-6)


def test_bundles_from_before_the_field_count_int8_as_batch_dependent() -> None:
    variant = edgeclip.bundle.Variant(precision="int8", graph="g.onnx", files=(edgeclip.bundle.FileEntry("g.onnx", "0" * 64, 1),),
                                      inputs=(), outputs=(), output_dim=8, normalized=False)
    assert not variant.batch_independent
    assert edgeclip.bundle.Variant(**{**variant.__dict__, "precision": "fp32"}).batch_independent
