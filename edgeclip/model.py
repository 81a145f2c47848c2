"""EdgeClip: one object, two towers. Wires tokenizer/preprocess -> session -> postprocess."""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._types import FloatArray, ImageInput, OutputPrecision
from .bundle import Bundle, Tower, Variant, VisionSpec
from .errors import BundleError, InputError
from .fetch import FetchPolicy, image_reference, is_data_uri, is_url
from .postprocess import check_precision, check_truncate_dim, to_precision, truncate_and_normalize
from .preprocess import DEFAULT_MAX_PIXELS, check_preprocessing, open_image, preprocess_image
from .machine import DOT_PRODUCT_CLASSES, FULL_RANGE_INT8, FULL_RANGE_VARIANTS, cpu_class, saturates_full_range_int8
from .openvino_session import OPENVINO, PORTABLE_VARIANT
from .session import TowerSession, check_providers, check_threads, open_session
from .tokenizer import TextTokenizer, TokenizedText

# What the runtime feeds each tower; the manifest must name the graph inputs this way.
TOWER_INPUTS: dict[Tower, tuple[str, ...]] = {"text": ("input_ids", "attention_mask"), "vision": ("pixel_values",)}
# Variant picked when the caller names none: the first the bundle has, by the first provider's kind.
GPU_PROVIDERS = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider",
                           "CoreMLExecutionProvider", "DmlExecutionProvider"})
# int8-vnni (full-range s8 weights) is exact only where the CPU has a dot-product instruction; the
# 7-bit int8 graph is the one that AVX2 without VNNI computes accurately (see machine.py).
CPU_VARIANT_ORDER: tuple[str, ...] = ("int8", "int8-vnni", "fp32", "int4", "fp16", "int8-vnni-attn")
DOT_PRODUCT_CPU_VARIANT_ORDER: tuple[str, ...] = ("int8-vnni", "int8", "fp32", "int4", "fp16", "int8-vnni-attn")
IMAGE_ONLY_VARIANTS = frozenset({"int8-vnni-attn"})
# int8-vnni-attn (image tower only: attention's QK^T in int8 too) ran 1.00-1.12x int8-vnni's speed on images at the
# same cosine on real weights (bench.real_weights), measured on AVX-512 VNNI only: it is the default where it was
# measured; other dot-product classes (AMX, AVX-VNNI, ARM dotprod) keep int8-vnni until a measurement there says so.
INT8_ATTENTION_CLASSES = frozenset({"avx512-vnni"})
GPU_VARIANT_ORDER: tuple[str, ...] = ("fp16", "fp32", "int8", "int4")
# Padded tokens per text session call. Past a few hundred rows the GEMMs are already efficient, so
# more rows only add padding and attention work: bench.text_batching measured it (docs/speed.md).
TEXT_TOKENS_PER_BATCH = 2048
# Images per vision session call by default. On CPUs a 512 px image is already 1,025 rows per GEMM:
# batch 4 ran at 0.98x (this AVX-512 VNNI EPYC) and 0.88-0.95x (an AMX Xeon) the images/s of batch 1.
CPU_IMAGE_BATCH, GPU_IMAGE_BATCH = 1, 4


