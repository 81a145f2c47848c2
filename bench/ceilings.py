"""The machine's own ceilings, measured with ONNX Runtime in the same run as the towers.

fp32 MatMul and u8 x s8 MatMulInteger throughput at the towers' shapes with weights in cache, the
bandwidth at which a single row streams weights bigger than the last-level cache, and the int8
throughput at 16 rows when the weights stream from memory as a short text query's do.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HIDDEN, FFN = 1024, 4096  # both towers: width 1024, MLP 4096 (the vision SwiGLU is 2 x 2730 -> close)


def _session(graph: helper.GraphProto, threads: int) -> ort.InferenceSession:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _median_seconds(run, repeats: int) -> float:  # noqa: ANN001
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemm_gflops(rows: int, k: int, n: int, kind: str, threads: int, repeats: int = 7) -> float:
    """GFLOP/s (GOP/s for int8) of [rows, k] x [k, n]; kind 'fp32' or 'int8' (u8 activations x s8 weights)."""
    rng = np.random.default_rng(0)
    if kind == "fp32":
        weight = numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "w")
        node = helper.make_node("MatMul", ["x", "w"], ["y"])
        x = rng.standard_normal((rows, k)).astype(np.float32)
        x_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
        inits = [weight]
    else:
        weight = numpy_helper.from_array(rng.integers(-64, 64, (k, n), dtype=np.int8), "w")
        node = helper.make_node("MatMulInteger", ["x", "w"], ["y"])
        x = rng.integers(0, 255, (rows, k), dtype=np.uint8)
        x_type, y_type = TensorProto.UINT8, TensorProto.INT32
        inits = [weight]
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("x", x_type, [rows, k])],
                              [helper.make_tensor_value_info("y", y_type, [rows, n])], inits)
    session = _session(graph, threads)
    seconds = _median_seconds(lambda: session.run(None, {"x": x}), repeats)
    return 2 * rows * k * n / seconds / 1e9


# The text tower's four linear shapes per layer: Wqkv, out_proj, fc1, fc2 (K x N).
TEXT_LAYER_SHAPES = ((HIDDEN, 3 * HIDDEN), (HIDDEN, HIDDEN), (HIDDEN, FFN), (FFN, HIDDEN))


def streamed_chain(kind: str, rows: int, threads: int, total_mb: int = 200, repeats: int = 7) -> tuple[float, float]:
    """(GB/s of weights, GFLOP/s) for `rows` rows through the text tower's linear shapes with distinct weights.

    Every layer has its own weights, ~`total_mb` in all (far over the 32 MiB L3), so each call streams
    them from memory as the tower does: the GEMM-only ceiling of a short query. int8 runs
    DynamicQuantizeMatMul, the node the int8 graphs use (activation quantization included).
    """
    rng = np.random.default_rng(0)
    bytes_per = 4 if kind == "fp32" else 1
    layer_bytes = sum(k * n for k, n in TEXT_LAYER_SHAPES) * bytes_per
    layers = max(2, total_mb * 2**20 // layer_bytes)
    nodes, inits, outputs = [], [], []
    for layer in range(layers):
        for j, (k, n) in enumerate(TEXT_LAYER_SHAPES):
            w, y, x = f"w{layer}_{j}", f"y{layer}_{j}", f"x{k}"
            if kind == "fp32":
                inits.append(numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32) / k**0.5, w))
                nodes.append(helper.make_node("MatMul", [x, w], [y]))
            else:
                inits += [numpy_helper.from_array(rng.integers(-64, 64, (k, n), dtype=np.int8), w),
                          numpy_helper.from_array(np.full((n,), 0.01, np.float32), f"s{layer}_{j}")]
                nodes.append(helper.make_node("DynamicQuantizeMatMul", [x, w, f"s{layer}_{j}"], [y], domain="com.microsoft"))
            outputs.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, [rows, n]))
    inputs = [helper.make_tensor_value_info(f"x{k}", TensorProto.FLOAT, [rows, k]) for k in (HIDDEN, FFN)]
    session = _session(helper.make_graph(nodes, "stream", inputs, outputs, inits), threads)
    feed = {f"x{k}": rng.standard_normal((rows, k)).astype(np.float32) for k in (HIDDEN, FFN)}
    seconds = _median_seconds(lambda: session.run(None, feed), repeats)
    return layers * layer_bytes / seconds / 1e9, 2 * rows * layers * layer_bytes / bytes_per / seconds / 1e9


def measure_ceilings(threads_list: tuple[int, ...] = (1, 2), rows_list: tuple[int, ...] = (16, 128, 512, 1297),
                     bandwidth: bool = True) -> dict[str, dict[str, float]]:
    """{"threads=N": {"fp32_gflops@1297": ..., "int8_gflops@16": ..., "int8_gflops@16_streamed": ..., ...}}.

    bandwidth=False leaves out the single-row streaming figures (no target uses them).
    """
    out = {}
    for threads in threads_list:
        figures = {}
        for rows in rows_list:
            for kind in ("fp32", "int8"):
                # Average the tower's two GEMM shapes (attention/out-proj 1024x1024, MLP 1024x4096).
                values = [gemm_gflops(rows, k, n, kind, threads) for k, n in ((HIDDEN, HIDDEN), (HIDDEN, FFN), (FFN, HIDDEN))]
                figures[f"{kind}_gflops@{rows}"] = statistics.mean(values)
        for kind in ("fp32", "int8") if bandwidth else ():
            figures[f"{kind}_stream_gbps"] = streamed_chain(kind, 1, threads)[0]
        figures["int8_gflops@16_streamed"] = streamed_chain("int8", 16, threads)[1]
        out[f"threads={threads}"] = figures
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(measure_ceilings(), indent=2))
