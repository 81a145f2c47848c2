"""`build`: checkpoint -> validated bundle (one fp32 ONNX graph per tower), written atomically."""

from __future__ import annotations

import gc
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from edgeclip.bundle import Bundle, Manifest, SourceInfo, Variant
from edgeclip.session import TowerSession

from .atomic import staged_directory
from .checkpoint import TOWERS, CheckpointSource, Tower, load_reference, resolve_source
from .config import ClipConfig, PreprocessConfig, load_clip_config, load_preprocess_config
from .export import export_tower
from .package import TOKENIZER_FILE, assemble_manifest, make_variant, source_info, write_manifest
from .specs import export_spec
from .validate import check_figures, raise_on_failures, validate_text, validate_vision

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildOptions:
    towers: tuple[Tower, ...] = TOWERS  # towers to export
    revision: str | None = None  # hub revision when the source is a hub id
    overwrite: bool = False  # replace an existing bundle at the output path
    threads: int | None = None  # ORT intra-op threads used for validation (None: ORT's default)


class _StagedBundle:
    """What has been written so far into the staging directory, and its manifest."""

    def __init__(self, stage: Path, source: CheckpointSource, cfg: ClipConfig, pre: PreprocessConfig) -> None:
        self.stage, self.source, self.cfg, self.pre = stage, source, cfg, pre
        log.info("hashing the source files of %s", source.model_id)
        self.source_meta: SourceInfo = source_info(source)
        self.variants: dict[Tower, dict[str, Variant]] = {}

    def manifest(self) -> Manifest:
        return assemble_manifest(self.stage, self.source_meta, self.cfg, self.pre, self.variants.get("text"), self.variants.get("vision"))

    def add_fp32(self, tower: Tower, tokenizer: Tokenizer, threads: int | None) -> list[str]:
        """Export, validate through the runtime, record the figures; returns the gate's failures."""
        spec = export_spec(self.cfg, tower)
        log.info("%s: loading the reference", tower)
        model = load_reference(self.source, tower, self.cfg)
        log.info("%s: exporting fp32 ONNX", tower)
        files = export_tower(model, self.cfg, spec, self.stage / f"{tower}.fp32.onnx")
        self.variants[tower] = {"fp32": make_variant(self.stage, files, spec, "fp32", self.cfg.embed_dim)}
        # A provisional manifest lets validation open the graph exactly as users will.
        write_manifest(self.stage, self.manifest())
        session = TowerSession(Bundle.open(self.stage), tower, "fp32", threads=threads)
        log.info("%s: validating against the reference", tower)
        if tower == "text":
            figures = validate_text(model, session, tokenizer, self.cfg)
        else:
            figures = validate_vision(model, session, self.cfg)
        self.variants[tower]["fp32"] = make_variant(self.stage, files, spec, "fp32", self.cfg.embed_dim, {"reference": figures})
        del model, session
        gc.collect()
        return check_figures(tower, "fp32", figures, spec)


def build_bundle(source_ref: str, out: Path, options: BuildOptions = BuildOptions()) -> Bundle:
    """Export, validate and package; raises ToleranceExceeded (and writes nothing) if a graph fails."""
    source = resolve_source(source_ref, options.revision)
    cfg = load_clip_config(source.path("config.json"))
    pre = load_preprocess_config(source.path("preprocessor_config.json"))
    tokenizer = Tokenizer.from_file(str(source.path(TOKENIZER_FILE)))
    with staged_directory(out, overwrite=options.overwrite) as stage:
        staged = _StagedBundle(stage, source, cfg, pre)
        shutil.copyfile(source.path(TOKENIZER_FILE), stage / TOKENIZER_FILE)
        failures = [f for tower in options.towers for f in staged.add_fp32(tower, tokenizer, options.threads)]
        raise_on_failures(failures)  # leaving the block by exception removes the staging directory
        write_manifest(stage, staged.manifest())
    return Bundle.open(out)
