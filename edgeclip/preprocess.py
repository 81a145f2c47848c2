"""Images -> (N, 3, S, S) float32 pixel tensors, exactly like the reference's torchvision transform.

Reference (upstream eval transform on a PIL image): Resize(S, bicubic) -> CenterCrop(S) -> ToTensor
-> Normalize(mean, std). Here: PIL's own bicubic resize (what torchvision calls for PIL input),
torchvision's size and crop-offset arithmetic, then numpy. Pure functions first, then the pipeline.
"""

from __future__ import annotations

import functools
import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ._types import FloatArray, ImageInput
from .bundle import VisionSpec
from .errors import InputError
from .fetch import FetchPolicy, image_reference

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC}
# Decompression-bomb guard, checked from the header before decoding: 64 MP is a 9000x7000 photo.
DEFAULT_MAX_PIXELS = 64_000_000
# Above this many resized pixels (a 1xN strip becomes 512 x 512N) only the crop window is resampled.
_FULL_RESIZE_LIMIT = 16_000_000
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


def shortest_side_size(width: int, height: int, target: int) -> tuple[int, int]:
    """(new_width, new_height) with the shorter side = target; the longer side is truncated, as torchvision does."""
    if width <= height:
        return target, int(target * height / width)
    return int(target * width / height), target


def center_crop_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """torchvision CenterCrop offsets: int(round((dim - size) / 2)), Python's round-half-to-even."""
    left = int(round((width - size) / 2.0))
    top = int(round((height - size) / 2.0))
    return left, top, left + size, top + size


