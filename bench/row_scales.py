"""Per-row vs per-tensor int8 activation scales, side by side in one process (issue 13's root fix).

    python -m bench.row_scales --bundle B [--old-bundle OLD] [--rounds 5]

With only --bundle (built before per-row scales), the per-row graphs are derived from its int8 graphs
with converters.row_scales into a temporary folder. Prints, per tower: cosine to fp32 for each, the
max |diff| of item 0 alone vs inside a batch, and median latency per shape with the ratio row/old.
Writes bench/results/row-scales-<date>.json with the machine's tags.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from bench.run import machine_tag
from bench.worker import pixel_inputs, text_inputs
from converters.row_scales import apply_row_scales

SHAPES = {"text": [(1, 16), (16, 16), (1, 512)], "vision": [(1, 0), (4, 0)]}


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = threads, 1, 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _cosines(a: np.ndarray, b: np.ndarray) -> list[float]:
    a, b = a / np.linalg.norm(a, axis=1, keepdims=True), b / np.linalg.norm(b, axis=1, keepdims=True)
    return [round(float(c), 6) for c in (a * b).sum(axis=1)]


def _feeds(tower: str, batch: int, tokens: int) -> dict[str, np.ndarray]:
    return text_inputs(batch, tokens) if tower == "text" else pixel_inputs(batch)


def compare(tower: str, graphs: dict[str, Path], fp32: Path, threads: int, rounds: int) -> dict[str, Any]:
    sessions = {name: _session(path, threads) for name, path in graphs.items()}
    feeds = _feeds(tower, 4 if tower == "text" else 2, 16)
    reference = _session(fp32, threads).run(None, feeds)[0]
    result: dict[str, Any] = {"cosine_to_fp32": {}, "alone_vs_batch_max_abs_diff": {}, "latency_ms": {}}
    for name, s in sessions.items():
        batch = s.run(None, feeds)[0]
        alone = s.run(None, {k: v[:1] for k, v in feeds.items()})[0]
        result["cosine_to_fp32"][name] = _cosines(reference, batch)
        result["alone_vs_batch_max_abs_diff"][name] = float(np.abs(alone[0] - batch[0]).max())
    for batch_size, tokens in SHAPES[tower]:
        feeds = _feeds(tower, batch_size, tokens)
        times: dict[str, list[float]] = {name: [] for name in sessions}
        for _ in range(rounds):
            for name, s in sessions.items():  # alternate; one untimed call per turn (the other pool's spin)
                s.run(None, feeds)
                start = time.perf_counter()
                s.run(None, feeds)
                times[name].append(time.perf_counter() - start)
        medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
        shape = f"batch {batch_size}" + (f" x {tokens} tokens" if tower == "text" else "")
        result["latency_ms"][shape] = {**{k: round(v, 1) for k, v in medians.items()},
                                       "row_over_old": round(medians["per_row"] / medians["per_tensor"], 3)}
        print(f"{tower} {shape}: {result['latency_ms'][shape]}", flush=True)
    print(f"{tower}: cosine to fp32 {result['cosine_to_fp32']}, alone vs batch {result['alone_vs_batch_max_abs_diff']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True, help="a bundle whose int8 graphs have per-tensor scales")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": machine_tag(args.bundle), "threads": args.threads, "towers": {}}
    with tempfile.TemporaryDirectory(dir=args.bundle.parent, prefix=".rowscales-") as scratch:
        for tower in ("text", "vision"):
            old = args.bundle / f"{tower}.int8.onnx"
            model = onnx.load(str(old))
            if apply_row_scales(model) == 0:
                raise SystemExit(f"{old} has no per-tensor quantizers: pass a bundle built before per-row scales")
            new = Path(scratch) / f"{tower}.int8.onnx"
            onnx.save(model, str(new), save_as_external_data=True, location=new.name + ".data", size_threshold=1024)
            del model
            results["towers"][tower] = compare(tower, {"per_tensor": old, "per_row": new},
                                               args.bundle / f"{tower}.fp32.onnx", args.threads, args.rounds)
    out = Path(__file__).parent / "results" / f"row-scales-{time.strftime('%Y%m%d')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
