"""`edgeclip export DB --to parquet|lancedb --out PATH`: an index's items and vectors into a store that scales."""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

from ..errors import InputError, storage_error
from ..index.export import FORMATS
from ..index.store import sqlite_error
from .common import check_output_file


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("export", help="copy an index's items and vectors to a .parquet file or a LanceDB table",
                       description="parquet: the `edgeclip embed` layout plus source and snippet columns (`edgeclip index "
                                   "--from-parquet` reads it back). lancedb: a table named items with id, kind, source, "
                                   "fingerprint, snippet and vector; searched by text or image through the \"edgeclip\" "
                                   "embedding function (edgeclip.integrations.lancedb). Written beside PATH, then renamed.")
    p.add_argument("db", type=Path, help="an index made by `edgeclip index`")
    p.add_argument("--to", choices=FORMATS, required=True, help="the store to write")
    p.add_argument("--out", type=Path, required=True, help="the .parquet file, or the LanceDB folder")
    p.add_argument("--bundle", help="the bundle LanceDB queries embed with (default: the one the index was built with)")
    p.add_argument("--overwrite", action="store_true", help="replace PATH if it exists")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..index.export import export_index

    if args.to == "parquet":
        check_output_file(args.out, "--out")  # before any work: a folder, a missing folder, no permission
    elif args.out.is_file():
        raise InputError(f"--out {args.out} is a file; LanceDB writes a folder: give a folder path")
    try:
        rows = export_index(args.db, args.to, args.out, bundle=args.bundle, overwrite=args.overwrite)
    except sqlite3.DatabaseError as exc:
        raise sqlite_error(args.db, exc) from exc
    except OSError as exc:  # a full disk, a file system that refuses the file: nothing is left half-written
        raise storage_error(args.out, exc, "nothing was written") from exc
    where = f"{args.out} (table items)" if args.to == "lancedb" else str(args.out)
    print(f"{args.db}: {rows} items exported to {where}", file=sys.stderr)
    return 0
