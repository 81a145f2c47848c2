""".npy output that grows in place: a fixed-size header rewritten after each batch, plus `OUT.ids.jsonl`.

Per batch: rows are appended to the array, their ids to the sidecar, then the header's row count
is updated. A reader (np.load) sees only counted rows; a killed job leaves at most uncounted
bytes, which the next open cuts back to the rows that both files hold.

The two files are bound by a run identifier: in a comment after the header's dict (np.load reads past
it) and in every sidecar record. A sidecar whose array is gone, or an array and a sidecar of different
runs, are never trusted: the first is dropped (its rows are embedded again), the second refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import InputError
from .sinks import FileSink, RowBatch, cut_back, discard

HEADER_BYTES = 128  # magic (6) + version (2) + header length (2) + the dict, space-padded, '\n'-terminated
MAGIC = b"\x93NUMPY\x01\x00"


def ids_path(path: Path) -> Path:
    return path.with_name(path.name[: -len(".npy")] + ".ids.jsonl")


RUN = re.compile(rb"# edgeclip run=([0-9a-f]+)")


def _header(dtype: np.dtype, rows: int, width: int, run: str | None) -> bytes:
    text = f"{{'descr': {dtype.str!r}, 'fortran_order': False, 'shape': ({rows}, {width}), }}"
    text += f" # edgeclip run={run}" if run else ""
    body = text.ljust(HEADER_BYTES - len(MAGIC) - 2 - 1) + "\n"
    return MAGIC + len(body).to_bytes(2, "little") + body.encode("latin1")


def _read_header(path: Path) -> tuple[np.dtype, tuple[int, ...], str | None]:
    """dtype, shape and run identifier (None in outputs of edgeclip before 0.1.1)."""
    with open(path, "rb") as handle:
        if np.lib.format.read_magic(handle) != (1, 0):
            raise ValueError("not written by edgeclip embed (npy format version differs)")
        shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
        if handle.tell() != HEADER_BYTES:
            raise ValueError("not written by edgeclip embed (header size differs)")
        handle.seek(0)
        found = RUN.search(handle.read(HEADER_BYTES))
    return dtype, shape, found.group(1).decode() if found else None


class NpySink(FileSink):
    def files(self) -> list[Path]:
        return [self.path, ids_path(self.path), self.meta_path, self._marker]

    @property
    def _marker(self) -> Path:
        return self.path.with_name(self.path.name + ".compacting")

    def _tmp(self, path: Path) -> Path:
        return path.with_name(f".{path.name}.compact")

    def _open_existing(self) -> None:
        self._data: BinaryIO | None = None
        self._ids: BinaryIO | None = None
        self._roll_forward()
        width, dtype = self.settings.row_width, self.settings.dtype
        self.run: str | None = secrets.token_hex(8)
        if not self.path.exists():
            with contextlib.suppress(FileNotFoundError):
                ids_path(self.path).unlink()  # ids whose array is gone label nothing: their inputs are embedded again
            return
        self.settings.check_same(self._stored_settings(), str(self.path))
        try:
            stored_dtype, shape, self.run = _read_header(self.path)
        except (ValueError, OSError) as exc:
            raise InputError(f"{self.path} is damaged ({exc}); use --overwrite to start afresh") from exc
        if stored_dtype != dtype or len(shape) != 2 or shape[1] != width:
            raise InputError(f"{self.path} holds {stored_dtype} rows of width {shape[1:]}, this run writes {dtype} of "
                             f"width {width}; use another --out or --overwrite")
        data_rows = (self.path.stat().st_size - HEADER_BYTES) // (width * dtype.itemsize)
        sidecar = ids_path(self.path)
        records: list[tuple[str, str]] = []
        sizes: list[int] = []
        if sidecar.exists():
            with open(sidecar, "rb") as handle:
                for number, line in enumerate(handle, 1):
                    if not line.endswith(b"\n") or len(records) >= min(shape[0], data_rows):
                        break
                    try:
                        record = json.loads(line)
                        records.append((str(record["id"]), str(record.get("fingerprint", ""))))
                    except (ValueError, KeyError, TypeError) as exc:
                        raise InputError(f"{sidecar} line {number} is damaged ({exc}); use --overwrite to start afresh") from exc
                    if record.get("run") != self.run:
                        raise InputError(f"{sidecar} does not belong to {self.path.name} (line {number} is from run "
                                         f"{record.get('run')}, the array from run {self.run}: one of them was replaced); "
                                         "its ids cannot label these rows: use --overwrite to start afresh")
                    sizes.append(len(line))
        rows = len(records)
        for item_id, fingerprint in records:
            self._remember(item_id, fingerprint)
        os.truncate(self.path, HEADER_BYTES + rows * width * dtype.itemsize)
        if sidecar.exists():
            os.truncate(sidecar, sum(sizes))
        self._write_header(rows)

    def _roll_forward(self) -> None:
        """Finish a compaction that a killed job began: both new files were complete before the marker was written."""
        if not self._marker.exists():
            return
        for target in (self.path, ids_path(self.path)):
            if self._tmp(target).exists():
                os.replace(self._tmp(target), target)
        self._marker.unlink()

    def _write_header(self, rows: int) -> None:
        header = _header(self.settings.dtype, rows, self.settings.row_width, self.run)
        mode = "r+b" if self.path.exists() else "wb"
        with open(self.path, mode) as handle:
            handle.write(header)

    def _append(self, batch: RowBatch) -> None:
        if self._data is None or self._ids is None:
            if not self.path.exists():
                self._write_header(0)
            self._data = open(self.path, "r+b")  # noqa: SIM115 - closed in _finish
            self._ids = open(ids_path(self.path), "ab")  # noqa: SIM115
        data, ids = self._data, self._ids
        vectors = np.ascontiguousarray(batch.vectors, dtype=self.settings.dtype)
        data_end, ids_end = data.seek(0, os.SEEK_END), ids.tell()
        try:
            data.write(vectors.tobytes())
            data.flush()
            lines = (json.dumps({"id": i, "kind": k, "fingerprint": f, "run": self.run}, ensure_ascii=False) + "\n"
                     for i, k, f in zip(batch.ids, batch.kinds, batch.fingerprints))
            ids.write("".join(lines).encode("utf-8"))
            ids.flush()
            data.seek(0)  # the row count last: readers never see a row that is not all there
            data.write(_header(self.settings.dtype, self.rows + len(batch.ids), self.settings.row_width, self.run))
            data.flush()
        except OSError:
            for handle in (data, ids):
                discard(handle)
            self._data = self._ids = None
            cut_back(self.path, data_end)  # both files back to the rows the header counts
            cut_back(ids_path(self.path), ids_end)
            raise

    def _finish(self) -> None:
        for handle in (self._data, self._ids):
            if handle is not None:
                os.fsync(handle.fileno())
                handle.close()
        self._data = self._ids = None
        keep = self._keep()
        if keep is not None and self.path.exists():
            self._compact(sorted(keep))

    def _compact(self, keep: list[int]) -> None:
        try:
            self._write_compacted(keep)
        except BaseException:
            if not self._marker.exists():  # before the marker the originals are whole: drop the half-made copies
                for target in (self.path, ids_path(self.path)):
                    with contextlib.suppress(OSError):
                        self._tmp(target).unlink()
            raise
        self._roll_forward()
        with contextlib.suppress(FileNotFoundError):
            self._marker.unlink()

    def _write_compacted(self, keep: list[int]) -> None:
        array = np.load(self.path, mmap_mode="r")
        sidecar = ids_path(self.path)
        wanted = set(keep)
        with open(sidecar, "rb") as handle:
            lines = [line for row, line in enumerate(handle) if row in wanted]
        with open(self._tmp(self.path), "wb") as handle:
            handle.write(_header(self.settings.dtype, len(keep), self.settings.row_width, self.run))
            for start in range(0, len(keep), 4096):  # bounded memory whatever the output's size
                handle.write(np.ascontiguousarray(array[keep[start : start + 4096]]).tobytes())
            os.fsync(handle.fileno())
        del array
        with open(self._tmp(sidecar), "wb") as handle:
            handle.write(b"".join(lines))
            os.fsync(handle.fileno())
        self._marker.write_bytes(b"")
