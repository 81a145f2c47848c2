"""`edgeclip embed BUNDLE [inputs] --out FILE`: a streaming, resumable job over the shared pipeline.

Everything that can be refused is refused before the first input: the output path, the lock,
an output written with other settings, the options, the towers the job needs.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..bundle import MANIFEST_FILE, sha256_file
from ..errors import InputError
from ..fetch import FetchPolicy
from ..integrity import verify_variants
from ..jobs import JobOptions, JobSummary, OutputSettings, ScanReport, open_sink, run_job, sources
from ..jobs.sinks import check_output_path, output_files
from ..model import EdgeClip, load
from ..postprocess import PRECISIONS, check_precision, check_truncate_dim
from ..preprocess import DEFAULT_MAX_PIXELS
from ..session import GPU_DEVICES
from .common import positive, progress_bar, run_interruptibly

MAX_LISTED_FAILURES = 50


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("embed", help="embed texts and images into .jsonl, .npy (+ ids) or .parquet; resumable",
                       description="Embed texts and images. Rerunning the same command on the same --out embeds only "
                       "what is missing; Ctrl-C stops cleanly and keeps every finished row.")
    p.add_argument("bundle", type=Path)
    inputs = p.add_argument_group("inputs")
    inputs.add_argument("--text", action="append", default=[], help="a text to embed (repeatable)")
    inputs.add_argument("--text-file", action="append", default=[], metavar="FILE",
                        help="UTF-8 file, one text per non-empty line (- reads stdin)")
    inputs.add_argument("--jsonl", action="append", default=[], metavar="FILE",
                        help='records {"id": ..., "text": ...} or {"id": ..., "image": path|URL|data-URI} (- reads stdin)')
    inputs.add_argument("--image", nargs="+", action="extend", default=[], help="image files, data: URIs or URLs (with --fetch-urls)")
    inputs.add_argument("--image-dir", action="append", default=[], metavar="DIR", help="folder searched recursively for images")
    inputs.add_argument("--fetch-urls", action="store_true", help="download http(s) image URLs (10 s timeout, 32 MB cap)")
    inputs.add_argument("--allow-host", action="append", default=[], metavar="HOST",
                        help="with --fetch-urls: fetch from HOST even though it resolves to a loopback or private address (repeatable)")
    model = p.add_argument_group("model")
    model.add_argument("--task", help="e.g. retrieval.query: prepend the model's query instruction to texts")
    model.add_argument("--dim", type=int, help="Matryoshka dim to truncate to (see `edgeclip info`)")
    model.add_argument("--precision", choices=PRECISIONS, default="float32")
    model.add_argument("--max-length", type=positive, help="tokens per text (default 512, up to 8192); longer texts are truncated and counted")
    model.add_argument("--batch-size", type=positive, help="inputs per model call (default: 32 texts of one token length, up to 2,048 tokens; images 1 on CPUs, 4 on GPUs)")
    model.add_argument("--no-exif", action="store_true", help="ignore EXIF orientation (as the upstream reference does)")
    model.add_argument("--max-image-pixels", type=positive, default=DEFAULT_MAX_PIXELS, help="refuse larger images (decompression-bomb guard)")
    model.add_argument("--variant", help="bundle variant, e.g. fp32 (default: int8 on CPU, fp16 on GPU)")
    model.add_argument("--threads", type=positive, help="onnxruntime threads (default: one per core)")
    where = model.add_mutually_exclusive_group()
    where.add_argument("--device", choices=("cpu", "cuda"), help="cuda needs onnxruntime-gpu")
    where.add_argument("--providers", help="comma-separated onnxruntime execution providers, in order of preference")
    out = p.add_argument_group("output")
    out.add_argument("--out", required=True, help="FILE.jsonl, FILE.npy (ids in FILE.ids.jsonl), FILE.parquet, or - (JSONL on stdout)")
    out.add_argument("--overwrite", action="store_true", help="start afresh instead of resuming an existing --out")
    out.add_argument("--check", action="store_true", help="no inputs: report and repair ids stored twice in --out "
                     "(a killed run can leave an old row beside its replacement), then exit")
    out.add_argument("--quiet", action="store_true", help="no progress bar")
    engine = p.add_argument_group("engine")
    engine.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="ray: embed on Ray Data (the ray extra) into parquet shards under --out DIR/ (resumable)")
    engine.add_argument("--ray-address", help="with --engine ray: a running cluster (e.g. auto, ray://host:10001); default: a local Ray")
    engine.add_argument("--workers", type=positive, default=1, help="with --engine ray: actors, one bundle copy each (default 1)")
    engine.add_argument("--cpus-per-worker", type=positive, default=1,
                        help="with --engine ray: CPUs per actor, also its onnxruntime threads (default 1)")
    engine.add_argument("--shard-rows", type=positive, default=256, help="with --engine ray: inputs per parquet shard (default 256)")
    p.set_defaults(run=run)


def _providers(args: argparse.Namespace) -> list[str] | None:
    if args.providers:
        return [p.strip() for p in args.providers.split(",") if p.strip()]
    return GPU_DEVICES[args.device] if args.device else None


def _check_out_is_not_an_input(args: argparse.Namespace, out: Path) -> None:
    """Refuse, before anything is read, an --out (or one of its side files) that is also an input."""
    written = {p.resolve() for p in output_files(out)}
    given = [*args.text_file, *args.jsonl, *args.image]
    clash = [name for name in given if name != sources.STDIN and Path(name).exists() and Path(name).resolve() in written]
    if clash:
        raise InputError(f"--out {args.out} is also an input ({clash[0]}); write the embeddings to another file")


def _resuming(args: argparse.Namespace) -> bool:
    if args.overwrite or args.out == "-":
        return False
    out = Path(args.out)
    if args.engine == "ray":
        return out.is_dir() and any(out.glob("part-*.parquet"))
    return any(p.exists() for p in output_files(out))


def _stdin_users(args: argparse.Namespace) -> int:
    return sum(name == sources.STDIN for name in [*args.text_file, *args.jsonl])


def _item_sources(args: argparse.Namespace, report: ScanReport) -> Callable[[], Iterator[sources.Item]]:
    """A function that starts a fresh pass over every input (counting runs one before the job)."""
    for directory in args.image_dir:
        if not Path(directory).is_dir():
            raise InputError(f"--image-dir {directory} is not a directory")
    for name in [*args.text_file, *args.jsonl]:
        if name != sources.STDIN and not Path(name).is_file():
            raise InputError(f"input file {name} does not exist (or is not a file)")

    def items() -> Iterator[sources.Item]:
        report.clear()  # each pass counts afresh
        yield from sources.texts(args.text)
        for name in args.text_file:
            yield from sources.text_file(name)
        for name in args.jsonl:
            yield from sources.jsonl_file(name)
        yield from sources.image_files(args.image)
        for directory in args.image_dir:
            yield from sources.image_dir(directory, report)

    return items


def _needed_towers(args: argparse.Namespace, model: EdgeClip, count: Callable[[], tuple[int, set[str]]] | None) -> set[str]:
    towers = set()
    if args.text or args.text_file:
        towers.add("text")
    if args.image or args.image_dir:
        towers.add("vision")
    if args.jsonl:
        if count is None:  # JSONL on stdin: unknown until read, so every tower the bundle has
            towers |= {t for t, spec in (("text", model.manifest.text), ("vision", model.manifest.vision)) if spec}
        else:
            towers |= {"vision" if kind == "image" else "text" for kind in count()[1]}
    return towers


def _settings(model: EdgeClip, args: argparse.Namespace, towers: set[str], options: JobOptions) -> OutputSettings:
    check_precision(args.precision)
    towers_in_bundle = [t for t, s in (("text", model.manifest.text), ("vision", model.manifest.vision)) if s]
    used = sorted(towers) or towers_in_bundle  # none when every input is unreadable: the rows' width still needs a dim
    dims = {check_truncate_dim(args.dim, model.matryoshka_dims, model.output_dim(t)) for t in used}  # type: ignore[arg-type]
    if "text" in towers:
        model.tokenize([""], task=args.task, max_length=args.max_length)  # checks task and max_length now
    spec = model.manifest.text
    max_length = args.max_length or (spec.default_max_length if spec else 0)
    return OutputSettings(
        bundle_sha256=sha256_file(model.bundle.directory / MANIFEST_FILE), model=model.manifest.source.model_id,
        variants={t: model.variant_name(t) for t in towers_in_bundle}, dim=min(dims), precision=args.precision,  # type: ignore[arg-type]
        task=args.task, max_length=max_length, exif_transpose=options.exif_transpose)


def run(args: argparse.Namespace) -> int:
    if args.check:
        return _check(args)
    if not (args.text or args.text_file or args.jsonl or args.image or args.image_dir):
        raise InputError("nothing to embed: give --text, --text-file, --jsonl, --image or --image-dir")
    if _stdin_users(args) > 1:
        raise InputError("only one of --text-file - and --jsonl - can read stdin")
    if args.engine == "ray":
        if args.out == "-" or Path(args.out).suffix in (".jsonl", ".npy"):
            raise InputError("--engine ray writes a folder of parquet shards: give --out DIR/")
        if args.device or args.providers:
            raise InputError("--engine ray runs onnxruntime's CPU provider on every actor; drop --device/--providers")
    else:
        out = check_output_path(args.out)  # before the model loads: a bad --out costs nothing
        if out is not None:
            _check_out_is_not_an_input(args, out)
    report = ScanReport()
    passes = _item_sources(args, report)
    model = load(args.bundle, variant=args.variant, threads=args.threads, providers=_providers(args),
                 max_image_pixels=args.max_image_pixels)
    fetch = FetchPolicy(allow_hosts=tuple(h.lower() for h in args.allow_host)) if args.fetch_urls else None
    options = JobOptions(task=args.task, truncate_dim=args.dim, precision=args.precision, max_length=args.max_length,
                         text_batch=args.batch_size or 32, image_batch=args.batch_size,
                         exif_transpose=not args.no_exif, fetch=fetch)
    counted: dict[str, Any] = {}

    def count() -> tuple[int, set[str]]:
        if not counted:
            kinds: set[str] = set()
            total = 0
            for item in passes():
                total += 1
                if item.error is None:
                    kinds.add(item.kind)
            counted.update(total=total, kinds=kinds)
        return counted["total"], counted["kinds"]

    can_count = _stdin_users(args) == 0
    towers = _needed_towers(args, model, count if can_count else None)
    if can_count and count()[0] == 0:
        found = "; ".join(report.lines())
        raise InputError(f"nothing to embed: the inputs hold no texts or images{' (' + found + ')' if found else ''}")
    settings = _settings(model, args, towers, options)
    if _resuming(args):  # rows from damaged or changed weights must never join the intact ones'
        verify_variants(model.bundle, settings.variants)
    if args.engine == "ray":  # the actors open the graphs (and check them); the driver needs only the manifest
        return _run_on_ray(args, passes(), settings, report, counted.get("total"))
    model.open_towers(sorted(towers))  # type: ignore[arg-type]  # a missing tower or damaged graph fails now
    sink = open_sink(args.out, settings, overwrite=args.overwrite)
    bar = progress_bar(count()[0] if can_count else None, args.quiet)
    try:
        summary = run_interruptibly(lambda stop: run_job(model, passes(), sink, options, stop=stop, progress=bar.update))
    finally:
        bar.close()
        sink.close()
    return _report(summary, sink.unique_rows, args, report, counted.get("total"))


def _check(args: argparse.Namespace) -> int:
    """--check: repair an existing output's duplicates with the settings it was written with."""
    import json

    if args.text or args.text_file or args.jsonl or args.image or args.image_dir or args.overwrite:
        raise InputError("--check takes no inputs and no --overwrite: it only repairs --out")
    out = Path(args.out)
    if args.engine == "ray":
        from ..distributed import deduplicate, settings_file
        from ..jobs.lock import OutputLock

        meta = settings_file(out.resolve())
    else:
        meta = out.with_name(out.name + ".meta.json")
    if not meta.is_file():
        raise InputError(f"--out {args.out}: no edgeclip output there (no {meta.name}); --check repairs an existing output")
    try:
        stored = {k: v for k, v in json.loads(meta.read_text(encoding="utf-8")).items() if k != "edgeclip_output"}
        settings = OutputSettings(**stored)
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"--out {args.out} is not an edgeclip output ({meta.name} unreadable: {exc})") from exc
    if args.engine == "ray":
        lock = OutputLock(out.resolve())
        lock.acquire()
        try:
            _, dropped = deduplicate(out.resolve(), settings)
        finally:
            lock.release()
    else:
        sink = open_sink(args.out, settings)
        dropped = sink.rows - sink.unique_rows
        sink.close()  # compacts: keeps each id's newest row
    print(f"{args.out}: " + (f"{dropped} superseded rows dropped: every id is stored once now" if dropped else
                             "every id is stored once"), file=sys.stderr)
    return 0


