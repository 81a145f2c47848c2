"""`build`: checkpoint -> validated bundle (per tower: the fp32 graph and its variants), written atomically."""

from __future__ import annotations

import dataclasses
import gc
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer
from torch import nn

from edgeclip.bundle import MANIFEST_FILE, Bundle, Manifest, SourceInfo, Variant, VocabInfo
from edgeclip.machine import FULL_RANGE_INT8, FULL_RANGE_VARIANTS, saturates_full_range_int8
from edgeclip.session import TowerSession

from .atomic import staged_directory
from .checkpoint import TOWERS, CheckpointSource, Tower, load_reference, resolve_source
from .config import ClipConfig, PreprocessConfig, load_clip_config, load_preprocess_config
from .errors import ConverterError
from .export import export_tower
from .heads import MatryoshkaHead, check_head_dim
from .package import TOKENIZER_FILE, assemble_manifest, make_variant, source_info, write_manifest
from .progress import stage
from .quantize import RECIPES, attention_variant_of, quantize_graph
from .resolution import at_image_size, resize_vision_tower
from .specs import export_spec
from .validate import check_figures, raise_on_failures, tolerance, validate_text, validate_vision
from .vocab import corpus_texts, kept_vocabulary, prune_graph

# The fp32 graph in standard ONNX ops only: what OpenVINO and other ONNX runtimes compute correctly.
PORTABLE = "fp32-portable"
# On x86 without VNNI/AMX, ONNX Runtime's int8 kernels saturate full-range weights: running int8-vnni here
# would measure the kernel, not the graph, and the runtime never picks it on such a CPU.
NOT_VALIDATED_HERE = ("%s: built but not validated on this CPU (x86 without VNNI or AMX: ONNX Runtime's int16 sums "
                      "saturate with its full-range weights; the runtime uses int8 here); gate it on a CPU with int8 "
                      "dot products: python -m converters validate BUNDLE --variants %s")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildOptions:
    towers: tuple[Tower, ...] = TOWERS  # towers to export
    revision: str | None = None  # hub revision when the source is a hub id
    overwrite: bool = False  # replace an existing bundle at the output path
    threads: int | None = None  # ORT intra-op threads used for validation (None: ORT's default)
    variants: tuple[str, ...] = ("fp32",)  # fp32 (always built: it is the reference graph) plus RECIPES names
    head_dim: int | None = None  # small-device head: every graph outputs the normalized prefix of this width
    image_size: int | None = None  # resolution variant: the image tower exported for this square input (converters/resolution.py)
    vocab_from: tuple[str, ...] = ()  # corpus files: keep only the token-table rows they need (converters/vocab.py)


def reference_model(source: CheckpointSource, source_cfg: ClipConfig, cfg: ClipConfig, tower: Tower,
                    head_dim: int | None) -> nn.Module:
    """The PyTorch reference of `tower` as it is exported (resized, with a small-device head)."""
    model: nn.Module = load_reference(source, tower, source_cfg)
    if tower == "vision" and cfg.vision.image_size != source_cfg.vision.image_size:
        log.info("vision: position embeddings resampled and RoPE tables recomputed for %d px", cfg.vision.image_size)
        model = resize_vision_tower(model, cfg)
    if head_dim is not None:
        model = MatryoshkaHead(model, head_dim).eval()
    return model


