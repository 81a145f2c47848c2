"""Embedding jobs at scale: memory, decode overlap, interruption and resume (`edgeclip embed`).

    python -m bench.jobs memory  --bundle B --sizes 1000,5000 [--rounds 2]
    python -m bench.jobs overlap --bundle B --images 12 [--rounds 2]
    python -m bench.jobs resume  --bundle B --items 2000 --variant fp32

`memory`: peak RSS (/usr/bin/time -v) and throughput of `edgeclip embed --text-file` against the
in-memory version (one `encode_text` call over every text, one np.save), each in a fresh process,
alternating, at each job size. `overlap`: images/s of the job pipeline (decode thread) against the
model alone on pixels decoded beforehand, alternating in one process. `resume`: SIGINT midway
through a job, rerun, and compare with an uninterrupted run (ids exactly once, max |diff|).
Results are printed and written to bench/results/jobs-<case>-<date>.json with the machine's tags.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.run import machine_tag

WORDS = ("seal rock sea photo bridge river night city light street market dog cat tree mountain snow "
         "beach sunset boat harbour train station forest lake bird flower garden house window door").split()
IN_MEMORY = """
import sys, time, numpy as np, edgeclip
texts = [l.rstrip("\\n") for l in open(sys.argv[2], encoding="utf-8") if l.strip()]
model = edgeclip.load(sys.argv[1])
t = time.perf_counter(); rows = model.encode_text(texts); np.save(sys.argv[3], rows)
print("seconds", time.perf_counter() - t)
"""


def short_texts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 24))) for _ in range(count)]


def _timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of a command, from GNU time."""
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))  # type: ignore[union-attr]
    return wall, rss_kb / 1024


