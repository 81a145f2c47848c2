"""`edgeclip index DB SOURCE... --bundle B`: embed folders of photos and documents into a search index."""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path
from typing import Any

from ..errors import InputError
from .common import positive, progress_bar, run_interruptibly


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("index", help="index image folders, images, text/Markdown files and JSONL documents for search",
                       description="Incremental: a rerun adds new files, re-embeds changed ones and drops deleted ones. "
                                   "Ctrl-C stops after the batch in progress; a rerun completes the job.")
    p.add_argument("db", type=Path, help="the index file (SQLite), created when missing")
    p.add_argument("sources", nargs="*", help="image folders, image files, .txt/.md documents, .jsonl records")
    p.add_argument("--from-parquet", type=Path, metavar="PATH",
                   help="load embeddings computed elsewhere (edgeclip embed .parquet, or an --engine ray output folder)")
    p.add_argument("--bundle", type=Path, required=True, help="bundle directory (the one the index was built with)")
    p.add_argument("--dim", type=int, help="Matryoshka dim of the stored vectors (default: the full width)")
    p.add_argument("--precision", choices=("float16", "int8", "binary"), default=None,
                   help="stored vectors (default float16; binary keeps only sign bits: smallest, least exact)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="skip paths or names matching GLOB (repeatable)")
    p.add_argument("--threads", type=positive, help="onnxruntime threads (default: one per core)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .. import load
    from ..index.store import sqlite_error

    if bool(args.sources) == bool(args.from_parquet):
        raise InputError("give SOURCE folders/files to embed, or --from-parquet PATH to load embeddings (one of them)")
    missing = [str(p) for p in [*args.sources, *([args.from_parquet] if args.from_parquet else [])] if not Path(p).exists()]
    if missing:  # before the index file is created: a typo leaves nothing behind
        raise InputError(f"{', '.join(missing)}: no such file or folder; nothing was indexed")
    model = load(args.bundle, threads=args.threads)
    try:
        return _index(args, model)
    except sqlite3.DatabaseError as exc:
        raise sqlite_error(args.db, exc) from exc


def _index(args: argparse.Namespace, model: Any) -> int:
    from ..index import Index

    with Index(args.db, model, dim=args.dim, precision=args.precision or "float16",
               bundle_path=args.bundle) as index:
        if args.from_parquet:
            loaded = index.add_parquet(args.from_parquet)
            stats = index.stats()
            print(f"{args.db}: {loaded.added} added, {loaded.changed} changed, {loaded.unchanged} unchanged from "
                  f"{args.from_parquet}; {stats['items']} items ({stats['images']} images, {stats['texts']} texts)",
                  file=sys.stderr)
            return 0
        bar = progress_bar(None, args.quiet)
        with bar:
            report = run_interruptibly(lambda stop: index.add(args.sources, exclude=args.exclude, stop=stop,
                                                               progress=bar.update))
        stats = index.stats()
    print(f"{args.db}: {report.added} added, {report.changed} changed, {report.unchanged} unchanged, "
          f"{report.removed} removed, {len(report.failed)} failed; {stats['items']} items "
          f"({stats['images']} images, {stats['texts']} texts)", file=sys.stderr)
    for line in report.scan.lines():
        print(line, file=sys.stderr)
    for failure in report.failed[:20]:
        print(f"failed: {failure.id}: {failure.reason}", file=sys.stderr)
    if report.interrupted:
        print("interrupted: everything finished is kept; rerun the same command to complete it", file=sys.stderr)
        return 130
    return 1 if report.failed else 0