class _StagedBundle:
    """What has been written so far into the staging directory, and its manifest."""

    def __init__(self, stage: Path, source: CheckpointSource, cfg: ClipConfig, pre: PreprocessConfig,
                 image_size: int | None = None) -> None:
        self.stage, self.source, self.source_cfg = stage, source, cfg
        self.cfg = at_image_size(cfg, image_size) if image_size else cfg  # the exported graphs' config
        self.pre = dataclasses.replace(pre, image_size=self.cfg.vision.image_size)
        log.info("hashing the source files of %s", source.model_id)
        self.source_meta: SourceInfo = source_info(source)
        self.variants: dict[Tower, dict[str, Variant]] = {}
        self.vocab: VocabInfo | None = None

    def manifest(self) -> Manifest:
        return assemble_manifest(self.stage, self.source_meta, self.cfg, self.pre, self.variants.get("text"),
                                 self.variants.get("vision"), source_image_size=self.source_cfg.vision.image_size,
                                 vocab=self.vocab)

    def add_tower(self, tower: Tower, variants: tuple[str, ...], tokenizer: Tokenizer, options: BuildOptions) -> list[str]:
        """Export fp32, derive the other variants, validate each through the runtime; returns gate failures.

        Memory: the reference is freed once the fp32 graphs are exported, the quantized variants are
        written weight by weight from the fp32 graph on disk, and the reference is loaded again to validate."""
        spec = export_spec(self.cfg, tower, options.head_dim)
        with stage(f"{tower}: loading the reference"):
            model: nn.Module | None = reference_model(self.source, self.source_cfg, self.cfg, tower, options.head_dim)
        with stage(f"{tower}: exporting fp32 ONNX"):
            fp32_files = export_tower(model, self.cfg, spec, self.stage / f"{tower}.fp32.onnx")
        files = {"fp32": fp32_files}
        if PORTABLE in variants:
            with stage(f"{tower}: exporting the portable fp32 graph (standard ONNX ops)"):
                files[PORTABLE] = export_tower(model, self.cfg, spec, self.stage / f"{tower}.{PORTABLE}.onnx", portable=True)
        del model
        gc.collect()
        for name in variants:
            if name not in files and tower in RECIPES[name].towers:
                with stage(f"{tower}: building the {name} variant"):
                    out = self.stage / f"{tower}.{name}.onnx"
                    if RECIPES[name].int8_attention and FULL_RANGE_INT8 in files:  # same weights: shared
                        files[name] = attention_variant_of(files[FULL_RANGE_INT8][0], out)
                    else:
                        files[name] = quantize_graph(fp32_files[0], RECIPES[name], out)
        precision = {name: RECIPES[name].precision if name in RECIPES else "fp32" for name in files}
        self.variants[tower] = {n: make_variant(self.stage, f, spec, precision[n]) for n, f in files.items()}
        # A provisional manifest lets validation open each graph exactly as users will.
        write_manifest(self.stage, self.manifest())
        failures: list[str] = []
        with stage(f"{tower}: loading the reference, for validation"):
            model = reference_model(self.source, self.source_cfg, self.cfg, tower, options.head_dim)
        for name, variant_files in files.items():
            if name in FULL_RANGE_VARIANTS and saturates_full_range_int8():
                log.warning(NOT_VALIDATED_HERE, f"{tower}/{name}", name)
                self.variants[tower][name] = make_variant(self.stage, variant_files, spec, precision[name],
                                                          {"reference": {}, "deferred": NOT_VALIDATED_HERE % (name, name)})
                continue
            with stage(f"{tower}/{name}: validating against the reference"):
                session = TowerSession(Bundle.open(self.stage), tower, name, threads=options.threads)
                if tower == "text":
                    figures = validate_text(model, session, tokenizer, self.cfg)
                else:
                    figures = validate_vision(model, session, self.cfg)
                del session
            self.variants[tower][name] = make_variant(self.stage, variant_files, spec, precision[name], {"reference": figures})
            failures += check_figures(tower, name, figures, tolerance(spec, precision[name]))
        del model
        gc.collect()
        if tower == "text" and options.vocab_from:
            with stage("text: pruning the token table"):
                self.prune_vocabulary(files, spec, tokenizer, options)
        return failures

    def prune_vocabulary(self, files: dict[str, list[Path]], spec: Any, tokenizer: Tokenizer, options: BuildOptions) -> None:
        """Cut the text graphs' token tables to what the corpus needs; covered texts must embed bit for bit as before."""
        import edgeclip

        texts = corpus_texts(options.vocab_from)
        self.vocab = kept_vocabulary(tokenizer, texts, options.vocab_from, self.cfg.text.vocab_size)
        log.info("text: keeping %d of %d token rows (%d from the corpus, %d specials and single characters)",
                 len(self.vocab.kept_ids), self.vocab.full_size, self.vocab.coverage["ids_from_corpus"],
                 self.vocab.coverage["ids_base"])
        probe = texts[:32]
        before = {name: edgeclip.EdgeClip(Bundle.open(self.stage), variant=name).encode_text(probe) for name in files}
        for name, variant_files in files.items():
            prune_graph(variant_files[0], self.vocab)
            old = self.variants["text"][name]
            self.variants["text"][name] = make_variant(self.stage, variant_files, spec, old.precision, old.validation)
        write_manifest(self.stage, self.manifest())
        for name in files:
            after = edgeclip.EdgeClip(Bundle.open(self.stage), variant=name).encode_text(probe)
            if not np.array_equal(after, before[name]):
                raise ConverterError(f"text/{name}: the pruned graph embeds covered texts differently "
                                     f"(max |diff| {np.abs(after - before[name]).max():.2e}); this is a bug")


def build_bundle(source_ref: str, out: Path, options: BuildOptions = BuildOptions()) -> Bundle:
    """Export, validate and package; raises ToleranceExceeded (and writes nothing) if a graph fails."""
    source = resolve_source(source_ref, options.revision)
    cfg = load_clip_config(source.path("config.json"))
    pre = load_preprocess_config(source.path("preprocessor_config.json"))
    tokenizer = Tokenizer.from_file(str(source.path(TOKENIZER_FILE)))
    check_head_dim(cfg, options.head_dim)
    if options.image_size:
        at_image_size(cfg, options.image_size)  # refuses an unsupported size before any work
    if options.vocab_from:
        corpus_texts(options.vocab_from)  # an unreadable corpus is refused before minutes of export, not after
    unknown = [v for v in options.variants if v not in ("fp32", PORTABLE) and v not in RECIPES]
    if unknown:
        raise ConverterError(f"unknown variant(s) {', '.join(unknown)}; choose from fp32, {PORTABLE}, {', '.join(RECIPES)}")
    variants = ("fp32", *(v for v in dict.fromkeys(options.variants) if v != "fp32"))
    with staged_directory(out, overwrite=options.overwrite, marker=MANIFEST_FILE, what="bundle") as stage:
        staged = _StagedBundle(stage, source, cfg, pre, options.image_size)
        shutil.copyfile(source.path(TOKENIZER_FILE), stage / TOKENIZER_FILE)
        failures = [f for tower in options.towers for f in staged.add_tower(tower, variants, tokenizer, options)]
        raise_on_failures(failures)  # leaving the block by exception removes the staging directory
        write_manifest(stage, staged.manifest())
    return Bundle.open(out)
