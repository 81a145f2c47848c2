"""A bounded soak of kill -9's (issue 25): jobs and the index are killed at random moments and rerun until
they finish; afterwards every id must be stored once and every row equal a clean run's.

    python -m bench.faults --bundle BUNDLE [--rounds 8] [--texts 3000] [--images 24] [--ray] [--seed 0]

Cases: `edgeclip embed` into .jsonl, .npy and .parquet, `edgeclip index`, and (with --ray, run inside a
loopback-only network namespace: `unshare -rn sh -c 'ip link set lo up && exec python -m bench.faults ...'`)
`edgeclip embed --engine ray`, whose driver is killed (its process group: the workers it started too). Per
case: `--rounds` rounds, each from an empty output: 1-3 runs killed at a random moment of the job's run
(0.2 s to 90 % of a clean run's time), then a rerun to the end, and the check. The report gives, per
case: the kills that landed, runs that ended before their kill, rounds that went wrong, ids stored twice
or missing, and the largest difference from the clean run's rows (exactly 0 where every row is bit-equal). Writes bench/results/faults-<date>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.report import save_json_and_markdown
from bench.run import machine_tag
from edgeclip.jobs.sinks import read_rows

EDGECLIP = [sys.executable, "-m", "edgeclip"]


def inputs(folder: Path, texts: int, images: int, seed: int) -> Path:
    """A JSONL file of texts and images (ids t*, i*), the images in a folder beside it."""
    rng = np.random.default_rng(seed)
    (folder / "photos").mkdir(parents=True)
    records = [{"id": f"t{i}", "text": f"record {i}: " + " ".join(rng.choice(["boat", "harbour", "seal", "rock", "dawn",
                                                                              "ferry", "gull", "tide"], 3 + i % 40))}
               for i in range(texts)]
    for i in range(images):
        height, width = 60 + 13 * (i % 7), 80 + 11 * (i % 5)
        ramp = np.add.outer(np.arange(height), np.arange(width))[..., None] * rng.uniform(0.5, 2.5, 3)
        path = folder / "photos" / f"p{i:03d}.png"
        Image.fromarray((ramp % 256).astype(np.uint8)).save(path)
        records.append({"id": f"i{i}", "image": str(path)})
    random.Random(seed).shuffle(records)
    out = folder / "inputs.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return out


def command(case: str, bundle: Path, source: Path, out: Path) -> list[str]:
    if case == "index":
        return [*EDGECLIP, "index", str(out), str(source.parent / "photos"), str(source.parent / "docs"), "--bundle",
                str(bundle), "--quiet"]
    extra = ["--engine", "ray", "--workers", "2", "--shard-rows", "64"] if case == "ray" else []
    return [*EDGECLIP, "embed", str(bundle), "--jsonl", str(source), "--out", str(out), "--quiet", *extra]


def stored(case: str, out: Path) -> dict[str, np.ndarray]:
    """id -> row, asserting nothing about duplicates (they are counted by the caller)."""
    if case == "index":
        with sqlite3.connect(out) as db:
            rows = db.execute("SELECT id, vector FROM items").fetchall()
        return {i: np.frombuffer(v, "<f2").astype(np.float32) for i, v in rows}
    if case == "ray":
        import pyarrow.parquet as pq

        found: dict[str, np.ndarray] = {}
        for shard in sorted(out.glob("part-*.parquet")):
            table = pq.read_table(shard, columns=["id", "embedding"])
            for item_id, vector in zip(table.column("id").to_pylist(), table.column("embedding").to_pylist()):
                found[item_id + ("#twice" if item_id in found else "")] = np.asarray(vector, np.float32)
        return found
    ids, vectors = read_rows(out)
    found = {}
    for item_id, vector in zip(ids, vectors):
        found[item_id + ("#twice" if item_id in found else "")] = np.asarray(vector, np.float32)
    return found


def remove(out: Path) -> None:
    """An output and every side file it has, for a fresh round."""
    for path in out.parent.glob(out.name + "*"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    for path in out.parent.glob(f".{out.name}*"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def run_case(case: str, bundle: Path, source: Path, work: Path, rounds: int, rng: random.Random) -> dict[str, Any]:
    """`rounds` rounds, each from an empty output: 1-3 kills at random moments of the job's run, then a
    rerun to the end; after each round every id must be stored once and every row equal the clean run's."""
    suffix = {"jsonl": ".jsonl", "npy": ".npy", "parquet": ".parquet", "index": ".db", "ray": ""}[case]
    clean_out = work / f"clean-{case}{suffix}"
    out = work / f"killed-{case}{suffix}"
    started = time.monotonic()
    clean = subprocess.run(command(case, bundle, source, clean_out), capture_output=True, text=True)
    clean_seconds = time.monotonic() - started
    reference = stored(case, clean_out)
    landed, too_late, tracebacks, worst, twice, missing, bad_rounds = 0, 0, 0, 0.0, 0, 0, 0
    for _ in range(rounds):
        remove(out)
        for _ in range(rng.randint(1, 3)):
            job = subprocess.Popen(command(case, bundle, source, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   start_new_session=True)
            try:
                job.wait(rng.uniform(0.2, max(0.4, clean_seconds * 0.9)))
                too_late += 1
            except subprocess.TimeoutExpired:
                os.killpg(job.pid, signal.SIGKILL)  # the driver and, for Ray, the workers it started
                job.wait()
                landed += 1
            tracebacks += b"Traceback" in (job.stderr.read() if job.stderr else b"")
        last = subprocess.run(command(case, bundle, source, out), capture_output=True, text=True)
        tracebacks += "Traceback" in last.stderr
        got = stored(case, out)
        round_twice = sum(k.endswith("#twice") for k in got)
        round_missing = len(set(reference) - set(got))
        common = set(reference) & set(got)
        worst = max([worst, *(float(np.abs(reference[i] - got[i]).max()) for i in common)])
        twice, missing = twice + round_twice, missing + round_missing
        bad_rounds += bool(round_twice or round_missing or last.returncode != 0)
    return {"case": case, "rounds": rounds, "kills_landed": landed, "runs_that_finished_before_the_kill": too_late,
            "clean_rc": clean.returncode, "bad_rounds": bad_rounds, "tracebacks": tracebacks, "ids": len(reference),
            "ids_twice": twice, "ids_missing": missing, "max_abs_diff_vs_clean": worst,
            "bit_equal": worst == 0.0 and not twice and not missing, "every_id_once": not twice and not missing,
            "clean_seconds": round(clean_seconds, 1)}


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# kill -9 soak ({report['machine']['date']})", "", f"`{report['command']}`", "",
             f"CPU: {report['machine']['cpu']} (class {report['machine'].get('cpu_class')}); tiny bundle; "
             f"{report['texts']} texts and {report['images']} images per job.", "",
             "| case | rounds | kills landed | runs that ended first | rounds gone wrong | every id once | max abs diff vs clean | bit-equal | tracebacks |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["cases"]:
        once = "yes" if r["every_id_once"] else f"NO ({r['ids_twice']} twice, {r['ids_missing']} missing)"
        lines.append(f"| {r['case']} | {r['rounds']} | {r['kills_landed']} | {r['runs_that_finished_before_the_kill']} | {r['bad_rounds']} | "
                     f"{once} | {r['max_abs_diff_vs_clean']:.2e} | {r['bit_equal']} | {r['tracebacks']} |")
    total = sum(r["kills_landed"] for r in report["cases"])
    lines += ["", f"{total} kills landed in all."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=8, help="rounds per case, each from an empty output with 1-3 kills")
    parser.add_argument("--texts", type=int, default=3000)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--cases", default="jsonl,npy,parquet,index")
    parser.add_argument("--ray", action="store_true", help="also the Ray case (run inside a loopback-only namespace)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    cases = [c for c in args.cases.split(",") if c] + (["ray"] if args.ray else [])
    report: dict[str, Any] = {"machine": machine_tag(args.bundle), "command": "python -m bench.faults " + " ".join(sys.argv[1:]),
                              "texts": args.texts, "images": args.images, "cases": []}
    with tempfile.TemporaryDirectory(prefix="edgeclip-faults-") as tmp:
        work = Path(tmp)
        source = inputs(work / "data", args.texts, args.images, args.seed)
        docs = work / "data" / "docs"
        docs.mkdir()
        for i in range(args.texts // 10):
            (docs / f"d{i:04d}.txt").write_text(f"document {i} about the tide and the ferry " * (1 + i % 9), encoding="utf-8")
        for case in cases:
            print(f"{case} ...", file=sys.stderr, flush=True)
            report["cases"].append(run_case(case, args.bundle, source, work, args.rounds, rng))
            print(json.dumps(report["cases"][-1]), file=sys.stderr, flush=True)
    stem = args.out / f"faults-{time.strftime('%Y-%m-%d-%H%M')}{'-ray' if args.ray and cases == ['ray'] else ''}"
    save_json_and_markdown(stem, report, markdown(report))


if __name__ == "__main__":
    main()
