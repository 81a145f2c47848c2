"""One benchmark session in its own process: load time, peak RSS, p50/p95 per shape.

    python -m edgeclip.benchmark.measure '{"bundle": ..., "tower": "text", "variant": "int8", "provider": ...,
                                           "threads": 2, "batches": [1], "tokens": [16], "min_reps": 3, "seconds": 5}'

prints one JSON object. One untimed call per shape first (ORT allocates on a shape's first run),
then timed calls until the budget is spent (at least `min_reps`). bench/ times with time_calls too.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA = "edgeclip-bench/1"
BOS_ID, EOS_ID, FIRST_WORD_ID = 0, 2, 5
MAX_REPS = 200


def time_calls(call: Callable[[], Any], min_reps: int, budget_s: float, max_reps: int = MAX_REPS) -> list[float]:
    """Seconds per call: at least `min_reps` calls, more until `budget_s` is spent (at most `max_reps`)."""
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < min_reps or (time.perf_counter() < deadline and len(times) < max_reps):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def summarize(times: list[float], batch: int) -> dict[str, float | int]:
    p50 = statistics.median(times)
    return {"reps": len(times), "p50_s": p50, "p95_s": float(np.percentile(times, 95)), "items_per_s": batch / p50}


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM on Linux, not ru_maxrss: exec keeps the parent's high-water mark from fork."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, kB elsewhere


def text_feeds(batch: int, tokens: int, vocab: int) -> dict[str, np.ndarray]:
    """Token rows of one length (<s> ... </s>); speed depends on the shape, not on which ids."""
    ids = np.random.default_rng(tokens).integers(FIRST_WORD_ID, max(FIRST_WORD_ID + 1, min(vocab, 1800)), (batch, tokens))
    ids[:, 0], ids[:, -1] = BOS_ID, EOS_ID
    return {"input_ids": ids.astype(np.int64), "attention_mask": np.ones((batch, tokens), np.int64)}


def pixel_feeds(batch: int, size: int) -> dict[str, np.ndarray]:
    return {"pixel_values": np.random.default_rng(batch).standard_normal((batch, 3, size, size)).astype(np.float32)}


def measure_session(job: dict[str, Any]) -> dict[str, Any]:
    """One tower variant on one provider at every shape of `job`; run in its own process (see run_session)."""
    from ..bundle import Bundle
    from ..session import open_session

    started = time.perf_counter()
    bundle = Bundle.open(job["bundle"])
    session = open_session(bundle, job["tower"], job["variant"], threads=job["threads"], providers=[job["provider"]])
    loaded = time.perf_counter()
    if job["tower"] == "text":
        from tokenizers import Tokenizer

        vocab = Tokenizer.from_file(str(bundle.path(bundle.manifest.text.tokenizer.path))).get_vocab_size()  # type: ignore[union-attr]
        shapes = [({"batch": b, "tokens": t}, text_feeds(b, t, vocab)) for b in job["batches"] for t in job["tokens"]]
    else:
        size = bundle.manifest.vision.image_size  # type: ignore[union-attr]
        shapes = [({"batch": b, "image_size": size}, pixel_feeds(b, size)) for b in job["batches"]]
    rows = []
    first_call_s = None
    for shape, feeds in shapes:
        warm = time.perf_counter()
        session.run(feeds)  # untimed: the first run at a shape allocates
        first_call_s = time.perf_counter() - warm if first_call_s is None else first_call_s
        times = time_calls(lambda feeds=feeds: session.run(feeds), job["min_reps"], job["seconds"])
        rows.append({"tower": job["tower"], "variant": job["variant"], "provider": job["provider"], **shape,
                     **summarize(times, shape["batch"])})
    info = {"tower": job["tower"], "variant": job["variant"], "provider": job["provider"],
            "providers_in_use": session.providers_in_use(), "load_s": loaded - started,
            "first_call_s": first_call_s, "peak_rss_mb": peak_rss_mb()}
    return {"session": info, "rows": rows}


def run_session(job: dict[str, Any]) -> dict[str, Any]:
    """measure_session in a fresh Python process; a failure comes back as {"session": {..., "error": ...}, "rows": []}."""
    done = subprocess.run([sys.executable, "-m", "edgeclip.benchmark.measure", json.dumps(job)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        error = lines[-1] if lines else f"exit status {done.returncode}"
        keys = ("tower", "variant", "provider")
        return {"session": {**{k: job[k] for k in keys}, "error": error}, "rows": []}
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(measure_session(json.loads(sys.argv[1]))))
