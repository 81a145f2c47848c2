"""Past one machine: the same bundle on Ray Data (the `ray` extra: ray[data] and pyarrow).

    import ray, edgeclip.distributed as ed
    ray.init()                                                       # or ray.init("auto") on a cluster
    ds = ed.embed_images(["a.jpg", "b.png"], "bundle", workers=2, cpus_per_worker=1)
    ds.write_parquet("out/")                                         # columns: id, kind, dim, fingerprint, embedding, error

Each actor opens the bundle once with intra_op_num_threads = its CPUs and inter_op_num_threads = 1
(ORT ignores Ray's OMP_NUM_THREADS: left alone, every actor would spawn a pool as wide as the node)
and decodes image bytes with edgeclip's own preprocessing (not read_images' resize). Inside an
actor, a batch goes through the local job pipeline (edgeclip.jobs.run_job), so its rows equal a
local `edgeclip embed` of the same inputs and a bad input fails only its own row.

`run_shards` is what `edgeclip embed --engine ray` runs: inputs cut into shards, each written by an
actor as one parquet file (the local .parquet schema and metadata), atomically, so a rerun skips
the shards already written and an actor killed mid-shard leaves nothing half-written: Ray retries
the shard elsewhere and the same file is written once.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .jobs import Failure, Item, JobOptions, JobSummary, OutputSettings, RowBatch, Sink, run_job
from .jobs.parquet_sink import METADATA_KEY, parquet_bytes, parquet_table, pyarrow_module

RAY_MISSING = "the Ray engine needs Ray Data: pip install 'edgeclip[ray]'"
# The folder holds parquet shards and nothing else, so it reads as a dataset as it is: pyarrow and pandas
# skip "_" and "." files, but Polars refuses a folder with any other file in it, even a hidden one. So the
# side files live beside the folder (as a local output's NAME.meta.json and NAME.lock do), and shards are
# written through temporary files beside it too.
SETTINGS_SUFFIX = ".meta.json"  # emb/ -> emb.meta.json: a rerun with other settings is refused
FAILURES_SUFFIX = ".failures.jsonl"  # emb/ -> emb.failures.jsonl: the last run's bad inputs
# Inside the folder before 0.1.1 (they broke readers of it): a rerun moves the settings out, removes the rest.
LEGACY_SETTINGS_FILE, LEGACY_SIDE_FILES = "_edgeclip.json", ("failures.jsonl", "_edgeclip.json.lock")
SHARD_GLOB = "part-*.parquet"


def settings_file(out: Path) -> Path:
    return out.with_name(out.name + SETTINGS_SUFFIX)


def failures_file(out: Path) -> Path:
    return out.with_name(out.name + FAILURES_SUFFIX)


def write_shard(shard: Path, payload: bytes) -> None:
    """Atomically, with the temporary file beside the folder (inside it, a reader would see a stray file)."""
    from ._files import atomic_write_bytes

    try:
        atomic_write_bytes(shard, payload, temporary_dir=shard.parent.parent)
    except OSError as exc:
        if exc.errno != errno.EXDEV:  # the folder is a mount point: the rename needs a temporary file inside it
            raise
        atomic_write_bytes(shard, payload)


ROW_DTYPES = {"float32": np.float32, "float16": np.float16, "binary": np.int8, "ubinary": np.uint8}


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data, not just Ray core
    except ImportError as exc:
        raise InputError(RAY_MISSING) from exc
    return ray


@dataclass(frozen=True)
class EmbedConfig:
    """What every actor needs to open the bundle and embed exactly as a local job would."""

    bundle: str
    threads: int = 1  # intra-op threads per actor: its CPUs
    variant: str | None = None
    dim: int | None = None
    precision: str = "float32"
    task: str | None = None
    max_length: int | None = None
    exif_transpose: bool = True
    text_batch: int = 32
    image_batch: int | None = None

    def job_options(self) -> JobOptions:
        return JobOptions(task=self.task, truncate_dim=self.dim, precision=self.precision, max_length=self.max_length,
                          text_batch=self.text_batch, image_batch=self.image_batch, exif_transpose=self.exif_transpose)


class _MemorySink(Sink):
    """Rows of one batch, kept for the actor to return or write."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[RowBatch] = []

    def _append(self, batch: RowBatch) -> None:
        self.batches.append(batch)


