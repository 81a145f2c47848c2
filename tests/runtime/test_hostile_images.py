"""Hostile and unusual images: each embeds correctly or raises InputError naming index, path and reason."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import edgeclip
import edgeclip.preprocess as preprocess
from edgeclip.preprocess import open_image, preprocess_image


@pytest.fixture(scope="module")
def model(tiny_bundle: Path) -> edgeclip.EdgeClip:
    return edgeclip.load(tiny_bundle, variant="fp32")


def _photo(width: int = 120, height: int = 90, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, width * height * 3).reshape(height, width, 3)
    return Image.fromarray((base * 0.7 + rng.integers(0, 70, (height, width, 3))).astype(np.uint8))


def _encoded(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR that declares width x height, then one tiny IDAT: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


BAD_FILES = {
    "corrupt.jpg": lambda: b"\xff\xd8\xff\xe0" + bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8)),
    "truncated.jpg": lambda: _encoded(_photo(), "JPEG")[:900],
    "notes.png": lambda: b"this is a text file, not an image\n",
    "empty.jpg": lambda: b"",
    "bomb.png": lambda: _png_claiming(10_000, 9_000),  # over our 64 MP default, under PIL's own limit
    "giant.png": lambda: _png_claiming(100_000, 100_000),  # over PIL's hard limit too
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_raise_before_any_model_compute(model: edgeclip.EdgeClip, tmp_path: Path, name: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    good = tmp_path / "good.png"
    _photo().save(good)
    bad = tmp_path / name
    bad.write_bytes(BAD_FILES[name]())
    session = model._session("vision")
    calls = []
    monkeypatch.setattr(session, "run", lambda feeds: calls.append(feeds) or {})
    with pytest.raises(edgeclip.InputError, match=rf"^image 3: .*{name}") as info:
        model.encode_image([good, good, good, bad, good], batch_size=1)
    assert calls == []  # nothing ran: the bad input was found first
    reason = str(info.value)
    if name == "bomb.png":
        assert "10000x9000 = 90,000,000 pixels, over the limit of 64,000,000" in reason and "max_image_pixels" in reason
    elif name == "giant.png":
        assert "too large to decode safely" in reason and "10000000000 pixels" in reason
    else:
        assert "cannot decode" in reason


def test_pixel_limit_is_configurable(tiny_bundle: Path) -> None:
    image = _encoded(_photo(300, 200), "PNG")
    strict = edgeclip.load(tiny_bundle, variant="fp32", max_image_pixels=50_000)
    with pytest.raises(edgeclip.InputError, match="300x200 = 60,000 pixels, over the limit of 50,000"):
        strict.encode_image(image)
    assert edgeclip.load(tiny_bundle, variant="fp32", max_image_pixels=60_000).encode_image(image).shape == (1, 64)
    with pytest.raises(ValueError, match="max_image_pixels must be a positive int"):
        edgeclip.load(tiny_bundle, max_image_pixels=0)


def _same_embedding(model: edgeclip.EdgeClip, a: object, b: object, atol: float = 1e-5) -> None:
    np.testing.assert_allclose(model.encode_image(a), model.encode_image(b), atol=atol)


def test_modes_embed_like_their_rgb_meaning(model: edgeclip.EdgeClip) -> None:
    photo = _photo()
    cmyk = _encoded(photo.convert("CMYK"), "JPEG", quality=95)
    _same_embedding(model, cmyk, Image.open(io.BytesIO(cmyk)).convert("RGB"))
    gray16 = np.asarray(photo.convert("L"), dtype=np.uint16) * 257  # 16-bit: 8-bit value v -> v * 257
    png16 = _encoded(Image.fromarray(gray16), "PNG")
    assert Image.open(io.BytesIO(png16)).mode.startswith("I")
    _same_embedding(model, png16, photo.convert("L").convert("RGB"))  # not clipped to white
    la = photo.convert("LA")
    _same_embedding(model, _encoded(la, "PNG"), photo.convert("L").convert("RGB"))
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the transparency is dropped on purpose, silently
        rows = model.encode_image(_encoded(palette, "PNG", transparency=0))
    assert np.isfinite(rows).all() and abs(np.linalg.norm(rows) - 1) < 1e-5


def test_animated_gif_uses_its_first_frame(model: edgeclip.EdgeClip) -> None:
    frames = [_photo(seed=s).convert("P") for s in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    first = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")  # frame 0 as decoded
    _same_embedding(model, buffer.getvalue(), first)
    assert not np.allclose(model.encode_image(buffer.getvalue()), model.encode_image(frames[1].convert("RGB")), atol=1e-3)


# What each EXIF orientation means, as numpy operations on the stored (H, W, 3) pixels.
ORIENTATIONS = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, k=-1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, k=1),
}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_every_exif_orientation_is_applied(orientation: int) -> None:
    stored = np.asarray(_photo(40, 24))
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _encoded(Image.fromarray(stored), "PNG", exif=exif)
    shown = np.asarray(open_image(data))
    np.testing.assert_array_equal(shown, ORIENTATIONS[orientation](stored))
    np.testing.assert_array_equal(np.asarray(open_image(data, exif_transpose=False)), stored)


def test_strips_embed_without_huge_intermediates(model: edgeclip.EdgeClip, tiny_bundle: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for size in ((1, 60_000), (60_000, 1), (2, 9000)):
        rows = model.encode_image(Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)))
        assert np.isfinite(rows).all() and abs(np.linalg.norm(rows) - 1) < 1e-5
    # The window-only resample stays close to resize-then-crop where both can run.
    spec = edgeclip.Bundle.open(tiny_bundle).manifest.vision
    strip = Image.fromarray(np.random.default_rng(0).integers(0, 256, (900, 10, 3), dtype=np.uint8))
    exact = preprocess_image(strip, spec)
    monkeypatch.setattr(preprocess, "_FULL_RESIZE_LIMIT", 0)
    windowed = preprocess_image(strip, spec)
    level = 1 / 255 / min(spec.std)  # one 8-bit level in normalized units
    assert np.abs(exact - windowed).mean() < 1 * level and np.abs(exact - windowed).max() < 30 * level


VALID = {fmt: _encoded(_photo(64, 48), fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "WEBP")}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(
    st.binary(max_size=2000),
    st.tuples(st.sampled_from(sorted(VALID)), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8)),
))
def test_random_and_mutated_bytes_embed_or_raise_input_error(model: edgeclip.EdgeClip, data: object) -> None:
    if isinstance(data, tuple):
        fmt, edits = data
        mutated = bytearray(VALID[fmt])
        for position, value in edits:
            mutated[position % len(mutated)] = value
        data = bytes(mutated)
    try:
        rows = model.encode_image(data)
    except edgeclip.InputError as exc:
        assert str(exc).startswith("image 0: ")
    else:
        assert rows.shape == (1, 64) and np.isfinite(rows).all()


def test_integer_images_holding_8_bit_values_match_upstreams_conversion(tiny_bundle: Path) -> None:
    """Upstream's convert("RGB") keeps values <= 255 as they are (and saturates larger ones)."""
    values = np.random.default_rng(1).integers(0, 256, (40, 50)).astype(np.uint16)
    upstream = Image.fromarray(values.astype(np.uint8)).convert("RGB")
    for image in (Image.fromarray(values), Image.fromarray(values.astype(np.int32), mode="I")):
        assert image.mode in ("I;16", "I")
        assert np.array_equal(np.asarray(open_image(image)), np.asarray(upstream))
    wide = Image.fromarray(values * 257)  # real 16-bit data: scaled to 8 bits, not saturated
    assert np.array_equal(np.asarray(open_image(wide))[..., 0], values.astype(np.uint8))


def test_an_over_long_path_is_an_input_error(model: edgeclip.EdgeClip) -> None:
    with pytest.raises(edgeclip.InputError, match="image 0: cannot open image file"):
        model.encode_image(["x" * 5000 + ".jpg"])