class EdgeClip:
    """jina-clip-v2 from a bundle. Sessions open lazily per tower: a text-only app never maps the image weights."""

    def __init__(
        self,
        bundle: Bundle,
        *,
        variant: str | None = None,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
        low_memory: bool = True,
    ) -> None:
        self.bundle = bundle
        self.low_memory = bool(low_memory)
        if isinstance(max_image_pixels, bool) or not isinstance(max_image_pixels, int) or max_image_pixels < 1:
            raise InputError(f"max_image_pixels must be a positive int, got {max_image_pixels!r}")
        self.max_image_pixels = max_image_pixels
        self.manifest = bundle.manifest
        self.providers = check_providers(providers)
        check_threads(threads)
        self.threads = threads
        if variant is not None:
            _check_variant(bundle, variant)
        self._variant = variant
        self._sessions: dict[Tower, TowerSession] = {}
        self._tokenizer: TextTokenizer | None = None
        self._lock = threading.Lock()

    @property
    def matryoshka_dims(self) -> tuple[int, ...]:
        return self.manifest.matryoshka_dims

    @property
    def on_gpu(self) -> bool:
        return self.providers[0] in GPU_PROVIDERS

    def variant_name(self, tower: Tower) -> str:
        """The requested variant, else the best the bundle has for this machine: fp16 on GPU providers;
        on CPUs int8-vnni where the CPU has int8 dot products (VNNI, AMX, ARM dotprod), int8 elsewhere."""
        variants = self.bundle.tower(tower).variants
        if self._variant is not None:
            if self._variant not in variants and self._variant in IMAGE_ONLY_VARIANTS and FULL_RANGE_INT8 in variants:
                return FULL_RANGE_INT8  # int8-vnni-attn asked for: texts run its linear layers' graph, int8-vnni
            return self._variant  # Bundle.variant raises, listing the available ones, if it is absent
        # A pulled bundle holds only some variants' files: choose among those present.
        present = [name for name, v in variants.items() if self.bundle.has_files(v)] or list(variants)
        return preferred_variant(present, on_gpu=self.on_gpu, openvino=self.providers == [OPENVINO])

    def providers_in_use(self, tower: Tower) -> list[str]:
        """The providers onnxruntime really assigned to the tower's session (it can fall back to the CPU)."""
        return self._session(tower).providers_in_use()

    def _warn_if_unfit(self, variant: Variant, name: str) -> None:
        gate = variant.validation.get("gate")
        if gate and not gate.get("passed", True):
            warnings.warn(f"the {variant.graph} variant failed the validation gate against fp32 (see `edgeclip info`); "
                          "its embeddings may differ noticeably", RuntimeWarning, stacklevel=3)
        if not self.on_gpu and name in FULL_RANGE_VARIANTS and saturates_full_range_int8():
            warnings.warn(f"{name} graphs need a CPU with int8 dot products (VNNI, AMX, ARM dotprod): on this "
                          "one ONNX Runtime's int16 sums saturate and the embeddings come out wrong; use the int8 "
                          "variant (the default here)", RuntimeWarning, stacklevel=3)
        if self.on_gpu and variant.precision in ("int8", "int4"):
            warnings.warn(f"{variant.precision} graphs run slowly on {self.providers[0]} (quantized ops fall back to "
                          "the CPU); use the fp16 variant on GPUs", RuntimeWarning, stacklevel=3)
        elif not self.on_gpu and variant.precision == "fp16":
            warnings.warn("fp16 graphs are slower than fp32 on the CPU (no fp16 GEMM; casts are inserted); "
                          "use the int8 or fp32 variant on CPUs", RuntimeWarning, stacklevel=3)

    def _session(self, tower: Tower) -> TowerSession:
        with self._lock:
            if tower not in self._sessions:
                session = open_session(self.bundle, tower, self.variant_name(tower), self.threads, self.providers,
                                       self.low_memory)
                names = tuple(spec.name for spec in session.variant.inputs)
                if names != TOWER_INPUTS[tower]:
                    raise BundleError(f"{tower} graph inputs are {names}; this edgeclip feeds {TOWER_INPUTS[tower]}")
                self._warn_if_unfit(session.variant, self.variant_name(tower))
                fp32 = self.bundle.tower(tower).variants.get("fp32")
                if self._variant is None and not self.on_gpu and fp32 is not None and session.variant.graph == fp32.graph:
                    _warn_fp32_fallback(self.bundle, tower)  # chosen for want of an int8 graph, not asked for
                self._sessions[tower] = session
            return self._sessions[tower]

    def interrupt(self, tower: Tower) -> None:
        """From another thread: stop the session call now running on `tower`; it raises
        edgeclip.session.Interrupted (the server uses this when every waiting client has hung up)."""
        with self._lock:
            session = self._sessions.get(tower)
        if session is not None:
            session.interrupt()

    def _text_tokenizer(self) -> TextTokenizer:
        spec = self.manifest.text
        if spec is None:
            raise BundleError("this bundle has no text tower; rebuild it with --towers text,vision")
        with self._lock:
            if self._tokenizer is None:
                self.bundle.check_files((spec.tokenizer,))
                self._tokenizer = TextTokenizer(self.bundle.path(spec.tokenizer.path), spec)
            return self._tokenizer

    def open_towers(self, towers: Iterable[Tower]) -> None:
        """Open these towers' sessions now (a job calls this before its first input, so a missing
        tower or a damaged graph fails at once, not after hours of work)."""
        for tower in towers:
            if tower == "text":
                self._text_tokenizer()
            self._session(tower)

    def output_dim(self, tower: Tower) -> int:
        """Width of the tower's embedding output (the full width, or a small-device head's)."""
        return self.bundle.variant(tower, self.variant_name(tower)).output_dim

    # ---- stages: what encode_text / encode_image are made of, for callers that stream -----------

    def tokenize(self, texts: Sequence[str], *, task: str | None = None, max_length: int | None = None) -> list[TokenizedText]:
        """Texts -> token ids (<s> ... </s>, cut to max_length keeping </s>) and their untruncated counts."""
        items = _as_texts(texts)
        tokenizer = self._text_tokenizer()
        prefix = tokenizer.prefix(task)
        limit = tokenizer.check_max_length(max_length)
        return tokenizer.tokenize([prefix + text for text in items], limit)

    def embed_tokens(
        self,
        rows: Sequence[Sequence[int]],
        *,
        truncate_dim: int | None = None,
        precision: OutputPrecision = "float32",
        batch_size: int = 32,
    ) -> np.ndarray:
        """Token id rows (from `tokenize`) -> (N, D) embeddings in input order; a batch holds one token length."""
        check_precision(precision)
        _check_batch_size(batch_size)
        session = self._session("text")
        dim = check_truncate_dim(truncate_dim, self.matryoshka_dims, session.variant.output_dim)
        return to_precision(_finish(self.run_tokens(rows, batch_size), dim, session.variant), precision)

    def run_tokens(self, rows: Sequence[Sequence[int]], batch_size: int = 32) -> FloatArray:
        """Token id rows -> the text graph's raw (N, D) output rows in input order (not yet truncated or
        normalized). A batch holds rows of one length (never padded: see token_budget_batches), at most
        `batch_size` of them and TEXT_TOKENS_PER_BATCH tokens."""
        tokenizer = self._text_tokenizer()
        session = self._session("text")
        embeddings = np.empty((len(rows), session.variant.output_dim), dtype=np.float32)
        unknown = 0
        for chunk in token_budget_batches([len(row) for row in rows], batch_size, TEXT_TOKENS_PER_BATCH):
            batch = tokenizer.pad([rows[i] for i in chunk])
            outputs = session.run({"input_ids": batch.input_ids, "attention_mask": batch.attention_mask})
            embeddings[chunk] = outputs[session.variant.outputs[0].name]
            unknown += getattr(session, "unknown_tokens", 0)
        if unknown:
            warnings.warn(f"{unknown} tokens are outside this bundle's pruned vocabulary (built with --vocab-from) and were "
                          "embedded as <unk>: those texts embed differently from the full model; rebuild with a corpus "
                          "that covers them", RuntimeWarning, stacklevel=2)
        return embeddings

    def image_pixels(self, image: ImageInput, *, exif_transpose: bool = True, fetch_urls: bool | FetchPolicy = False) -> FloatArray:
        """One image -> its (3, S, S) float32 model input (decode, orient, resize, crop, normalize)."""
        spec = self._vision_spec()
        check_preprocessing(spec)
        [item] = _read_streams([image])
        return preprocess_image(open_image(item, exif_transpose, self.max_image_pixels, _policy(fetch_urls)), spec)

    def embed_pixels(
        self,
        pixels: FloatArray,
        *,
        truncate_dim: int | None = None,
        precision: OutputPrecision = "float32",
        batch_size: int | None = None,
    ) -> np.ndarray:
        """(N, 3, S, S) float32 model inputs (from `image_pixels`) -> (N, D) embeddings."""
        check_precision(precision)
        if batch_size is not None:
            _check_batch_size(batch_size)
        session = self._session("vision")
        dim = check_truncate_dim(truncate_dim, self.matryoshka_dims, session.variant.output_dim)
        return to_precision(_finish(self.run_pixels(pixels, batch_size), dim, session.variant), precision)

    def run_pixels(self, pixels: FloatArray, batch_size: int | None = None) -> FloatArray:
        """(N, 3, S, S) model inputs -> the vision graph's raw (N, D) output rows (not yet truncated or normalized).
        batch_size None: one image per call on CPUs (batching does not speed images up there), 4 on GPUs."""
        session = self._session("vision")
        batch_size = batch_size or (GPU_IMAGE_BATCH if self.on_gpu else CPU_IMAGE_BATCH)
        embeddings = np.empty((len(pixels), session.variant.output_dim), dtype=np.float32)
        for start in range(0, len(pixels), batch_size):
            batch = pixels[start : start + batch_size]
            embeddings[start : start + len(batch)] = session.run({"pixel_values": batch})[session.variant.outputs[0].name]
        return embeddings

    # ---- the one-call API ------------------------------------------------------------------------

    def encode_text(
        self,
        texts: str | Sequence[str],
        *,
        task: str | None = None,
        truncate_dim: int | None = None,
        max_length: int | None = None,
        batch_size: int = 32,
        precision: OutputPrecision = "float32",
        truncate: bool = True,
    ) -> np.ndarray:
        """Embed texts.

        Args:
            texts: one string or a sequence of strings.
            task: None, or "retrieval.query" to prepend the model's query instruction.
            truncate_dim: one of `matryoshka_dims`; None keeps the full width.
            max_length: tokens per text including <s> and </s> (default 512, at most 8192);
                longer texts are truncated, keeping </s>.
            batch_size: texts per session call; a call holds texts of one token length (never padded).
            precision: "float32", "float16", or packed sign bits "binary"/"ubinary".
            truncate: True cuts texts longer than max_length (keeping </s>); False raises
                InputError naming every text that is too long.

        Empty and whitespace-only strings embed as "<s></s>"; control and zero-width characters
        go to the tokenizer as they are. Non-str items and strings that are not valid Unicode
        (lone surrogates) raise InputError naming their index. A literal "<pad>" in a text is
        masked out, as upstream does.

        Returns:
            (N, D) array in input order: unit-norm float rows, or (N, D/8) packed bytes.
        """
        items = _as_texts(texts)
        check_precision(precision)
        _check_batch_size(batch_size)
        session = self._session("text")
        check_truncate_dim(truncate_dim, self.matryoshka_dims, session.variant.output_dim)
        tokenized = self.tokenize(items, task=task, max_length=max_length)
        if not truncate:
            too_long = [f"text {i} ({t.tokens} tokens)" for i, t in enumerate(tokenized) if t.truncated]
            if too_long:
                limit = self._text_tokenizer().check_max_length(max_length)
                raise InputError(f"{', '.join(too_long[:10])}{' ...' if len(too_long) > 10 else ''} exceed max_length "
                                 f"{limit}; shorten them, raise max_length (up to {self._text_tokenizer().spec.max_length}) "
                                 "or pass truncate=True")
        return self.embed_tokens([t.ids for t in tokenized], truncate_dim=truncate_dim, precision=precision,
                                 batch_size=batch_size)

    def _vision_spec(self) -> VisionSpec:
        spec = self.manifest.vision
        if spec is None:
            raise BundleError("this bundle has no vision tower; rebuild it with --towers text,vision")
        return spec

    def _check_images(self, items: list[Any], exif_transpose: bool, fetch: FetchPolicy | None) -> list[Any]:
        """Decode every input once before any model compute; the first bad one raises with its index.

        Decoding is milliseconds per image against seconds of model time, so the check is cheap.
        Images are decoded again batch by batch when embedded: keeping every decoded image from
        here would hold the whole call's pixels in memory at once. URLs and data: URIs become
        bytes here, so nothing is downloaded twice.
        """
        items = _read_streams(items)
        for index, item in enumerate(items):
            try:
                if isinstance(item, str) and (is_url(item) or is_data_uri(item)):
                    item = items[index] = image_reference(item, fetch)
                open_image(item, exif_transpose, self.max_image_pixels)
            except InputError as exc:
                raise InputError(f"image {index}: {exc}") from exc
        return items

    def encode_image(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        truncate_dim: int | None = None,
        batch_size: int | None = None,
        precision: OutputPrecision = "float32",
        exif_transpose: bool = True,
        fetch_urls: bool | FetchPolicy = False,
    ) -> np.ndarray:
        """Embed images.

        Args:
            images: one image or a sequence: paths (str/Path), `data:` URIs, http(s) URLs (only with
                fetch_urls), encoded bytes, binary file objects, PIL images, or HxWx3 uint8 RGB arrays.
            truncate_dim: one of `matryoshka_dims`; None keeps the full width.
            batch_size: images per session call; None: 1 on CPUs (batching does not speed images
                up there, measured), 4 on GPU providers.
            precision: "float32", "float16", or packed sign bits "binary"/"ubinary".
            exif_transpose: apply the EXIF orientation tag (True, what a person sees); False
                reproduces the upstream reference exactly, which ignores it.
            fetch_urls: False refuses URLs; True downloads them with the default FetchPolicy
                (10 s timeout, 32 MB cap, http/https only); a FetchPolicy sets its own limits and hosts.

        Returns:
            (N, D) array in input order: unit-norm float rows, or (N, D/8) packed bytes.
        """
        items = _as_list(images, "image", _is_single_image)
        spec = self._vision_spec()
        check_preprocessing(spec)
        check_precision(precision)
        if batch_size is None:
            batch_size = GPU_IMAGE_BATCH if self.on_gpu else CPU_IMAGE_BATCH
        _check_batch_size(batch_size)
        session = self._session("vision")
        dim = check_truncate_dim(truncate_dim, self.matryoshka_dims, session.variant.output_dim)
        items = self._check_images(items, exif_transpose, _policy(fetch_urls))
        rows = []
        for start in range(0, len(items), batch_size):
            batch = np.empty((len(items[start : start + batch_size]), 3, spec.image_size, spec.image_size), dtype=np.float32)
            for offset, item in enumerate(items[start : start + batch_size]):
                try:
                    batch[offset] = preprocess_image(open_image(item, exif_transpose, self.max_image_pixels), spec)
                except InputError as exc:  # a file that changed since the check
                    raise InputError(f"image {start + offset}: {exc}") from exc
            rows.append(self.run_pixels(batch, batch_size))
        return to_precision(_finish(np.concatenate(rows), dim, session.variant), precision)


