"""`Index`: folders of photos and documents, embedded through the job pipeline into a Store, searched
in any language or by example image.

    index = edgeclip.Index("photos.db", edgeclip.load("bundles/jina-clip-v2"), dim=256)
    report = index.add(["~/Pictures", "notes.jsonl"])      # incremental: added / changed / removed
    hits = index.search(text="foca en una roca", k=10)   # or image="query.jpg"
"""

from __future__ import annotations

import fnmatch
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..bundle import MANIFEST_FILE, sha256_file
from ..errors import InputError
from ..integrity import verify_variants
from ..jobs import Item, JobOptions, RowBatch, ScanReport, Sink, run_job, sources
from ..jobs.lock import OutputLock
from ..jobs.pipeline import Failure
from ..model import EdgeClip
from .search import Searcher
from .store import PRECISIONS, IndexSettings, Row, Store

DOCUMENT_SUFFIXES = frozenset({".txt", ".md"})  # a file of one of these in a folder is one document
SNIPPET_CHARS = 300


@dataclass(frozen=True)
class Result:
    rank: int
    score: float
    id: str
    kind: str
    source: str  # the image's path, or the document's file
    snippet: str  # a document's first characters ("" for images)


@dataclass
class IndexReport:
    added: int = 0
    changed: int = 0  # embedded again: the file's bytes changed
    unchanged: int = 0
    removed: int = 0  # gone from the sources: dropped from the index
    failed: list[Failure] = field(default_factory=list)
    interrupted: bool = False
    scan: ScanReport = field(default_factory=ScanReport)


def _content_hash(path: str) -> str:
    """The file's bytes, hashed (the bundle's checksum function); "" if it cannot be read."""
    try:
        return "sha256:" + sha256_file(Path(path))[:32]
    except OSError:
        return ""


@dataclass
class _Pending:
    source: str
    snippet: str
    content_hash: str
    origin: str | None = None  # the file that named it, where that is not its source (a JSONL file's images)


class _IndexSink(Sink):
    """The job pipeline's sink: each batch goes into the store in one transaction."""

    def __init__(self, store: Store, pending: dict[str, _Pending]) -> None:
        super().__init__()
        self.store, self.pending = store, pending
        for item_id, (fingerprint, _) in store.fingerprints().items():
            self._remember(item_id, fingerprint)
        self.rows = 0

    def _append(self, batch: RowBatch) -> None:
        rows = []
        for item_id, kind, fingerprint, vector in zip(batch.ids, batch.kinds, batch.fingerprints, batch.vectors):
            extra = self.pending.pop(item_id)
            rows.append(Row(item_id, kind, extra.source, fingerprint, extra.content_hash, extra.snippet, vector, extra.origin))
        self.store.put(rows)


