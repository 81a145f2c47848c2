"""Mixed-length texts: throughput of batch 1, fixed batches of 4 and 32, and token-budget batching.

    python -m bench.text_batching BUNDLE [--texts 256] [--rounds 2] [--threads 2] [--variant V] [--out bench/results]

256 token rows of 21 to 268 tokens (uniform, fixed seed), embedded with `run_tokens` (what
encode_text, jobs and the server call). "fixed B" is the old batching: length-sorted rows cut
every B rows whatever their length; "budget T" also cuts before a batch pads past T tokens
(edgeclip's default is batch 32 with budget TEXT_TOKENS_PER_BATCH). Configurations alternate
within each round; the median over rounds is reported, with the ratio to batch 1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

import edgeclip
from edgeclip import model as model_module
from edgeclip._files import atomic_write_bytes
from edgeclip.machine import machine_tags

CONFIGS = {"batch 1": (1, None), "fixed 4": (4, None), "fixed 32": (32, None), "budget 1024": (32, 1024),
           "budget 2048": (32, 2048), "budget 4096": (32, 4096)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle")
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variant")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = [[0, *rng.integers(5, 1800, n - 2).tolist(), 2] for n in rng.integers(21, 269, args.texts)]
    model = edgeclip.load(args.bundle, threads=args.threads, variant=args.variant)
    model.run_tokens(rows[:4])  # load and warm up
    default_budget = model_module.TEXT_TOKENS_PER_BATCH
    times: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for _ in range(args.rounds):
        for name, (batch, budget) in CONFIGS.items():
            model_module.TEXT_TOKENS_PER_BATCH = budget or 10**9
            start = time.perf_counter()
            model.run_tokens(rows, batch_size=batch)
            times[name].append(time.perf_counter() - start)
            print(f"{name}: {times[name][-1]:.2f} s", flush=True)
    model_module.TEXT_TOKENS_PER_BATCH = default_budget
    base = statistics.median(times["batch 1"])
    results = {"machine": machine_tags(), "variant": model.variant_name("text"), "texts": args.texts, "threads": args.threads,
               "lengths": "21-268 tokens, uniform, seed 0", "default_budget": default_budget,
               "configs": {name: {"median_s": statistics.median(t), "texts_per_s": args.texts / statistics.median(t),
                                  "throughput_vs_batch1": base / statistics.median(t), "runs_s": t} for name, t in times.items()}}
    stamp = time.strftime("%Y-%m-%d-%H%M")
    atomic_write_bytes(args.out / f"text-batching-{stamp}.json", json.dumps(results, indent=1).encode())
    for name, r in results["configs"].items():
        print(f"{name:<12} {r['median_s']:7.2f} s  {r['texts_per_s']:6.1f} texts/s  {r['throughput_vs_batch1']:.2f}x batch 1")


if __name__ == "__main__":
    main()