def _policy(fetch_urls: bool | FetchPolicy) -> FetchPolicy | None:
    if isinstance(fetch_urls, FetchPolicy):
        return fetch_urls
    return FetchPolicy() if fetch_urls else None


def _check_variant(bundle: Bundle, variant: str) -> None:
    """An unknown variant fails at load(), not at the first encode."""
    towers = [spec for spec in (bundle.manifest.text, bundle.manifest.vision) if spec is not None]
    if not any(variant in spec.variants for spec in towers):
        available = sorted({name for spec in towers for name in spec.variants})
        raise BundleError(f"this bundle has no variant {variant!r}; available: {', '.join(available)}")


def _read_streams(items: list[Any]) -> list[Any]:
    """File objects become bytes, so each image can be decoded twice (checked, then embedded)."""
    out = []
    for index, item in enumerate(items):
        if hasattr(item, "read") and not isinstance(item, (str, os.PathLike, bytes, bytearray)):
            try:
                item = item.read()
            except (OSError, ValueError) as exc:
                raise InputError(f"image {index}: cannot read the given file object: {exc}") from exc
            if not isinstance(item, (bytes, bytearray)):
                raise InputError(f"image {index}: the file object returned {type(item).__name__}; open it in binary mode ('rb')")
        out.append(item)
    return out


