"""Differential test of an exported graph against the PyTorch reference, through the runtime.

The graph is opened the way users open it (edgeclip.bundle + edgeclip.session), so what is
tested is the bundle, not a bare ORT session. Every case is measured and reported; one
ToleranceExceeded lists all failures at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn

from edgeclip.session import TowerSession

from .config import ClipConfig
from .errors import ToleranceExceeded
from .specs import ExportSpec
from .tokenizer_builder import corpus_lines

# Odd lengths on purpose (no accidental alignment); 3 unequal rows exercise padding.
TEXT_CASES: dict[str, tuple[int, ...]] = {"batch1": (7,), "batch3_unequal": (5, 13, 31), "batch1_long": (129,)}
VISION_BATCHES: dict[str, int] = {"batch1": 1, "batch3": 3}


@dataclass(frozen=True)
class CaseFigures:
    max_abs_diff: float  # max |onnx - reference| over unit-norm embeddings
    min_cosine: float  # worst per-embedding cosine(onnx, reference)
    raw_max_abs_diff: float  # the same before normalization (embeddings are O(1) per element)

    def as_dict(self) -> dict[str, float]:
        return {"max_abs_diff": self.max_abs_diff, "min_cosine": self.min_cosine, "raw_max_abs_diff": self.raw_max_abs_diff}


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def compare(reference: np.ndarray, candidate: np.ndarray) -> CaseFigures:
    ref, cand = _unit(reference.astype(np.float64)), _unit(candidate.astype(np.float64))
    return CaseFigures(
        max_abs_diff=float(np.abs(ref - cand).max()),
        min_cosine=float((ref * cand).sum(axis=1).min()),
        raw_max_abs_diff=float(np.abs(reference.astype(np.float64) - candidate).max()),
    )


def token_batch(tokenizer: Tokenizer, lengths: tuple[int, ...], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ids of real corpus text, each row exactly `length` tokens with <s> ... </s>."""
    text = " ".join(sentence for _, sentence in corpus_lines())
    body = tokenizer.encode(text, add_special_tokens=False).ids
    framed = tokenizer.encode("x").ids  # [<s>, ..., </s>] from the template
    bos, eos = framed[0], framed[-1]
    width = max(lengths)
    ids = np.full((len(lengths), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(lengths), width), dtype=np.int64)
    for row, length in enumerate(lengths):
        start = 17 * row  # different text per row
        ids[row, :length] = [bos, *body[start : start + length - 2], eos]
        mask[row, :length] = 1
    return ids, mask


def _reference(model: nn.Module, *arrays: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(*(torch.from_numpy(a) for a in arrays)).numpy()


def validate_text(model: nn.Module, session: TowerSession, tokenizer: Tokenizer, cfg: ClipConfig) -> dict[str, dict[str, float]]:
    figures: dict[str, dict[str, float]] = {}
    for name, lengths in TEXT_CASES.items():
        ids, mask = token_batch(tokenizer, lengths, cfg.text.pad_token_id)
        onnx_out = session.run({"input_ids": ids, "attention_mask": mask})["text_embeds"]
        figures[name] = compare(_reference(model, ids, mask), onnx_out).as_dict()
        if len(lengths) > 1:  # padding must not change any row
            single = np.concatenate([
                session.run({"input_ids": ids[i : i + 1, :n], "attention_mask": mask[i : i + 1, :n]})["text_embeds"]
                for i, n in enumerate(lengths)
            ])
            figures[f"{name}_padded_vs_single"] = compare(single, onnx_out).as_dict()
    return figures


def validate_vision(model: nn.Module, session: TowerSession, cfg: ClipConfig) -> dict[str, dict[str, float]]:
    figures: dict[str, dict[str, float]] = {}
    size = cfg.vision.image_size
    generator = np.random.default_rng(0)
    for name, batch in VISION_BATCHES.items():
        # Normalized pixels are roughly standard normal; clip to the range real images reach.
        pixels = np.clip(generator.standard_normal((batch, 3, size, size)), -1.8, 2.2).astype(np.float32)
        onnx_out = session.run({"pixel_values": pixels})["image_embeds"]
        figures[name] = compare(_reference(model, pixels), onnx_out).as_dict()
        if batch > 1:
            single = np.concatenate([session.run({"pixel_values": pixels[i : i + 1]})["image_embeds"] for i in range(batch)])
            figures[f"{name}_batched_vs_single"] = compare(single, onnx_out).as_dict()
    return figures


@dataclass(frozen=True)
class Tolerance:
    atol: float | None  # max |diff| of unit-norm embeddings; None: not checked
    min_cosine: float  # lowest per-embedding cosine to the reference


# Build-time sanity floors: they catch a broken graph (wrong scales or layout give cosines near 0),
# not a merely lossy one; fitness is judged by the validation gate (converters/gate.py). int4 is low
# because weight-only int4 is inherently noisy on the full-size random checkpoint (cosine 0.78-0.84:
# each of the 96 linears adds ~9 % noise and a random network amplifies it through depth).
LOSSY_MIN_COSINE = {"fp16": 0.999, "int8": 0.98, "int4": 0.7}


def tolerance(spec: ExportSpec, precision: str) -> Tolerance:
    if precision == "fp32":
        return Tolerance(spec.atol, spec.min_cosine)
    return Tolerance(None, LOSSY_MIN_COSINE[precision])


def check_figures(tower: str, variant: str, figures: dict[str, dict[str, float]], limit: Tolerance) -> list[str]:
    """Human-readable failures against the tolerance (empty when all pass)."""
    failures = []
    for case, values in figures.items():
        if limit.atol is not None and values["max_abs_diff"] > limit.atol:
            failures.append(f"{tower}/{variant}/{case}: max_abs_diff {values['max_abs_diff']:.3g} > {limit.atol:g}")
        if values["min_cosine"] < limit.min_cosine:
            failures.append(f"{tower}/{variant}/{case}: min_cosine {values['min_cosine']:.7f} < {limit.min_cosine}")
    return failures


def raise_on_failures(failures: list[str]) -> None:
    if failures:
        raise ToleranceExceeded(failures)
