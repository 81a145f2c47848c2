"""Offline search over folders of photos and documents: `Index` (one SQLite file) and its doors
(`edgeclip index`, `edgeclip search`, and the server's search page)."""

from __future__ import annotations

import os

from ..errors import InputError
from .index import Index, IndexReport, Result
from .store import Store

__all__ = ["Index", "IndexReport", "Result", "open_index"]


def open_index(db: str | os.PathLike[str], *, bundle: str | os.PathLike[str] | None = None,
               threads: int | None = None) -> Index:
    """An existing index, read-only (never created or changed), with the bundle it was built with (or
    `bundle`, which must be that same one)."""
    from .. import load

    if bundle is None:
        store = Store(db, readonly=True)
        try:
            bundle = store.get_meta("bundle_path")
        finally:
            store.close()
        if bundle is None or not os.path.isdir(bundle):
            raise InputError(f"the bundle {db} was built with ({bundle}) is not there; pass --bundle")
    return Index(db, load(bundle, threads=threads), readonly=True)
