"""`validate`: the gate that proves each variant of a bundle is close to its fp32 graph.

The fp32 graph is the full-precision reference (on CUDA when onnxruntime-gpu and a GPU are
there, else on the CPU). Each variant is measured one tower at a time, with the other tower
held at fp32, so a figure belongs to one graph: per-item cosine to fp32 and whether retrieval
over the validation set ranks the same neighbours (text->text, text->image, image->text).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

import edgeclip
from edgeclip.bundle import MANIFEST_FILE, Bundle, Manifest, TextSpec, VisionSpec
from edgeclip.machine import FULL_RANGE_VARIANTS, saturates_full_range_int8

from .atomic import atomic_write_text
from .errors import ConverterError
from .validation_set import LANGUAGE_GROUPS, validation_images, validation_texts

log = logging.getLogger(__name__)

Embeddings = dict[str, np.ndarray]  # tower -> (N, D) unit-norm rows


class GateFailed(ConverterError):
    """At least one variant is further from fp32 than the thresholds allow."""

    def __init__(self, failures: list[str], results: dict[str, dict[str, Any]]) -> None:
        self.failures, self.results = failures, results
        super().__init__(f"validation gate failed ({len(failures)} metric(s) below threshold):\n  " + "\n  ".join(failures))


@dataclass(frozen=True)
class Thresholds:
    cosine_mean: float  # mean per-item cosine to fp32, overall and per language group
    cosine_p1: float  # 1st percentile of per-item cosine (the worst 1 %), overall and per language group
    top1: float  # fraction of queries whose nearest neighbour is fp32's, for every retrieval direction
    top5: float  # mean overlap of the top-5 lists with fp32's, for every retrieval direction


# Defaults per precision: fp16 must be nearly exact; int8 keeps neighbours; int4 trades some for size.
DEFAULT_THRESHOLDS: dict[str, Thresholds] = {
    "fp16": Thresholds(cosine_mean=0.9999, cosine_p1=0.999, top1=0.95, top5=0.95),
    "int8": Thresholds(cosine_mean=0.99, cosine_p1=0.98, top1=0.80, top5=0.85),
    "int4": Thresholds(cosine_mean=0.97, cosine_p1=0.95, top1=0.70, top5=0.80),
}


def thresholds_for(precision: str, overrides: dict[str, float | None]) -> Thresholds:
    base = DEFAULT_THRESHOLDS.get(precision, DEFAULT_THRESHOLDS["fp16"])
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


# ---- metrics -------------------------------------------------------------------------------------------


def cosine_figures(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    cosines = (reference.astype(np.float64) * candidate).sum(axis=1)
    return {"cosine_mean": float(cosines.mean()), "cosine_p1": float(np.quantile(cosines, 0.01)),
            "cosine_min": float(cosines.min()), "items": int(len(cosines))}


def _top_k(queries: np.ndarray, gallery: np.ndarray, k: int, exclude_self: bool) -> np.ndarray:
    scores = queries.astype(np.float64) @ gallery.T.astype(np.float64)
    if exclude_self:
        np.fill_diagonal(scores, -np.inf)
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def _agreement(expected: np.ndarray, got: np.ndarray) -> dict[str, float]:
    k = expected.shape[1]
    overlap = [len(set(a) & set(b)) / k for a, b in zip(expected, got)]
    return {"top1": float(np.mean(expected[:, 0] == got[:, 0])), "top5": float(np.mean(overlap))}


def retrieval_agreement(ref_queries: np.ndarray, ref_gallery: np.ndarray, queries: np.ndarray, gallery: np.ndarray,
                        exclude_self: bool = False) -> dict[str, float]:
    """top1: same nearest neighbour as fp32; top5: mean |top5 ∩ fp32's top5| / 5 (k shrinks for tiny galleries)."""
    k = min(5, len(ref_gallery) - int(exclude_self))
    return _agreement(_top_k(ref_queries, ref_gallery, k, exclude_self), _top_k(queries, gallery, k, exclude_self))


