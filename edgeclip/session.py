"""ONNX Runtime sessions for one tower variant, with the manifest's I/O contract checked at load."""

from __future__ import annotations

import mmap
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import onnxruntime as ort

from .bundle import Bundle, TensorSpec, Tower, Variant, check_relative_path
from .errors import BundleError, InputError

# ORT reports element types as "tensor(float)" etc.; the manifest uses numpy names.
_ORT_TO_NUMPY = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(bool)": "bool",
}


# How ONNX serializes an external-data entry's key: StringStringEntryProto field 1 = "location".
_LOCATION_KEY = b"\x0a\x08location\x12"


def external_data_locations(graph: Path) -> list[str]:
    """The external-data file names an ONNX graph points at, read from its bytes without onnx.

    The value follows the key as field 2: a varint length, then UTF-8. Memory-mapped, so a large
    graph with inline weights costs page cache, not a copy.
    """
    locations: set[str] = set()
    with open(graph, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        at = data.find(_LOCATION_KEY)
        while at != -1:
            cursor, length, shift = at + len(_LOCATION_KEY), 0, 0
            while cursor < len(data) and shift < 35:  # varint
                byte = data[cursor]
                length |= (byte & 0x7F) << shift
                cursor, shift = cursor + 1, shift + 7
                if not byte & 0x80:
                    break
            locations.add(bytes(data[cursor : cursor + length]).decode("utf-8", "replace"))
            at = data.find(_LOCATION_KEY, cursor)
    return sorted(locations)


def check_external_data(bundle: Bundle, variant: Variant, graph: Path) -> None:
    """Every external-data location must be a file of this variant, inside the bundle (no '..', no absolute path)."""
    listed = {f.path for f in variant.files}
    graph_dir = PurePosixPath(variant.graph).parent
    for location in external_data_locations(graph):
        relative = str(graph_dir / location) if str(graph_dir) != "." else location
        try:
            check_relative_path(location)
            bundle.path(relative)
        except BundleError as exc:
            raise BundleError(f"graph {variant.graph} points its weights at {location!r}, outside the bundle; refusing "
                              f"to load it (a tampered or hand-edited graph): {exc}") from exc
        if relative not in listed:
            raise BundleError(f"graph {variant.graph} reads weights from {location!r}, which the manifest does not list "
                              "for this variant; rebuild the bundle")


def check_providers(requested: Sequence[str] | None) -> list[str]:
    """The providers to use, CPU by default; unknown or unavailable ones raise with the available list.

    "OpenVINO" (alone) is edgeclip's OpenVINO path (openvino_session.py), not an ORT provider."""
    from .openvino_session import OPENVINO, openvino_available

    available = ort.get_available_providers()
    if not requested:
        return ["CPUExecutionProvider"]
    if OPENVINO in requested:
        if len(requested) > 1:
            raise BundleError(f"{OPENVINO} stands alone: it is a runtime of its own, not an onnxruntime provider to fall back from")
        if not openvino_available():
            raise BundleError(f"{OPENVINO} needs the openvino package: pip install 'edgeclip[openvino]'")
        return [OPENVINO]
    missing = [p for p in requested if p not in available]
    if missing:
        raise BundleError(
            f"execution provider(s) {', '.join(missing)} not available in this onnxruntime; "
            f"available: {', '.join(available)}, or {OPENVINO} with the openvino package "
            "(GPU providers need the onnxruntime-gpu package)"
        )
    return list(requested)


# --device for the CLI: onnxruntime falls back along the list.
GPU_DEVICES: dict[str, list[str]] = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


def check_threads(threads: int | None) -> None:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InputError(f"threads must be a positive int (or None: one per physical core), got {threads!r}")


RELEASE_ABOVE_ELEMENTS = 4096  # input elements: a text batch over ~2k tokens, any image


def session_options(threads: int | None, low_memory: bool = True) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # The memory pattern pre-plans one block per input shape; without it the arena reuses freed
    # blocks. Measured on the full-size int8 vision tower: peak RSS 524 -> 453 MB, latency +0-10 % (4 runs);
    # text at 1-512 tokens unchanged within noise (bench.compare --new-without-mem-pattern).
    options.enable_mem_pattern = not low_memory
    if threads is not None:
        check_threads(threads)
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


def vocab_remap(bundle: Bundle) -> tuple[np.ndarray, np.ndarray] | None:
    """tokenizer id -> row of a pruned table (ids outside it -> <unk>'s row), and which ids are outside."""
    vocab = bundle.manifest.text.vocab if bundle.manifest.text is not None else None
    if vocab is None:
        return None
    kept = np.asarray(vocab.kept_ids, dtype=np.int64)
    unk_row = int(np.searchsorted(kept, vocab.unk_id))
    table = np.full(vocab.full_size, unk_row, dtype=np.int64)
    table[kept] = np.arange(len(kept))
    unknown = np.ones(vocab.full_size, dtype=bool)
    unknown[kept] = False
    return table, unknown


def prepare_feeds(variant: Variant, tower: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The feeds the manifest declares, each cast to its dtype (contiguous); other names raise."""
    expected = {spec.name: spec.dtype for spec in variant.inputs}
    if set(feeds) != set(expected):
        raise ValueError(f"{tower} graph takes inputs {sorted(expected)}, got {sorted(feeds)}")
    return {name: np.ascontiguousarray(array, dtype=expected[name]) for name, array in feeds.items()}


def remap_ids(remap: tuple[np.ndarray, np.ndarray] | None, feeds: dict[str, np.ndarray]) -> int:
    """Rewrite feeds["input_ids"] to rows of a pruned table, in place; returns how many real tokens fell outside it."""
    if remap is None or "input_ids" not in feeds:
        return 0
    table, unknown = remap
    ids = np.clip(feeds["input_ids"], 0, len(table) - 1)
    mask = feeds.get("attention_mask")
    outside = unknown[ids] if mask is None else unknown[ids] & (mask != 0)
    feeds["input_ids"] = table[ids]
    return int(outside.sum())


class Interrupted(RuntimeError):
    """A session call stopped by interrupt() before it finished."""


class TowerSession:
    """One tower variant's ORT session. `run` takes and returns arrays keyed by manifest names."""

    def __init__(
        self,
        bundle: Bundle,
        tower: Tower,
        variant_name: str,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        low_memory: bool = True,
    ) -> None:
        self.tower = tower
        self.variant: Variant = bundle.variant(tower, variant_name)
        bundle.check_files(self.variant.files)
        graph_path = bundle.path(self.variant.graph)
        check_external_data(bundle, self.variant, graph_path)
        try:
            self.session = ort.InferenceSession(
                str(graph_path), sess_options=session_options(threads, low_memory), providers=check_providers(providers)
            )
        except Exception as exc:  # InvalidProtobuf, InvalidGraph, NoSuchFile, Fail...: none share a useful base class
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BundleError(f"onnxruntime cannot load {self.variant.graph} ({type(exc).__name__}: {reason}); the file "
                              "is damaged or from an incompatible build: `edgeclip verify` checks it, rebuild or "
                              "re-download the bundle") from exc
        self._check_contract()
        self._remap = vocab_remap(bundle) if tower == "text" else None
        self.unknown_tokens = 0  # in the last run: real tokens outside a pruned vocabulary, embedded as <unk>
        # low_memory: after a large run, the arena's free chunks go back to the OS. Otherwise the arena
        # keeps its high-water mark for every shape it has seen: a server fed mixed batch sizes and
        # lengths grew 0.7 -> 2.1 GB (full-size int8, text and images) and stayed there; with this
        # it returns to ~0.8 GB after each large run, at no measured cost for runs this size (short
        # queries skip it: re-growing the arena each time cost them ~5-20 %). bench.serve's soak checks it.
        self.low_memory = low_memory
        self._running: ort.RunOptions | None = None  # the options of the call in progress, for interrupt()

    def _check_contract(self) -> None:
        def describe(specs: Sequence[TensorSpec]) -> list[tuple[str, str]]:
            return [(s.name, s.dtype) for s in specs]

        def from_graph(nodes: Sequence[ort.NodeArg]) -> list[tuple[str, str]]:
            return [(n.name, _ORT_TO_NUMPY.get(n.type, n.type)) for n in nodes]

        for kind, manifest_side, graph_side in (
            ("inputs", describe(self.variant.inputs), from_graph(self.session.get_inputs())),
            ("outputs", describe(self.variant.outputs), from_graph(self.session.get_outputs())),
        ):
            if manifest_side != graph_side:
                raise BundleError(
                    f"{self.tower} graph {self.variant.graph}: {kind} are {graph_side}, "
                    f"the manifest says {manifest_side}; the bundle is inconsistent, rebuild it"
                )

    def providers_in_use(self) -> list[str]:
        """The providers onnxruntime really assigned (it can fall back to the CPU)."""
        return list(self.session.get_providers())

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Feeds are cast to the dtypes the graph declares; outputs are returned by name."""
        cast = prepare_feeds(self.variant, self.tower, feeds)
        self.unknown_tokens = remap_ids(self._remap, cast)
        names = [spec.name for spec in self.variant.outputs]
        options = ort.RunOptions()  # one per call (~1 us): interrupt() flags this call only
        if self.low_memory and sum(array.size for array in cast.values()) > RELEASE_ABOVE_ELEMENTS:
            options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self._running = options
        try:
            return dict(zip(names, self.session.run(names, cast, options)))
        except Exception as exc:
            if options.terminate:
                raise Interrupted(f"the {self.tower} session call was interrupted") from exc
            raise
        finally:
            self._running = None

    def interrupt(self) -> None:
        """From another thread: make the session call in progress (if any) stop and raise Interrupted."""
        running = self._running
        if running is not None:
            running.terminate = True


def open_session(bundle: Bundle, tower: Tower, variant_name: str, threads: int | None = None,
                 providers: Sequence[str] | None = None, low_memory: bool = True) -> TowerSession:
    """A TowerSession, or an OpenVinoSession (same interface) for providers=["OpenVINO"]."""
    from .openvino_session import OPENVINO, OpenVinoSession

    if providers and OPENVINO in providers:
        return OpenVinoSession(bundle, tower, variant_name, threads)  # type: ignore[return-value]
    return TowerSession(bundle, tower, variant_name, threads, providers, low_memory)
