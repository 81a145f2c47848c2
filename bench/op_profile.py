"""Where a tower graph's time goes: ONNX Runtime's profiler, time per op type beside the GEMM floor.

    python -m bench.op_profile GRAPH.onnx [GRAPH2.onnx ...] --tower vision [--tokens 16 512] [--runs 3] [--threads 2]

For each graph and input shape: one warm-up call, then `--runs` profiled calls; per op type the
median per call of its summed kernel time, its share, and for the matrix products the work they
do (2*M*K*N, from the shapes the profiler records) and the rate reached. The "floor" is that work
at the machine's ceiling measured in the same run (bench.ceilings: u8 x s8 MatMulInteger and fp32
MatMul at 1297 x 1024 x 4096), so a row says how far an op type is from the fastest it could be.
Ops without matrix work have no floor: everything they take is above it. Graph optimizations are
the runtime's own (ORT_ENABLE_ALL), so fused nodes appear as users run them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

import onnxruntime as ort

from edgeclip.cli.common import positive
from edgeclip.machine import machine_tags

from .ceilings import FFN, HIDDEN, gemm_gflops
from .worker import pixel_inputs, text_inputs

INT8_GEMMS = frozenset({"MatMulIntegerToFloat", "MatMulInteger", "DynamicQuantizeMatMul", "QGemm"})
# Control-flow nodes: their kernel time is their subgraph's, whose nodes the profiler also records.
CONTAINERS = frozenset({"If", "Loop", "Scan"})


def _dims(shapes: list[dict]) -> list[list[int]]:
    return [next(iter(entry.values())) for entry in shapes]


def matrix_ops(op: str, inputs: list[list[int]], output: list[int]) -> float:
    """Multiply-adds x 2 that one node did, from the shapes the profiler recorded (0 for non-matrix ops)."""
    if op in INT8_GEMMS | {"MatMul", "FusedMatMul", "Gemm"} and len(inputs) >= 2 and output:
        k = inputs[0][-1]
        rows = 1
        for d in output[:-1]:
            rows *= d
        return 2.0 * rows * k * output[-1]
    if op in ("Conv", "FusedConv") and len(inputs) >= 2 and output:
        weight = inputs[1]  # [out, in, kh, kw]
        per_output = weight[1] * weight[2] * weight[3]
        count = 1
        for d in output:
            count *= d
        return 2.0 * count * per_output
    if op == "MultiHeadAttention" and inputs and output:
        batch, seq, width = inputs[0]
        kv_seq = inputs[1][1] if len(inputs) > 1 and len(inputs[1]) == 3 else seq
        return 2.0 * 2 * batch * seq * kv_seq * width  # QK^T and PV
    return 0.0


def profile_calls(graph: str, feeds: dict, runs: int, threads: int) -> list[dict[str, tuple[float, float]]]:
    """Per profiled call: op type -> (kernel seconds, matrix ops)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        for _ in range(runs + 1):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    runs_at = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    calls: list[dict[str, list[float]]] = [defaultdict(lambda: [0.0, 0.0]) for _ in runs_at]
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        if event["args"]["op_name"] in CONTAINERS:
            continue
        index = next((i for i, (start, end) in enumerate(runs_at) if start <= event["ts"] <= end), None)
        if index is None:
            continue
        args = event["args"]
        entry = calls[index][args["op_name"]]
        entry[0] += event["dur"] / 1e6
        outputs = _dims(args.get("output_type_shape", []))
        entry[1] += matrix_ops(args["op_name"], _dims(args.get("input_type_shape", [])), outputs[0] if outputs else [])
    return [{op: (t, ops) for op, (t, ops) in call.items()} for call in calls[1:]]  # the first call is the warm-up


