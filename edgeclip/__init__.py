"""edgeclip: jina-clip-v2 text and image embeddings on CPUs with ONNX Runtime (no torch).

    import edgeclip
    model = edgeclip.load("bundles/jina-clip-v2")
    texts = model.encode_text(["a seal on a rock"], task="retrieval.query")   # (1, 1024) float32
    images = model.encode_image(["seal.jpg"], truncate_dim=256)               # (1, 256)
    scores = edgeclip.similarity(texts[:, :256], images)
    index = edgeclip.Index("photos.db", model)                                 # offline search (edgeclip.index)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from . import _offline  # noqa: F401  (first: ORT_DISABLE_TELEMETRY must be set before onnxruntime loads)
from .bundle import Bundle, Manifest
from .errors import BundleError, EdgeClipError, InputError

if TYPE_CHECKING:
    from .index import Index
    from .model import EdgeClip, load
    from .postprocess import similarity

__version__ = "0.1.1"

__all__ = ["Bundle", "BundleError", "EdgeClip", "EdgeClipError", "Index", "InputError", "Manifest", "load", "similarity",
           "__version__"]
# Imported on first use (numpy, onnxruntime, the index): `import edgeclip` stays light, and the command
# line catches a Ctrl-C that lands while they load.
_LAZY = {"EdgeClip": ".model", "load": ".model", "similarity": ".postprocess", "Index": ".index"}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgeclip' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
