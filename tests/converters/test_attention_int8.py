"""converters.attention_int8: attention's products in int8, checked against the exact attention it replaces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from converters.attention_int8 import CONTEXTS, QUERY_SCALES, quantize_attention
from edgeclip.machine import saturates_full_range_int8

HEADS, HEAD_DIM, TOKENS = 4, 16, 50


def attention_graph(mask: bool = False) -> onnx.ModelProto:
    inputs = ["q", "k", "v"] + (["", "mask"] if mask else [])
    node = helper.make_node("MultiHeadAttention", inputs, ["o"], name="attn", domain="com.microsoft", num_heads=HEADS)
    width = HEADS * HEAD_DIM
    graph = helper.make_graph([node], "attention", [helper.make_tensor_value_info(t, TensorProto.FLOAT, ["B", "S", width]) for t in "qkv"]
                              + ([helper.make_tensor_value_info("mask", TensorProto.INT32, ["B", "S"])] if mask else []),
                              [helper.make_tensor_value_info("o", TensorProto.FLOAT, ["B", "S", width])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])


def exact_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    batch, tokens, width = q.shape
    q, k, v = (t.reshape(batch, tokens, HEADS, HEAD_DIM).transpose(0, 2, 1, 3).astype(np.float64) for t in (q, k, v))
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(HEAD_DIM)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return (p @ v).transpose(0, 2, 1, 3).reshape(batch, tokens, width)


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


@pytest.mark.parametrize("query_scale", QUERY_SCALES)
@pytest.mark.parametrize("context", CONTEXTS)
def test_the_rewrite_replaces_the_node_and_computes_attention(query_scale: str, context: str) -> None:
    model = attention_graph()
    assert quantize_attention(model, query_scale, context) == 1
    ops = [n.op_type for n in model.graph.node]
    assert "MultiHeadAttention" not in ops
    assert ops.count("MatMulIntegerToFloat") == HEADS * (2 if context == "int8" else 1)  # one node per head and product
    assert ops.count("MatMul") == (HEADS if context == "fp32" else 0)
    rng = np.random.default_rng(0)
    feeds = {t: (rng.standard_normal((2, TOKENS, HEADS * HEAD_DIM)) * 2).astype(np.float32) for t in "qkv"}
    if query_scale == "row":
        feeds["q"][1, 7] *= 30  # one loud query row: its own scale keeps the other rows' precision
    got = run(model, feeds)
    assert got.shape == feeds["q"].shape and np.isfinite(got).all()
    if saturates_full_range_int8():
        pytest.skip("x86 without VNNI or AMX: ONNX Runtime's int16 sums saturate full-range s8 products here")
    want = exact_attention(feeds["q"], feeds["k"], feeds["v"])
    cosine = (got * want).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(want, axis=-1)
    assert cosine.min() > 0.995, cosine.min()
    assert np.abs(got - want).max() < 0.1 * np.abs(want).max()
    # batch items are quantized independently: the second item alone gives the same rows
    alone = run(model, {t: x[1:] for t, x in feeds.items()})
    np.testing.assert_allclose(alone[0], got[1], atol=1e-5)


def test_masked_nodes_and_bad_options_are_left_alone(tmp_path: Path) -> None:
    model = attention_graph(mask=True)
    assert quantize_attention(model) == 0  # a padding mask (the text tower's masked branch): not rewritten
    assert [n.op_type for n in model.graph.node] == ["MultiHeadAttention"]
    with pytest.raises(ValueError, match="query_scale"):
        quantize_attention(attention_graph(), query_scale="token")
