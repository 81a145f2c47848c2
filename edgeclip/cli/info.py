"""`edgeclip info BUNDLE [--json]` and `edgeclip verify BUNDLE`."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

from ..bundle import MANIFEST_FILE, Bundle, TextSpec, Variant, VisionSpec, sha256_file


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
        elif variant.validation.get("deferred"):
            line += "; not validated on the build machine (see below)"
        yield line
        if variant.validation.get("deferred") and not variant.validation.get("gate"):
            yield f"      {variant.validation['deferred']}"
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
    if m.text is not None and m.text.vocab is not None:
        v = m.text.vocab
        c = v.coverage
        lines.append(f"vocabulary  pruned: {len(v.kept_ids)} of {v.full_size} token rows kept ({c.get('ids_from_corpus')} from "
                     f"{c.get('corpus_texts')} corpus texts in {', '.join(c.get('corpus_files', []))}, {c.get('ids_base')} specials "
                     "and single characters); other tokens embed as <unk> and encode_text warns with their count")
    if isinstance(m.vision, VisionSpec):
        v = m.vision
        lines.append(f"vision      {v.image_size}x{v.image_size}, {v.resize_mode}-side {v.interpolation} resize + {v.crop} crop, {v.pooling} pooling")
        if v.source_image_size:
            lines.append(f"            resolution variant: exported for {v.image_size} px from a {v.source_image_size} px model (position "
                         "embeddings resampled); its quality is unknown until checked on the real weights with "
                         "`python -m converters validate BUNDLE --reference torch`")
        lines += _variant_lines(v.variants, bundle)
    else:
        lines.append("vision      (not in this bundle)")
    return "\n".join(lines)


def info_json(bundle: Bundle) -> str:
    """The manifest as JSON, with the bundle's place and the manifest checksum that outputs record."""
    return json.dumps({"bundle": str(bundle.directory), "manifest_sha256": sha256_file(bundle.directory / MANIFEST_FILE),
                       "manifest": dataclasses.asdict(bundle.manifest)}, indent=2, ensure_ascii=False)


def run_info(args: argparse.Namespace) -> int:
    bundle = Bundle.open(args.bundle)
    print(info_json(bundle) if args.json else info_text(bundle))
    return 0


def run_verify(args: argparse.Namespace) -> int:
    bundle = Bundle.open(args.bundle)
    entries = bundle.all_files()
    bundle.check_files(entries, verify_hash=True)  # raises BundleError listing every bad file
    print(f"{len(entries)} files match their sha256 in {bundle.directory / MANIFEST_FILE}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    info = sub.add_parser("info", help="what a bundle contains")
    info.add_argument("bundle", type=Path)
    info.add_argument("--json", action="store_true", help="the manifest as JSON, with its sha256")
    info.set_defaults(run=run_info)
    verify = sub.add_parser("verify", help="check every file of a bundle against the manifest's sha256")
    verify.add_argument("bundle", type=Path)
    verify.set_defaults(run=run_verify)