def tower_figures(tower: str, ref: Embeddings, var: Embeddings, groups: np.ndarray | None) -> dict[str, Any]:
    """Figures of one tower's variant `var[tower]` against fp32 `ref`; the other tower stays fp32."""
    figures: dict[str, Any] = cosine_figures(ref[tower], var[tower])
    other = "vision" if tower == "text" else "text"
    same = "text_to_text" if tower == "text" else "image_to_image"
    to_other, from_other = ("text_to_image", "image_to_text") if tower == "text" else ("image_to_text", "text_to_image")
    retrieval = {same: retrieval_agreement(ref[tower], ref[tower], var[tower], var[tower], exclude_self=True)}
    if other in ref:
        retrieval[to_other] = retrieval_agreement(ref[tower], ref[other], var[tower], ref[other])
        retrieval[from_other] = retrieval_agreement(ref[other], ref[tower], ref[other], var[tower])
    figures["retrieval"] = retrieval
    if tower == "text" and groups is not None:
        k = min(5, len(groups) - 1)
        ref_top = _top_k(ref["text"], ref["text"], k, exclude_self=True)
        var_top = _top_k(var["text"], var["text"], k, exclude_self=True)
        figures["groups"] = {}
        for group in LANGUAGE_GROUPS:
            rows = groups == group
            entry: dict[str, Any] = cosine_figures(ref["text"][rows], var["text"][rows])
            entry["text_to_text"] = _agreement(ref_top[rows], var_top[rows])  # this group's queries, whole gallery
            figures["groups"][group] = entry
    return figures


def check_thresholds(tower: str, variant: str, figures: dict[str, Any], limits: Thresholds) -> list[str]:
    """Every metric below its threshold, as 'tower/variant: metric value < threshold'."""
    failures = []

    def check(label: str, value: float, floor: float) -> None:
        if value < floor:
            failures.append(f"{tower}/{variant}: {label} {value:.4f} < {floor}")

    check("cosine_mean", figures["cosine_mean"], limits.cosine_mean)
    check("cosine_p1 (worst 1 %)", figures["cosine_p1"], limits.cosine_p1)
    for direction, values in figures["retrieval"].items():
        check(f"{direction} top1 agreement", values["top1"], limits.top1)
        check(f"{direction} top5 agreement", values["top5"], limits.top5)
    for group, values in figures.get("groups", {}).items():
        check(f"[{group}] cosine_mean", values["cosine_mean"], limits.cosine_mean)
        check(f"[{group}] cosine_p1", values["cosine_p1"], limits.cosine_p1)
    return failures


# ---- running -------------------------------------------------------------------------------------------


def reference_providers(device: str) -> tuple[list[str], str]:
    """ORT providers for the fp32 reference, and a sentence saying where it runs and why."""
    if device not in ("auto", "cuda", "cpu"):
        raise ConverterError(f"--device {device!r}: choose auto, cuda or cpu")
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "cuda" and not has_cuda:
        raise ConverterError("--device cuda: this onnxruntime has no CUDAExecutionProvider; install onnxruntime-gpu "
                             "on a machine with an NVIDIA GPU, or pass --device cpu")
    if device == "cpu":
        return ["CPUExecutionProvider"], "CPU (asked for with --device cpu)"
    if not has_cuda:
        return ["CPUExecutionProvider"], "CPU (this onnxruntime has no CUDAExecutionProvider)"
    return ["CUDAExecutionProvider", "CPUExecutionProvider"], "CUDA"


def embed_validation_set(bundle: Bundle, variant: str, towers: tuple[str, ...], providers: list[str],
                         threads: int | None) -> tuple[Embeddings, list[str]]:
    """Embeddings of the validation set by one variant, and the providers the sessions really used."""
    model = edgeclip.EdgeClip(bundle, variant=variant, threads=threads, providers=providers)
    out: Embeddings = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "fp16 graphs are slower", RuntimeWarning)  # known; measured, not served
        if "text" in towers:
            out["text"] = model.encode_text([t.text for t in validation_texts()], batch_size=16)
        if "vision" in towers:
            out["vision"] = model.encode_image(validation_images(), batch_size=2)
    used = sorted({p for tower in towers for p in model.providers_in_use(tower)[:1]})  # type: ignore[arg-type]
    return out, used


def _towers(manifest: Manifest) -> tuple[str, ...]:
    return tuple(t for t, spec in (("text", manifest.text), ("vision", manifest.vision)) if spec is not None)