def _finish(embeddings: FloatArray, dim: int, variant: Variant) -> FloatArray:
    if variant.normalized and dim == variant.output_dim:
        return embeddings  # the graph already returns unit-norm rows of this width
    return truncate_and_normalize(embeddings, dim)


def _is_single_image(value: Any) -> bool:
    from PIL import Image

    return isinstance(value, (str, os.PathLike, bytes, bytearray, Image.Image, np.ndarray)) or hasattr(value, "read")


def _as_list(value: Any, what: str, is_single: Callable[[Any], bool]) -> list[Any]:
    """One item or an iterable of items -> a non-empty list."""
    if is_single(value):
        return [value]
    if not isinstance(value, Iterable):
        raise InputError(f"expected a {what} or a list of {what}s, got {type(value).__name__}")
    items = list(value)
    if not items:
        raise InputError(f"no {what}s given: pass at least one")
    return items


def _as_texts(value: Any) -> list[str]:
    items = _as_list(value, "text", lambda v: isinstance(v, str))
    for index, item in enumerate(items):
        if not isinstance(item, str):
            hint = "; decode bytes first, e.g. data.decode('utf-8')" if isinstance(item, (bytes, bytearray)) else ""
            raise InputError(f"text {index} is {type(item).__name__}, expected str{hint}")
        try:
            item.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InputError(f"text {index} is not valid Unicode ({exc.reason} at position {exc.start}); "
                             "clean it first, e.g. text.encode('utf-8', 'replace').decode('utf-8')") from exc
    return items