def to_normalized_chw(image: Image.Image, mean: Sequence[float], std: Sequence[float]) -> FloatArray:
    """uint8 HWC RGB -> float32 CHW, scaled to [0, 1] then (x - mean) / std per channel."""
    pixels = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    pixels = (pixels - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


@functools.lru_cache(maxsize=1)
def optional_decoders() -> dict[str, bool]:
    """Formats past the classic ones that this install decodes: HEIC/HEIF with pillow-heif (the `heif`
    extra; its opener is registered on first use), AVIF natively (Pillow >= 11.3) or through pillow-heif."""
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
        heif = True
    except ImportError:
        heif = False
    from PIL import features

    return {"heif": heif, "avif": bool(features.check("avif")) or heif}


def open_image(source: ImageInput, exif_transpose: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS,
               fetch: FetchPolicy | None = None) -> Image.Image:
    """Any accepted input -> an RGB PIL image (fully decoded; files are closed).

    exif_transpose=True applies the EXIF orientation tag (what a person sees); False matches the
    upstream reference, which ignores it. Animated files give their first frame; alpha is dropped
    (as the reference's convert("RGB") does); 16-bit images are scaled to 8 bits. A str may be a
    `data:` URI, or an http(s) URL when `fetch` allows it.
    """
    if isinstance(source, str):
        fetched = image_reference(source, fetch)
        if fetched is not None:
            source = fetched
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim != 3 or source.shape[2] != 3:
            raise InputError(f"an image array must be HxWx3 uint8, got shape {source.shape} dtype {source.dtype}")
        image = Image.fromarray(source, mode="RGB")
    elif isinstance(source, (bytes, bytearray)):
        image = _decode(io.BytesIO(source), "the given bytes", max_pixels)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        shown = repr(str(path)) if len(str(path)) <= 200 else repr(str(path)[:197] + "...")
        try:
            if path.is_dir():
                raise InputError(f"image path {shown} is a directory, not an image file (the CLI's --image-dir embeds "
                                 "the images inside a directory)")
            handle = open(path, "rb")
        except FileNotFoundError as exc:
            raise InputError(f"image file {shown} does not exist") from exc
        except OSError as exc:  # name too long, permission denied, ...
            raise InputError(f"cannot open image file {shown}: {exc.strerror or exc}") from exc
        with handle:
            image = _decode(handle, shown, max_pixels)
    elif hasattr(source, "read"):
        image = _decode(source, "the given file object", max_pixels)
    else:
        raise InputError(
            f"unsupported image input of type {type(source).__name__}; pass a path, bytes, a binary file, "
            "a PIL image or an HxWx3 uint8 array"
        )
    _check_pixels(image.width, image.height, max_pixels, "the image")
    if exif_transpose:
        image = ImageOps.exif_transpose(image)
    if image.mode in _SIXTEEN_BIT_MODES:
        image = _eight_bit(image)
    with warnings.catch_warnings():  # palette transparency is dropped on purpose, like the reference
        warnings.filterwarnings("ignore", "Palette images with Transparency", UserWarning)
        return image.convert("RGB")


def _eight_bit(image: Image.Image) -> Image.Image:
    """Integer modes (I, I;16...) -> L. Values that fit in 8 bits are kept as they are, which is what the
    reference's convert("RGB") gives for them; real 16-bit data is scaled by 1/257, where the
    reference would saturate everything above 255 to white."""
    values = np.asarray(image)
    if values.size and 0 <= values.min() and values.max() <= 255:
        return Image.fromarray(values.astype(np.uint8))
    return Image.fromarray((values.astype(np.float64) / 257.0).clip(0, 255).round().astype(np.uint8))


def _check_pixels(width: int, height: int, max_pixels: int, what: str) -> None:
    if width < 1 or height < 1:
        raise InputError(f"{what} is {width}x{height}: it has no pixels")
    if width * height > max_pixels:
        raise InputError(f"{what} is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,} "
                         "(a decompression-bomb guard); pass max_image_pixels= to raise it for inputs you trust")


def _decode(stream, what: str, max_pixels: int) -> Image.Image:  # noqa: ANN001 - any binary file-like object
    optional_decoders()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit below decides
            image = Image.open(stream)
        _check_pixels(image.width, image.height, max_pixels, what)  # from the header, before decoding
        image.load()  # decode now, while the file is open, so errors surface here
    except Image.DecompressionBombError as exc:  # PIL's own hard limit (2 x PIL.Image.MAX_IMAGE_PIXELS)
        raise InputError(f"{what} is too large to decode safely ({exc}); images this large also need "
                         "PIL.Image.MAX_IMAGE_PIXELS raised") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        hint = "is it a complete JPEG/PNG/WebP/GIF/BMP/TIFF/AVIF file?"
        if not optional_decoders()["heif"]:
            hint += " HEIC needs pip install pillow-heif"
        raise InputError(f"cannot decode {what} as an image ({type(exc).__name__}: {exc}); {hint}") from exc
    return image


def check_preprocessing(spec: VisionSpec) -> None:
    if spec.interpolation not in _RESAMPLE or spec.resize_mode != "shortest" or spec.crop != "center":
        raise InputError(f"bundle asks for {spec.resize_mode}/{spec.interpolation}/{spec.crop} preprocessing, which this edgeclip does not implement")


def preprocess_image(image: Image.Image, spec: VisionSpec) -> FloatArray:
    """One RGB image -> (3, S, S) float32."""
    size = spec.image_size
    new_size = shortest_side_size(image.width, image.height, size)
    resample = _RESAMPLE[spec.interpolation]
    if new_size[0] * new_size[1] > _FULL_RESIZE_LIMIT:
        # Extreme aspect ratios (beyond ~1:61): resample only the crop window (plus a margin, as PIL
        # clamps filter support at the box edge) instead of a 512 x 30000+ intermediate. PIL's box
        # resize rounds its coefficients differently: pixels differ from resize-then-crop by ~0.4/255
        # on average (at most ~25/255); the reference itself would need gigabytes here.
        left, top, right, bottom = center_crop_box(*new_size, size)
        margin = 16
        box = (max(left - margin, 0), max(top - margin, 0), min(right + margin, new_size[0]), min(bottom + margin, new_size[1]))
        sx, sy = image.width / new_size[0], image.height / new_size[1]
        window = image.resize((box[2] - box[0], box[3] - box[1]), resample,
                              box=(box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy))
        image = window.crop((left - box[0], top - box[1], left - box[0] + size, top - box[1] + size))
        return to_normalized_chw(image, spec.mean, spec.std)
    if new_size != image.size:
        image = image.resize(new_size, resample)
    if image.size != (size, size):
        image = image.crop(center_crop_box(image.width, image.height, size))
    return to_normalized_chw(image, spec.mean, spec.std)


def preprocess_images(images: Sequence[ImageInput], spec: VisionSpec, exif_transpose: bool = True,
                      max_pixels: int = DEFAULT_MAX_PIXELS, fetch: FetchPolicy | None = None) -> FloatArray:
    """Inputs -> (N, 3, S, S) float32; an InputError names the index of the first bad input."""
    check_preprocessing(spec)
    batch = np.empty((len(images), 3, spec.image_size, spec.image_size), dtype=np.float32)
    for index, source in enumerate(images):
        try:
            batch[index] = preprocess_image(open_image(source, exif_transpose, max_pixels, fetch), spec)
        except InputError as exc:
            raise InputError(f"image {index}: {exc}") from exc
    return batch