class Embedder:
    """A callable class for `Dataset.map_batches`: one bundle session per actor.

    Input columns: `id` (optional: `path`, else the row number, is used), and `text`, `path` or
    `bytes` (encoded image bytes, e.g. from `ray.data.read_binary_files(..., include_paths=True)`).
    Output columns: id, kind, dim, fingerprint, embedding (N x width), error ("" for good rows;
    a bad row keeps a zero embedding and says why).
    """

    def __init__(self, config: EmbedConfig) -> None:
        from .model import load

        self.config = config
        self.model = load(config.bundle, variant=config.variant, threads=config.threads)
        self.options = config.job_options()

    def embed(self, items: list[Item]) -> tuple[list[RowBatch], list[Failure]]:
        sink = _MemorySink()
        summary = run_job(self.model, items, sink, self.options)
        return sink.batches, summary.failures

    def width(self) -> tuple[int, int]:
        """(dim, values per row): dim floats, or dim/8 packed bytes for the binary precisions."""
        dims = [self.model.output_dim(t) for t in ("text", "vision") if getattr(self.model.manifest, t) is not None]
        dim = self.config.dim or min(dims)  # type: ignore[arg-type]
        return dim, dim // 8 if self.config.precision in ("binary", "ubinary") else dim

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = batch_items(batch)
        rows, failures = self.embed(items)
        found = {item_id: (b, n) for b in rows for n, item_id in enumerate(b.ids)}
        errors = {f.id: f.reason for f in failures}
        dim, width = self.width()
        vectors = np.zeros((len(items), width), dtype=ROW_DTYPES[self.config.precision])  # bad rows stay zero
        for n, item in enumerate(items):
            if item.id in found:
                row_batch, at = found[item.id]
                vectors[n] = row_batch.vectors[at]
        return {"id": np.array([i.id for i in items], dtype=object), "kind": np.array([i.kind for i in items], dtype=object),
                "dim": np.full(len(items), dim, dtype=np.int32),
                "fingerprint": np.array([i.fingerprint for i in items], dtype=object),
                "embedding": vectors, "error": np.array([errors.get(i.id, "") for i in items], dtype=object)}


def batch_items(batch: dict[str, np.ndarray]) -> list[Item]:
    """A map_batches batch -> job Items (ids from `id`, else `path`, else the position in the batch)."""
    from .jobs.sources import content_fingerprint, file_fingerprint

    count = len(next(iter(batch.values())))
    ids = batch.get("id", batch.get("path"))
    items = []
    for n in range(count):
        item_id = str(ids[n]) if ids is not None else str(n)
        if "text" in batch:
            text = str(batch["text"][n])
            items.append(Item(item_id, "text", text, content_fingerprint(text)))
        elif "bytes" in batch:
            data = bytes(batch["bytes"][n])
            items.append(Item(item_id, "image", data, "sha1:" + hashlib.sha1(data).hexdigest()[:20]))  # type: ignore[arg-type]
        elif "path" in batch:
            path = str(batch["path"][n])
            items.append(Item(item_id, "image", path, file_fingerprint(path)))
        else:
            raise InputError(f"a batch needs a text, bytes or path column; it has {', '.join(batch)}")
    return items


def start_ray(address: str | None = None) -> None:
    """Join the cluster at `address`, or start a local Ray (without its dashboard). A local Ray's servers
    listen on the machine's address too: on a shared network, start it yourself the way you need it."""
    ray = _ray()
    if address:
        ray.init(address=address)
    else:
        # Ray runs workers at nice 15 by default; the actors are the job here, so they get normal priority
        # (on a busy 2-core box the default cost the embedding actor ~20 %). A value set by the user wins.
        os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(include_dashboard=False)
        _end_with_this_process()


