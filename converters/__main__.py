"""python -m converters make-checkpoint | build | validate | parity  (thin layer over the library functions)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from edgeclip.errors import EdgeClipError

from . import require_convert_deps
from .errors import ConverterError


def _make_checkpoint(args: argparse.Namespace) -> int:
    from .make_checkpoint import make_checkpoint

    out = make_checkpoint(args.out, size=args.size, seed=args.seed, dtype=args.dtype, overwrite=args.overwrite)
    print(f"wrote {args.size} random checkpoint to {out}")
    return 0


# What `build` makes unless told otherwise: the fp32 reference and the int8 graphs, so the bundle runs its
# fastest on any CPU it is copied to (the runtime picks int8-vnni where the CPU has int8 dot products, int8-vnni-attn
# for images on AVX-512 VNNI, and int8 on AVX2 without them; fp32 is ~4x the RSS and several times slower there).
DEFAULT_VARIANTS = ("fp32", "int8", "int8-vnni", "int8-vnni-attn")


def _build(args: argparse.Namespace) -> int:
    from .build import BuildOptions, build_bundle
    from .checkpoint import TOWERS

    towers = tuple(t.strip() for t in args.towers.split(",") if t.strip())
    unknown = [t for t in towers if t not in TOWERS]
    if unknown or not towers:
        raise ConverterError(f"--towers {args.towers!r}: choose from {', '.join(TOWERS)} (comma-separated)")
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    options = BuildOptions(towers=towers, revision=args.revision, overwrite=args.overwrite, threads=args.threads,  # type: ignore[arg-type]
                           variants=variants, head_dim=args.dims, image_size=args.image_size,
                           vocab_from=tuple(args.vocab_from))
    bundle = build_bundle(args.source, args.out, options)
    for tower in towers:
        for name, variant in bundle.tower(tower).variants.items():  # type: ignore[arg-type]
            cases = variant.validation["reference"].values()
            size = sum(f.size for f in variant.files)
            figure = f"worst cosine to reference {min(c['min_cosine'] for c in cases):.7f}" if cases else "not validated here"
            print(f"{tower}/{name}: {', '.join(f.path for f in variant.files)} ({size / 1e6:.1f} MB), {figure}")
    print(f"bundle written to {bundle.directory}")
    return 0


def _parity(args: argparse.Namespace) -> int:
    from .checkpoint import resolve_source
    from .parity import upstream_parity

    rows = upstream_parity(resolve_source(args.source, args.revision), [Path(p) for p in args.images] or None)
    print(f"{'tower':7} {'cosine':>10} {'max|diff|':>10}  item")
    for row in rows:
        print(f"{row.tower:7} {row.cosine:10.7f} {row.max_abs_diff:10.2e}  {row.item[:60]}")
    worst = min(row.cosine for row in rows)
    print(f"worst cosine {worst:.7f} ({'ok' if worst >= args.min_cosine else 'FAILED'}: threshold {args.min_cosine})")
    return 0 if worst >= args.min_cosine else 1


def _publish(args: argparse.Namespace) -> int:
    from .publish import publish

    url = publish(args.bundle, args.repo, private=args.private, message=args.message)
    print(f"published {args.bundle} to {args.repo}: {url}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from .gate import THRESHOLD_NAMES, GateFailed, run_gate

    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip()) if args.variants else None
    overrides = {name: getattr(args, f"min_{name}") for name in THRESHOLD_NAMES}
    try:
        results = run_gate(args.bundle, args.device, variants, overrides, args.threads, args.reference, args.checkpoint)
        failed = None
    except GateFailed as exc:
        results, failed = exc.results, exc
    for key, figures in results.items():
        print(gate_summary(key, figures))
    if failed is not None:
        print(f"error: {failed}", file=sys.stderr)
        return 1
    print(f"gate passed; figures written to {args.bundle}/manifest.json")
    return 0


def gate_summary(key: str, figures: dict) -> str:  # type: ignore[type-arg]
    retrieval = ", ".join(f"{d.replace('_to_', '->')} {v['top1']:.2f}/{v['top5']:.2f}" for d, v in figures["retrieval"].items())
    verdict = "ok" if figures["passed"] else "FAILED"
    return (f"{key:14} cosine mean {figures['cosine_mean']:.5f}, worst 1 % {figures['cosine_p1']:.5f}; "
            f"top-1/top-5 agreement {retrieval}  [{verdict}; reference on {figures['reference_device']}]")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m converters", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true", help="show every log line (the quantizers' included)")
    sub = root.add_subparsers(dest="command", required=True)

    make = sub.add_parser("make-checkpoint", parents=[common], help="write a random checkpoint in the official jina-clip-v2 layout")
    make.add_argument("out", type=Path, help="directory to create")
    make.add_argument("--size", choices=("tiny", "full"), default="tiny", help="tiny: unit tests; full: real config")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--dtype", choices=("f16", "bf16", "f32"), default="f16", help="storage dtype (official: f16)")
    make.add_argument("--overwrite", action="store_true", help="replace an existing directory")
    make.set_defaults(run=_make_checkpoint)

    build = sub.add_parser("build", parents=[common], help="export, validate and package a bundle")
    build.add_argument("source", help="checkpoint directory, or a hub id such as jinaai/jina-clip-v2")
    build.add_argument("--out", type=Path, required=True, help="bundle directory to create")
    build.add_argument("--towers", default="text,vision", help="comma-separated: text, vision")
    build.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                       help="comma-separated: fp32 (always built), int8 (AVX2 CPUs), int8-vnni (CPUs with VNNI/AMX/ARM "
                            "dotprod), int4, fp16, fp32-portable (standard ONNX ops, for OpenVINO). Default: "
                            f"{','.join(DEFAULT_VARIANTS)}, the graphs the runtime picks on any CPU")
    build.add_argument("--dims", type=int, help="small-device head: graphs output the L2-normalized first DIMS "
                       "dims (64 or 128 for jina-clip-v2) instead of the full embedding")
    build.add_argument("--revision", help="hub revision (branch, tag or commit) when SOURCE is a hub id")
    build.add_argument("--image-size", type=int, choices=(224, 336, 384, 448, 512),
                       help="export the image tower for this input size (faster; position embeddings resampled): "
                            "check its quality with `validate --reference torch` on the real weights before use")
    build.add_argument("--vocab-from", nargs="+", metavar="CORPUS", default=[],
                       help="text files (one text per line): keep only the token-table rows they need, plus special "
                            "tokens and single characters (smaller text graphs; other tokens embed as <unk>)")
    build.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    build.add_argument("--threads", type=int, help="onnxruntime threads for validation")
    build.set_defaults(run=_build)

    validate = sub.add_parser("validate", parents=[common], help="gate every variant of a bundle against its fp32 graph")
    validate.add_argument("bundle", type=Path, help="bundle directory (built with --variants)")
    validate.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                          help="where the fp32 reference runs: cuda needs onnxruntime-gpu; auto uses it when present")
    validate.add_argument("--variants", help="comma-separated variants to gate (default: every non-fp32 one; "
                                             "with --reference torch, fp32 too)")
    validate.add_argument("--reference", choices=("onnx", "torch"), default="onnx",
                          help="full-precision side: the bundle's fp32 graph (onnx), or the PyTorch reference (torch; on "
                               "CUDA when torch has it, for machines whose onnxruntime has no CUDA provider)")
    validate.add_argument("--checkpoint", help="with --reference torch: the checkpoint the bundle was built from "
                                               "(default: the manifest's source, downloaded from the hub)")
    validate.add_argument("--threads", type=int, help="onnxruntime threads")
    for name, meaning in (("cosine_mean", "mean per-item cosine to fp32"), ("cosine_p1", "worst-1 %% cosine to fp32"),
                          ("top1", "top-1 retrieval agreement"), ("top5", "top-5 retrieval agreement")):
        validate.add_argument(f"--min-{name.replace('_', '-')}", dest=f"min_{name}", type=float,
                              help=f"threshold for {meaning} (default: per precision, see converters/gate.py)")
    validate.set_defaults(run=_validate)

    publish = sub.add_parser("publish", parents=[common], help="upload a bundle to the Hugging Face Hub with a model card")
    publish.add_argument("bundle", type=Path)
    publish.add_argument("--repo", required=True, help="owner/name on the hub (created if missing)")
    publish.add_argument("--private", action="store_true", help="create the repository private")
    publish.add_argument("--message", help="commit message")
    publish.set_defaults(run=_publish)

    parity = sub.add_parser("parity", parents=[common], help="compare our reference with the official remote-code model (online)")
    parity.add_argument("source", nargs="?", default="jinaai/jina-clip-v2", help="checkpoint directory or hub id")
    parity.add_argument("--revision", help="hub revision")
    parity.add_argument("--images", nargs="*", default=[], help="image files to compare (default: synthetic images)")
    parity.add_argument("--min-cosine", type=float, default=0.9999, help="exit 1 below this cosine")
    parity.set_defaults(run=_parity)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    if args.verbose:
        logging.getLogger("converters").setLevel(logging.DEBUG)
    try:
        require_convert_deps()
        return int(args.run(args))
    except (ConverterError, EdgeClipError) as exc:  # EdgeClipError: a bundle the runtime refuses (publish, validate)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the staging directory is already removed: nothing half-written
        print("interrupted: nothing was written", file=sys.stderr)
        return 130
    except OSError as exc:  # disk full, permissions: the staging directory is already removed, nothing half-written
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}; nothing was written. Free space or fix the permissions and run it again.",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
