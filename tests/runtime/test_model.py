"""EdgeClip end to end on the tiny bundle, against the PyTorch reference and hand-made expectations."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tokenizers import Tokenizer

import edgeclip
from edgeclip.errors import BundleError, InputError

# One sentence per script: Latin, Cyrillic, Greek, Arabic, Hebrew, Devanagari, Bengali, Tamil, Thai,
# Han, Kana, Hangul, Georgian, Ethiopic.
SCRIPTS = {
    "en": "A small seal resting on a rock by the sea.",
    "ru": "Маленький котёнок спит на подоконнике.",
    "el": "Μια μικρή γάτα κοιμάται στο παράθυρο.",
    "ar": "قطة صغيرة نائمة بجانب النافذة.",
    "he": "חתול קטן ישן ליד החלון.",
    "hi": "एक छोटी बिल्ली खिड़की के पास सो रही है।",
    "bn": "একটি ছোট বিড়াল জানালার পাশে ঘুমাচ্ছে।",
    "ta": "ஒரு சிறிய பூனை ஜன்னல் அருகே தூங்குகிறது.",
    "th": "แมวตัวเล็กนอนหลับอยู่ข้างหน้าต่าง",
    "zh": "一只小海豹躺在海边的岩石上。",
    "ja": "小さな猫が窓のそばで眠っています。",
    "ko": "작은 고양이가 창가에서 자고 있어요.",
    "ka": "პატარა კატა ფანჯარასთან სძინავს.",
    "am": "ትንሽ ድመት በመስኮቱ አጠገብ ተኝታለች።",
}


@pytest.fixture(scope="module")
def model(tiny_bundle: Path) -> edgeclip.EdgeClip:
    return edgeclip.load(tiny_bundle, threads=1)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_text_matches_the_reference_in_many_scripts(model: edgeclip.EdgeClip, tiny_checkpoint: Path) -> None:
    torch = pytest.importorskip("torch")
    from converters.checkpoint import load_reference, resolve_source

    reference = load_reference(resolve_source(str(tiny_checkpoint)), "text")
    tokenizer = Tokenizer.from_file(str(tiny_checkpoint / "tokenizer.json"))
    texts = list(SCRIPTS.values())
    ours = model.encode_text(texts, batch_size=5)
    for text, row in zip(texts, ours):
        ids = torch.tensor([tokenizer.encode(text).ids])
        assert ids[0, 0] == 0 and ids[0, -1] == 2
        with torch.no_grad():
            expected = _unit(reference(ids).numpy())[0]
        assert np.abs(row - expected).max() <= 1e-4, text
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def _reference_pixels(image: Image.Image) -> np.ndarray:
    """The upstream transform written out in the test with hand-derived sizes (see test_preprocess)."""
    w, h = image.size
    new = (512, int(512 * h / w)) if w <= h else (int(512 * w / h), 512)
    resized = image.resize(new, Image.Resampling.BICUBIC) if new != (w, h) else image
    left, top = int(round((new[0] - 512) / 2)), int(round((new[1] - 512) / 2))
    crop = np.asarray(resized, dtype=np.float32)[top : top + 512, left : left + 512] / 255.0
    mean = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
    std = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
    return ((crop - mean) / std).transpose(2, 0, 1)[None]


def test_images_match_the_reference_at_many_sizes(model: edgeclip.EdgeClip, tiny_checkpoint: Path) -> None:
    torch = pytest.importorskip("torch")
    from converters.checkpoint import load_reference, resolve_source

    reference = load_reference(resolve_source(str(tiny_checkpoint)), "vision")
    rng = np.random.default_rng(7)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in
              [(640, 480), (480, 640), (512, 512), (100, 60), (1037, 513), (300, 900)]]
    ours = model.encode_image(images, batch_size=4)
    for image, row in zip(images, ours):
        with torch.no_grad():
            expected = _unit(reference(torch.from_numpy(_reference_pixels(image))).numpy())[0]
        assert np.abs(row - expected).max() <= 1e-4, image.size


def test_padded_batches_equal_one_by_one(model: edgeclip.EdgeClip) -> None:
    texts = list(SCRIPTS.values()) + ["short", "a much longer text " * 20]
    together = model.encode_text(texts, batch_size=16)
    alone = np.concatenate([model.encode_text([t]) for t in texts])
    assert np.abs(together - alone).max() <= 1e-5
    # Sorting by length for batching must not reorder the output.
    reordered = model.encode_text(texts[::-1], batch_size=3)[::-1]
    assert np.abs(reordered - together).max() <= 1e-5


def test_matryoshka_dims_are_slice_then_normalize(model: edgeclip.EdgeClip) -> None:
    texts = ["one", "two words", "three small words"]
    full = model.encode_text(texts)
    raw = model._session("text").run(model._text_tokenizer().pad(model._text_tokenizer().encode(texts, 512)).__dict__)["text_embeds"]
    for dim in model.matryoshka_dims:
        out = model.encode_text(texts, truncate_dim=dim)
        assert out.shape == (3, dim)
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
        np.testing.assert_allclose(out, _unit(full[:, :dim]), atol=1e-6)
        np.testing.assert_allclose(out, _unit(raw[:, :dim]), atol=1e-6)
    with pytest.raises(ValueError, match=r"truncate_dim must be one of \[16, 32, 64\]"):
        model.encode_text(texts, truncate_dim=48)
    image_out = model.encode_image(Image.new("RGB", (600, 400), (10, 200, 30)), truncate_dim=16)
    assert image_out.shape == (1, 16)


def test_query_task_adds_the_manifest_prefix(model: edgeclip.EdgeClip) -> None:
    prefix = "Represent the query for retrieving evidence documents: "
    with_task = model.encode_text("beach at sunset", task="retrieval.query")
    by_hand = model.encode_text(prefix + "beach at sunset")
    assert np.abs(with_task - by_hand).max() <= 1e-6
    assert np.abs(with_task - model.encode_text("beach at sunset")).max() > 1e-3
    with pytest.raises(InputError, match="unknown task 'retrieval.passage'; this model knows: 'retrieval.query'"):
        model.encode_text("x", task="retrieval.passage")


def test_long_texts_are_truncated_to_max_length(model: edgeclip.EdgeClip) -> None:
    tokenizer = model._text_tokenizer()
    long_text = " ".join(SCRIPTS.values()) * 30
    rows = tokenizer.encode([long_text], 512)
    assert len(rows[0]) == 512 and rows[0][0] == 0 and rows[0][-1] == 2
    assert len(tokenizer.encode([long_text], 8192)[0]) > 512
    # Default 512 equals asking for 512; asking for 16 differs.
    default = model.encode_text(long_text)
    assert np.abs(default - model.encode_text(long_text, max_length=512)).max() == 0
    assert np.abs(default - model.encode_text(long_text, max_length=16)).max() > 1e-3
    with pytest.raises(InputError, match=r"max_length must be an int in \[2, 8192\]"):
        model.encode_text("x", max_length=9000)


def test_output_precisions(model: edgeclip.EdgeClip) -> None:
    texts = ["alpha", "beta gamma"]
    full = model.encode_text(texts)
    half = model.encode_text(texts, precision="float16")
    assert half.dtype == np.float16 and np.abs(half.astype(np.float32) - full).max() < 1e-3
    ubits = model.encode_text(texts, precision="ubinary")
    bits = model.encode_text(texts, precision="binary")
    assert ubits.dtype == np.uint8 and ubits.shape == (2, 64 // 8)
    assert bits.dtype == np.int8 and np.array_equal(bits.astype(np.int16) + 128, ubits)
    # Bit d of the packed row is sign(full[d] > 0), most significant bit first.
    unpacked = np.unpackbits(ubits, axis=1)
    assert np.array_equal(unpacked.astype(bool), full > 0)
    with pytest.raises(InputError, match="precision must be one of"):
        model.encode_text(texts, precision="int4")  # type: ignore[arg-type]


def test_similarity_helper() -> None:
    a = np.array([[3.0, 4.0], [1.0, 0.0]])
    b = np.array([[0.0, 2.0]])
    np.testing.assert_allclose(edgeclip.similarity(a, b), [[0.8], [0.0]], atol=1e-6)
    np.testing.assert_allclose(edgeclip.similarity(a, b, metric="dot"), [[8.0], [0.0]], atol=1e-6)
    with pytest.raises(InputError, match="widths differ"):
        edgeclip.similarity(a, np.ones((1, 3)))


def test_sessions_open_lazily_per_tower(tiny_bundle: Path) -> None:
    model = edgeclip.load(tiny_bundle)
    assert model._sessions == {}
    model.encode_text("only text")
    assert set(model._sessions) == {"text"}


def test_low_memory_switches_only_the_memory_pattern(tiny_bundle: Path) -> None:
    """low_memory (the default) drops ORT's memory pattern for a lower peak RSS; results are identical."""
    image = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    rows = {}
    for low_memory in (True, False):
        model = edgeclip.load(tiny_bundle, low_memory=low_memory)
        rows[low_memory] = (model.encode_text(["a seal", "zwei Robben am Strand"]), model.encode_image([image]))
        for session in model._sessions.values():
            assert session.session.get_session_options().enable_mem_pattern is (not low_memory)
    for fast, lean in zip(rows[False], rows[True]):
        np.testing.assert_array_equal(fast, lean)