# Watches the driver from a process of its own; once the driver is gone, however it died (kill -9
# included), it ends the Ray processes the driver started (they outlived it by a minute and more).
_WATCHDOG = """
import os, sys, time
import psutil
driver, session = int(sys.argv[1]), sys.argv[2]
wanted = {(int(p), float(t)) for p, t in (x.split(':') for x in sys.argv[3:])}
while psutil.pid_exists(driver) and psutil.Process(driver).status() != psutil.STATUS_ZOMBIE:
    time.sleep(0.5)
left = []
for process in psutil.process_iter(["pid", "create_time", "cmdline"]):
    try:
        started_with_it = any(abs(process.info["create_time"] - t) < 0.01 for p, t in wanted if p == process.pid)
        of_its_session = bool(session) and any(session in part for part in process.info["cmdline"] or ())
        if (started_with_it or of_its_session) and process.pid != os.getpid():
            process.terminate()
            left.append(process)
    except psutil.Error:
        pass
gone, alive = psutil.wait_procs(left, timeout=5)
for process in alive:
    try:
        process.kill()
    except psutil.Error:
        pass
"""


def _end_with_this_process() -> None:
    """A local Ray's processes end with this one, also when it is killed: a watchdog process holds their
    pids (with their start times) and ends them once this process is gone. A normal exit ends them first."""
    import subprocess
    import sys

    try:
        import psutil
    except ImportError:  # ray depends on it; without it, Ray's own clean-up on a normal exit is all there is
        return
    children = psutil.Process().children(recursive=True)
    pids = [f"{p.pid}:{p.create_time()}" for p in children]
    try:  # the session folder is in every Ray process's command line: workers started later are found by it
        session = os.path.basename(_ray()._private.worker._global_node.get_session_dir_path())
    except Exception:  # noqa: BLE001 - a private attribute: without it the pids alone are used
        session = ""
    if pids:
        subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), session, *pids], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _map(ds: Any, config: EmbedConfig, batch_size: int, workers: int, cpus_per_worker: int) -> Any:
    return ds.map_batches(Embedder, fn_constructor_args=(dataclasses.replace(config, threads=cpus_per_worker),),
                          batch_size=batch_size, compute=_ray().data.ActorPoolStrategy(size=workers), num_cpus=cpus_per_worker,
                          batch_format="numpy")


def embed_images(paths_or_dataset: Sequence[str | os.PathLike[str]] | Any, bundle: str | os.PathLike[str], *,
                 batch_size: int = 16, workers: int = 1, cpus_per_worker: int = 1, variant: str | None = None,
                 dim: int | None = None, precision: str = "float32", exif_transpose: bool = True) -> Any:
    """Image paths (read on the workers: a shared filesystem or object store URIs) or a Dataset with
    `bytes` (+ `path`/`id`) columns -> a Dataset of id + embedding rows (see Embedder)."""
    ray = _ray()
    if isinstance(paths_or_dataset, ray.data.Dataset):
        ds = paths_or_dataset
    else:
        ds = ray.data.read_binary_files([str(p) for p in paths_or_dataset], include_paths=True)
    config = EmbedConfig(str(bundle), variant=variant, dim=dim, precision=precision, exif_transpose=exif_transpose)
    return _map(ds, config, batch_size, workers, cpus_per_worker)


def embed_texts(texts_or_dataset: Sequence[str] | Sequence[dict[str, str]] | Any, bundle: str | os.PathLike[str], *,
                batch_size: int = 64, workers: int = 1, cpus_per_worker: int = 1, variant: str | None = None,
                dim: int | None = None, precision: str = "float32", task: str | None = None,
                max_length: int | None = None) -> Any:
    """Texts (strings: ids are their positions; or {"id", "text"} dicts) or a Dataset with `text`
    (+ `id`) columns -> a Dataset of id + embedding rows (see Embedder)."""
    ray = _ray()
    if isinstance(texts_or_dataset, ray.data.Dataset):
        ds = texts_or_dataset
    else:
        rows = [t if isinstance(t, dict) else {"id": str(n), "text": t} for n, t in enumerate(texts_or_dataset)]
        ds = ray.data.from_items(rows)
    config = EmbedConfig(str(bundle), variant=variant, dim=dim, precision=precision, task=task, max_length=max_length)
    return _map(ds, config, batch_size, workers, cpus_per_worker)


# ---- `edgeclip embed --engine ray`: resumable parquet shards -------------------------------------------


