"""The machine's own ceilings, measured with ONNX Runtime in the same run as the towers.

fp32 MatMul and u8 x s8 MatMulInteger throughput at the towers' shapes, and the bandwidth at
which a single row streams weights bigger than the last-level cache (what a short query costs).
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HIDDEN, FFN = 1024, 4096  # both towers: width 1024, MLP 4096 (the vision SwiGLU is 2 x 2730 -> close)


def _session(graph: helper.GraphProto, threads: int) -> ort.InferenceSession:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
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


def streaming_gbps(kind: str, threads: int, total_mb: int = 256, repeats: int = 7) -> float:
    """GB/s of weights read by one row through a chain of 1024x4096 / 4096x1024 MatMuls (far over L3)."""
    rng = np.random.default_rng(0)
    bytes_per = 4 if kind == "fp32" else 1
    layers = max(2, total_mb * 2**20 // (HIDDEN * FFN * bytes_per) // 2 * 2)
    nodes, inits, name = [], [], "x"
    for i in range(layers):
        k, n = (HIDDEN, FFN) if i % 2 == 0 else (FFN, HIDDEN)
        if kind == "fp32":
            inits.append(numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32) / k**0.5, f"w{i}"))
            nodes.append(helper.make_node("MatMul", [name, f"w{i}"], [f"h{i}"]))
        else:  # DynamicQuantizeMatMul: what the int8 graphs run
            inits += [numpy_helper.from_array(rng.integers(-64, 64, (k, n), dtype=np.int8), f"w{i}"),
                      numpy_helper.from_array(np.full((n,), 0.01, np.float32), f"s{i}")]
            nodes.append(helper.make_node("DynamicQuantizeMatMul", [name, f"w{i}", f"s{i}"], [f"h{i}"], domain="com.microsoft"))
        name = f"h{i}"
    graph = helper.make_graph(nodes, "stream", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, HIDDEN])],
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, HIDDEN])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    x = rng.standard_normal((1, HIDDEN)).astype(np.float32)
    seconds = _median_seconds(lambda: session.run(None, {"x": x}), repeats)
    return layers * HIDDEN * FFN * bytes_per / seconds / 1e9


def measure_ceilings(threads_list: tuple[int, ...] = (1, 2)) -> dict[str, dict[str, float]]:
    """{"threads=N": {"fp32_gflops@1297": ..., "int8_gops@1297": ..., "int8_gops@16": ..., ...}}."""
    out = {}
    for threads in threads_list:
        figures = {}
        for rows in (16, 128, 512, 1297):
            for kind in ("fp32", "int8"):
                # Average the tower's two GEMM shapes (attention/out-proj 1024x1024, MLP 1024x4096).
                values = [gemm_gflops(rows, k, n, kind, threads) for k, n in ((HIDDEN, HIDDEN), (HIDDEN, FFN), (FFN, HIDDEN))]
                figures[f"{kind}_gflops@{rows}"] = statistics.mean(values)
        figures["fp32_stream_gbps"] = streaming_gbps("fp32", threads)
        figures["int8_stream_gbps"] = streaming_gbps("int8", threads)
        out[f"threads={threads}"] = figures
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(measure_ceilings(), indent=2))
