"""Where a job's rows go: `.jsonl`, `.npy` + ids, `.parquet`, or JSONL on stdout (`-`).

Every file sink appends as the job goes and can be resumed: it reads back the ids (and input
fingerprints) it already holds, refuses an output written with other settings (bundle, variant,
dim, precision, task, ...), holds a lock so a second job cannot write the same output, and never
leaves half a row: a torn tail from a killed process is cut off when the output is next opened.
Rows superseded by a re-embedded (changed) input are dropped when the sink closes.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .._files import atomic_write_bytes
from ..errors import InputError, storage_error
from .lock import OutputLock

SUFFIXES = (".jsonl", ".npy", ".parquet")
STDOUT = "-"


@dataclass(frozen=True)
class OutputSettings:
    """What makes two runs' rows comparable; an output is only ever resumed with identical settings."""

    bundle_sha256: str  # sha256 of the bundle's manifest.json
    model: str  # the bundle's source model id
    variants: dict[str, str]  # tower -> variant used
    dim: int  # embedding width written (Matryoshka dim)
    precision: str  # float32, float16, binary, ubinary
    task: str | None
    max_length: int
    exif_transpose: bool

    def to_dict(self) -> dict[str, Any]:
        return {"edgeclip_output": 1, **asdict(self)}

    def check_same(self, stored: dict[str, Any], output: str) -> None:
        mine = self.to_dict()
        differs = [f"{k} {stored.get(k)!r} (this run: {v!r})" for k, v in mine.items() if stored.get(k) != v]
        if differs:
            raise InputError(f"{output} was written with other settings: {'; '.join(differs)}. Rows of different "
                             "settings must not be mixed: use another --out, or --overwrite to start afresh")

    @property
    def dtype(self) -> np.dtype:
        return np.dtype({"float32": "<f4", "float16": "<f2", "binary": "i1", "ubinary": "u1"}[self.precision])

    @property
    def row_width(self) -> int:
        """Values per stored row: dim floats, or dim/8 packed bytes for the binary precisions."""
        return self.dim // 8 if self.precision in ("binary", "ubinary") else self.dim


@dataclass(frozen=True)
class RowBatch:
    ids: list[str]
    kinds: list[str]
    fingerprints: list[str]
    vectors: np.ndarray  # (N, row_width), the settings' dtype


