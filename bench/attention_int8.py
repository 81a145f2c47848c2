"""One attention layer (16 heads x 64) timed side by side: ORT's fp32 MultiHeadAttention against int8 rewrites.

    python -m bench.attention_int8 [--tokens 1297 512 64 16] [--rounds 4]

A measurement for issue 26 (attention off fp32), not yet a recipe. The int8 graphs quantize Q per
row (u8 around 128), K per key and V per channel (s8; both scales applied inside
MatMulIntegerToFloat as per-batch, per-column b_scale, which ORT 1.32 accepts for [B, H, 1, N]),
and the softmax probabilities per row (u8, zero point 0, QuantizeLinear with axis=0 over a
[rows, keys] view, so no Div pass). "batched" runs all heads in one node per step; "per-head"
splits the heads so each [S, S] score tensor stays in the L3 cache between steps.
Random Gaussian inputs: cosine here checks the arithmetic, not model quality.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgeclip.benchmark.measure import time_calls
from edgeclip.cli.common import positive

HEADS, HEAD_DIM = 16, 64
WIDTH = HEADS * HEAD_DIM
CONSTANTS = {"tiny": np.float32(1e-10), "inv127": np.float32(1 / 127), "inv255": np.float32(1 / 255), "one": np.float32(1),
             "zp_s8": np.int8(0), "zp_u8": np.uint8(0), "zp128": np.uint8(128),
             "shape4": np.array([0, -1, HEADS, HEAD_DIM], np.int64), "shape3": np.array([0, -1, WIDTH], np.int64),
             "flat": np.array([-1], np.int64), "qk_scale": np.float32(HEAD_DIM**-0.5)}
ZERO_POINT = {"u8_128": "zp128", "s8": "zp_s8", "p": None}


def quantize_rows(x: str, q: str, s: str, tag: str, kind: str) -> list:
    """Per-row (last axis) symmetric quantization: one QuantizeLinear(axis=0) over a [rows, width] view."""
    nodes = [helper.make_node("ReduceMax", [x], [f"{tag}_amax"], axes=[-1], keepdims=1)] if kind == "p" else [
        helper.make_node("Abs", [x], [f"{tag}_abs"]),
        helper.make_node("ReduceMax", [f"{tag}_abs"], [f"{tag}_amax0"], axes=[-1], keepdims=1),
        helper.make_node("Max", [f"{tag}_amax0", "tiny"], [f"{tag}_amax"])]
    nodes += [helper.make_node("Mul", [f"{tag}_amax", "inv255" if kind == "p" else "inv127"], [s]),
              helper.make_node("Shape", [x], [f"{tag}_shape"]),
              helper.make_node("Reshape", [s, "flat"], [f"{tag}_s1"]),
              helper.make_node("Shape", [f"{tag}_s1"], [f"{tag}_rows"]),
              helper.make_node("Concat", [f"{tag}_rows", "flat"], [f"{tag}_2dshape"], axis=0),
              helper.make_node("Reshape", [x, f"{tag}_2dshape"], [f"{tag}_2d"])]
    inputs = [f"{tag}_2d", f"{tag}_s1"]
    if ZERO_POINT[kind]:
        nodes.append(helper.make_node("Expand", [ZERO_POINT[kind], f"{tag}_rows"], [f"{tag}_zp"]))
        inputs.append(f"{tag}_zp")
    return nodes + [helper.make_node("QuantizeLinear", inputs, [f"{tag}_q2d"], axis=0),
                    helper.make_node("Reshape", [f"{tag}_q2d", f"{tag}_shape"], [q])]


def int8_attention(per_head: bool) -> list:
    nodes = []
    for t in "qkv":
        nodes += [helper.make_node("Reshape", [t, "shape4"], [f"{t}4"]),
                  helper.make_node("Transpose", [f"{t}4"], [f"{t}h"], perm=[0, 2, 1, 3])]  # [B, H, S, D]
    nodes += quantize_rows("qh", "q_u8", "q_s", "q", "u8_128") + quantize_rows("kh", "k_s8", "k_s", "k", "s8")
    nodes += [helper.make_node("Transpose", ["k_s8"], ["kT_s8"], perm=[0, 1, 3, 2]),
              helper.make_node("Transpose", ["k_s"], ["k_sT"], perm=[0, 1, 3, 2]),
              helper.make_node("Mul", ["q_s", "qk_scale"], ["q_s2"]),
              helper.make_node("Transpose", ["vh"], ["vT"], perm=[0, 1, 3, 2])]  # V per channel = rows of V^T
    nodes += quantize_rows("vT", "vT_s8", "vT_s", "v", "s8")
    nodes += [helper.make_node("Transpose", ["vT_s8"], ["v_s8"], perm=[0, 1, 3, 2]),
              helper.make_node("Transpose", ["vT_s"], ["v_s"], perm=[0, 1, 3, 2])]
    heads = [f"_{i}" for i in range(HEADS)] if per_head else [""]
    if per_head:
        nodes += [helper.make_node("Split", [t], [t + h for h in heads], axis=1) for t in ("q_u8", "kT_s8", "v_s8", "k_sT", "q_s2", "v_s")]
    for h in heads:
        nodes += [helper.make_node("MatMulIntegerToFloat", ["q_u8" + h, "kT_s8" + h, "one", "k_sT" + h, "zp128", "zp_s8"], ["raw" + h],
                                   domain="com.microsoft"),
                  helper.make_node("Mul", ["raw" + h, "q_s2" + h], ["scores" + h]),
                  helper.make_node("Softmax", ["scores" + h], ["p" + h], axis=-1)]
        nodes += quantize_rows("p" + h, "p_u8" + h, "p_s" + h, "p" + h, "p")
        nodes += [helper.make_node("MatMulIntegerToFloat", ["p_u8" + h, "v_s8" + h, "one", "v_s" + h, "zp_u8", "zp_s8"], ["ctx" + h],
                                   domain="com.microsoft"),
                  helper.make_node("Mul", ["ctx" + h, "p_s" + h], ["oh" + h])]
    if per_head:
        nodes.append(helper.make_node("Concat", ["oh" + h for h in heads], ["oh"], axis=1))
    return nodes + [helper.make_node("Transpose", ["oh"], ["o4"], perm=[0, 2, 1, 3]), helper.make_node("Reshape", ["o4", "shape3"], ["o"])]


def graph_bytes(nodes: list) -> bytes:
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in CONSTANTS.items()]
    used = {i for n in nodes for i in n.input}
    graph = helper.make_graph(nodes, "attention", [helper.make_tensor_value_info(t, TensorProto.FLOAT, [1, "S", WIDTH]) for t in "qkv"],
                              [helper.make_tensor_value_info("o", TensorProto.FLOAT, None)], [i for i in inits if i.name in used])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]).SerializeToString()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=positive, nargs="+", default=[1297, 512, 64, 16])
    parser.add_argument("--rounds", type=positive, default=4)
    parser.add_argument("--threads", type=positive, default=2)
    args = parser.parse_args()
    graphs = {"fp32 MultiHeadAttention": graph_bytes([helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["o"],
                                                                        domain="com.microsoft", num_heads=HEADS)]),
              "int8 batched": graph_bytes(int8_attention(False)), "int8 per-head": graph_bytes(int8_attention(True))}
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    sessions = {k: ort.InferenceSession(g, options, providers=["CPUExecutionProvider"]) for k, g in graphs.items()}
    for tokens in args.tokens:
        rng = np.random.default_rng(0)
        feeds = {t: (rng.standard_normal((1, tokens, WIDTH)) * (2.0 if t != "v" else 1.0)).astype(np.float32) for t in "qkv"}
        outputs = {k: s.run(None, feeds)[0] for k, s in sessions.items()}
        times: dict[str, list[float]] = {k: [] for k in sessions}
        for _ in range(args.rounds):  # engines alternate turn by turn; one untimed call per turn
            for k, s in sessions.items():
                s.run(None, feeds)
                times[k] += time_calls(lambda s=s, feeds=feeds: s.run(None, feeds), min_reps=3, budget_s=0.0)
        base = statistics.median(times["fp32 MultiHeadAttention"])
        reference = outputs["fp32 MultiHeadAttention"]
        for k, out in outputs.items():
            cos = (out * reference).sum(-1) / np.linalg.norm(out, axis=-1) / np.linalg.norm(reference, axis=-1)
            median = statistics.median(times[k])
            print(f"{tokens:5d} tokens | {k:24s} | {median * 1e3:8.2f} ms | {median / base:5.2f}x | cos mean {cos.mean():.5f} min {cos.min():.5f}")


if __name__ == "__main__":
    main()