def _run_on_ray(args: argparse.Namespace, items: Iterator[Any], settings: OutputSettings, scan: ScanReport,
                total: int | None) -> int:
    from ..distributed import EmbedConfig, read_shards, run_shards

    if args.fetch_urls:
        raise InputError("--engine ray does not fetch URLs (workers would each need the allow-list); fetch them first")
    config = EmbedConfig(str(args.bundle.resolve()), threads=args.cpus_per_worker, variant=args.variant, dim=args.dim,
                         precision=args.precision, task=args.task, max_length=args.max_length,
                         exif_transpose=not args.no_exif, text_batch=args.batch_size or 32, image_batch=args.batch_size)
    out = Path(args.out)
    # In the main thread (Ray installs its own signal handlers): Ctrl-C ends the job with exit 130, and
    # every shard already written stays for the rerun.
    summary = run_shards(items, out, config, settings, workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                         shard_rows=args.shard_rows, address=args.ray_address, overwrite=args.overwrite)
    return _report(summary, len(read_shards(out)), args, scan, total)


def _report(summary: JobSummary, unique_rows: int, args: argparse.Namespace, scan: ScanReport, total: int | None) -> int:
    say = lambda line: print(line, file=sys.stderr)  # noqa: E731
    where = "stdout" if args.out == "-" else args.out
    rate = summary.embedded / summary.seconds if summary.seconds else 0.0
    say(f"embedded {summary.texts} texts and {summary.images} images in {summary.seconds:.1f} s ({rate:.1f}/s) -> {where}"
        + (f" ({unique_rows} rows in all)" if args.out != "-" else ""))
    if summary.skipped:
        say(f"skipped {summary.skipped} already in {where} (unchanged since they were embedded)")
    if summary.changed:
        say(f"re-embedded {summary.changed} inputs that changed since the last run (their old rows were dropped)")
    if summary.truncated:
        limit = args.max_length or 512
        say(f"{summary.truncated} texts were longer than {limit} tokens and were truncated (--max-length raises the limit, up to 8192)")
    for line in scan.lines():
        say(line)
    if summary.interrupted:
        say(f"interrupted: every finished row is in {where}; run the same command again to embed the rest")
        return 130
    if summary.failures:
        seen = total if total is not None else summary.embedded + summary.skipped + len(summary.failures)
        say(f"{len(summary.failures)} of {seen} inputs failed and are not in the output (a rerun retries them):")
        for failure in itertools.islice(summary.failures, MAX_LISTED_FAILURES):
            say(f"  {failure.kind} {failure.id}: {failure.reason}")
        if len(summary.failures) > MAX_LISTED_FAILURES:
            say(f"  ... and {len(summary.failures) - MAX_LISTED_FAILURES} more")
        return 1
    return 0