def op_table(calls: list[dict[str, tuple[float, float]]], int8_ceiling: float, fp32_ceiling: float) -> tuple[list[dict], float]:
    ops = sorted({op for call in calls for op in call})
    total = statistics.median(sum(t for t, _ in call.values()) for call in calls)
    rows = []
    for op in ops:
        seconds = statistics.median(call.get(op, (0.0, 0.0))[0] for call in calls)
        work = statistics.median(call.get(op, (0.0, 0.0))[1] for call in calls)
        ceiling = int8_ceiling if op in INT8_GEMMS else fp32_ceiling if work else 0.0
        floor = work / ceiling / 1e9 if ceiling else 0.0
        rows.append({"op": op, "ms": seconds * 1e3, "share": seconds / total if total else 0.0, "gops": work / 1e9,
                     "rate": work / seconds / 1e9 if seconds and work else 0.0, "floor_ms": floor * 1e3})
    rows.sort(key=lambda r: -r["ms"])
    return rows, total


def markdown(title: str, rows: list[dict], total: float) -> str:
    floor = sum(r["floor_ms"] for r in rows)
    lines = [f"### {title}: {total * 1e3:.1f} ms of kernel time per call, GEMM floor {floor:.1f} ms ({total * 1e3 / floor:.2f}x)" if floor else
             f"### {title}: {total * 1e3:.1f} ms of kernel time per call",
             "", "| op type | ms | share | GOP | GOP/s | floor ms |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["ms"] < 0.005 * total * 1e3:
            continue
        lines.append(f"| {r['op']} | {r['ms']:.1f} | {r['share'] * 100:.1f} % | {r['gops']:.1f} | "
                     f"{r['rate']:.0f} | {r['floor_ms']:.1f} |" if r["gops"] else
                     f"| {r['op']} | {r['ms']:.1f} | {r['share'] * 100:.1f} % | | | |")
    small = sum(r["ms"] for r in rows if r["ms"] < 0.005 * total * 1e3)
    lines.append(f"| (op types under 0.5 % each) | {small:.1f} | {small / total / 10:.1f} % | | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("graphs", nargs="+")
    parser.add_argument("--tower", choices=("text", "vision"), required=True)
    parser.add_argument("--tokens", type=positive, nargs="+", default=[16, 512])
    parser.add_argument("--runs", type=positive, default=3)
    parser.add_argument("--threads", type=positive, default=2)
    parser.add_argument("--json", type=Path, help="also write the tables and the machine's tags here")
    args = parser.parse_args()
    missing = [g for g in args.graphs if not Path(g).is_file()]
    if missing:
        parser.error(f"no such graph file: {', '.join(missing)} (give .onnx files, e.g. BUNDLE/vision.int8-vnni.onnx)")
    # the best of three medians: a shared machine's noise only ever slows a GEMM down
    int8_ceiling = max(gemm_gflops(1297, HIDDEN, FFN, "int8", args.threads) for _ in range(3))
    fp32_ceiling = max(gemm_gflops(1297, HIDDEN, FFN, "fp32", args.threads) for _ in range(3))
    tags = machine_tags()
    print(f"{tags['cpu']} ({tags['cpu_class']}), onnxruntime {tags['onnxruntime']}, {args.threads} threads; "
          f"ceilings: u8 x s8 {int8_ceiling:.0f} GOP/s, fp32 {fp32_ceiling:.0f} GFLOP/s\n")
    shapes = [(f"{t} tokens", text_inputs(1, t)) for t in args.tokens] if args.tower == "text" else [("512 px image", pixel_inputs(1))]
    report = {"machine": tags, "threads": args.threads, "ceilings": {"int8": int8_ceiling, "fp32": fp32_ceiling}, "tables": []}
    for graph in args.graphs:
        for label, feeds in shapes:
            rows, total = op_table(profile_calls(graph, feeds, args.runs, args.threads), int8_ceiling, fp32_ceiling)
            print(markdown(f"{Path(graph).name}, {label}", rows, total) + "\n")
            report["tables"].append({"graph": Path(graph).name, "input": label, "total_ms": total * 1e3, "rows": rows})
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
