"""`validate --reference torch`: the PyTorch reference towers (bit-identical to upstream) as the gate's full-precision side.

For machines whose onnxruntime has no CUDA provider but whose torch has CUDA (the usual GPU box):
the reference runs there in fp32, on the CPU otherwise. The checkpoint must be the one the bundle
was built from: its files' sha256 are checked against the manifest's source entries first.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch

import edgeclip
from edgeclip.bundle import Bundle, sha256_file
from edgeclip.preprocess import DEFAULT_MAX_PIXELS, open_image, preprocess_image

from .checkpoint import load_reference, resolve_source
from .errors import ConverterError
from .validation_set import validation_images, validation_texts

log = logging.getLogger(__name__)
TEXT_BATCH, IMAGE_BATCH = 16, 2  # as the ONNX reference embeds them


def torch_device(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise ConverterError("--device cuda: this torch has no CUDA device; pass --device cpu or auto")
    return torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")


def check_source(bundle: Bundle, checkpoint: str | None) -> str:
    """The checkpoint directory to load, after checking it holds the files the bundle was built from."""
    meta = bundle.manifest.source
    source = resolve_source(checkpoint or meta.model_id, None if checkpoint else meta.revision)
    for entry in meta.files:
        path = source.path(entry.path)
        if not path.is_file() or sha256_file(path) != entry.sha256:
            raise ConverterError(f"{source.directory}/{entry.path} is not the file this bundle was built from "
                                 f"(sha256 {entry.sha256[:12]}...); pass --checkpoint with the bundle's source")
    return str(source.directory)


def embed_with_torch(bundle: Bundle, towers: tuple[str, ...], checkpoint: str | None, device: str) -> tuple[dict[str, np.ndarray], str]:
    """The validation set embedded by the PyTorch reference, L2-normalized as the runtime's rows are; and where it ran."""
    source = resolve_source(check_source(bundle, checkpoint))
    target = torch_device(device)
    where = f"PyTorch {torch.__version__} fp32 on {torch.cuda.get_device_name(target) if target.type == 'cuda' else 'CPU'}"
    runtime = edgeclip.EdgeClip(bundle, variant="fp32")  # tokenizer and image preprocessing only: the same inputs
    out: dict[str, np.ndarray] = {}
    for tower in towers:
        model = load_reference(source, tower).to(target)
        rows = []
        with torch.inference_mode():
            if tower == "text":
                tokens = [t.ids for t in runtime.tokenize([t.text for t in validation_texts()])]
                tokenizer = runtime._text_tokenizer()  # noqa: SLF001 - the runtime's own padding
                for start in range(0, len(tokens), TEXT_BATCH):
                    batch = tokenizer.pad(tokens[start : start + TEXT_BATCH])
                    rows.append(model(torch.from_numpy(batch.input_ids).to(target)).double().cpu().numpy())
            else:
                # A resolution variant is judged against the model at its own input size (512 px).
                spec = bundle.manifest.vision
                at_source = dataclasses.replace(spec, image_size=spec.source_image_size or spec.image_size)  # type: ignore[union-attr]
                images = validation_images()
                for start in range(0, len(images), IMAGE_BATCH):
                    pixels = np.stack([preprocess_image(open_image(str(p), True, DEFAULT_MAX_PIXELS), at_source)
                                       for p in images[start : start + IMAGE_BATCH]])
                    rows.append(model(torch.from_numpy(pixels).to(target)).double().cpu().numpy())
        embeddings = np.concatenate(rows)
        out[tower] = (embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)).astype(np.float32)
        del model
    log.info("reference: %s", where)
    return out, where
