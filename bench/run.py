"""One command, one run: ceilings, PyTorch reference, plain baseline and edgeclip variants side by side.

    python -m bench.run --bundle BUNDLE --checkpoint CHECKPOINT [--out bench/results] [--work /tmp/edgeclip-bench]

Use the full-size random checkpoint (speed does not depend on weight values) and a bundle built
from it with --variants int8,int4. Writes bench/results/<tag>.{json,md,png}, tagged with the CPU,
its ISA flags, the onnxruntime version and the bundle's manifest checksum. Not part of CI.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edgeclip.machine import machine_tags

from .ceilings import measure_ceilings
from .report import write_reports

# Batch 8 only at 2 threads, timed once or twice: the full matrix at 1 thread takes over an hour here.
# Batch-1 cases first, so the peak RSS read after them is that of a batch-1 process.
CASES = {
    ("text", 2): [{"batch": 1, "tokens": 1}, {"batch": 1, "tokens": 16}, {"batch": 1, "tokens": 128}, {"batch": 1, "tokens": 512, "reps": 3},
                  {"batch": 8, "tokens": 16}, {"batch": 8, "tokens": 128, "reps": 2}, {"batch": 8, "tokens": 512, "reps": 1}],
    ("text", 1): [{"batch": 1, "tokens": 16}, {"batch": 1, "tokens": 128}, {"batch": 1, "tokens": 512, "reps": 2}],
    ("vision", 2): [{"batch": 1, "reps": 3}, {"batch": 8, "reps": 1}],
    ("vision", 1): [{"batch": 1, "reps": 2}],
}
def machine_tag(bundle: Path) -> dict[str, Any]:
    """edgeclip bench's machine tags, plus the bundle's manifest checksum and the date."""
    return {**machine_tags(), "bundle_manifest_sha256": hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest(),
            "date": time.strftime("%Y-%m-%d %H:%M")}


def run_worker(config: dict[str, Any]) -> dict[str, Any]:
    label = f"{config['engine']}:{config.get('variant', config.get('label', ''))} {config['tower']} threads={config['threads']}"
    print(f"  {label} ...", file=sys.stderr, flush=True)
    done = subprocess.run([sys.executable, "-m", "bench.worker", json.dumps(config)], capture_output=True, text=True)
    if done.returncode != 0:
        return {**config, "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def configurations(args: argparse.Namespace, baseline: dict[str, Any]) -> list[dict[str, Any]]:
    configs = []
    for tower in ("text", "vision"):
        for threads in (1, 2):
            common = {"tower": tower, "threads": threads, "cases": CASES[tower, threads], "min_reps": args.min_reps, "budget_s": args.budget_s}
            configs.append({**common, "engine": "torch", "label": "pytorch-fp32", "checkpoint": str(args.checkpoint)})
            for label, graph in baseline[tower]["graphs"].items():
                configs.append({**common, "engine": "onnx", "label": label, "graph": graph})
            for variant in args.variants:
                configs.append({**common, "engine": "edgeclip", "variant": variant, "bundle": str(args.bundle)})
    # One 8192-token document, in its own process so its peak RSS is its own.
    configs.append({"engine": "edgeclip", "variant": "int8", "bundle": str(args.bundle), "tower": "text", "threads": 2,
                    "cases": [{"batch": 1, "tokens": 8192}], "min_reps": 1, "budget_s": 0.0})
    return configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgeclip-bench"), help="where baseline graphs are cached")
    parser.add_argument("--variants", default="fp32,int8,int4")
    parser.add_argument("--min-reps", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=8.0, help="seconds of repeats per case beyond min-reps")
    args = parser.parse_args()
    args.variants = args.variants.split(",")
    from .baseline import prepare

    results: dict[str, Any] = {"machine": machine_tag(args.bundle), "command": " ".join(sys.argv)}
    print("ceilings ...", file=sys.stderr, flush=True)
    results["ceilings"] = measure_ceilings()
    print("baseline graphs and fidelity ...", file=sys.stderr, flush=True)
    results["baseline"] = prepare(str(args.checkpoint), str(args.bundle), args.work, ("text", "vision"))
    results["runs"] = [run_worker(config) for config in configurations(args, results["baseline"])]
    bundle_sizes = {}
    manifest = json.loads((args.bundle / "manifest.json").read_text())
    for tower in ("text", "vision"):
        for name, variant in (manifest.get(tower) or {}).get("variants", {}).items():
            bundle_sizes[f"{tower}/{name}"] = sum(f["size"] for f in variant["files"])
    results["bundle_sizes"] = bundle_sizes
    write_reports(results, args.out)


if __name__ == "__main__":
    main()