def run_gate(bundle_dir: Path, device: str = "auto", variants: tuple[str, ...] | None = None,
             overrides: dict[str, float | None] | None = None, threads: int | None = None, reference: str = "onnx",
             checkpoint: str | None = None) -> dict[str, dict[str, Any]]:
    """Measure every (or the named) non-fp32 variant, store the figures in the manifest, raise GateFailed on failure.

    reference: "onnx" (the bundle's fp32 graph, on CUDA when onnxruntime-gpu is present) or "torch"
    (the PyTorch reference from `checkpoint`, default the manifest's source, on CUDA when torch has it).

    Returns {"tower/variant": figures}. The manifest is rewritten atomically, failures included,
    so `edgeclip info` shows what was measured either way.
    """
    bundle = Bundle.open(bundle_dir)
    towers = _towers(bundle.manifest)
    every = sorted(set.union(*(set(bundle.tower(t).variants) for t in towers)))  # type: ignore[arg-type]
    available = [v for v in every if v != "fp32" or reference == "torch"]
    for name in sorted(FULL_RANGE_VARIANTS & set(available)) if saturates_full_range_int8() else []:
        if variants and name in variants:
            raise ConverterError(f"{name} cannot be gated on this CPU (x86 without VNNI or AMX: ONNX Runtime's "
                                 "int16 sums saturate with its full-range weights); run this on a CPU with int8 dot "
                                 "products (VNNI, AMX, ARM dotprod)")
        log.warning("%s is not gated on this CPU (x86 without VNNI or AMX: its int8 kernels saturate full-range "
                    "weights); gate it on a CPU with int8 dot products", name)
        available.remove(name)
    names = list(variants) if variants else available  # with an outside (torch) reference, fp32 is gated too
    missing = [n for n in names if n not in available]
    if missing or not names:
        raise ConverterError(f"nothing to gate: variant(s) {missing or names} not in the bundle (it has fp32"
                             f"{', ' + ', '.join(available) if available else ' only'}); build some with --variants")
    if reference not in ("onnx", "torch"):
        raise ConverterError(f"--reference {reference!r}: choose onnx or torch")
    providers, where = reference_providers(device)
    groups = np.array([t.group for t in validation_texts()])
    if reference == "torch":
        from .torch_reference import embed_with_torch

        ref, where = embed_with_torch(bundle, towers, checkpoint, device)
        used = providers = ["CPUExecutionProvider"]  # fp16 variants then run on the CPU (with its warning kept quiet)
    else:
        log.info("reference: fp32 on %s", where)
        ref, used = embed_validation_set(bundle, "fp32", towers, providers, threads)
    if reference == "onnx" and device != "cpu" and providers[0] == "CUDAExecutionProvider" and used != ["CUDAExecutionProvider"]:
        where = f"CPU (CUDAExecutionProvider is installed but did not take the graph: {used})"
        log.warning("reference fell back to %s", where)
    results: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    for name in names:
        limits = thresholds_for(_precision(bundle, towers, name), overrides or {})
        # fp16 graphs are for GPU providers: run them where the reference runs; the rest on the CPU.
        var_providers = providers if name == "fp16" else ["CPUExecutionProvider"]
        present = tuple(t for t in towers if name in bundle.tower(t).variants)  # type: ignore[arg-type]
        log.info("%s: embedding the validation set (%s)", name, ", ".join(present))
        embedded, _ = embed_validation_set(bundle, name, present, var_providers, threads)
        for tower in present:
            figures = tower_figures(tower, ref, {**ref, tower: embedded[tower]}, groups)
            tower_failures = check_thresholds(tower, name, figures, limits)
            figures.update(reference_device=where, thresholds=limits.__dict__, passed=not tower_failures)
            results[f"{tower}/{name}"] = figures
            failures += tower_failures
    _store(bundle, results)
    if failures:
        raise GateFailed(failures, results)
    return results


def _precision(bundle: Bundle, towers: tuple[str, ...], name: str) -> str:
    return next(bundle.tower(t).variants[name].precision for t in towers if name in bundle.tower(t).variants)  # type: ignore[arg-type]


def _store(bundle: Bundle, results: dict[str, dict[str, Any]]) -> None:
    manifest = bundle.manifest
    sections: dict[str, TextSpec | VisionSpec] = {}
    for tower in _towers(manifest):
        spec = bundle.tower(tower)  # type: ignore[arg-type]
        variants = {
            name: replace(v, validation={**v.validation, "gate": results[f"{tower}/{name}"]}) if f"{tower}/{name}" in results else v
            for name, v in spec.variants.items()
        }
        sections[tower] = replace(spec, variants=variants)
    updated = replace(manifest, text=sections.get("text", manifest.text), vision=sections.get("vision", manifest.vision))
    atomic_write_text(bundle.directory / MANIFEST_FILE, updated.to_json())


THRESHOLD_NAMES = tuple(f.name for f in fields(Thresholds))
