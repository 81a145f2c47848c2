"""Image preprocessing against pixel values worked out by hand (or by PIL run here, with sizes and
offsets written as literals), never by the code under test."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeclip.bundle import VisionSpec
from edgeclip.errors import InputError
from edgeclip.preprocess import center_crop_box, open_image, preprocess_image, preprocess_images, shortest_side_size

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
SPEC = VisionSpec(512, "shortest", "bicubic", "center", tuple(MEAN.tolist()), tuple(STD.tolist()), "cls", {})  # type: ignore[arg-type]


def normalized(rgb_uint8: np.ndarray) -> np.ndarray:
    """HWC uint8 -> CHW float32, written out once more for the expected side."""
    return ((rgb_uint8.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)


@pytest.mark.parametrize("width,height", [(800, 600), (600, 800), (512, 512), (20, 30), (513, 777), (3000, 601), (1, 700)],
                         ids=["landscape", "portrait", "square", "tiny", "odd", "wide", "strip"])
def test_constant_images_stay_constant(width: int, height: int) -> None:
    colour = (200, 30, 117)
    out = preprocess_image(Image.new("RGB", (width, height), colour), SPEC)
    assert out.shape == (3, 512, 512) and out.dtype == np.float32
    expected = (np.array(colour, dtype=np.float32) / 255.0 - MEAN) / STD
    np.testing.assert_allclose(out.reshape(3, -1), np.repeat(expected[:, None], 512 * 512, axis=1), atol=1e-6)


def _column_coded(width: int, height: int) -> np.ndarray:
    """R = x % 256, G = x // 256, B = y % 256: every pixel says where it came from."""
    x = np.arange(width)[None, :].repeat(height, 0)
    y = np.arange(height)[:, None].repeat(width, 1)
    return np.stack([x % 256, x // 256, y % 256], axis=-1).astype(np.uint8)


def test_landscape_without_resize_is_center_cropped() -> None:
    # 1024x512: shorter side already 512, so no resize; left = (1024 - 512) / 2 = 256.
    source = _column_coded(1024, 512)
    out = preprocess_image(Image.fromarray(source), SPEC)
    np.testing.assert_array_equal(out, normalized(source[:, 256:768]))


@pytest.mark.parametrize("height,top", [(1025, 256), (1027, 258), (513, 0), (515, 2)])
def test_portrait_crop_rounds_half_to_even(height: int, top: int) -> None:
    # (1025-512)/2 = 256.5 -> 256; (1027-512)/2 = 257.5 -> 258; 0.5 -> 0; 1.5 -> 2 (torchvision's round()).
    source = _column_coded(512, height)
    out = preprocess_image(Image.fromarray(source), SPEC)
    np.testing.assert_array_equal(out, normalized(source[top : top + 512]))


@pytest.mark.parametrize(
    "size,resized,box",
    [
        ((1000, 750), (682, 512), (85, 0)),  # 512*1000/750 = 682.67 -> 682 (truncated); left = 85
        ((750, 1000), (512, 682), (0, 85)),
        ((20, 30), (512, 768), (0, 128)),  # upscaled tiny image
        ((333, 777), (512, 1194), (0, 341)),  # 512*777/333 = 1194.6 -> 1194; top = 341
    ],
)
def test_resize_then_crop_matches_pil_run_here(size: tuple[int, int], resized: tuple[int, int], box: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    source = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    expected = np.asarray(source.resize(resized, Image.Resampling.BICUBIC))[box[1] : box[1] + 512, box[0] : box[0] + 512]
    np.testing.assert_array_equal(preprocess_image(source, SPEC), normalized(expected))


def test_size_and_offset_arithmetic() -> None:
    assert shortest_side_size(1000, 750, 512) == (682, 512)
    assert shortest_side_size(512, 512, 512) == (512, 512)
    assert center_crop_box(683, 512, 512) == (86, 0, 598, 512)  # 85.5 -> 86 (even)


def _png_with_orientation(pixels: np.ndarray, orientation: int) -> bytes:
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", exif=exif.tobytes())  # PNG: lossless, so pixels compare exactly
    return buffer.getvalue()


def test_exif_orientation_is_applied_by_default_and_can_be_turned_off() -> None:
    pixels = _column_coded(600, 512)
    data = _png_with_orientation(pixels, 6)  # 6: the stored image must be rotated 90 deg clockwise to view
    upright = np.rot90(pixels, k=-1)  # clockwise
    np.testing.assert_array_equal(np.asarray(open_image(data)), upright)
    np.testing.assert_array_equal(np.asarray(open_image(data, exif_transpose=False)), pixels)


def test_every_input_kind_gives_the_same_pixels(tmp_path: Path) -> None:
    pixels = _column_coded(640, 520)
    path = tmp_path / "img.png"
    Image.fromarray(pixels).save(path)
    data = path.read_bytes()
    inputs = [str(path), path, data, io.BytesIO(data), Image.fromarray(pixels), pixels, Image.fromarray(pixels).convert("RGBA")]
    batch = preprocess_images(inputs, SPEC)
    for row in batch[1:]:
        np.testing.assert_array_equal(row, batch[0])


def test_grayscale_and_palette_become_rgb() -> None:
    gray = Image.new("L", (600, 600), 90)
    out = preprocess_image(open_image(gray), SPEC)
    np.testing.assert_allclose(out[:, 0, 0], (90 / 255.0 - MEAN) / STD, atol=1e-6)


def test_bad_inputs_name_their_index(tmp_path: Path) -> None:
    good = Image.new("RGB", (10, 10))
    with pytest.raises(InputError, match="image 1: cannot decode"):
        preprocess_images([good, b"not an image"], SPEC)
    with pytest.raises(InputError, match="image 0: image file .* does not exist"):
        preprocess_images([str(tmp_path / "missing.jpg")], SPEC)
    with pytest.raises(InputError, match="HxWx3 uint8"):
        preprocess_images([np.zeros((4, 4), np.float32)], SPEC)
    with pytest.raises(InputError, match="unsupported image input of type int"):
        preprocess_images([3], SPEC)  # type: ignore[list-item]