class Index:
    def __init__(self, db: str | os.PathLike[str], model: EdgeClip, *, dim: int | None = None,
                 precision: str = "float16", bundle_path: str | os.PathLike[str] | None = None,
                 readonly: bool = False) -> None:
        """Open `db` (created when missing, with `dim` and `precision`); an existing index must have
        been built with this bundle, and `dim`/`precision` (when given) must be its own.
        `bundle_path` is remembered, so `edgeclip search` can load the same bundle. `readonly`: for
        searching only; the file is never created or changed. A writer holds `DB.lock` (one at a time)."""
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.model = model
        towers = [t for t in ("text", "vision") if getattr(model.manifest, t) is not None]
        full = min(model.output_dim(t) for t in towers)  # type: ignore[arg-type]
        if dim is not None and dim not in (*model.matryoshka_dims, full):
            raise InputError(f"--dim must be one of {', '.join(map(str, sorted({*model.matryoshka_dims, full})))}, got {dim}")
        if precision == "binary" and (dim or full) % 8:
            raise InputError("binary needs a dim that is a multiple of 8")
        wanted = IndexSettings(sha256_file(model.bundle.directory / MANIFEST_FILE), model.manifest.source.model_id,
                               {t: model.variant_name(t) for t in towers}, dim or full, precision)  # type: ignore[arg-type]
        self._writer: OutputLock | None = None
        if not readonly:
            self._writer = OutputLock(Path(os.fspath(db)))
            self._writer.acquire()
        try:
            self.store = Store(db, create=None if readonly else wanted, readonly=readonly)
        except BaseException:
            self._release_writer()
            raise
        have = self.store.settings
        problems = [f"{name} {getattr(have, name)!r} (now {getattr(wanted, name)!r})"
                    for name in ("bundle_sha256", "model", "variants") if getattr(have, name) != getattr(wanted, name)]
        problems += [f"{name} {getattr(have, name)!r} (asked {getattr(wanted, name)!r})" for name, given in
                     (("dim", dim), ("precision", precision if precision != "float16" else None))
                     if given is not None and getattr(have, name) != given]
        if problems:
            self.close()
            raise InputError(f"{db} was built with other settings: {'; '.join(problems)}. Its vectors cannot be "
                             "compared with these: use the bundle it was built with, or index into a new file")
        self.settings = have
        if bundle_path is not None and not readonly:
            self.store.set_meta("bundle_path", os.path.abspath(os.fspath(bundle_path)))
        self._searcher = Searcher(self.store)
        self._lock = threading.Lock()

    def close(self) -> None:
        self.store.close()
        self._release_writer()

    def _release_writer(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ---- indexing ----------------------------------------------------------------------------------

    def add(self, paths: Sequence[str | os.PathLike[str]], *, exclude: Sequence[str] = (),
            stop: threading.Event | None = None, progress: Callable[[int], None] | None = None) -> IndexReport:
        """Index image folders, image files, text/Markdown files and JSONL documents, incrementally.

        New items are added, changed ones embedded again (size/mtime changed and then the bytes),
        items gone from these sources removed. Each batch is committed whole; after an interruption
        (`stop`, or the process killed) a rerun finishes the job and nothing is lost or twice.
        """
        report = IndexReport()
        if self.store.count():  # adding to rows made before: the weights must be the ones they were made with
            verify_variants(self.model.bundle, self.settings.variants)
        roots = [os.path.abspath(os.path.expanduser(os.fspath(p))) for p in paths]
        for root in roots:
            if not os.path.exists(root):
                raise InputError(f"{root} does not exist")
        stored = self.store.fingerprints()
        pending: dict[str, _Pending] = {}
        seen: set[str] = set()
        sink = _IndexSink(self.store, pending)

        jsonl_origin: dict[str, str] = {}

        def items() -> Iterator[Item]:
            for item, source, snippet in self._items(roots, exclude, report.scan, jsonl_origin):
                seen.add(item.id)
                before = stored.get(item.id)
                if before is None or before[0] != item.fingerprint:
                    file_backed = item.error is None and (item.kind == "image" or source == item.id) and os.path.isfile(item.value)
                    content_hash = _content_hash(item.value) if file_backed else item.fingerprint
                    if before is not None and before[1] == content_hash:  # touched, not changed: keep the vector
                        self.store.touch(item.id, item.fingerprint)
                        sink.done[item.id] = item.fingerprint
                    else:
                        origin = jsonl_origin.get(item.id)
                        pending[item.id] = _Pending(source, snippet, content_hash, origin)
                yield item

        summary = run_job(self.model, items(), sink, JobOptions(truncate_dim=self._truncate_dim()), stop=stop,
                          progress=progress)
        report.changed = summary.changed
        report.added = summary.embedded - summary.changed
        report.unchanged = summary.skipped
        report.failed = summary.failures
        report.interrupted = summary.interrupted
        # a file that can no longer be read leaves the index (it is reported as failed): its old vector
        # would keep being found for content nobody can open
        report.removed = self.store.remove([f.id for f in summary.failures if f.id in stored])
        if not summary.interrupted:  # only a complete scan knows what is gone
            gone = [i for i, source in self._sources_under(roots) if i not in seen]
            report.removed += self.store.remove(gone)
        return report

    def add_parquet(self, path: str | os.PathLike[str]) -> IndexReport:
        """Load embeddings computed elsewhere (`edgeclip embed --out X.parquet`, or `--engine ray --out DIR/`)
        without embedding anything: the files must come from this index's bundle, with a dim at least the
        index's (wider rows are cut to it and normalized again, as Matryoshka truncation is) and float rows.
        Ids already stored with the same fingerprint are kept; others are added or replaced."""
        from ..jobs.parquet_sink import METADATA_KEY, pyarrow_module

        pa = pyarrow_module()
        root = Path(os.fspath(path))
        files = sorted(root.glob("*.parquet")) if root.is_dir() else [root]
        if not files or not files[0].exists():
            raise InputError(f"{root}: no .parquet files (give a file or a folder of them)")
        report = IndexReport()
        stored = self.store.fingerprints()
        dim = self.settings.dim
        for file in files:
            try:
                parquet = pa.parquet.ParquetFile(file)
            except (OSError, pa.ArrowException) as exc:
                raise InputError(f"{file} is not a readable parquet file ({exc})") from exc
            raw = (parquet.schema_arrow.metadata or {}).get(METADATA_KEY)
            if raw is None:
                raise InputError(f"{file} has no edgeclip metadata: only files written by `edgeclip embed` can be loaded")
            meta = json.loads(raw)
            problems = [f"{key} {meta.get(key)!r} (index: {want!r})" for key, want in
                        (("bundle_sha256", self.settings.bundle_sha256), ("model", self.settings.model)) if meta.get(key) != want]
            if meta.get("dim", 0) < dim:
                problems.append(f"dim {meta.get('dim')} (index: {dim}; rows can only be cut to a smaller dim)")
            if meta.get("precision") not in ("float32", "float16"):
                problems.append(f"precision {meta.get('precision')!r} (float32 or float16 rows are needed)")
            if problems:
                raise InputError(f"{file} cannot go into {self.store.path}: {'; '.join(problems)}. Embed with the "
                                 "index's bundle (or index into a new file built with the bundle that wrote it)")
            for group in range(parquet.num_row_groups):
                table = parquet.read_row_group(group, columns=["id", "kind", "fingerprint", "embedding"])
                ids, kinds = table.column("id").to_pylist(), table.column("kind").to_pylist()
                fingerprints = table.column("fingerprint").to_pylist()
                width = meta["dim"]
                flat = table.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
                vectors = flat.reshape(len(ids), width)[:, :dim].astype(np.float32)
                vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
                rows = []
                for item_id, kind, fingerprint, vector in zip(ids, kinds, fingerprints, vectors):
                    before = stored.get(item_id)
                    if before is not None and before[0] == fingerprint:
                        report.unchanged += 1
                        continue
                    if before is None:
                        report.added += 1
                    else:
                        report.changed += 1
                    rows.append(Row(item_id, kind, item_id, fingerprint, fingerprint, "", vector))
                    stored[item_id] = (fingerprint, fingerprint)
                if rows:
                    self.store.put(rows)
        return report

    def _truncate_dim(self) -> int | None:
        return self.settings.dim if self.settings.dim in self.model.matryoshka_dims else None

    def _items(self, roots: list[str], exclude: Sequence[str], scan: ScanReport,
               jsonl_origin: dict[str, str]) -> Iterator[tuple[Item, str, str]]:
        """(item, source, snippet) for every input under the roots, excluded globs left out. An image named by
        a JSONL record has its own path as its source (the page shows and thumbnails it); `jsonl_origin`
        gets id -> the JSONL file, so that a record removed from it is removed from the index."""
        def excluded(path: str) -> bool:
            return any(fnmatch.fnmatch(path, g) or fnmatch.fnmatch(os.path.basename(path), g) for g in exclude)

        for root in roots:
            if os.path.isdir(root):
                suffixes = sources.image_suffixes() | DOCUMENT_SUFFIXES
                for item in sources.image_dir(root, scan, suffixes):
                    if excluded(item.value):
                        continue
                    if os.path.splitext(item.value)[1].lower() in DOCUMENT_SUFFIXES:
                        yield from self._document(item.value)
                    else:
                        yield item, item.value, ""
            elif excluded(root):
                continue
            elif root.lower().endswith(".jsonl"):
                for item in sources.jsonl_file(root):
                    if item.kind == "image" and item.error is None and os.path.isfile(item.value):
                        jsonl_origin[item.id] = root
                        yield item, os.path.abspath(item.value), ""
                    else:
                        yield item, root, item.value[:SNIPPET_CHARS] if item.kind == "text" else ""
            elif os.path.splitext(root)[1].lower() in DOCUMENT_SUFFIXES:
                yield from self._document(root)
            else:
                yield next(sources.image_files([root])), root, ""

    @staticmethod
    def _document(path: str) -> Iterator[tuple[Item, str, str]]:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            yield Item(path, "text", "", "", error=f"cannot read it as UTF-8 text ({exc})"), path, ""
            return
        if text.strip():
            yield Item(path, "text", text, sources.file_fingerprint(path)), path, text[:SNIPPET_CHARS]

    def _sources_under(self, roots: list[str]) -> list[tuple[str, str]]:
        rows = self.store.db.execute("SELECT id, COALESCE(origin, source) FROM items").fetchall()
        return [(i, s) for i, s in rows if any(s == r or s.startswith(r.rstrip(os.sep) + os.sep) for r in roots)]

    def image_source(self, item_id: str) -> str | None:
        """The file of an indexed image, by id (None if the id is not an indexed image)."""
        with self._lock:
            row = self.store.db.execute("SELECT source FROM items WHERE id = ? AND kind = 'image'", (item_id,)).fetchone()
        return None if row is None else str(row[0])

    def remove(self, ids: Iterable[str]) -> int:
        """Drop items by id (for images and documents in folders, the id is the path)."""
        return self.store.remove(ids)

    # ---- searching ---------------------------------------------------------------------------------

    def query_vector(self, text: str | None = None, image: object = None) -> np.ndarray:
        if (text is None) == (image is None):
            raise InputError("search with exactly one of text= or image=")
        dim = self._truncate_dim()
        if text is not None:
            vector = self.model.encode_text([text], task=self._task(), truncate_dim=dim)[0]
        else:
            vector = self.model.encode_image([image], truncate_dim=dim)[0]  # type: ignore[list-item]
        vector = vector[: self.settings.dim]
        return vector / max(float(np.linalg.norm(vector)), 1e-12)

    def _task(self) -> str | None:
        spec = self.model.manifest.text
        return "retrieval.query" if spec is not None and "retrieval.query" in spec.task_prefixes else None

    def search(self, text: str | None = None, image: object = None, *, k: int = 10, kind: str | None = None,
               exact: bool = False) -> list[Result]:
        """The k nearest items to a text (any language; the query instruction applied) or an image."""
        if kind not in (None, "image", "text"):
            raise InputError(f"kind must be image or text, got {kind!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InputError(f"k must be a positive int, got {k!r}")
        query = self.query_vector(text, image)
        with self._lock:  # one connection: searches from several threads take turns
            hits = self._searcher.search(query, k, kind, exact)
            described = self.store.describe([h.rowid for h in hits])
        return [Result(rank, round(h.score, 6), **described[h.rowid]) for rank, h in enumerate(hits, 1)
                if h.rowid in described]

    def stats(self) -> dict[str, object]:
        size = sum(os.path.getsize(p) for p in (self.store.path, Path(f"{self.store.path}-wal")) if os.path.exists(p))
        return {"items": self.store.count(), "images": self.store.count("image"), "texts": self.store.count("text"),
                "dim": self.settings.dim, "precision": self.settings.precision, "model": self.settings.model,
                "variants": self.settings.variants, "bytes_on_disk": size}
