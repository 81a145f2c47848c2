"""Two graphs of the same tower, timed side by side in one process: A, B, A, B, ... (one change at a time).

Each turn starts with one untimed call: the other session's idle threads spin for a while after
its last call, and timing through that would charge one graph for the other's threads.

    python -m bench.compare OLD.onnx NEW.onnx --tower vision --batch 1 [--tokens 16] [--threads 2] [--rounds 5] [--reps 3] [--new-without-mem-pattern]

Prints the median latency of each and the ratio OLD/NEW (> 1: NEW is faster), plus max |diff| of outputs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnxruntime as ort

from .worker import pixel_inputs, text_inputs


def session(path: str, threads: int, mem_pattern: bool = True) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.enable_mem_pattern = mem_pattern
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--tower", choices=("text", "vision"), required=True)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=3, help="timed calls per turn")
    parser.add_argument("--new-without-mem-pattern", action="store_true",
                        help="open NEW with enable_mem_pattern=False (pass the same graph twice to time that setting alone)")
    args = parser.parse_args()
    feeds = text_inputs(args.batch, args.tokens) if args.tower == "text" else pixel_inputs(args.batch)
    sessions = {"old": session(args.old, args.threads), "new": session(args.new, args.threads, not args.new_without_mem_pattern)}
    outputs = {name: s.run(None, feeds)[0] for name, s in sessions.items()}  # warm-up
    times: dict[str, list[float]] = {"old": [], "new": []}
    for _ in range(args.rounds):
        for name, s in sessions.items():
            s.run(None, feeds)
            for _ in range(args.reps):
                start = time.perf_counter()
                s.run(None, feeds)
                times[name].append(time.perf_counter() - start)
    old, new = statistics.median(times["old"]), statistics.median(times["new"])
    shape = f"{args.tower} batch {args.batch}" + (f" x {args.tokens} tokens" if args.tower == "text" else "")
    print(f"{shape}, {args.threads} threads, {args.rounds} rounds: old {old * 1e3:.1f} ms, new {new * 1e3:.1f} ms, "
          f"old/new {old / new:.3f}; max |diff| {np.abs(outputs['old'] - outputs['new']).max():.2e}")


if __name__ == "__main__":
    main()