class Sink:
    """Base: tracks which ids the output holds and which rows a later row of the same id supersedes."""

    def __init__(self) -> None:
        self.done: dict[str, str] = {}  # id -> input fingerprint, for every id in the output
        self._latest: dict[str, int] = {}  # id -> row number of its newest row
        self.rows = 0  # rows in the output, superseded ones included
        self.new_rows = 0  # rows this run wrote

    def _remember(self, item_id: str, fingerprint: str) -> None:
        self._latest[item_id] = self.rows
        self.done[item_id] = fingerprint
        self.rows += 1

    def _keep(self) -> set[int] | None:
        """Row numbers to keep, or None when no row is superseded."""
        return None if len(self._latest) == self.rows else set(self._latest.values())

    def write(self, batch: RowBatch) -> None:
        self._append(batch)
        for item_id, fingerprint in zip(batch.ids, batch.fingerprints):
            self._remember(item_id, fingerprint)
        self.new_rows += len(batch.ids)

    def _append(self, batch: RowBatch) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Finish the output (compaction, final file); safe to call after an interruption."""

    @property
    def unique_rows(self) -> int:
        return len(self._latest)


def _record(item_id: str, kind: str, fingerprint: str, vector: np.ndarray, dim: int) -> str:
    return json.dumps({"id": item_id, "kind": kind, "dim": dim, "fingerprint": fingerprint,
                       "embedding": vector.tolist()}, ensure_ascii=False) + "\n"


class StdoutSink(Sink):
    """JSONL records on stdout, flushed per batch; nothing to resume."""

    def __init__(self, settings: OutputSettings, stream: BinaryIO | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.stream = stream if stream is not None else sys.stdout.buffer

    def _append(self, batch: RowBatch) -> None:
        lines = (_record(i, k, f, v, self.settings.dim) for i, k, f, v in zip(batch.ids, batch.kinds, batch.fingerprints, batch.vectors))
        self.stream.write("".join(lines).encode("utf-8"))
        self.stream.flush()


class FileSink(Sink):
    """Shared by the file formats: the lock, the settings sidecar, and removing an output that got no rows."""

    def __init__(self, path: Path, settings: OutputSettings, overwrite: bool) -> None:
        super().__init__()
        self.path, self.settings = path, settings
        self.meta_path = path.with_name(path.name + ".meta.json")
        self.failed = False  # the system refused a write: close() then only releases the lock
        self.lock = OutputLock(path)
        self.lock.acquire()
        try:
            if overwrite:
                self._check_ours()
                self._remove_all()
            self._open_existing()
            atomic_write_bytes(self.meta_path, (json.dumps(settings.to_dict(), indent=1) + "\n").encode())
        except OSError as exc:
            self.lock.release()
            raise storage_error(self.meta_path, exc, "nothing was written") from exc
        except BaseException:
            self.lock.release()
            raise

    def write(self, batch: RowBatch) -> None:
        try:
            super().write(batch)
        except OSError as exc:  # the format's _append has cut its files back to their last whole row
            self.failed = True
            raise storage_error(self.path, exc, "the rows written before are kept") from exc

    def files(self) -> list[Path]:
        """Every file this output consists of (the lock aside)."""
        return [self.path, self.meta_path]

    def _check_ours(self) -> None:
        """--overwrite replaces only an output edgeclip wrote (its settings file beside it): anything else
        at that path is refused untouched."""
        if self.path.exists() and not self.meta_path.exists():
            raise InputError(f"{self.path} exists and was not written by `edgeclip embed` (no {self.meta_path.name} beside "
                             "it); --overwrite replaces only edgeclip's outputs: choose another --out")

    def _remove_all(self) -> None:
        for file in self.files():
            with contextlib.suppress(FileNotFoundError):
                file.unlink()

    def _stored_settings(self) -> dict[str, Any]:
        try:
            stored = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"{self.path} exists but was not written by `edgeclip embed` (no {self.meta_path.name}); "
                             "choose another --out") from None
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read {self.meta_path}: {exc}; use --overwrite to start afresh") from exc
        if not isinstance(stored, dict):
            raise InputError(f"{self.meta_path} is damaged; use --overwrite to start afresh")
        return stored

    def _open_existing(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        try:
            if self.failed:
                if self.rows == 0:
                    self._remove_all()
                return
            try:
                self._finish()
            except OSError as exc:
                self.failed = True
                raise storage_error(self.path, exc, "every row written is kept (a rerun finishes the file)") from exc
            if self.rows == 0:
                self._remove_all()  # a job that embedded nothing leaves no output behind
        finally:
            self.lock.release()

    def _finish(self) -> None:
        raise NotImplementedError


class JsonlSink(FileSink):
    """One JSON record per line: {"id", "kind", "dim", "fingerprint", "embedding"}; a batch is one write."""

    def _open_existing(self) -> None:
        self._handle: BinaryIO | None = None
        if not self.path.exists():
            return
        self.settings.check_same(self._stored_settings(), str(self.path))
        good = 0
        with open(self.path, "rb") as handle:
            for number, line in enumerate(handle, 1):
                if not line.endswith(b"\n"):
                    break  # a torn last line from a killed job: cut off below
                try:
                    record = json.loads(line)
                    self._remember(str(record["id"]), str(record.get("fingerprint", "")))
                except (ValueError, KeyError, TypeError) as exc:
                    raise InputError(f"{self.path} line {number} is damaged ({exc}); use --overwrite to start afresh") from exc
                good += len(line)
        if good != self.path.stat().st_size:
            os.truncate(self.path, good)

    def _append(self, batch: RowBatch) -> None:
        if self._handle is None:
            self._handle = open(self.path, "ab")  # noqa: SIM115 - closed in _finish
        dim = self.settings.dim
        lines = (_record(i, k, f, v, dim) for i, k, f, v in zip(batch.ids, batch.kinds, batch.fingerprints, batch.vectors))
        start = self._handle.tell()
        try:
            self._handle.write("".join(lines).encode("utf-8"))
            self._handle.flush()  # in the OS's hands now: a killed process loses nothing written
        except OSError:
            discard(self._handle)
            self._handle = None
            cut_back(self.path, start)  # no torn last line
            raise

    def _finish(self) -> None:
        if self._handle is not None:
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None
        keep = self._keep()
        if keep is not None and self.path.exists():
            tmp = self.path.with_name(f".{self.path.name}.compact")
            try:
                with open(self.path, "rb") as source, open(tmp, "wb") as target:
                    for row, line in enumerate(source):
                        if row in keep:
                            target.write(line)
                    target.flush()
                    os.fsync(target.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    tmp.unlink()  # the output is as it was: superseded rows are dropped by the next run
                raise


def output_files(path: Path) -> list[Path]:
    """The files an output at `path` consists of (for checks before a sink is opened)."""
    files = [path, path.with_name(path.name + ".meta.json")]
    if path.suffix == ".npy":
        files.append(path.with_name(path.name[: -len(".npy")] + ".ids.jsonl"))
    return files


def discard(handle: BinaryIO) -> None:
    """Close a handle whose write failed (its unflushed bytes are dropped, not retried)."""
    with contextlib.suppress(OSError):
        handle.close()


def cut_back(path: Path, size: int) -> None:
    """Truncate a file to `size` after a failed append (shrinking needs no space); if even that fails,
    the next open cuts the torn tail off."""
    with contextlib.suppress(OSError):
        os.truncate(path, size)


def check_output_path(out: str) -> Path | None:
    """Refuse an unusable --out before any work (None means stdout)."""
    if out == STDOUT:
        return None
    path = Path(out).expanduser()
    if path.is_dir():
        raise InputError(f"--out {out} is a directory; give a file inside it, e.g. {path / 'embeddings.jsonl'}")
    if path.suffix not in SUFFIXES:
        raise InputError(f"--out must end in {', '.join(SUFFIXES)} (or be - for JSONL on stdout), got {path.name!r}")
    parent = path.parent
    existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise InputError(f"--out {out}: {existing} is a file, not a folder; choose another --out")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"--out {out}: cannot write in {existing} (permission denied); choose another --out")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"--out {out} is not writable (permission denied); choose another --out")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out {out}: cannot create {parent} ({exc.strerror}); choose another --out") from exc
    return path


def open_sink(out: str, settings: OutputSettings, overwrite: bool = False) -> Sink:
    """The sink for --out: by suffix, or stdout for "-". Raises InputError naming the fix."""
    path = check_output_path(out)
    if path is None:
        return StdoutSink(settings)
    if path.suffix == ".jsonl":
        return JsonlSink(path, settings, overwrite)
    if path.suffix == ".npy":
        from .npy_sink import NpySink

        return NpySink(path, settings, overwrite)
    from .parquet_sink import ParquetSink

    return ParquetSink(path, settings, overwrite)


def read_rows(path: str | os.PathLike[str]) -> tuple[list[str], np.ndarray]:
    """(ids, (N, W) vectors) of a finished .jsonl, .npy or .parquet output, in row order (tests, tools)."""
    path = Path(path)
    if path.suffix == ".npy":
        from .npy_sink import ids_path

        ids = [json.loads(line)["id"] for line in ids_path(path).read_text(encoding="utf-8").splitlines()]
        return ids, np.load(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path, columns=["id", "embedding"])
        return table.column("id").to_pylist(), np.array(table.column("embedding").to_pylist())
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [r["id"] for r in records], np.array([r["embedding"] for r in records])

