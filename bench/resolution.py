"""Image latency per input size, side by side in one process, beside the floor from this machine's ceilings.

    python -m bench.resolution B512 B448 B384 B336 B224 [--variant int8-vnni] [--threads 2] [--rounds 3] [--out bench/results]

Each BUNDLE is one `build --image-size N` output (vision tower) of the same checkpoint. Sessions take
turns every round (one untimed call first per turn); the median of the timed calls is reported. The
floor: the tower's linear FLOPs at the measured int8 GEMM ceiling plus attention FLOPs at the fp32
ceiling, at that size's token count (CLS + (N // 14)^2 patches), batch 1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from edgeclip._files import atomic_write_bytes
from edgeclip.benchmark.measure import pixel_feeds, time_calls
from edgeclip.bundle import Bundle
from edgeclip.machine import machine_tags
from edgeclip.session import TowerSession

from .ceilings import measure_ceilings
from .report import LAYERS, VISION_LINEAR_PARAMS, WIDTH


def floor_s(ceilings: dict, tokens: int, threads: int) -> float:
    figures = ceilings[f"threads={threads}"]
    linear, attention = 2.0 * tokens * VISION_LINEAR_PARAMS, 4.0 * LAYERS * tokens * tokens * WIDTH
    return linear / 1e9 / figures[f"int8_gflops@{tokens}"] + attention / 1e9 / figures[f"fp32_gflops@{tokens}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--variant", default="int8-vnni")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    sessions = {}
    for path in args.bundles:
        bundle = Bundle.open(path)
        size = bundle.manifest.vision.image_size  # type: ignore[union-attr]
        sessions[size] = (TowerSession(bundle, "vision", args.variant, threads=args.threads), pixel_feeds(1, size))
    tokens = {size: 1 + (size // 14) ** 2 for size in sessions}
    print("ceilings ...", flush=True)
    ceilings = measure_ceilings((args.threads,), tuple(sorted(set(tokens.values()))), bandwidth=False)
    times: dict[int, list[float]] = {size: [] for size in sessions}
    for index in range(args.rounds):
        order = sorted(sessions, reverse=index % 2 == 0)
        for size in order:
            session, feeds = sessions[size]
            session.run(feeds)
            times[size] += time_calls(lambda s=session, f=feeds: s.run(f), 2, 0.0)
    largest = max(sessions)
    results = {"machine": machine_tags(), "variant": args.variant, "threads": args.threads, "rounds": args.rounds,
               "date": time.strftime("%Y-%m-%d %H:%M"), "ceilings": ceilings, "sizes": {}}
    for size in sorted(sessions, reverse=True):
        p50 = statistics.median(times[size])
        floor = floor_s(ceilings, tokens[size], args.threads)
        results["sizes"][str(size)] = {"tokens": tokens[size], "p50_s": p50, "vs_largest": p50 / statistics.median(times[largest]),
                                       "floor_s": floor, "latency_over_floor": p50 / floor, "timed_calls": len(times[size])}
        r = results["sizes"][str(size)]
        print(f"{size:>4} px  {tokens[size]:>5} tokens  p50 {p50:6.3f} s  {r['vs_largest']:.2f}x {largest} px  "
              f"floor {floor:6.3f} s  ({r['latency_over_floor']:.2f}x floor)", flush=True)
    stamp = time.strftime("%Y-%m-%d-%H%M")
    atomic_write_bytes(args.out / f"resolution-{stamp}.json", json.dumps(results, indent=1).encode())


if __name__ == "__main__":
    main()
