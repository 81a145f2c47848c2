"""`edgeclip bench BUNDLE`: p50/p95 latency, items/s, load time and peak RSS here, optionally beside other machines' runs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .._files import atomic_write_bytes
from ..errors import InputError
from .common import check_output_file, comma_list, positive, tower_list

def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not 0 <= seconds <= 3600:
        raise argparse.ArgumentTypeError(f"--seconds must be between 0 and 3600, got {value}")
    return seconds


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("bench", help="measure latency, throughput, load time and peak RSS of a bundle here",
                       description="Each tower x variant x provider runs in a fresh process: warm-up, then timed calls "
                                   "until --seconds per shape. Records the CPU class, ISA flags, ORT version and "
                                   "providers, GPU and the bundle's checksum, so runs from other machines compare.")
    p.add_argument("bundle", type=Path)
    p.add_argument("--towers", type=tower_list, help="comma-separated: text, vision (default: the bundle's towers)")
    p.add_argument("--variants", type=comma_list(),
                   help="comma-separated variants, or 'all' (default: the one edgeclip picks on this machine)")
    p.add_argument("--providers", type=comma_list(), help="onnxruntime execution providers (default: CPU)")
    p.add_argument("--threads", type=positive, help="onnxruntime intra-op threads (default: one per physical core)")
    p.add_argument("--batch", type=comma_list(int), default=[1], help="batch sizes (default 1)")
    p.add_argument("--tokens", type=comma_list(int), default=[16, 512], help="text lengths in tokens (default 16,512)")
    p.add_argument("--seconds", type=_seconds, default=5.0, help="timed seconds per shape, after warm-up (default 5)")
    p.add_argument("--min-reps", type=positive, default=3, help="timed calls per shape at least (default 3)")
    p.add_argument("--json", type=Path, metavar="OUT", help="write the report as JSON (what --compare reads)")
    p.add_argument("--compare", type=Path, nargs="+", metavar="OTHER.json", help="print other runs beside this one as ratios")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..benchmark import compare_lines, format_report, load_report, run_benchmark

    others = [load_report(path) for path in args.compare or []]  # bad files fail before minutes of timing
    check_output_file(args.json, "--json")
    if args.variants and "all" in args.variants and len(args.variants) > 1:
        raise InputError("--variants all stands alone")
    report = run_benchmark(args.bundle, towers=args.towers, variants=args.variants, providers=args.providers,
                           threads=args.threads, batches=args.batch, tokens=args.tokens, seconds=args.seconds,
                           min_reps=args.min_reps, command=" ".join(["edgeclip", *sys.argv[1:]]),
                           progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_report(report))
    if others:
        print()
        print("\n".join(compare_lines(report, others)))
    if args.json:
        atomic_write_bytes(args.json, json.dumps(report, indent=1).encode())
        print(f"wrote {args.json}", file=sys.stderr)
    failed = [s for s in report["sessions"] if "error" in s]
    return 1 if failed else 0
