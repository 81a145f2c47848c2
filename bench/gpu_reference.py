"""The GPU reference: our PyTorch towers on CUDA in fp32 and fp16, in `edgeclip bench`'s report schema.

Runs where a GPU is (a lent device machine); makes its own full-size random checkpoint there.
Also checks the GPU outputs against the same model on the CPU in fp32, so the GPU rows are known
to compute the same function. With --bundle and onnxruntime-gpu installed, the bundle's fp16 and
fp32 graphs on the CUDA execution provider are timed into the same report.

    python -m bench.gpu_reference --out bench/results/gpu-reference-<gpu>.json [--checkpoint DIR] [--bundle BUNDLE]
    edgeclip bench BUNDLE --compare bench/results/gpu-reference-<gpu>.json     # on any CPU machine
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from converters.checkpoint import load_reference, resolve_source
from converters.make_checkpoint import make_checkpoint
from edgeclip.benchmark import SCHEMA
from edgeclip.benchmark.measure import peak_rss_mb, pixel_feeds, text_feeds
from edgeclip.machine import machine_tags

TEXT_CASES = [(b, t) for t in (16, 128, 512) for b in (1, 8)] + [(1, 8192)]
VISION_CASES = [1, 8]


def cuda_time(call: Callable[[], Any], reps: int = 20) -> dict[str, float]:
    for _ in range(3):
        call()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        call()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {"reps": reps, "p50_s": statistics.median(times), "p95_s": float(np.percentile(times, 95))}


def torch_rows(source: Any, report: dict[str, Any]) -> None:
    for tower in ("text", "vision"):
        cpu_model = load_reference(source, tower)
        check = text_feeds(4, 37, 1800) if tower == "text" else pixel_feeds(2, 512)
        with torch.inference_mode():
            cpu_out = cpu_model(*(torch.from_numpy(v) for v in check.values())).double()
        for dtype in (torch.float32, torch.float16):
            started = time.perf_counter()
            model = load_reference(source, tower).to("cuda", dtype)
            variant = f"pytorch-{str(dtype).split('.')[1].replace('float', 'fp')}"
            session = {"tower": tower, "variant": variant, "provider": "torch-cuda", "load_s": time.perf_counter() - started}
            with torch.inference_mode():
                def run(feeds: dict[str, np.ndarray], model: Any = model, dtype: torch.dtype = dtype) -> torch.Tensor:
                    tensors = [torch.from_numpy(v).cuda() for v in feeds.values()]
                    return model(*(t.to(dtype) if t.is_floating_point() else t for t in tensors))

                cosine = torch.nn.functional.cosine_similarity(run(check).double().cpu(), cpu_out, dim=-1)
                session["min_cosine_to_cpu_fp32"] = float(cosine.min())
                cases = [{"batch": b, "tokens": t} for b, t in TEXT_CASES] if tower == "text" else \
                        [{"batch": b, "image_size": 512} for b in VISION_CASES]
                torch.cuda.reset_peak_memory_stats()
                for case in cases:
                    feeds = text_feeds(case["batch"], case["tokens"], 1800) if tower == "text" else pixel_feeds(case["batch"], 512)
                    timing = cuda_time(lambda feeds=feeds: run(feeds))
                    row = {"tower": tower, "variant": variant, "provider": "torch-cuda", **case, **timing,
                           "items_per_s": case["batch"] / timing["p50_s"]}
                    report["rows"].append(row)
                    print(json.dumps(row), flush=True)
            session["peak_gpu_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
            session["peak_rss_mb"] = peak_rss_mb()
            report["sessions"].append(session)
            del model
            torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, default=Path("/tmp/edgeclip-full"))
    parser.add_argument("--bundle", type=Path, help="also time this bundle's fp16/fp32 graphs on onnxruntime's CUDA provider")
    args = parser.parse_args()
    if not (args.checkpoint / "model.safetensors").exists():
        make_checkpoint(args.checkpoint, size="full", overwrite=True)
    report: dict[str, Any] = {"schema": SCHEMA, "command": " ".join(["python -m bench.gpu_reference", *sys.argv[1:]]),
                              "date": time.strftime("%Y-%m-%d %H:%M"), "machine": {**machine_tags(), "gpu": torch.cuda.get_device_name(0),
                                                                                   "torch": torch.__version__},
                              "bundle": {"path": str(args.checkpoint), "model": "random full-size checkpoint", "manifest_sha256": ""},
                              "settings": {"threads": None, "seconds": None, "min_reps": 20}, "sessions": [], "rows": []}
    torch_rows(resolve_source(str(args.checkpoint), None), report)
    if args.bundle:
        import onnxruntime as ort

        from edgeclip.benchmark import run_benchmark

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            print("onnxruntime has no CUDA provider here (install onnxruntime-gpu): bundle rows skipped", file=sys.stderr)
        else:
            ort_report = run_benchmark(args.bundle, variants=["fp16", "fp32"], providers=["CUDAExecutionProvider"],
                                       batches=[1, 8], tokens=[16, 128, 512], seconds=3.0)
            report["sessions"] += ort_report["sessions"]
            report["rows"] += ort_report["rows"]
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
