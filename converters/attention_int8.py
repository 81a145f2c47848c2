"""Attention's matrix products in int8: a rewrite of the unmasked com.microsoft.MultiHeadAttention nodes.

Per node, with Q, K, V [B, S, H*D] and scores = Q K^T / sqrt(D):
- QK^T in int8: Q as u8 around 128 with one scale per head ("head") or per (token, head) row ("row"),
  K as s8 with one scale per (key, head). The key scales ride inside MatMulIntegerToFloat as its
  per-column b_scale ([B, 1, 1, S] per head), and so does a per-head query scale: then nothing
  multiplies the [S, S] scores. A per-row query scale costs one multiply over them.
- PV in fp32 ("fp32", the shipped recipe) or in int8 ("int8": P as u8 with one scale per row, max/255,
  applied to the [S, D] context; V as s8 per (head, channel)). bench.real_weights measured int8 PV
  losing cosine on long real-weight texts (0.9975 vs 0.9983 for 400-500 tokens), fp32 PV none.
Q and K are quantized before the head transposes, which then move a quarter of the bytes. The heads
are split so each [S, S] score tensor stays in the last-level cache between the passes over it
(bench.attention_int8: all heads in one node ran slower than fp32 at 1,297 tokens, one node per head faster).

Only the unmasked top-level nodes are rewritten: the image tower's. The text tower's sit in If
branches, and on short texts the fused fp32 kernel is 3-7x faster than a chain of int8 nodes.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MS_DOMAIN = "com.microsoft"
QUERY_SCALES = ("head", "row")
CONTEXTS = ("fp32", "int8")


class _Builder:
    """Nodes and constants for one rewritten attention node; names carry the node's prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.constants: dict[str, np.ndarray] = {}

    def const(self, tag: str, value: np.ndarray) -> str:
        name = f"{self.prefix}/{tag}"
        self.constants[name] = np.asarray(value)
        return name

    def op(self, op_type: str, inputs: list[str], tag: str, outputs: int = 1, domain: str = "", **attrs: object) -> list[str]:
        names = [f"{self.prefix}/{tag}" if outputs == 1 else f"{self.prefix}/{tag}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=f"{self.prefix}/{tag}", domain=domain, **attrs))
        return names

    def one(self, op_type: str, inputs: list[str], tag: str, **attrs: object) -> str:
        return self.op(op_type, inputs, tag, **attrs)[0]

    def absmax_scale(self, x: str, axes: list[int], levels: float, tag: str) -> str:
        """max|x| over `axes` (kept) / levels, floored so an all-zero slice divides safely."""
        amax = self.one("ReduceMax", [self.one("Abs", [x], f"{tag}_abs")], f"{tag}_amax", axes=axes, keepdims=1)
        amax = self.one("Max", [amax, self.const("tiny", np.float32(1e-10))], f"{tag}_amax_floor")
        return self.one("Mul", [amax, self.const(f"inv{int(levels)}", np.float32(1 / levels))], f"{tag}_scale")

    def quantize(self, x: str, scale: str, zero_point: np.ndarray, tag: str) -> str:
        """x / scale (broadcast) rounded and saturated into zero_point's type."""
        scaled = self.one("Div", [x, scale], f"{tag}_div")
        return self.one("QuantizeLinear", [scaled, self.const("unit", np.float32(1)), self.const(f"zp_{zero_point.dtype}_{int(zero_point)}", zero_point)],
                        f"{tag}_q")

    def quantize_rows(self, x: str, scale: str, tag: str) -> str:
        """u8 (zero point 0) with one scale per row of the last axis: QuantizeLinear(axis=0) over a [rows, N] view."""
        flat = self.const("flat", np.array([-1], np.int64))
        scale_1d = self.one("Reshape", [scale, flat], f"{tag}_scale_1d")
        view = self.one("Concat", [self.one("Shape", [scale_1d], f"{tag}_rows"), flat], f"{tag}_view", axis=0)
        q = self.one("QuantizeLinear", [self.one("Reshape", [x, view], f"{tag}_2d"), scale_1d], f"{tag}_q2d", axis=0)
        return self.one("Reshape", [q, self.one("Shape", [x], f"{tag}_shape")], f"{tag}_q")


def _int8_attention(node: onnx.NodeProto, query_scale: str, context: str) -> _Builder:
    heads = next(a.i for a in node.attribute if a.name == "num_heads")
    q, k, v = node.input[:3]
    b = _Builder(node.name or node.output[0])
    split4 = b.const("split_heads", np.array([0, 0, heads, -1], np.int64))  # [B, S, H*D] -> [B, S, H, D]
    q4, k4, v4 = (b.one("Reshape", [t, split4], f"{n}4") for t, n in ((q, "q"), (k, "k"), (v, "v")))
    # Q: u8 around 128 ([B, S, H, D] -> [B, H, S, D]); its row (or head) scale x 1/sqrt(D).
    q_scale = b.absmax_scale(q4, [-1] if query_scale == "row" else [1, 3], 127.0, "q")
    q_u8 = b.one("Transpose", [b.quantize(q4, q_scale, np.uint8(128), "q")], "q_heads", perm=[0, 2, 1, 3])
    head_dim_scale = b.one("Shape", [q4], "q4_shape", start=3)  # D, for 1/sqrt(D) without a constant per width
    rsqrt_d = b.one("Reciprocal", [b.one("Sqrt", [b.one("Cast", [head_dim_scale], "d", to=TensorProto.FLOAT)], "sqrt_d")], "rsqrt_d")
    q_scale = b.one("Mul", [b.one("Transpose", [q_scale], "q_scale_heads", perm=[0, 2, 1, 3]), rsqrt_d], "q_scale_sdpa")
    # K: s8 per (key, head) -> K^T [B, H, D, S]; its scales as b_scale [B, H, 1, S].
    k_scale = b.absmax_scale(k4, [-1], 127.0, "k")
    k_t = b.one("Transpose", [b.quantize(k4, k_scale, np.int8(0), "k")], "k_t", perm=[0, 2, 3, 1])
    k_scale = b.one("Transpose", [k_scale], "k_scale_t", perm=[0, 2, 3, 1])
    if query_scale == "head":  # [B, H, 1, 1]: folds into b_scale, no pass over the scores
        k_scale = b.one("Mul", [k_scale, q_scale], "k_scale_q")
    split = [("q", q_u8), ("k", k_t), ("ks", k_scale)] + ([("qs", q_scale)] if query_scale == "row" else [])
    if context == "int8":  # V: s8 per (head, channel) over the tokens -> [B, H, S, D]; scales [B, H, 1, D]
        v_scale = b.absmax_scale(v4, [1], 127.0, "v")
        v_s8 = b.one("Transpose", [b.quantize(v4, v_scale, np.int8(0), "v")], "v_heads", perm=[0, 2, 1, 3])
        split += [("v", v_s8), ("vs", b.one("Transpose", [v_scale], "v_scale_heads", perm=[0, 2, 1, 3]))]
    else:
        split.append(("v", b.one("Transpose", [v4], "v_heads", perm=[0, 2, 1, 3])))
    ones = b.const("one_per_head", np.ones(heads, np.int64))
    per_head = {name: b.op("Split", [t, ones], f"{name}_split", outputs=heads, axis=1) for name, t in split}
    zp_u8_128, zp_s8 = b.const("zp_uint8_128", np.uint8(128)), b.const("zp_int8_0", np.int8(0))
    unit = b.const("unit", np.float32(1))
    contexts = []
    for h in range(heads):
        at = {name: outs[h] for name, outs in per_head.items()}
        scores = b.one("MatMulIntegerToFloat", [at["q"], at["k"], unit, at["ks"], zp_u8_128, zp_s8], f"h{h}_qk", domain=MS_DOMAIN)
        if query_scale == "row":
            scores = b.one("Mul", [scores, at["qs"]], f"h{h}_scores")
        p = b.one("Softmax", [scores], f"h{h}_p", axis=-1)
        if context == "fp32":
            contexts.append(b.one("MatMul", [p, at["v"]], f"h{h}_context"))
            continue
        p_scale = b.one("Mul", [b.one("ReduceMax", [p], f"h{h}_pmax", axes=[-1], keepdims=1),
                                b.const("inv255", np.float32(1 / 255))], f"h{h}_p_scale")
        p_u8 = b.quantize_rows(p, p_scale, f"h{h}_p")
        pv = b.one("MatMulIntegerToFloat", [p_u8, at["v"], unit, at["vs"], b.const("zp_uint8_0", np.uint8(0)), zp_s8], f"h{h}_pv", domain=MS_DOMAIN)
        contexts.append(b.one("Mul", [pv, p_scale], f"h{h}_context"))
    merged = b.one("Transpose", [b.one("Concat", contexts, "heads", axis=1)], "tokens", perm=[0, 2, 1, 3])
    b.nodes.append(helper.make_node("Reshape", [merged, b.const("merge_heads", np.array([0, 0, -1], np.int64))], [node.output[0]],
                                    name=f"{b.prefix}/merge"))
    return b


def quantize_attention(model: onnx.ModelProto, query_scale: str = "head", context: str = "fp32") -> int:
    """Rewrite the top-level, unmasked MultiHeadAttention nodes in place; returns how many were rewritten.

    The defaults are the int8-vnni-attn recipe's; the other choices are kept for bench.real_weights."""
    if query_scale not in QUERY_SCALES or context not in CONTEXTS:
        raise ValueError(f"query_scale must be one of {QUERY_SCALES} and context one of {CONTEXTS}, "
                         f"not {query_scale!r} and {context!r}")
    graph = model.graph
    new_nodes: list[onnx.NodeProto] = []
    constants: dict[str, np.ndarray] = {}
    count = 0
    for node in graph.node:
        inputs = [name for name in node.input if name]
        if node.op_type != "MultiHeadAttention" or node.domain != MS_DOMAIN or len(inputs) != 3 or len(node.input) != 3:
            new_nodes.append(node)
            continue
        built = _int8_attention(node, query_scale, context)
        new_nodes += built.nodes
        constants.update(built.constants)
        count += 1
    del graph.node[:]
    graph.node.extend(new_nodes)
    graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in constants.items())
    return count