class ShardWriter(Embedder):
    """Embeds one shard per call and writes it as DIR/part-NNNNNN.parquet, atomically."""

    def __init__(self, config: EmbedConfig, out: str, settings: dict[str, Any]) -> None:
        super().__init__(config)
        self.out = Path(out)
        self.settings = OutputSettings(**{k: v for k, v in settings.items() if k != "edgeclip_output"})
        self.pa = pyarrow_module()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # type: ignore[override]
        rows_written, failures = [], []
        for shard, encoded in zip(batch["shard"], batch["items"]):
            items = [Item(**fields) for fields in json.loads(str(encoded))]
            rows, failed = self.embed(items)
            table = parquet_table(self.pa, self.settings, rows)
            if table.num_rows:  # a shard of only bad inputs leaves no file: they are retried next run
                write_shard(self.out / shard_name(int(shard)), parquet_bytes(self.pa, table))
            rows_written.append(table.num_rows)
            failures.append(json.dumps([dataclasses.asdict(f) for f in failed]))
        return {"shard": np.asarray(batch["shard"]), "rows": np.array(rows_written), "failures": np.array(failures, dtype=object)}


def shard_name(number: int) -> str:
    return f"part-{number:06d}.parquet"


def read_shards(out: Path) -> dict[str, tuple[str, Path]]:
    """id -> (fingerprint, shard file) of every row already written under `out` (the newest, where an id
    is in several shards: shard numbers only grow, so the highest holds the latest embedding)."""
    return {item_id: rows[-1] for item_id, rows in _rows_by_id(out).items()}


def _rows_by_id(out: Path) -> dict[str, list[tuple[str, Path]]]:
    """id -> [(fingerprint, shard)] for every row under `out`, oldest shard first."""
    pa = pyarrow_module()
    rows: dict[str, list[tuple[str, Path]]] = {}
    for shard in sorted(out.glob(SHARD_GLOB), key=lambda p: int(p.stem.split("-")[1])):
        try:
            table = pa.parquet.read_table(shard, columns=["id", "fingerprint"])
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"{shard} is damaged ({exc}); delete it (its inputs are embedded again) or use --overwrite") from exc
        for item_id, fingerprint in zip(table.column("id").to_pylist(), table.column("fingerprint").to_pylist()):
            rows.setdefault(item_id, []).append((fingerprint, shard))
    return rows


def deduplicate(out: Path, settings: OutputSettings) -> tuple[int, int]:
    """Drop every row that a newer shard supersedes (an input embedded again after it changed): a run
    killed before its end-of-job clean-up leaves both. Run on every open, before anything else; each
    shard rewrite is atomic, so a kill during it is repaired by the next open. (ids stored twice, rows dropped)."""
    stale: dict[Path, set[str]] = {}
    twice = 0
    for item_id, rows in _rows_by_id(out).items():
        newest = rows[-1][1]
        older = {shard for _, shard in rows if shard != newest}
        twice += len(rows) > 1
        for shard in older:
            stale.setdefault(shard, set()).add(item_id)
        if sum(shard == newest for _, shard in rows) > 1:  # twice in the newest shard itself: keep its last row
            stale.setdefault(newest, set())
    dropped = 0
    for shard, ids in stale.items():
        dropped += _drop_rows(shard, ids, settings, keep_last_of_repeats=True)
    return twice, dropped


def _drop_rows(shard: Path, ids: set[str], settings: OutputSettings, keep_last_of_repeats: bool = False) -> int:
    """Rewrite a shard without the rows of `ids` (and, asked, without all but the last row of an id it holds
    twice); a shard left empty is deleted. Returns the rows dropped."""
    pa = pyarrow_module()
    table = pa.parquet.read_table(shard)
    column = table.column("id").to_pylist()
    last = {item_id: row for row, item_id in enumerate(column)}
    keep = [i not in ids and (not keep_last_of_repeats or last[i] == row) for row, i in enumerate(column)]
    if all(keep):
        return 0
    if not any(keep):
        shard.unlink()
        return len(keep)
    write_shard(shard, parquet_bytes(pa, table.filter(pa.array(keep)).replace_schema_metadata(
        {METADATA_KEY: json.dumps(settings.to_dict()).encode()})))
    return keep.count(False)


