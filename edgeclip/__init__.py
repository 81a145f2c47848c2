"""edgeclip: jina-clip-v2 text and image embeddings on CPUs with ONNX Runtime (no torch)."""

from __future__ import annotations

from .bundle import Bundle, Manifest
from .errors import BundleError, EdgeClipError, InputError

__version__ = "0.1.0"

__all__ = ["Bundle", "BundleError", "EdgeClipError", "InputError", "Manifest", "__version__"]