_FP32_WARNED: set[tuple[str, str]] = set()


def _warn_fp32_fallback(bundle: Bundle, tower: Tower) -> None:
    """Once per bundle and tower in a process: a CPU running fp32 because the bundle has no int8 graph."""
    key = (str(bundle.directory), tower)
    if key in _FP32_WARNED:
        return
    _FP32_WARNED.add(key)
    warnings.warn(f"{bundle.directory} has no int8 {tower} graph, so this CPU runs fp32 (several times slower, ~4x the "
                  "memory); rebuild it with `python -m converters build SOURCE --out DIR` (fp32,int8,int8-vnni,int8-vnni-attn by "
                  "default), or pass variant='fp32' (--variant fp32) to choose fp32 and silence this",
                  RuntimeWarning, stacklevel=4)


def preferred_variant(available: Sequence[str], *, on_gpu: bool = False, openvino: bool = False) -> str:
    """The variant edgeclip runs by default among `available`: fp16 on GPU providers; on CPUs int8-vnni where
    the CPU has int8 dot products (VNNI, AMX, ARM dotprod; int8-vnni-attn first for images on AVX-512 VNNI, where it
    was measured), int8 elsewhere;
    fp32-portable on OpenVINO."""
    if openvino:
        return PORTABLE_VARIANT  # the only graph OpenVINO computes correctly; OpenVinoSession says how to build it
    if on_gpu:
        order = GPU_VARIANT_ORDER
    else:
        cpu = cpu_class()
        order = DOT_PRODUCT_CPU_VARIANT_ORDER if cpu in DOT_PRODUCT_CLASSES else CPU_VARIANT_ORDER
        if cpu in INT8_ATTENTION_CLASSES:
            order = ("int8-vnni-attn", *order)
    for name in order:
        if name in available:
            return name
    return sorted(available)[0]


