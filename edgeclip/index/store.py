"""The index file: one SQLite database holding the catalogue and the vectors.

SQLite from the standard library (no extensions: many Pythons cannot load them), in WAL mode so
searches read while an indexer writes and a killed indexer leaves the last committed batch. Each
item's row holds its id, kind, source (file path or document id), fingerprint, content hash, a
short text for display, the vector (the index's precision, `dim` wide) and its sign bits (the
coarse pass of a search). The settings the vectors were made with (bundle manifest checksum,
model, dim, precision, variants) are in `meta`; a query made with other settings is refused.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EdgeClipError, InputError, StorageError

SCHEMA_VERSION = 1
PRECISIONS = ("float16", "int8", "binary")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,            -- image | text
    source TEXT NOT NULL,          -- the image's path (or URL), or the document's file
    fingerprint TEXT NOT NULL,     -- size:mtime for files, a hash for texts
    content_hash TEXT NOT NULL,    -- sha256 of the file's bytes (a touched but unchanged file is not re-embedded)
    snippet TEXT NOT NULL,         -- the first characters of a document, for display
    vector BLOB NOT NULL,          -- dim values: float16, or int8 scaled by 127; empty for binary
    bits BLOB NOT NULL,            -- dim/8 bytes of sign bits
    origin TEXT                    -- the file that named the item when it is not the source (a JSONL file's images)
);
CREATE INDEX IF NOT EXISTS items_by_source ON items (source);
"""


@dataclass(frozen=True)
class IndexSettings:
    bundle_sha256: str
    model: str
    variants: dict[str, str]
    dim: int
    precision: str

    def to_json(self) -> str:
        return json.dumps({"schema": SCHEMA_VERSION, **self.__dict__}, sort_keys=True)


@dataclass(frozen=True)
class Row:
    id: str
    kind: str
    source: str
    fingerprint: str
    content_hash: str
    snippet: str
    vector: np.ndarray  # (dim,) float32, unit norm
    origin: str | None = None


def pack(vectors: np.ndarray, precision: str) -> tuple[list[bytes], list[bytes]]:
    """Unit rows -> stored vector blobs and sign-bit blobs."""
    bits = [row.tobytes() for row in np.packbits(vectors > 0, axis=1)]
    if precision == "float16":
        return [row.astype("<f2").tobytes() for row in vectors], bits
    if precision == "int8":
        return [np.clip(np.rint(row * 127), -127, 127).astype(np.int8).tobytes() for row in vectors], bits
    return [b"" for _ in vectors], bits


def unpack(blobs: Iterable[bytes], precision: str, dim: int) -> np.ndarray:
    """Stored vector blobs -> (N, dim) float32 (what rescoring multiplies)."""
    data = b"".join(blobs)
    if precision == "float16":
        return np.frombuffer(data, "<f2").reshape(-1, dim).astype(np.float32)
    return np.frombuffer(data, np.int8).reshape(-1, dim).astype(np.float32) / 127


def sqlite_error(path: Path, exc: Exception) -> EdgeClipError:
    """One line for a SQLite error: the system refusing a write (StorageError), a file that is no index, or a
    damaged index with the command that rebuilds it."""
    message = str(exc).lower()
    if "disk is full" in message or "readonly" in message or "disk i/o error" in message:
        reason = "the disk is full" if "full" in message else ("it is read-only" if "readonly" in message else "an I/O error")
        return StorageError(f"cannot write {path}: {reason}; every batch committed before is kept. Free space (or "
                            "restore write access) and rerun the same command to complete it")
    if "file is not a database" in message:
        return InputError(f"{path} is not an edgeclip index (not a SQLite file); it was left untouched: choose another file")
    return InputError(f"{path} is damaged ({exc}); move it away and rebuild it: `edgeclip index {path} SOURCE... --bundle B`")


