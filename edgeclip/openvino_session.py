"""The OpenVINO path: a tower's fp32-portable graph (standard ONNX ops) compiled by OpenVINO's CPU runtime.

Selected with providers=["OpenVINO"] (`--providers OpenVINO`); needs the `openvino` extra. The fused
graphs carry com.microsoft ops that OpenVINO translates wrongly (measured: text cosine 0.69-0.72,
NaN in bf16), so only the portable variant runs here. OpenVINO picks its own inference precision:
bf16 wherever the CPU has bf16 instructions (AMX, and AVX512_BF16 without AMX: measured on an AVX-512 EPYC,
where bf16 ran 1.1-1.3x slower than edgeclip's int8), f32 elsewhere; EDGECLIP_OPENVINO_PRECISION (f32 | bf16 | f16)
overrides it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from .bundle import Bundle, Tower, Variant
from .errors import BundleError
from .session import prepare_feeds, remap_ids

OPENVINO = "OpenVINO"
PORTABLE_VARIANT = "fp32-portable"


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def import_openvino() -> Any:
    """`import openvino`, without the telemetry its package import sends.

    openvino's __init__ imports its model converter (openvino.tools.ovc), whose import sends a Google
    Analytics event unless a consent file in the home folder says no (measured: a lookup of
    www.google-analytics.com from `edgeclip embed --providers OpenVINO`). edgeclip only reads and compiles
    ONNX graphs, so the converter is skipped: openvino's __init__ tolerates its ImportError. The block is
    lifted afterwards, so `from openvino.tools.ovc import convert_model` still works for whoever wants it.
    """
    if "openvino" in sys.modules:
        return sys.modules["openvino"]
    converter = "openvino.tools.ovc"
    blocked = converter not in sys.modules
    if blocked:
        sys.modules[converter] = None  # type: ignore[assignment]  # makes `import openvino.tools.ovc` raise ImportError
    try:
        import openvino
    finally:
        if blocked and sys.modules.get(converter, 0) is None:
            del sys.modules[converter]
    return openvino


class OpenVinoSession:
    """Same interface as session.TowerSession: `variant`, `run(feeds) -> {name: array}`, `providers_in_use()`."""

    def __init__(self, bundle: Bundle, tower: Tower, variant_name: str, threads: int | None = None) -> None:
        ov = import_openvino()

        from .session import check_external_data, vocab_remap

        if variant_name != PORTABLE_VARIANT:
            raise BundleError(f"OpenVINO runs only the {PORTABLE_VARIANT} variant (standard ONNX ops), not "
                              f"{variant_name!r}: the others hold ONNX Runtime's own ops, which OpenVINO computes wrongly")
        self.tower = tower
        if variant_name not in bundle.tower(tower).variants:
            raise BundleError(f"this bundle has no {variant_name} {tower} graph for OpenVINO; rebuild it with "
                              f"`python -m converters build ... --variants {PORTABLE_VARIANT},...`")
        self.variant: Variant = bundle.variant(tower, variant_name)
        bundle.check_files(self.variant.files)
        graph = bundle.path(self.variant.graph)
        check_external_data(bundle, self.variant, graph)
        config: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY"}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        precision = os.environ.get("EDGECLIP_OPENVINO_PRECISION")
        if precision:
            config["INFERENCE_PRECISION_HINT"] = precision
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(graph)), "CPU", config)
        self.inference_precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self._request = self.compiled.create_infer_request()
        self._remap = vocab_remap(bundle) if tower == "text" else None
        self.unknown_tokens = 0
        self._lock = threading.Lock()  # one infer request: calls take turns, as ORT's session.run calls would share cores

    def providers_in_use(self) -> list[str]:
        return [f"{OPENVINO} (CPU, {self.inference_precision})"]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cast = prepare_feeds(self.variant, self.tower, feeds)
        self.unknown_tokens = remap_ids(self._remap, cast)
        with self._lock:
            results = self._request.infer(cast)
            outputs = {spec.name: np.array(results[self.compiled.output(spec.name)]) for spec in self.variant.outputs}
        return outputs

    def interrupt(self) -> None:
        """A synchronous OpenVINO infer cannot be stopped: the call in progress finishes."""