EQUAL_LENGTH_BATCHES = True


def token_budget_batches(lengths: Sequence[int], batch_size: int, max_tokens: int) -> list[list[int]]:
    """Indices grouped into batches of one length each (no padding): sorted by length, a batch is cut when
    it holds `batch_size` rows, when one more row would pass `max_tokens`, or when the length changes.

    Why never pad: a padded batch's attention sums differ from an unpadded one's in their last bits, and int8
    rounding amplifies that (full-size int8, AVX2: up to 5.7e-3 per value, cosine 0.99882); rows of equal
    length batched together differ from each row alone by ~2e-8. So a text embeds the same, to float noise,
    alone, in a resumed job, on Ray or in a server batch. EQUAL_LENGTH_BATCHES = False restores padded batches."""
    batches: list[list[int]] = []
    current: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        # sorted ascending: row i is the longest so far, so the padded size is lengths[i] x rows
        new_length = EQUAL_LENGTH_BATCHES and current and lengths[current[-1]] != lengths[i]
        if current and (len(current) == batch_size or lengths[i] * (len(current) + 1) > max_tokens or new_length):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive int, got {batch_size!r}")


def load(
    bundle_dir: str | Path,
    *,
    variant: str | None = None,
    threads: int | None = None,
    providers: Sequence[str] | None = None,
    max_image_pixels: int = DEFAULT_MAX_PIXELS,
    low_memory: bool = True,
    towers: Sequence[Tower] | None = None,
) -> EdgeClip:
    """Open a bundle. Nothing heavy happens until the first encode call of each tower.

    Args:
        bundle_dir: directory with manifest.json (made by `python -m converters build`), or
            "hf:owner/name[@revision]": the bundle's manifest and only the files of `towers` (default
            both) and `variant` (default: the best for this CPU) are downloaded through
            huggingface_hub's cache (HF_HUB_OFFLINE=1 works from it) and checked against the manifest.
        variant: e.g. "fp32" or "int8"; None picks the best the bundle has here: on CPUs int8-vnni where
            the CPU has int8 dot products (AVX-VNNI, AVX-512 VNNI, AMX, ARM dotprod), else int8; fp16 on
            GPU providers; fp32 otherwise. EDGECLIP_CPU_CLASS overrides the CPU detection.
            A name no tower has raises BundleError here, listing the available ones.
        threads: ONNX Runtime intra-op threads, a positive int (None: one per physical core).
        providers: ONNX Runtime execution providers, checked against the installed ones;
            None means CPUExecutionProvider.
        max_image_pixels: images with more pixels (read from the header, before decoding) raise
            InputError: a guard against decompression bombs. Default 64 MP.
        low_memory: run without ONNX Runtime's memory pattern (lower peak RSS: full-size int8 image
            process ~450 vs ~520 MB, images 0-10 % slower) and give the arena's free memory back after
            each large run (a long-lived process fed varied shapes stays near its base size instead
            of its high-water mark); False favours speed. Same results.
    """
    if isinstance(bundle_dir, str) and bundle_dir.startswith("hf:"):
        from .hub import pull

        bundle_dir = pull(bundle_dir, towers=towers, variants=[variant] if variant else None)
    return EdgeClip(Bundle.open(bundle_dir), variant=variant, threads=threads, providers=providers,
                    max_image_pixels=max_image_pixels, low_memory=low_memory)
