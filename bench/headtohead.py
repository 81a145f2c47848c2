"""The issue's target ratios, measured head to head: rounds of alternating processes, with the ceilings re-measured in every round.

    python -m bench.headtohead --bundle BUNDLE --checkpoint CHECKPOINT [--work /tmp/edgeclip-bench] [--rounds 5]

This VM's speed drifts 10-25 % over minutes, so a ratio between two processes run twenty minutes apart
(as in bench.run's full matrix) can be off by that much. Here every round runs the ceilings, then
each engine in a fresh process, in an order that reverses every round; each ratio is computed
within its round, and the median and range over rounds are reported. 2 threads, batch 1.
Needs the baseline graphs that bench.run caches in --work.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from edgeclip._files import atomic_write_bytes

from .ceilings import measure_ceilings
from .report import ceiling, flops, floor_seconds
from .run import machine_tag, run_worker

def engines(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    text_cases = [{"batch": 1, "tokens": 16, "reps": 10}, {"batch": 1, "tokens": 512, "reps": 3}]
    common = {"threads": 2, "min_reps": 3, "budget_s": 0.0}
    plain = {tower: str(args.work / f"{tower}-plain-int8" / "model.onnx") for tower in ("text", "vision")}
    return {
        "edgeclip-int8 text": {**common, "engine": "edgeclip", "variant": "int8", "bundle": str(args.bundle), "tower": "text", "cases": text_cases},
        "plain-int8 text": {**common, "engine": "onnx", "label": "plain-int8", "graph": plain["text"], "tower": "text", "cases": text_cases},
        "pytorch-fp32 text": {**common, "engine": "torch", "label": "pytorch-fp32", "checkpoint": str(args.checkpoint), "tower": "text",
                              "cases": [{"batch": 1, "tokens": 16, "reps": 10}]},
        "edgeclip-int8 vision": {**common, "engine": "edgeclip", "variant": "int8", "bundle": str(args.bundle), "tower": "vision",
                                 "cases": [{"batch": 1, "reps": 3}]},
        "plain-int8 vision": {**common, "engine": "onnx", "label": "plain-int8", "graph": plain["vision"], "tower": "vision",
                              "cases": [{"batch": 1, "reps": 3}]},
    }


def p50(result: dict[str, Any], tokens: int | None = None) -> float:
    return next(c["p50_s"] for c in result["cases"] if c.get("tokens") == tokens)


def ratios(ceilings: dict[str, Any], r: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The target ratios of one round; `ceilings` as bench.ceilings.measure_ceilings returns them."""
    image_floor = floor_seconds(ceilings, "vision", None)
    text16 = sum(flops("text", 1, 16)) / p50(r["edgeclip-int8 text"], 16) / 1e9
    text512 = sum(flops("text", 1, 512)) / p50(r["edgeclip-int8 text"], 512) / 1e9
    image = p50(r["edgeclip-int8 vision"])
    streamed16 = ceilings["threads=2"]["int8_gflops@16_streamed"]
    return {
        "image int8 latency / floor (goal <= 1.33)": image / image_floor,
        "image int8 speed-up vs plain-int8 (goal >= 1.3)": p50(r["plain-int8 vision"]) / image,
        "image plain-int8 latency / floor: the largest possible speed-up over it": p50(r["plain-int8 vision"]) / image_floor,
        "text 16 tokens int8 efficiency vs int8 ceiling@16, weights in cache (goal >= 0.7)": text16 / ceiling(ceilings, 2, "int8", 16),
        "text 16 tokens int8 efficiency vs int8 ceiling@16, weights streamed (goal >= 0.7)": text16 / streamed16,
        "text 16 tokens int8 speed-up vs pytorch-fp32 (goal >= 5)": p50(r["pytorch-fp32 text"], 16) / p50(r["edgeclip-int8 text"], 16),
        "text 16 tokens int8 speed-up vs plain-int8": p50(r["plain-int8 text"], 16) / p50(r["edgeclip-int8 text"], 16),
        "text 512 tokens int8 efficiency vs int8 ceiling@512 (goal >= 0.7)": text512 / ceiling(ceilings, 2, "int8", 512),
        "text 512 tokens int8 floor / latency, attention at the fp32 ceiling": floor_seconds(ceilings, "text", 512) / p50(r["edgeclip-int8 text"], 512),
        "text 512 tokens int8 speed-up vs plain-int8": p50(r["plain-int8 text"], 512) / p50(r["edgeclip-int8 text"], 512),
    }


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [f"# Head to head {m['date']}", "", f"- CPU: {m['cpu']}; onnxruntime {m['onnxruntime']}; bundle manifest sha256 "
             f"{m['bundle_manifest_sha256'][:16]}…", f"- command: `{results['command']}`",
             f"- {len(results['rounds'])} rounds; each: ceilings, then every engine in a fresh process (order reversed every round); "
             "2 threads, batch 1", "", "| ratio | median | min | max | per round |", "|---|---:|---:|---:|---|"]
    for name in results["rounds"][0]["ratios"]:
        values = [rnd["ratios"][name] for rnd in results["rounds"]]
        lines.append(f"| {name} | {statistics.median(values):.3f} | {min(values):.3f} | {max(values):.3f} | "
                     + ", ".join(f"{v:.3f}" for v in values) + " |")
    lines += ["", "| round | " + " | ".join(results["rounds"][0]["ceilings"]) + " | "
              + " | ".join(results["rounds"][0]["p50_s"]) + " |",
              "|---:|" + "---:|" * (len(results["rounds"][0]["ceilings"]) + len(results["rounds"][0]["p50_s"]))]
    columns = list(results["rounds"][0]["p50_s"])  # look values up by name: the run order alternates
    for i, rnd in enumerate(results["rounds"]):
        lines.append(f"| {i + 1} | " + " | ".join(f"{v:.1f}" for v in rnd["ceilings"].values()) + " | "
                     + " | ".join(f"{rnd['p50_s'][c]:.4f}" for c in columns) + " |")
    lines += ["", "Ceilings in GFLOP/s (GOP/s for int8), latencies in seconds (p50 within each process)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgeclip-bench"), help="bench.run's baseline graphs")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    configs = engines(args)
    results: dict[str, Any] = {"machine": machine_tag(args.bundle), "command": " ".join(["python -m bench.headtohead", *sys.argv[1:]]),
                               "rounds": []}
    for index in range(args.rounds):
        print(f"round {index + 1}: ceilings ...", file=sys.stderr, flush=True)
        ceil = measure_ceilings((2,), (16, 512, 1297), bandwidth=False)
        order = list(configs) if index % 2 == 0 else list(reversed(configs))
        runs = {name: run_worker(configs[name]) for name in order}
        failed = {name: run["error"] for name, run in runs.items() if "error" in run}
        if failed:
            raise SystemExit(f"round {index + 1}: {failed}")
        p50s = {f"{name} {c.get('tokens') or ''}".strip(): c["p50_s"] for name in configs for c in runs[name]["cases"]}
        results["rounds"].append({"ceilings": ceil["threads=2"], "p50_s": p50s, "ratios": ratios(ceil, runs), "time": time.strftime("%H:%M:%S")})
    write(results, args.out / f"headtohead-{results['machine']['date'].replace(' ', '-').replace(':', '')}")


def write(results: dict[str, Any], stem: Path) -> None:
    atomic_write_bytes(stem.with_suffix(".json"), json.dumps(results, indent=1).encode())
    text = markdown(results)
    atomic_write_bytes(stem.with_suffix(".md"), text.encode())
    print(text)


if __name__ == "__main__":
    main()