def memory(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as work:
        for size in args.sizes:
            texts = Path(work, f"texts-{size}.txt")
            texts.write_text("\n".join(short_texts(size)) + "\n", encoding="utf-8")
            runs: dict[str, list[tuple[float, float]]] = {"job": [], "in_memory": []}
            for round_ in range(args.rounds):
                order = ["job", "in_memory"] if round_ % 2 == 0 else ["in_memory", "job"]
                for kind in order:
                    out = Path(work, f"{kind}.npy")
                    if kind == "job":
                        cmd = [sys.executable, "-m", "edgeclip", "embed", args.bundle, "--text-file", str(texts),
                               "--out", str(out), "--overwrite", "--quiet"]
                    else:
                        cmd = [sys.executable, "-c", IN_MEMORY, args.bundle, str(texts), str(out)]
                    runs[kind].append(_timed(cmd))
                    print(f"{size} texts, {kind}: {runs[kind][-1][0]:.1f} s, {runs[kind][-1][1]:.0f} MB", flush=True)
            job_s, mem_s = (statistics.median(w for w, _ in runs[k]) for k in ("job", "in_memory"))
            results[str(size)] = {
                "job_seconds": job_s, "in_memory_seconds": mem_s, "throughput_ratio": mem_s / job_s,
                "job_peak_rss_mb": max(r for _, r in runs["job"]), "in_memory_peak_rss_mb": max(r for _, r in runs["in_memory"]),
                "runs": runs,
            }
    return results


def _photo(path: Path, seed: int, size: tuple[int, int] = (4032, 3024)) -> None:
    """A phone-sized JPEG with photo-like detail (smooth gradients plus noise), so decoding costs what a real one does."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
    noisy = np.asarray(image, dtype=np.int16) + rng.integers(-12, 12, (size[1], size[0], 3), dtype=np.int16)
    Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def overlap(args: argparse.Namespace) -> dict[str, Any]:
    import edgeclip
    from edgeclip.jobs import JobOptions, ScanReport, Sink, run_job, sources

    class Discard(Sink):
        def _append(self, batch: Any) -> None:
            pass

    model = edgeclip.load(args.bundle, threads=args.threads)
    with tempfile.TemporaryDirectory() as work:
        for index in range(args.images):
            _photo(Path(work, f"photo-{index:03d}.jpg"), index)
        paths = sorted(str(p) for p in Path(work).glob("*.jpg"))
        started = time.perf_counter()
        pixels = np.stack([model.image_pixels(p) for p in paths])
        decode_s = time.perf_counter() - started
        model.embed_pixels(pixels[:1])  # warm-up
        timings: dict[str, list[float]] = {"pipeline": [], "model_only": []}
        for round_ in range(args.rounds):
            for kind in (["pipeline", "model_only"] if round_ % 2 == 0 else ["model_only", "pipeline"]):
                started = time.perf_counter()
                if kind == "model_only":
                    model.embed_pixels(pixels, batch_size=4)
                else:
                    summary = run_job(model, sources.image_dir(work, ScanReport()), Discard(), JobOptions())
                    assert summary.images == len(paths), summary
                timings[kind].append(len(paths) / (time.perf_counter() - started))
                print(f"round {round_}, {kind}: {timings[kind][-1]:.3f} images/s", flush=True)
    pipeline, model_only = statistics.median(timings["pipeline"]), statistics.median(timings["model_only"])
    return {"images": args.images, "photo_size": "4032x3024 JPEG q90", "decode_seconds_per_image": decode_s / len(paths),
            "pipeline_images_per_s": pipeline, "model_only_images_per_s": model_only,
            "ratio": pipeline / model_only, "timings": timings}


def _rows(path: Path) -> int:
    try:
        return sum(1 for _ in open(path, "rb"))
    except FileNotFoundError:
        return 0


def resume(args: argparse.Namespace) -> dict[str, Any]:
    from edgeclip.jobs import read_rows

    with tempfile.TemporaryDirectory() as work:
        texts = Path(work, "texts.txt")
        texts.write_text("\n".join(short_texts(args.items, seed=1)) + "\n", encoding="utf-8")
        base = [sys.executable, "-m", "edgeclip", "embed", args.bundle, "--text-file", str(texts), "--variant", args.variant,
                "--quiet"]
        whole, parts = Path(work, "whole.jsonl"), Path(work, "parts.jsonl")
        started = time.perf_counter()
        subprocess.run([*base, "--out", str(whole)], check=True, capture_output=True)
        whole_s = time.perf_counter() - started
        job = subprocess.Popen([*base, "--out", str(parts)], stderr=subprocess.PIPE, text=True)
        while _rows(parts) < args.items // 2 and job.poll() is None:
            time.sleep(0.05)
        job.send_signal(signal.SIGINT)
        _, first_err = job.communicate()
        kept = _rows(parts)
        rerun = subprocess.run([*base, "--out", str(parts)], capture_output=True, text=True)
        ids_whole, rows_whole = read_rows(whole)
        ids_parts, rows_parts = read_rows(parts)
        by_id = dict(zip(ids_parts, rows_parts))
        diff = max(float(np.abs(by_id[i] - row).max()) for i, row in zip(ids_whole, rows_whole))
        return {
            "items": args.items, "variant": args.variant, "uninterrupted_seconds": whole_s,
            "interrupted_exit_code": job.returncode, "rows_kept_after_interrupt": kept,
            "interrupt_message": first_err.strip().splitlines()[-1], "rerun_exit_code": rerun.returncode,
            "rerun_summary": rerun.stderr.strip().splitlines(),
            "ids_exactly_once": len(ids_parts) == len(set(ids_parts)) and set(ids_parts) == set(ids_whole),
            "max_abs_diff_vs_uninterrupted": diff,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("case", choices=("memory", "overlap", "resume"))
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 5000])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--variant", default="fp32")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    result = {"case": args.case, "command": " ".join(["python -m bench.jobs", *sys.argv[1:]]),
              "machine": machine_tag(Path(args.bundle)), "result": globals()[args.case](args)}
    print(json.dumps(result["result"], indent=1, default=str))
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d-%H%M")
    (args.out / f"jobs-{args.case}-{Path(args.bundle).parent.name}-{stamp}.json").write_text(
        json.dumps(result, indent=1, default=str) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
