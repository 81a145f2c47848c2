"""`edgeclip search DB QUERY`: the nearest photos and documents to a text (any language) or an image."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

from ..errors import InputError
from ..index.store import sqlite_error
from .common import check_output_file, positive


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("search", help="search an index by text (any language) or by example image",
                       description="Prints rank, score and path/id of the best matches.")
    p.add_argument("db", type=Path, help="an index made by `edgeclip index`")
    p.add_argument("query", nargs="?", help="the text to search for (the retrieval.query instruction is applied)")
    p.add_argument("--image", type=Path, help="search by this image instead of a text")
    p.add_argument("-k", type=positive, default=10, help="how many results (default 10)")
    p.add_argument("--kind", choices=("image", "text"), help="only images, or only documents")
    p.add_argument("--exact", action="store_true", help="score every stored vector (slower; the reference)")
    p.add_argument("--json", action="store_true", help="one JSON array of results on stdout")
    p.add_argument("--html", type=Path, metavar="FILE", help="also write a gallery page with thumbnails")
    p.add_argument("--bundle", type=Path, help="bundle to embed the query with (default: the one the index was built with)")
    p.add_argument("--threads", type=positive, help="onnxruntime threads (default: one per core)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..index import open_index

    if (args.query is None) == (args.image is None):
        raise InputError("give a text QUERY or --image PATH (one of them)")
    check_output_file(args.html, "--html")  # before the search: a bad path costs nothing
    try:
        with open_index(args.db, bundle=args.bundle, threads=args.threads) as index:
            results = index.search(text=args.query, image=str(args.image) if args.image else None, k=args.k,
                                   kind=args.kind, exact=args.exact)
    except sqlite3.DatabaseError as exc:
        raise sqlite_error(args.db, exc) from exc
    if args.html:
        from ..index.gallery import write_gallery

        write_gallery(args.html, args.query or f"images like {args.image}", results)
    if args.json:
        print(json.dumps([r.__dict__ for r in results], ensure_ascii=False))
    else:
        for r in results:
            shown = r.source if r.kind == "image" or r.source == r.id else f"{r.id} ({r.source})"
            print(f"{r.rank:>3}  {r.score:.4f}  {r.kind:<5}  {shown}")
            if r.snippet:
                print(f"       {' '.join(r.snippet.split())[:100]}")
    if not results:
        print("no results: the index is empty (or holds nothing of that --kind)", file=sys.stderr)
    return 0