def check_output_dir(out: Path, settings: OutputSettings, overwrite: bool) -> None:
    """Create `out`, or check that it holds shards of the same settings; --overwrite empties it first."""
    from ._files import atomic_write_bytes

    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: with --engine ray the output is a folder of parquet shards; give a folder path")
    out.mkdir(parents=True, exist_ok=True)
    stored = settings_file(out)
    if (out / LEGACY_SETTINGS_FILE).exists() and not stored.exists():
        os.replace(out / LEGACY_SETTINGS_FILE, stored)  # a folder written before 0.1.1
    if overwrite:
        for old in [*out.glob(SHARD_GLOB), failures_file(out), stored]:
            old.unlink(missing_ok=True)
    if stored.exists():
        settings.check_same(json.loads(stored.read_text()), str(out))
        for old in (LEGACY_SETTINGS_FILE, *LEGACY_SIDE_FILES):
            (out / old).unlink(missing_ok=True)
    elif any(out.glob(SHARD_GLOB)):
        raise InputError(f"{out} holds parquet shards but no {stored.name} beside it: not an edgeclip output; use another --out")
    atomic_write_bytes(stored, (json.dumps(settings.to_dict(), indent=1) + "\n").encode())


def run_shards(items: Iterable[Item], out: Path, config: EmbedConfig, settings: OutputSettings, *, workers: int = 1,
               cpus_per_worker: int = 1, shard_rows: int = 256, address: str | None = None,
               overwrite: bool = False, writer: type[ShardWriter] | None = None) -> JobSummary:
    """Embed `items` on Ray into parquet shards under `out`; rerunning skips what the shards already hold.
    `writer`: a ShardWriter subclass to run on the actors instead."""
    import time

    from ._files import atomic_write_bytes
    from .jobs.lock import OutputLock

    ray = _ray()
    started = time.perf_counter()
    out = Path(out).resolve()
    if not out.name:
        raise InputError(f"--out {out}: give a folder of its own for the shards (its side files go beside it)")
    lock = OutputLock(out)  # emb/ -> emb.lock
    out.mkdir(parents=True, exist_ok=True)
    lock.acquire()
    try:
        check_output_dir(out, settings, overwrite)
        deduplicate(out, settings)  # before anything else: what a killed run left twice
        done = read_shards(out)
        summary = JobSummary()
        todo: list[Item] = []
        seen: set[str] = set()
        for item in items:
            if item.error is not None:
                summary.failures.append(Failure(item.id, item.kind, item.error))
            elif item.id in seen:
                summary.failures.append(Failure(item.id, item.kind, "duplicate id in this job's inputs: the first one is kept"))
            elif item.id in done and done[item.id][0] == item.fingerprint:
                seen.add(item.id)
                summary.skipped += 1
            else:
                seen.add(item.id)
                summary.changed += item.id in done
                todo.append(item)
        first = 1 + max((int(p.stem.split("-")[1]) for p in out.glob(SHARD_GLOB)), default=-1)
        shards = [{"shard": first + n, "items": json.dumps([dataclasses.asdict(i) for i in todo[s : s + shard_rows]])}
                  for n, s in enumerate(range(0, len(todo), shard_rows))]
        if shards:
            if not ray.is_initialized():
                start_ray(address)
            ds = ray.data.from_items(shards).map_batches(
                writer or ShardWriter, fn_constructor_args=(dataclasses.replace(config, threads=cpus_per_worker), str(out), settings.to_dict()),
                batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpus_per_worker, batch_format="numpy")
            for row in ds.iter_rows():
                for failure in json.loads(row["failures"]):
                    summary.failures.append(Failure(**failure))
        deduplicate(out, settings)  # the changed inputs' old rows
        kinds = [i.kind for i in todo]
        failed = {f.id for f in summary.failures}
        summary.texts = sum(1 for i in todo if i.kind == "text" and i.id not in failed)
        summary.images = len(kinds) - kinds.count("text") - sum(1 for i in todo if i.kind == "image" and i.id in failed)
        atomic_write_bytes(failures_file(out), "".join(json.dumps(dataclasses.asdict(f), ensure_ascii=False) + "\n"
                                                         for f in summary.failures).encode())
    finally:
        lock.release()
    summary.seconds = time.perf_counter() - started
    return summary
