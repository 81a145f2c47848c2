"""An index's items and vectors out to a store that scales: a .parquet file (the `edgeclip embed` layout, so
`edgeclip index --from-parquet` reads it back) or a LanceDB table (vector search, and text/image queries
through the "edgeclip" embedding function). Either is written beside its target and renamed into place:
an interrupted export leaves nothing half-written."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EdgeClipError, InputError
from .store import Store, unpack

CHUNK_ROWS = 8192
FORMATS = ("parquet", "lancedb")


@dataclass(frozen=True)
class Chunk:
    ids: list[str]
    kinds: list[str]
    sources: list[str]
    fingerprints: list[str]
    snippets: list[str]
    vectors: np.ndarray  # (n, dim) float32, unit rows as the index stores them


def chunks(store: Store) -> Iterator[Chunk]:
    settings = store.settings
    if settings.precision == "binary":
        raise InputError(f"{store.path} keeps only sign bits (--precision binary): there are no vectors to export; "
                         "build the index with --precision float16 (the default) to export it")
    last = 0
    while True:
        rows = store.db.execute("SELECT rowid, id, kind, COALESCE(origin, source), fingerprint, snippet, vector FROM items "
                                "WHERE rowid > ? ORDER BY rowid LIMIT ?", (last, CHUNK_ROWS)).fetchall()
        if not rows:
            return
        last = rows[-1][0]
        yield Chunk([r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows], [r[4] for r in rows],
                    [r[5] for r in rows], unpack([r[6] for r in rows], settings.precision, settings.dim))


def export_index(db: Path, to: str, out: Path, bundle: str | None = None, overwrite: bool = False) -> int:
    """Write the index at `db` to `out` as `to`; returns the rows written."""
    if to not in FORMATS:
        raise InputError(f"--to {to!r}: choose {' or '.join(FORMATS)}")
    if out.exists() and not overwrite:
        raise InputError(f"{out} exists; choose another path, or --overwrite to replace it")
    store = Store(db, readonly=True)
    try:
        if to == "parquet":
            return _to_parquet(store, out)
        return _to_lancedb(store, out, bundle if bundle is not None else store.get_meta("bundle_path"))
    finally:
        store.close()


def _pyarrow() -> Any:
    from ..jobs.parquet_sink import pyarrow_module

    return pyarrow_module()


def _arrow_table(pa: Any, chunk: Chunk, vector_type: Any, dim: int) -> dict[str, Any]:
    flat = pa.array(chunk.vectors.astype(vector_type.to_pandas_dtype(), copy=False).reshape(-1), vector_type)
    return {"id": pa.array(chunk.ids, pa.string()), "kind": pa.array(chunk.kinds, pa.string()),
            "source": pa.array(chunk.sources, pa.string()), "fingerprint": pa.array(chunk.fingerprints, pa.string()),
            "snippet": pa.array(chunk.snippets, pa.string()), "vector": pa.FixedSizeListArray.from_arrays(flat, dim)}


def _to_parquet(store: Store, out: Path) -> int:
    from ..jobs.parquet_sink import parquet_schema
    from ..jobs.sinks import OutputSettings

    pa = _pyarrow()
    index = store.settings
    # float16 rows are exact copies of what the index holds; int8 rows come back as float32. The settings are
    # those `edgeclip embed` writes, so `index --from-parquet` checks them as it checks any .parquet.
    settings = OutputSettings(index.bundle_sha256, index.model, index.variants, index.dim,
                              "float16" if index.precision == "float16" else "float32", None, 0, True)
    schema = parquet_schema(pa, settings).append(pa.field("source", pa.string())).append(pa.field("snippet", pa.string()))
    value = schema.field("embedding").type.value_type
    written = 0
    with _staged(out) as staging, pa.parquet.ParquetWriter(staging, schema) as writer:
        for chunk in chunks(store):
            columns = _arrow_table(pa, chunk, value, index.dim)
            dims = pa.array(np.full(len(chunk.ids), index.dim, np.int32))
            writer.write_table(pa.Table.from_arrays([columns["id"], columns["kind"], dims, columns["fingerprint"],
                                                     columns["vector"], columns["source"], columns["snippet"]],
                                                    schema=schema))
            written += len(chunk.ids)
    return written


def _to_lancedb(store: Store, out: Path, bundle: str | None) -> int:
    try:
        import lancedb
    except ImportError as exc:
        raise InputError("--to lancedb needs the lancedb package: pip install lancedb") from exc
    pa = _pyarrow()
    dim = store.settings.dim
    written = 0
    with _staged(out, directory=True) as staging:
        table = lancedb.connect(staging).create_table("items", schema=_lance_schema(dim, bundle))
        for chunk in chunks(store):
            table.add(pa.table(_arrow_table(pa, chunk, pa.float32(), dim)))
            written += len(chunk.ids)
    return written


def _lance_schema(dim: int, bundle: str | None) -> Any:
    """id, kind, source, fingerprint, snippet, vector; with the index's bundle known, `source` and `vector`
    are the "edgeclip" function's fields, so `table.search("text" | image)` embeds the query as the index did."""
    from lancedb.pydantic import LanceModel, Vector

    if bundle is None:
        class Plain(LanceModel):
            id: str
            kind: str
            source: str
            fingerprint: str
            snippet: str
            vector: Vector(dim)  # type: ignore[valid-type]

        return Plain
    from ..integrations.lancedb import EdgeClipEmbeddings

    func = EdgeClipEmbeddings.create(bundle=bundle, dim=None if dim == _full_width(bundle) else dim)

    class Embedded(LanceModel):
        id: str
        kind: str
        source: str = func.SourceField()
        fingerprint: str
        snippet: str
        vector: Vector(dim) = func.VectorField()  # type: ignore[valid-type]

    return Embedded


def _full_width(bundle: str) -> int | None:
    from ..bundle import Bundle

    try:
        return Bundle.open(bundle).manifest.embed_dim
    except (OSError, EdgeClipError):  # an hf: id, or a moved bundle: the index's dim stands
        return None


@contextlib.contextmanager
def _staged(out: Path, directory: bool = False) -> Iterator[str]:
    """A temporary path beside `out`, renamed over it when the block succeeds and removed when it fails."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    else:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
        os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, (0o777 if directory else 0o666) & ~umask)  # mkstemp/mkdtemp make them private; the result should not be
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if directory else os.unlink(tmp)
        raise
    if out.is_dir():
        shutil.rmtree(out)
    elif out.exists():
        out.unlink()
    os.replace(tmp, out)
