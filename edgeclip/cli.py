"""`edgeclip info | verify | embed BUNDLE ...`: argument parsing over the public API.

Exit codes: 0 ok; 1 some inputs failed (the others were written); 2 bad arguments or bundle.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._files import atomic_write_bytes
from .bundle import Bundle, TextSpec, Variant, VisionSpec
from .errors import EdgeClipError, InputError
from .model import EdgeClip, load
from .postprocess import PRECISIONS

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
CHUNK = 64  # inputs per encode call, so progress can be reported
_ITEM_ERROR = re.compile(r"^(text|image) \d+")  # InputErrors about one input start by naming it


@dataclass(frozen=True)
class Item:
    kind: str  # "text" or "image"
    source: str  # where it came from: "--text[3]", "notes.txt:12", or the image path
    value: str  # the text, or the image path


def _variant_lines(variants: dict[str, Variant], bundle: Bundle) -> Iterator[str]:
    for name, variant in sorted(variants.items()):
        size = sum(f.size for f in variant.files)
        line = f"    {name}: {variant.precision}, {size / 1e6:.1f} MB, output {variant.output_dim}-d"
        line += ", normalized in graph" if variant.normalized else ""
        cases = variant.validation.get("reference", {})
        if cases:
            worst_cos = min(c["min_cosine"] for c in cases.values())
            worst_diff = max(c["max_abs_diff"] for c in cases.values())
            line += f"; vs reference over {len(cases)} checks: min cosine {worst_cos:.7f}, max |diff| {worst_diff:.1e}"
        yield line
        gate = variant.validation.get("gate")
        if gate:
            agreement = ", ".join(f"{d.replace('_to_', '->')} {v['top1']:.2f}/{v['top5']:.2f}" for d, v in gate["retrieval"].items())
            yield (f"      gate vs fp32 ({'passed' if gate['passed'] else 'FAILED'}): cosine mean {gate['cosine_mean']:.5f}, "
                   f"worst 1 % {gate['cosine_p1']:.5f} over {gate['items']} items; top-1/top-5 agreement {agreement}")


def _embedding_line(embed_dim: int, dims: tuple[int, ...], towers: list[TextSpec | VisionSpec]) -> str:
    width = min(v.output_dim for spec in towers for v in spec.variants.values())
    usable = [d for d in dims if d <= width]
    if width < embed_dim:
        return f"embedding   {width}-d head (built with --dims {width}; model width {embed_dim}); truncate_dim one of {usable}"
    return f"embedding   {embed_dim}-d; truncate_dim one of {usable}"


def info_text(bundle: Bundle) -> str:
    m = bundle.manifest
    lines = [
        f"bundle      {bundle.directory}",
        f"schema      v{m.schema_version}, written by {m.created_by}",
        f"source      {m.source.model_id}" + (f" @ {m.source.revision}" if m.source.revision else ""),
    ]
    if m.source.random_weights:
        lines.append("            RANDOM WEIGHTS: embeddings carry no meaning (tests and benchmarks only)")
    lines += [
        f"licence     {m.license.spdx}: {m.license.note}",
        _embedding_line(m.embed_dim, m.matryoshka_dims, [spec for spec in (m.text, m.vision) if spec is not None]),
    ]
    if isinstance(m.text, TextSpec):
        lines.append(f"text        max {m.text.default_max_length} tokens by default (up to {m.text.max_length}), {m.text.pooling} pooling")
        lines += [f"    task {task!r}: prefix {prefix!r}" for task, prefix in m.text.task_prefixes.items()]
        lines += _variant_lines(m.text.variants, bundle)
    else:
        lines.append("text        (not in this bundle)")
    if isinstance(m.vision, VisionSpec):
        v = m.vision
        lines.append(f"vision      {v.image_size}x{v.image_size}, {v.resize_mode}-side {v.interpolation} resize + {v.crop} crop, {v.pooling} pooling")
        lines += _variant_lines(v.variants, bundle)
    else:
        lines.append("vision      (not in this bundle)")
    return "\n".join(lines)


def collect_items(args: argparse.Namespace) -> list[Item]:
    items = [Item("text", f"--text[{i}]", t) for i, t in enumerate(args.text)]
    for text_file in args.text_file:
        try:
            lines = Path(text_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read text file {text_file}: {exc}") from exc
        items += [Item("text", f"{text_file}:{n}", line) for n, line in enumerate(lines, 1) if line.strip()]
    items += [Item("image", p, p) for p in args.image]
    for directory in args.image_dir:
        root = Path(directory)
        if not root.is_dir():
            raise InputError(f"--image-dir {directory} is not a directory")
        found = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        items += [Item("image", str(p), str(p)) for p in found]
    if not items:
        raise InputError("nothing to embed: give --text, --text-file, --image or --image-dir")
    return items


class Progress:
    """A one-line progress bar on stderr, drawn only for long jobs on a terminal."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.enabled = total, 0, enabled

    def advance(self, count: int) -> None:
        self.done += count
        if self.enabled:
            filled = int(30 * self.done / self.total)
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total}")
            sys.stderr.flush()
            if self.done >= self.total:
                sys.stderr.write("\n")


@dataclass(frozen=True)
class Failure:
    item: Item
    reason: str


def _encode(model: EdgeClip, kind: str, values: list[str], args: argparse.Namespace) -> np.ndarray:
    if kind == "text":
        return model.encode_text(values, task=args.task, truncate_dim=args.dim, precision=args.precision)
    return model.encode_image(values, truncate_dim=args.dim, precision=args.precision)


