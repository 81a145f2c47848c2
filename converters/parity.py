"""Compare our reference towers with the official remote-code model (needs transformers + internet).

Both models get identical inputs (the same token ids; the same pixel tensors from the official
image processor), so any difference is in the towers. Offline it raises ParityUnavailable
saying why, instead of failing half-way.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from .checkpoint import CheckpointSource, load_reference
from .config import load_clip_config
from .errors import ConverterError
from .tokenizer_builder import corpus_lines

PARITY_LANGUAGES = ("en", "de", "ru", "ar", "hi", "zh", "ja", "ko", "th", "sw")
# The official remote code imports these besides transformers.
UPSTREAM_PACKAGES = ("transformers", "einops", "timm")


class ParityUnavailable(ConverterError):
    """The upstream model cannot be loaded here (no transformers, no network, ...)."""


@dataclass(frozen=True)
class ParityRow:
    tower: str
    item: str  # the text, or the image's name
    cosine: float  # cosine(ours, official) of the unnormalized embeddings
    max_abs_diff: float  # over unit-norm embeddings


def _compare(tower: str, names: list[str], ours: np.ndarray, theirs: np.ndarray) -> list[ParityRow]:
    ours = ours / np.linalg.norm(ours, axis=1, keepdims=True)
    theirs = theirs / np.linalg.norm(theirs, axis=1, keepdims=True)
    return [
        ParityRow(tower, name, float(a @ b), float(np.abs(a - b).max()))
        for name, a, b in zip(names, ours, theirs)
    ]


def _synthetic_images() -> list[tuple[str, object]]:
    from PIL import Image

    ys, xs = np.mgrid[0:300, 0:450]
    gradient = np.stack([xs % 256, ys % 256, (xs + ys) % 256], axis=-1).astype(np.uint8)
    checker = (((np.indices((640, 480)).sum(axis=0) // 40) % 2) * 255).astype(np.uint8)
    return [("gradient_450x300", Image.fromarray(gradient)), ("checker_480x640", Image.fromarray(checker).convert("RGB"))]


def load_upstream(source: CheckpointSource):  # noqa: ANN201 - the remote-code class has no importable type
    missing = [name for name in UPSTREAM_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ParityUnavailable(f"upstream parity needs {', '.join(missing)}: pip install {' '.join(missing)}")
    from transformers import AutoImageProcessor, AutoModel

    try:
        model = AutoModel.from_pretrained(str(source.directory), trust_remote_code=True, torch_dtype=torch.float32)
        processor = AutoImageProcessor.from_pretrained(str(source.directory), trust_remote_code=True)
    except OSError as exc:  # transformers reports an unreachable hub as OSError
        raise ParityUnavailable(
            f"could not load the official remote code for {source.model_id} ({exc}); it is fetched from the "
            "Hugging Face hub (jinaai/jina-clip-implementation, jinaai/xlm-roberta-flash-implementation), "
            "so this command needs internet access"
        ) from exc
    return model.eval(), processor


def upstream_parity(source: CheckpointSource, image_paths: list[Path] | None = None) -> list[ParityRow]:
    official, processor = load_upstream(source)
    cfg = load_clip_config(source.path("config.json"))
    tokenizer = Tokenizer.from_file(str(source.path("tokenizer.json")))
    texts = [next(t for lang, t in corpus_lines() if lang == wanted) for wanted in PARITY_LANGUAGES]
    texts.append("hello <pad> world")  # a literal pad token: upstream masks it (input_ids != pad_token_id)
    encodings = [tokenizer.encode(t).ids for t in texts]
    width = max(map(len, encodings))
    input_ids = torch.full((len(texts), width), cfg.text.pad_token_id, dtype=torch.int64)
    for row, ids in enumerate(encodings):
        input_ids[row, : len(ids)] = torch.tensor(ids)
    rows: list[ParityRow] = []
    with torch.no_grad():
        ours = load_reference(source, "text", cfg)(input_ids).numpy()
        theirs = official.get_text_features(input_ids=input_ids).float().numpy()
        rows += _compare("text", texts, ours, theirs)
        from PIL import Image

        images = [(p.name, Image.open(p).convert("RGB")) for p in image_paths] if image_paths else _synthetic_images()
        pixels = processor([img for _, img in images], return_tensors="pt")["pixel_values"].float()
        ours = load_reference(source, "vision", cfg)(pixels).numpy()
        theirs = official.get_image_features(pixel_values=pixels).float().numpy()
        rows += _compare("vision", [name for name, _ in images], ours, theirs)
    return rows
