"""The streaming int8/int4 writer against ORT's own quantizers on the tiny fp32 graphs: the same weight bytes,
the same outputs, a fraction of the memory (the memory figures are in bench/results/build-full-size.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from converters.build import BuildOptions, build_bundle  # noqa: E402
from converters.graph_data import ALIGNMENT, GraphWeights  # noqa: E402
from converters.quantized_graph import MatMulFormat, quantize_table_rows, write_quantized_graph  # noqa: E402
from converters.row_scales import apply_row_scales  # noqa: E402


@pytest.fixture(scope="module")
def fp32_bundle(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("streamq") / "bundle"
    build_bundle(str(tiny_checkpoint), out, BuildOptions())
    return out


def _ort_int8(fp32: Path, out: Path, reduce_range: bool) -> onnx.ModelProto:
    """What the build did before: ORT's quantize_dynamic, then the per-row rewrite."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(out), op_types_to_quantize=["MatMul"], per_channel=True, reduce_range=reduce_range,
                     weight_type=QuantType.QInt8, use_external_data_format=True)
    model = onnx.load(str(out))
    assert apply_row_scales(model) > 0
    return model


def _ort_int4(fp32: Path) -> onnx.ModelProto:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32)), block_size=32, is_symmetric=True, accuracy_level=4)
    quantizer.process()
    return quantizer.model.model


def _weights(model: onnx.ModelProto, suffixes: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer
            if t.name.endswith(suffixes) and not t.name.startswith("rowq_")}  # rowq_: the shared constants


