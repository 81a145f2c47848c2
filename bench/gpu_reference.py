"""The GPU reference: our PyTorch towers on CUDA in fp32 and fp16, for comparing CPU latency against.

Runs where a GPU is (the lent device machine); makes its own full-size random checkpoint there.
Also checks the GPU outputs against the same model on the CPU in fp32, so the GPU rows are known
to compute the same function.

    python -m bench.gpu_reference --out results.json [--checkpoint DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from converters.checkpoint import load_reference, resolve_source
from converters.make_checkpoint import make_checkpoint

from .worker import pixel_inputs, text_inputs

TEXT_CASES = [(b, t) for t in (16, 128, 512) for b in (1, 8)] + [(1, 8192)]
VISION_CASES = [1, 8]


def cuda_time(call, reps: int = 20) -> dict[str, float]:  # noqa: ANN001
    for _ in range(3):
        call()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        call()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    times.sort()
    return {"p50_s": statistics.median(times), "p95_s": times[int(0.95 * (len(times) - 1))], "reps": reps}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, default=Path("/tmp/edgeclip-full"))
    args = parser.parse_args()
    if not (args.checkpoint / "model.safetensors").exists():
        make_checkpoint(args.checkpoint, size="full", overwrite=True)
    source = resolve_source(str(args.checkpoint), None)
    result: dict[str, Any] = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "rows": [], "fidelity": {}}
    for tower in ("text", "vision"):
        cpu_model = load_reference(source, tower)
        check = text_inputs(batch=4, tokens=37) if tower == "text" else pixel_inputs(batch=2)
        with torch.inference_mode():
            cpu_out = cpu_model(*(torch.from_numpy(v) for v in check.values())).double()
        for dtype in (torch.float32, torch.float16):
            model = load_reference(source, tower).to("cuda", dtype)
            name = str(dtype).split(".")[1]
            with torch.inference_mode():
                def run(feeds: dict, model=model, dtype=dtype) -> torch.Tensor:  # noqa: ANN001
                    tensors = [torch.from_numpy(v).cuda() for v in feeds.values()]
                    return model(*(t.to(dtype) if t.is_floating_point() else t for t in tensors))

                gpu_out = run(check).double().cpu()
                cosine = torch.nn.functional.cosine_similarity(gpu_out, cpu_out, dim=-1)
                result["fidelity"][f"{tower}/pytorch-cuda-{name}"] = {"min_cosine_to_cpu_fp32": float(cosine.min())}
                cases = [{"batch": b, "tokens": t} for b, t in TEXT_CASES] if tower == "text" else [{"batch": b} for b in VISION_CASES]
                for case in cases:
                    feeds = text_inputs(**case) if tower == "text" else pixel_inputs(**case)
                    torch.cuda.reset_peak_memory_stats()
                    timing = cuda_time(lambda: run(feeds))
                    result["rows"].append({"tower": tower, "engine": f"pytorch-cuda-{name}", **case, **timing,
                                           "peak_gpu_mem_mb": torch.cuda.max_memory_allocated() / 2**20})
                    print(json.dumps(result["rows"][-1]), flush=True)
            del model
            torch.cuda.empty_cache()
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
