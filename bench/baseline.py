"""The plain baseline a user makes by hand: torch.onnx.export with its defaults, quantize_dynamic with its defaults.

Also measures fidelity (cosine to the PyTorch reference) of the baseline and of the bundle's
variants on the same inputs, so speed is compared at known accuracy.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from converters.checkpoint import load_reference, resolve_source
from converters.reference.attention import unfused_export
from edgeclip.bundle import Bundle
from edgeclip.session import TowerSession

from .worker import pixel_inputs, text_inputs

INPUT_NAMES = {"text": ["input_ids", "attention_mask"], "vision": ["pixel_values"]}


def _feeds(tower: str, batch: int) -> dict[str, np.ndarray]:
    return text_inputs(batch=batch, tokens=24) if tower == "text" else pixel_inputs(batch=batch)


def export_plain(model: torch.nn.Module, tower: str, out: Path) -> Path:
    """torch.onnx.export as the docs show it: example inputs, names, a dynamic batch; nothing else."""
    feeds = _feeds(tower, 2)
    args = tuple(torch.from_numpy(v) for v in feeds.values())
    dynamic = {name: {0: "batch", 1: "seq"} if tower == "text" else {0: "batch"} for name in INPUT_NAMES[tower]}
    with warnings.catch_warnings(), unfused_export():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(out), input_names=INPUT_NAMES[tower], output_names=["embeds"],
                          dynamic_axes=dynamic, dynamo=False, external_data=tower == "text")
    return out


def prepare(checkpoint: str, bundle_dir: str, work: Path, towers: tuple[str, ...]) -> dict[str, Any]:
    """Baseline graphs per tower (fp32 export + default quantize_dynamic) and fidelity figures."""
    from onnxruntime.quantization import quantize_dynamic

    work.mkdir(parents=True, exist_ok=True)
    source = resolve_source(checkpoint, None)
    bundle = Bundle.open(bundle_dir)
    out: dict[str, Any] = {}
    for tower in towers:
        model = load_reference(source, tower)
        # One directory per graph: the exporter may write one external file per tensor.
        fp32 = work / f"{tower}-plain" / "model.onnx"
        int8 = work / f"{tower}-plain-int8" / "model.onnx"
        fp32.parent.mkdir(exist_ok=True)
        int8.parent.mkdir(exist_ok=True)
        if not fp32.exists():
            export_plain(model, tower, fp32)
        if not int8.exists():
            quantize_dynamic(str(fp32), str(int8), use_external_data_format=tower == "text")  # all defaults
        feeds = _feeds(tower, 8 if tower == "text" else 3)  # fidelity inputs: 8 texts of 24 tokens, 3 images
        with torch.inference_mode():
            reference = model(*(torch.from_numpy(v) for v in feeds.values())).numpy()
        cosines = {}
        for name, path in (("plain-fp32", fp32), ("plain-int8", int8)):
            cosines[name] = _cosines(reference, ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0])
        for variant in bundle.tower(tower).variants:  # type: ignore[arg-type]
            session = TowerSession(bundle, tower, variant)  # type: ignore[arg-type]
            cosines[f"edgeclip-{variant}"] = _cosines(reference, session.run(feeds)[session.variant.outputs[0].name])
        out[tower] = {"graphs": {"plain-fp32": str(fp32), "plain-int8": str(int8)},
                      "sizes": {"plain-fp32": _size(fp32), "plain-int8": _size(int8)},
                      "min_cosine_to_reference": {k: float(v.min()) for k, v in cosines.items()},
                      "mean_cosine_to_reference": {k: float(v.mean()) for k, v in cosines.items()}}
        del model
    return out


def _cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    a = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    b = candidate / np.linalg.norm(candidate, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def _size(graph: Path) -> int:
    return sum(p.stat().st_size for p in graph.parent.iterdir())