def test_single_tower_bundle(tiny_checkpoint: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from converters.build import BuildOptions, build_bundle

    build_bundle(str(tiny_checkpoint), tmp_path / "text_only", BuildOptions(towers=("text",)))
    model = edgeclip.load(tmp_path / "text_only")
    assert model.encode_text("works").shape == (1, 64)
    with pytest.raises(BundleError, match="no vision tower"):
        model.encode_image(Image.new("RGB", (8, 8)))


def test_input_errors(model: edgeclip.EdgeClip, tiny_bundle: Path) -> None:
    with pytest.raises(InputError, match="no texts given"):
        model.encode_text([])
    with pytest.raises(InputError, match="text 1 is int, expected str"):
        model.encode_text(["ok", 5])  # type: ignore[list-item]
    with pytest.raises(InputError, match="image 5: cannot decode"):
        model.encode_image([Image.new("RGB", (8, 8))] * 5 + [io.BytesIO(b"junk")], batch_size=2)
    with pytest.raises(BundleError, match="NoSuch.*not available"):
        edgeclip.load(tiny_bundle, providers=["NoSuchExecutionProvider"])
    with pytest.raises(BundleError, match="no variant 'int8'; available: fp32"):
        edgeclip.load(tiny_bundle, variant="int8").encode_text("x")


def test_a_literal_pad_token_is_masked_like_upstream(model: edgeclip.EdgeClip, tiny_checkpoint: Path) -> None:
    """Upstream builds the mask as input_ids != pad_token_id; our reference does the same by default."""
    torch = pytest.importorskip("torch")
    from converters.checkpoint import load_reference, resolve_source

    reference = load_reference(resolve_source(str(tiny_checkpoint)), "text")
    tokenizer = Tokenizer.from_file(str(tiny_checkpoint / "tokenizer.json"))
    text = "hello <pad> world"
    ids = tokenizer.encode(text).ids
    assert 1 in ids[1:-1]  # the pad id sits inside the text
    batch = model._text_tokenizer().pad([ids])
    assert batch.attention_mask.tolist() == [[int(i != 1) for i in ids]]
    with torch.no_grad():
        expected = _unit(reference(torch.tensor([ids])).numpy())
    for rows in (model.encode_text([text]), model.encode_text([text, "a much longer neighbour text " * 3])[:1]):
        assert np.abs(rows - expected).max() <= 1e-4


def test_token_budget_batches_cap_rows_and_padded_tokens() -> None:
    from edgeclip.model import token_budget_batches

    lengths = np.random.default_rng(3).integers(2, 700, 300).tolist() + [5000]  # one row longer than the budget
    batches = token_budget_batches(lengths, 32, 2048)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # every row once
    assert [lengths[i] for b in batches for i in b] == sorted(lengths)  # cut from length-sorted rows
    for batch in batches:
        padded = max(lengths[i] for i in batch) * len(batch)
        assert len(batch) <= 32 and (padded <= 2048 or len(batch) == 1)
    assert [5000] in [[lengths[i] for i in b] for b in batches]  # the long row alone
    assert all(len({lengths[i] for i in b}) == 1 for b in batches)  # one length per batch: nothing is padded
    assert len(token_budget_batches([16] * 100, 32, 2048)) == 4  # short queries: full batches of 32


def test_a_cpu_falling_back_to_fp32_is_warned_once(tiny_bundle: Path) -> None:
    """The tiny test bundle has only fp32 graphs: a CPU picking fp32 for want of int8 is told, once per
    bundle and tower; asking for fp32 is not warned."""
    import warnings

    from edgeclip import model as model_module

    model_module._FP32_WARNED.clear()
    with pytest.warns(RuntimeWarning, match="has no int8 text graph, so this CPU runs fp32") as caught:
        edgeclip.load(tiny_bundle).encode_text(["a"])
        edgeclip.load(tiny_bundle).encode_text(["b"])
    assert sum("no int8" in str(w.message) for w in caught) == 1
    model_module._FP32_WARNED.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        edgeclip.load(tiny_bundle, variant="fp32").encode_text(["a"])