class Store:
    """The database; one connection per Store (SQLite connections are not shared across threads)."""

    def __init__(self, path: str | Path, *, create: IndexSettings | None = None, readonly: bool = False) -> None:
        """Open the index at `path`: read-only (never creates or alters a file), or for writing, creating it
        with `create`'s settings when missing or empty. A file that is not an edgeclip index is refused
        untouched; an index whose settings differ from `create` is refused unless it holds no items yet
        (a first run that failed), whose settings are then replaced."""
        self.path = Path(path)
        new = not self.path.exists() or (self.path.is_file() and self.path.stat().st_size == 0)
        if new and (create is None or readonly):
            raise InputError(f"{self.path} is not an index; make one with `edgeclip index {self.path} SOURCE... --bundle B`")
        if self.path.is_dir():
            raise InputError(f"{self.path} is a folder, not an index file; name a file, e.g. {self.path / 'photos.db'}")
        try:
            uri = f"file:{self.path}?mode=ro" if readonly else str(self.path)
            self.db = sqlite3.connect(uri, uri=readonly, timeout=30, isolation_level=None, check_same_thread=False)
            if not new:
                self._check_is_index()
            if not readonly:
                # 16 KiB pages hold seven 1024-d float16 rows; at SQLite's default 4 KiB one row takes a page
                # (measured at 1M items: 3.96 GB). Only takes effect on a new file, before WAL.
                self.db.execute("PRAGMA page_size=16384")
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                self.db.executescript(_SCHEMA)
                columns = {row[1] for row in self.db.execute("PRAGMA table_info(items)")}
                if "origin" not in columns:  # an index made before 0.1.1
                    self.db.execute("ALTER TABLE items ADD COLUMN origin TEXT")
            stored = self.db.execute("SELECT value FROM meta WHERE key = 'settings'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise sqlite_error(self.path, exc) from exc
        if stored is None or (create is not None and not readonly and self.count() == 0
                              and json.loads(stored[0]) != json.loads(create.to_json())):
            if create is None:
                raise InputError(f"{self.path} holds no index settings; rebuild it with `edgeclip index`")
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('settings', ?)", (create.to_json(),))
            stored = (create.to_json(),)
        raw = json.loads(stored[0])
        if raw.pop("schema", None) != SCHEMA_VERSION:
            raise InputError(f"{self.path} was written by another edgeclip version; rebuild it with `edgeclip index`")
        self.settings = IndexSettings(**raw)

    def _check_is_index(self) -> None:
        """Refuse, before writing anything, a SQLite file (or any file) that edgeclip did not make."""
        tables = {name for (name,) in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"meta", "items"} <= tables:
            self.db.close()
            raise InputError(f"{self.path} is not an edgeclip index (it holds {', '.join(sorted(tables)) or 'no tables'}); "
                             "it was left untouched: choose another file")

    def close(self) -> None:
        self.db.close()

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def fingerprints(self) -> dict[str, tuple[str, str]]:
        """id -> (fingerprint, content hash), for every item."""
        return {i: (f, h) for i, f, h in self.db.execute("SELECT id, fingerprint, content_hash FROM items")}

    def put(self, rows: list[Row]) -> None:
        """Insert or replace rows, in one transaction: a batch is in the file whole, or not at all."""
        vectors, bits = pack(np.stack([r.vector for r in rows]), self.settings.precision)
        with self._transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO items (id, kind, source, fingerprint, content_hash, snippet, vector, bits, origin) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.id, r.kind, r.source, r.fingerprint, r.content_hash, r.snippet, v, b, r.origin)
                 for r, v, b in zip(rows, vectors, bits)])

    def touch(self, item_id: str, fingerprint: str) -> None:
        """A file whose size/mtime changed but whose bytes did not: remember the new fingerprint."""
        self.db.execute("UPDATE items SET fingerprint = ? WHERE id = ?", (fingerprint, item_id))

    def remove(self, ids: Iterable[str]) -> int:
        ids = list(ids)
        with self._transaction():
            self.db.executemany("DELETE FROM items WHERE id = ?", [(i,) for i in ids])
        return len(ids)

    def count(self, kind: str | None = None) -> int:
        if kind is None:
            return int(self.db.execute("SELECT COUNT(*) FROM items").fetchone()[0])
        return int(self.db.execute("SELECT COUNT(*) FROM items WHERE kind = ?", (kind,)).fetchone()[0])

    def version(self) -> int:
        """Changes when another connection commits (PRAGMA data_version) or this one writes."""
        return int(self.db.execute("PRAGMA data_version").fetchone()[0]) * 1_000_003 + self.db.total_changes

    def scan_bits(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rowids, kinds as 0 image / 1 text, (N, dim/8) uint8 sign bits) of every item."""
        rows = self.db.execute("SELECT rowid, kind = 'text', bits FROM items ORDER BY rowid").fetchall()
        width = self.settings.dim // 8
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, bool), np.zeros((0, width), np.uint8)
        rowids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        kinds = np.fromiter((r[1] for r in rows), bool, len(rows))
        bits = np.frombuffer(b"".join(r[2] for r in rows), np.uint8).reshape(len(rows), width)
        return rowids, kinds, bits

    def vectors(self, rowids: Iterable[int]) -> tuple[list[int], np.ndarray]:
        """The stored vectors of these rows, as float32 (rows that vanished meanwhile are left out)."""
        wanted = [int(r) for r in rowids]
        found: dict[int, bytes] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(self.db.execute(f"SELECT rowid, vector FROM items WHERE rowid IN ({marks})", chunk).fetchall())
        present = [r for r in wanted if r in found]
        return present, unpack((found[r] for r in present), self.settings.precision, self.settings.dim)

    def describe(self, rowids: Iterable[int]) -> dict[int, dict[str, Any]]:
        wanted = [int(r) for r in rowids]
        marks = ",".join("?" * len(wanted))
        query = f"SELECT rowid, id, kind, source, snippet FROM items WHERE rowid IN ({marks})"
        return {r: {"id": i, "kind": k, "source": s, "snippet": t} for r, i, k, s, t in self.db.execute(query, wanted)}

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