def embed_items(model: EdgeClip, items: list[Item], args: argparse.Namespace,
                progress: Progress) -> tuple[list[Item], np.ndarray | None, list[Failure]]:
    """Embed what can be embedded; a chunk with a bad input is retried item by item, so one bad
    input costs only itself. Returns (embedded items, their rows in the same order, failures)."""
    done: list[Item] = []
    rows: list[np.ndarray] = []
    failures: list[Failure] = []
    for start in range(0, len(items), CHUNK):
        chunk = items[start : start + CHUNK]
        for kind in ("text", "image"):
            group = [item for item in chunk if item.kind == kind]
            if not group:
                continue
            try:
                rows.append(_encode(model, kind, [i.value for i in group], args))
                done += group
            except InputError as exc:
                if not _ITEM_ERROR.match(str(exc)):
                    raise  # about the call (--dim, --task, ...), not one input: exit 2
                for item in group:
                    try:
                        rows.append(_encode(model, kind, [item.value], args))
                        done.append(item)
                    except InputError as exc:
                        failures.append(Failure(item, str(exc).removeprefix("image 0: ").removeprefix("text 0 ")))
        progress.advance(len(chunk))
    return done, (np.concatenate(rows) if rows else None), failures


def _jsonl(items: list[Item], embeddings: np.ndarray) -> str:
    out = io.StringIO()
    for index, (item, row) in enumerate(zip(items, embeddings)):
        record: dict[str, Any] = {"index": index, "kind": item.kind, "source": item.source}
        if item.kind == "text":
            record["text"] = item.value
        record["embedding"] = row.tolist()
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return out.getvalue()


def _embed(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix not in (".npy", ".jsonl"):
        raise InputError(f"--out must end in .npy or .jsonl, got {out.name!r}")
    items = collect_items(args)
    # Texts first, then images: the order of rows in the output.
    items = [i for i in items if i.kind == "text"] + [i for i in items if i.kind == "image"]
    model = load(args.bundle, variant=args.variant, threads=args.threads)
    started = time.perf_counter()
    progress = Progress(len(items), enabled=not args.quiet and sys.stderr.isatty() and len(items) > CHUNK)
    done, embeddings, failures = embed_items(model, items, args, progress)
    if embeddings is not None:
        if out.suffix == ".npy":
            buffer = io.BytesIO()
            np.save(buffer, embeddings)
            atomic_write_bytes(out, buffer.getvalue())
        else:
            atomic_write_bytes(out, _jsonl(done, embeddings).encode("utf-8"))
    seconds = time.perf_counter() - started
    texts = sum(1 for i in done if i.kind == "text")
    if embeddings is not None:
        print(f"embedded {texts} texts and {len(done) - texts} images in {seconds:.2f} s -> {out} "
              f"(shape {tuple(embeddings.shape)}, {embeddings.dtype})", file=sys.stderr)
    if failures:
        print(f"{len(failures)} of {len(items)} inputs failed and are not in the output"
              f"{' (rows of .npy follow the input order without them)' if out.suffix == '.npy' else ''}:", file=sys.stderr)
        for failure in failures:
            print(f"  {failure.item.kind} {failure.item.source}: {failure.reason}", file=sys.stderr)
        return 1
    return 0


def _verify(args: argparse.Namespace) -> int:
    bundle = Bundle.open(args.bundle)
    entries = bundle.all_files()
    bundle.check_files(entries, verify_hash=True)  # raises BundleError listing every bad file
    print(f"{len(entries)} files match their sha256 in {bundle.directory / 'manifest.json'}")
    return 0


def _info(args: argparse.Namespace) -> int:
    print(info_text(Bundle.open(args.bundle)))
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="edgeclip", description="jina-clip-v2 embeddings on CPUs (ONNX Runtime)")
    sub = root.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="what a bundle contains")
    info.add_argument("bundle", type=Path)
    info.set_defaults(run=_info)

    verify = sub.add_parser("verify", help="check every file of a bundle against the manifest's sha256")
    verify.add_argument("bundle", type=Path)
    verify.set_defaults(run=_verify)

    embed = sub.add_parser("embed", help="embed texts and images into .npy or .jsonl")
    embed.add_argument("bundle", type=Path)
    embed.add_argument("--text", action="append", default=[], help="a text to embed (repeatable)")
    embed.add_argument("--text-file", action="append", default=[], help="UTF-8 file, one text per non-empty line")
    embed.add_argument("--image", nargs="+", action="extend", default=[], help="image file(s)")
    embed.add_argument("--image-dir", action="append", default=[], help="directory searched recursively for images")
    embed.add_argument("--task", help="e.g. retrieval.query: prepend the model's query instruction to texts")
    embed.add_argument("--dim", type=int, help="Matryoshka dim to truncate to (see `edgeclip info`)")
    embed.add_argument("--precision", choices=PRECISIONS, default="float32")
    embed.add_argument("--variant", help="bundle variant, e.g. fp32 (default: the bundle's default)")
    embed.add_argument("--threads", type=int, help="onnxruntime threads")
    embed.add_argument("--out", required=True, help="output file: .npy (texts first, then images) or .jsonl")
    embed.add_argument("--quiet", action="store_true", help="no progress bar")
    embed.set_defaults(run=_embed)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except EdgeClipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
