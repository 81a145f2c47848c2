"""One measurement process: one engine, one tower, one thread count. Prints one JSON object.

A fresh process per configuration, so peak RSS and cold start belong to that tower alone.
Engines: "edgeclip" (a bundle variant through the runtime), "torch" (the PyTorch fp32 reference),
"onnx" (any ONNX file in a default ORT session: the plain hand-made baseline).

    python -m bench.worker '{"engine": "edgeclip", "bundle": ..., "tower": "text", "variant": "int8", ...}'
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edgeclip.benchmark.measure import peak_rss_mb, time_calls

PAD_ID, BOS_ID, EOS_ID = 1, 0, 2


def text_inputs(batch: int, tokens: int, vocab: int = 1800) -> dict[str, np.ndarray]:
    ids = np.random.default_rng(tokens).integers(5, vocab, (batch, tokens))
    ids[:, 0], ids[:, -1] = BOS_ID, EOS_ID
    return {"input_ids": ids.astype(np.int64), "attention_mask": np.ones((batch, tokens), np.int64)}


def pixel_inputs(batch: int, size: int = 512) -> dict[str, np.ndarray]:
    return {"pixel_values": np.random.default_rng(batch).standard_normal((batch, 3, size, size)).astype(np.float32)}


def make_runner(config: dict[str, Any]) -> Callable[[dict[str, np.ndarray]], Any]:
    engine, tower, threads = config["engine"], config["tower"], config["threads"]
    if engine == "edgeclip":
        from edgeclip.bundle import Bundle
        from edgeclip.session import TowerSession

        session = TowerSession(Bundle.open(config["bundle"]), tower, config["variant"], threads=threads)
        return session.run
    if engine == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()  # defaults, as a hand-made baseline has them, but the same threads
        options.intra_op_num_threads = threads
        plain = ort.InferenceSession(config["graph"], options, providers=["CPUExecutionProvider"])
        return lambda feeds: plain.run(None, feeds)
    if engine == "torch":
        import torch

        from converters.checkpoint import load_reference, resolve_source

        torch.set_num_threads(threads)
        model = load_reference(resolve_source(config["checkpoint"], None), tower)

        def forward(feeds: dict[str, np.ndarray]) -> Any:
            with torch.inference_mode():
                return model(*(torch.from_numpy(v) for v in feeds.values()))

        return forward
    raise ValueError(f"unknown engine {engine!r}")


def main(config: dict[str, Any]) -> dict[str, Any]:
    tower = config["tower"]
    start = time.perf_counter()
    runner = make_runner(config)
    loaded = time.perf_counter()
    cases = config["cases"]  # [{"batch": 1, "tokens": 16}, ...]: batch 1 first, then batch 8
    first_shape = {k: v for k, v in cases[0].items() if k in ("batch", "tokens")}
    first = text_inputs(**first_shape) if tower == "text" else pixel_inputs(**first_shape)
    runner(first)
    done = time.perf_counter()
    # cold_start_s = load + first call; a vision call alone takes seconds, so load_s is reported too.
    result: dict[str, Any] = {**config, "load_s": loaded - start, "first_call_s": done - loaded,
                              "cold_start_s": done - start, "cases": []}
    for case in cases:
        shape = {k: v for k, v in case.items() if k in ("batch", "tokens")}
        feeds = text_inputs(**shape) if tower == "text" else pixel_inputs(**shape)
        reps = case.get("reps", config.get("min_reps", 3))
        if reps > 1:
            runner(feeds)  # warm-up at this shape (skipped for single timed calls of the slowest cases)
        times = time_calls(lambda: runner(feeds), reps, config.get("budget_s", 10.0) if reps > 1 else 0.0, max_reps=50)
        result["cases"].append({
            **shape,
            "reps": len(times),
            "p50_s": statistics.median(times),
            "p95_s": float(np.percentile(times, 95)),
            "items_per_s": case["batch"] / statistics.median(times),
            "peak_rss_mb_so_far": peak_rss_mb(),
        })
    result["peak_rss_mb"] = peak_rss_mb()
    return result


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
