"""Local `edgeclip embed` vs `--engine ray` at equal cores: throughput and peak RSS per configuration.

    python -m bench.distributed BUNDLE [--images 64] [--texts 1000] [--work /tmp/edgeclip-ray] [--out bench/results]

Inputs: random-pixel 640x480 JPEGs and texts cycled from the project's multilingual corpus (numbered,
so each is distinct). Each configuration is one `edgeclip embed` process, end to end (Ray's start-up
and every model load included), with the RSS of its whole process tree (driver, raylet, actors)
sampled every 0.2 s: local with 2 threads; Ray with 1 actor x 2 CPUs; Ray with 2 actors x 1 CPU.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

from converters.tokenizer_builder import corpus_lines
from edgeclip._files import atomic_write_bytes
from edgeclip.machine import machine_tags


def make_inputs(work: Path, images: int, texts: int) -> tuple[Path, Path]:
    photos, docs = work / "photos", work / "docs.jsonl"
    if not photos.exists():
        photos.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for n in range(images):
            Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(photos / f"img{n:04d}.jpg", quality=90)
    lines = [text for _, text in corpus_lines()]
    docs.write_text("".join(json.dumps({"id": f"doc{n}", "text": f"{lines[n % len(lines)]} ({n})"}, ensure_ascii=False) + "\n"
                            for n in range(texts)))
    return photos, docs


def run(command: list[str]) -> dict[str, float]:
    started = time.perf_counter()
    process = psutil.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak_tree, peak_single = 0, 0
    while process.poll() is None:
        try:
            tree = [process, *process.children(recursive=True)]
            rss = [p.memory_info().rss for p in tree if p.is_running()]
        except psutil.Error:
            continue
        peak_tree, peak_single = max(peak_tree, sum(rss)), max(peak_single, max(rss))
        time.sleep(0.2)
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {process.returncode}: {process.stderr.read()[-2000:]}")
    return {"wall_s": wall, "peak_tree_rss_mb": peak_tree / 2**20, "peak_process_rss_mb": peak_single / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgeclip-ray"))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    photos, docs = make_inputs(args.work, args.images, args.texts)
    base = [sys.executable, "-m", "edgeclip", "embed", args.bundle, "--image-dir", str(photos), "--jsonl", str(docs), "--quiet"]
    configs = {
        "local, 2 threads": [*base, "--threads", "2", "--out", str(args.work / "local.parquet")],
        "ray, 1 actor x 2 CPUs": [*base, "--engine", "ray", "--workers", "1", "--cpus-per-worker", "2", "--shard-rows", "32",
                                  "--out", str(args.work / "ray-1x2") + "/"],
        "ray, 2 actors x 1 CPU": [*base, "--engine", "ray", "--workers", "2", "--cpus-per-worker", "1", "--shard-rows", "32",
                                  "--out", str(args.work / "ray-2x1") + "/"],
    }
    items = args.images + args.texts
    results = {"machine": machine_tags(), "bundle": args.bundle, "images": args.images, "texts": args.texts,
               "date": time.strftime("%Y-%m-%d %H:%M"), "configs": {}}
    for name, command in configs.items():
        for stale in (args.work / "local.parquet", args.work / "ray-1x2", args.work / "ray-2x1"):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
        for meta in args.work.glob("local.parquet.*"):
            meta.unlink()
        measured = run(command)
        measured["items_per_s"] = items / measured["wall_s"]
        results["configs"][name] = measured
        print(f"{name:<24} {measured['wall_s']:7.1f} s  {measured['items_per_s']:6.2f} items/s  peak RSS tree "
              f"{measured['peak_tree_rss_mb']:6.0f} MB (largest process {measured['peak_process_rss_mb']:5.0f} MB)", flush=True)
    local = results["configs"]["local, 2 threads"]["items_per_s"]
    for name, measured in results["configs"].items():
        measured["throughput_vs_local"] = measured["items_per_s"] / local
    stamp = time.strftime("%Y-%m-%d-%H%M")
    atomic_write_bytes(args.out / f"distributed-{stamp}.json", json.dumps(results, indent=1).encode())
    print({name: round(m["throughput_vs_local"], 3) for name, m in results["configs"].items()})


if __name__ == "__main__":
    main()
