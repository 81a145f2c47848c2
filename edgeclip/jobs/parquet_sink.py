""".parquet output (the `parquet` extra: pyarrow): shards while the job runs, one file when it closes.

A Parquet file is only readable once its footer is written, so every batch the job hands over is
written as a shard (`.OUT.parts/part-NNNNNN.parquet`, atomically): a kill loses only the batch still
being embedded, as with .jsonl and .npy (it lost up to 512 finished rows, or 30 s, before); closing the sink
(at the end, or after Ctrl-C) merges the previous file and the shards into a new file and renames
it over the old one. A killed job leaves its shards; the next run picks them up. Columns: id, kind,
dim, fingerprint, embedding (fixed-size list); the settings, the bundle's manifest checksum among
them, are in the file metadata under "edgeclip".
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .._files import atomic_write_bytes
from ..errors import InputError
from .sinks import FileSink, RowBatch

METADATA_KEY = b"edgeclip"


def parquet_schema(pa: Any, settings: Any) -> Any:
    """The .parquet columns and metadata, for local outputs and distributed shards alike."""
    value = {"float32": pa.float32(), "float16": pa.float16(), "binary": pa.int8(), "ubinary": pa.uint8()}
    fields = [("id", pa.string()), ("kind", pa.string()), ("dim", pa.int32()), ("fingerprint", pa.string()),
              ("embedding", pa.list_(value[settings.precision], settings.row_width))]
    return pa.schema(fields, metadata={METADATA_KEY: json.dumps(settings.to_dict()).encode()})


def parquet_table(pa: Any, settings: Any, batches: list[RowBatch]) -> Any:
    vectors = np.concatenate([b.vectors for b in batches]).astype(settings.dtype, copy=False) if batches else \
        np.empty((0, settings.row_width), settings.dtype)
    flat = pa.array(vectors.reshape(-1))
    ids = [i for b in batches for i in b.ids]
    columns = [pa.array(ids, pa.string()), pa.array([k for b in batches for k in b.kinds], pa.string()),
               pa.array(np.full(len(ids), settings.dim, dtype=np.int32)),
               pa.array([f for b in batches for f in b.fingerprints], pa.string()),
               pa.FixedSizeListArray.from_arrays(flat, settings.row_width)]
    return pa.Table.from_arrays(columns, schema=parquet_schema(pa, settings))


def parquet_bytes(pa: Any, table: Any) -> bytes:
    sink = pa.BufferOutputStream()
    pa.parquet.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def pyarrow_module() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401 - loads the submodule onto pyarrow
    except ImportError as exc:
        raise InputError("writing .parquet needs pyarrow: pip install 'edgeclip[parquet]' (or use .jsonl / .npy)") from exc
    return pyarrow


class ParquetSink(FileSink):
    def __init__(self, path: Path, settings: Any, overwrite: bool) -> None:
        self.pa = pyarrow_module()
        self.parts = path.with_name(f".{path.name}.parts")
        self._pending: list[RowBatch] = []
        self._shards: list[Path] = []
        super().__init__(path, settings, overwrite)

    def files(self) -> list[Path]:
        return [self.path, self.meta_path]

    def _remove_all(self) -> None:
        super()._remove_all()
        shutil.rmtree(self.parts, ignore_errors=True)

    def schema(self) -> Any:
        return parquet_schema(self.pa, self.settings)

    def _open_existing(self) -> None:
        sources = ([self.path] if self.path.exists() else []) + sorted(self.parts.glob("part-*.parquet"))
        if sources:
            self.settings.check_same(self._stored_settings(), str(self.path))
        for source in sources:
            try:
                table = self.pa.parquet.read_table(source, columns=["id", "fingerprint"])
            except (OSError, self.pa.ArrowException) as exc:
                raise InputError(f"{source} is damaged ({exc}); use --overwrite to start afresh") from exc
            for item_id, fingerprint in zip(table.column("id").to_pylist(), table.column("fingerprint").to_pylist()):
                self._remember(item_id, fingerprint)
        self._shards = [s for s in sources if s != self.path]
        for stray in self.parts.glob(".*"):  # a shard a killed job was still writing
            stray.unlink()

    def _append(self, batch: RowBatch) -> None:
        self._pending.append(batch)
        self._write_shard()

    def _write_shard(self) -> None:
        if not self._pending:
            return
        self.parts.mkdir(exist_ok=True)
        shard = self.parts / f"part-{len(self._shards):06d}.parquet"
        atomic_write_bytes(shard, parquet_bytes(self.pa, parquet_table(self.pa, self.settings, self._pending)))
        self._shards.append(shard)
        self._pending = []

    def _finish(self) -> None:
        self._write_shard()
        if not self._shards:
            return
        tmp = self.path.with_name(f".{self.path.name}.merge")
        try:
            self._merge(tmp)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()  # the shards stay: the next run merges them
            raise
        os.replace(tmp, self.path)
        shutil.rmtree(self.parts, ignore_errors=True)
        self._shards = []

    def _merge(self, tmp: Path) -> None:
        """The previous file and the shards, superseded rows left out, into `tmp` (fsynced)."""
        keep = self._keep()
        row = 0
        with self.pa.parquet.ParquetWriter(tmp, self.schema()) as writer:
            for source in ([self.path] if self.path.exists() else []) + self._shards:
                parquet = self.pa.parquet.ParquetFile(source)
                for group in range(parquet.num_row_groups):  # one row group at a time: bounded memory
                    table = parquet.read_row_group(group).replace_schema_metadata(self.schema().metadata)
                    if keep is not None:
                        mask = np.array([r in keep for r in range(row, row + table.num_rows)], dtype=bool)
                        table = table.filter(self.pa.array(mask))
                    row += parquet.metadata.row_group(group).num_rows
                    if table.num_rows:
                        writer.write_table(table)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
