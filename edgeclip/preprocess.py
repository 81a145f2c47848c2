"""Images -> (N, 3, S, S) float32 pixel tensors, exactly like the reference's torchvision transform.

Reference (upstream eval transform on a PIL image): Resize(S, bicubic) -> CenterCrop(S) -> ToTensor
-> Normalize(mean, std). Here: PIL's own bicubic resize (what torchvision calls for PIL input),
torchvision's size and crop-offset arithmetic, then numpy. Pure functions first, then the pipeline.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ._types import FloatArray, ImageInput
from .bundle import VisionSpec
from .errors import InputError

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC}


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


def open_image(source: ImageInput, exif_transpose: bool = True) -> Image.Image:
    """Any accepted input -> an RGB PIL image (fully decoded; files are closed).

    exif_transpose=True applies the EXIF orientation tag (what a person sees); False matches the
    upstream reference, which ignores it.
    """
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim != 3 or source.shape[2] != 3:
            raise InputError(f"an image array must be HxWx3 uint8, got shape {source.shape} dtype {source.dtype}")
        image = Image.fromarray(source, mode="RGB")
    elif isinstance(source, (bytes, bytearray)):
        image = _decode(io.BytesIO(source), "the given bytes")
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"image file {str(path)!r} does not exist")
        with open(path, "rb") as handle:
            image = _decode(handle, repr(str(path)))
    elif hasattr(source, "read"):
        image = _decode(source, "the given file object")
    else:
        raise InputError(
            f"unsupported image input of type {type(source).__name__}; pass a path, bytes, a binary file, "
            "a PIL image or an HxWx3 uint8 array"
        )
    if exif_transpose:
        image = ImageOps.exif_transpose(image)
    return image.convert("RGB")


def _decode(stream, what: str) -> Image.Image:  # noqa: ANN001 - any binary file-like object
    try:
        image = Image.open(stream)
        image.load()  # decode now, while the file is open, so errors surface here
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"cannot decode {what} as an image: {exc}") from exc
    return image


def preprocess_image(image: Image.Image, spec: VisionSpec) -> FloatArray:
    """One RGB image -> (3, S, S) float32."""
    size = spec.image_size
    new_size = shortest_side_size(image.width, image.height, size)
    if new_size != image.size:
        image = image.resize(new_size, _RESAMPLE[spec.interpolation])
    if image.size != (size, size):
        image = image.crop(center_crop_box(image.width, image.height, size))
    return to_normalized_chw(image, spec.mean, spec.std)


def preprocess_images(images: Sequence[ImageInput], spec: VisionSpec, exif_transpose: bool = True) -> FloatArray:
    """Inputs -> (N, 3, S, S) float32; an InputError names the index of the first bad input."""
    if spec.interpolation not in _RESAMPLE or spec.resize_mode != "shortest" or spec.crop != "center":
        raise InputError(f"bundle asks for {spec.resize_mode}/{spec.interpolation}/{spec.crop} preprocessing, which this edgeclip does not implement")
    batch = np.empty((len(images), 3, spec.image_size, spec.image_size), dtype=np.float32)
    for index, source in enumerate(images):
        try:
            batch[index] = preprocess_image(open_image(source, exif_transpose), spec)
        except InputError as exc:
            raise InputError(f"image {index}: {exc}") from exc
    return batch