def _inputs(tower: str, size: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    if tower == "text":
        ids = rng.integers(3, 1000, (3, 11)).astype(np.int64)
        ids[:, 0] = 0
        mask = np.ones_like(ids)
        mask[1, 6:] = 0
        ids[1, 6:] = 1
        return {"input_ids": ids, "attention_mask": mask}
    return {"pixel_values": rng.standard_normal((2, 3, size, size)).astype(np.float32)}


def assert_same_computation(ours: Path, reference: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    """Bit for bit as written; with ORT's fusions on, within float rounding (which Add a fusion absorbs depends on
    node order, e.g. the vision tower's last SkipLayerNormalization, so the last bit may differ)."""
    for a, b in zip(_run(ours, feeds, optimize=False), _run(reference, feeds, optimize=False), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(_run(ours, feeds), _run(reference, feeds), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * float(np.abs(b).max()))


def _feeds(fp32: Path, tower: str) -> dict[str, np.ndarray]:
    shape = onnx.load(str(fp32), load_external_data=False).graph.input[0].type.tensor_type.shape
    return _inputs(tower, shape.dim[-1].dim_value)


def _run(model: onnx.ModelProto | Path, feeds: dict[str, np.ndarray], optimize: bool = True) -> list[np.ndarray]:
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in feeds.items() if k in names})


@pytest.mark.parametrize("tower", ["text", "vision"])
@pytest.mark.parametrize("reduce_range", [True, False], ids=["int8", "int8-vnni"])
def test_int8_weights_and_outputs_equal_ort_quantize_dynamic(fp32_bundle: Path, tmp_path: Path, tower: str,
                                                             reduce_range: bool) -> None:
    fp32 = fp32_bundle / f"{tower}.fp32.onnx"
    reference = _ort_int8(fp32, tmp_path / "ort.onnx", reduce_range)
    files, count = write_quantized_graph(fp32, tmp_path / "ours.onnx", MatMulFormat("int8", reduce_range), False)
    ours = onnx.load(str(files[0]))
    expected = _weights(reference, ("_quantized", "_scale", "_zero_point"))
    got = _weights(ours, ("_quantized", "_scale", "_zero_point"))
    assert count > 0 and len(got) == 3 * count
    assert set(got) <= set(expected)
    for name, value in got.items():
        assert value.dtype == expected[name].dtype and np.array_equal(value, expected[name]), name
    assert_same_computation(files[0], reference, _feeds(fp32, tower))


@pytest.mark.parametrize("tower", ["text", "vision"])
def test_int4_blocks_and_outputs_equal_ort_matmul_nbits_quantizer(fp32_bundle: Path, tmp_path: Path, tower: str) -> None:
    fp32 = fp32_bundle / f"{tower}.fp32.onnx"
    reference = _ort_int4(fp32)
    files, count = write_quantized_graph(fp32, tmp_path / "ours.onnx", MatMulFormat("int4"), False)
    ours = onnx.load(str(files[0]))
    expected, got = _weights(reference, ("_Q4", "_scales")), _weights(ours, ("_Q4", "_scales"))
    assert count > 0 and len(got) == 2 * count
    for name, value in got.items():
        assert np.array_equal(value.reshape(expected[name].shape), expected[name]), name
    nodes = {n.name: n for n in reference.graph.node if n.op_type == "MatMulNBits"}
    for node in (n for n in ours.graph.node if n.op_type == "MatMulNBits"):
        assert {a.name: helper.get_attribute_value(a) for a in node.attribute} == \
            {a.name: helper.get_attribute_value(a) for a in nodes[node.name].attribute}
    assert_same_computation(files[0], reference, _feeds(fp32, tower))


def test_token_table_is_written_in_chunks_as_int8_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import converters.quantized_graph as quantized_graph

    monkeypatch.setattr(quantized_graph, "ROWS_PER_READ", 7)  # 50 rows: 8 pieces, the last one short
    rng = np.random.default_rng(0)
    table = (rng.standard_normal((50, 300)) * rng.uniform(0.1, 3.0, (50, 1))).astype(np.float32)
    weight = rng.standard_normal((300, 40)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["emb"], name="lookup", axis=0),
         helper.make_node("MatMul", ["emb", "w"], ["out"], name="proj")], "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [None])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 40])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(weight, "w")],
    )
    fp32 = tmp_path / "fp32.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(fp32),
                    save_as_external_data=True, location="fp32.onnx.data")
    files, _ = write_quantized_graph(fp32, tmp_path / "q.onnx", MatMulFormat("int8"), True)
    written = GraphWeights(files[0])
    rows, scales = quantize_table_rows(table)
    assert np.array_equal(written.read("table_int8"), rows) and np.array_equal(written.read("table_row_scale"), scales)
    assert written.read("table_int8", slice(10, 20)).shape == (10, 300)
    assert "table" not in written.initializers and "w" not in written.initializers  # the floats are gone
    for tensor in written.model.graph.initializer:  # ORT memory-maps aligned external weights instead of copying them
        offset = {e.key: e.value for e in tensor.external_data}.get("offset")
        assert offset is None or int(offset) % ALIGNMENT == 0
    ids = np.array([0, 7, 49, 7], dtype=np.int64)
    [out] = _run(files[0], {"ids": ids})
    step = np.abs(table).max(axis=1, keepdims=True) / 127.0
    assert np.all(np.abs(rows * scales - table) <= step / 2 + 1e-7)  # within half a step of every row
    exact = table[ids] @ weight
    assert 0 < np.abs(out - exact).max() < 0.05 * np.abs(exact).max()


def test_a_weight_another_node_also_reads_keeps_its_float_copy(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((16, 16)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"), helper.make_node("Add", ["y", "w"], ["out"], name="add")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16, 16])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [16, 16])], [numpy_helper.from_array(weight, "w")],
    )
    fp32 = tmp_path / "fp32.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(fp32))
    files, count = write_quantized_graph(fp32, tmp_path / "q.onnx", MatMulFormat("int8"), False)
    x = rng.standard_normal((16, 16)).astype(np.float32)
    [out] = _run(files[0], {"x": x})
    exact = x @ weight + weight
    assert count == 1 and "w" in GraphWeights(files[0]).initializers
    assert np.abs(out - exact).max() < 0.05 * np.abs(exact).max()
