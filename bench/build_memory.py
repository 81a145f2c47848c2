"""Peak memory and wall time of `python -m converters build`, per `--variants` set, one build at a time.

    python -m bench.build_memory CHECKPOINT --variants int8 --variants int8,int4 [--work /tmp/x] [--out bench/results]

Each build runs under `/usr/bin/time -v` (its "Maximum resident set size" is that of the largest single
process). The whole process tree's RSS (the build and any processes it starts, summed) is also sampled
every 0.2 s: that is what a machine must actually hold. The build's own stage lines (wall time and
peak RSS per stage) are kept in the report.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from edgeclip._files import atomic_write_bytes
from edgeclip.machine import machine_tags

SAMPLE_SECONDS = 0.2


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # field 4 of /proc/PID/stat, after the ")" of the name
            found.append(int(stat.parent.name))
    return found


def tree_rss_gb(root: int) -> float:
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
        todo += _children(pid)
    return total / 1e6


def run_build(checkpoint: Path, variants: str, out: Path) -> dict:
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "converters", "build", str(checkpoint), "--out", str(out),
               "--variants", variants, "--overwrite"]
    start = time.monotonic()
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    peak = [0.0]

    def sample() -> None:
        while process.poll() is None:
            peak[0] = max(peak[0], tree_rss_gb(process.pid))
            time.sleep(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    sampler.join()
    wall = time.monotonic() - start
    if process.returncode != 0:
        build_output = re.split(r"\n(?:Command exited|\tCommand being timed)", stderr)[0]  # without time's report
        raise SystemExit(f"build --variants {variants} failed:\n{build_output[-3000:]}")
    max_rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr).group(1))
    stages = [line for line in stderr.splitlines() if re.match(r"\d\d:\d\d:\d\d .*: \d+ s, peak", line)]
    return {"variants": variants, "wall_s": round(wall, 1), "max_rss_gb_single_process": round(max_rss_kb / 1e6, 2),
            "process_tree_peak_gb_sampled": round(peak[0], 2), "stages": stages, "summary": stdout.strip().splitlines()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--variants", action="append", required=True, help="one build per occurrence")
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgeclip-build-memory"))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    runs = []
    for variants in args.variants:
        result = run_build(args.checkpoint, variants, args.work / variants.replace(",", "_"))
        print(f"--variants {variants}: {result['wall_s']:.0f} s, largest process {result['max_rss_gb_single_process']:.2f} GB, "
              f"process tree {result['process_tree_peak_gb_sampled']:.2f} GB (sampled)", flush=True)
        runs.append(result)
    report = {"machine": machine_tags(), "checkpoint": str(args.checkpoint), "runs": runs,
              "command": "python -m bench.build_memory " + " ".join(sys.argv[1:])}
    stamp = time.strftime("%Y-%m-%d-%H%M")
    path = args.out / f"build-memory-{report['machine']['cpu_class']}-{stamp}.json"
    atomic_write_bytes(path, (json.dumps(report, indent=2) + "\n").encode())
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
