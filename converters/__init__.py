"""Offline tooling: reference PyTorch towers, random checkpoints, ONNX export and bundle writing.

Needs the ``convert`` extra (torch, safetensors, onnx, huggingface-hub). The runtime package
``edgeclip`` never imports this one.
"""

from __future__ import annotations

import importlib.util

import edgeclip  # noqa: F401  (first: it keeps onnxruntime's telemetry off, see edgeclip/_offline.py)

from .errors import MissingDependency

_CONVERT_DEPS = {"torch": "torch", "safetensors": "safetensors", "onnx": "onnx"}


def require_convert_deps() -> None:
    """Raise MissingDependency naming every missing package of the `convert` extra."""
    missing = [pip for module, pip in _CONVERT_DEPS.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise MissingDependency(
            f"the converters need {', '.join(missing)}: install them with "
            "`pip install 'edgeclip[convert]'` (on CPU-only machines install torch first from the CPU index)"
        )
