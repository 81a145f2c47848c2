"""Job inputs: line splitting, encodings, JSONL records, folder walks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from edgeclip.jobs import ScanReport, sources
from edgeclip.preprocess import optional_decoders


def test_text_files_split_on_newlines_only_drop_the_bom_and_report_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_bytes("\ufeffone\u2028still one\r\ntwo\x85and\x0cmore\n\n bad \xff line\nlast".encode("utf-8")
                     .replace("\xff".encode("utf-8"), b"\xff"))
    items = list(sources.text_file(str(path)))
    assert [(i.id, i.value, i.error is None) for i in items] == [
        (f"{path}:1", "one\u2028still one", True), (f"{path}:2", "two\x85and\x0cmore", True),
        (f"{path}:4", "", False), (f"{path}:5", "last", True)]
    assert "not valid UTF-8 (byte 0xff at column 6)" in items[2].error  # type: ignore[operator]


def test_jsonl_records_keep_user_ids_and_name_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "docs" / "in.jsonl"
    path.parent.mkdir()
    lines = [{"id": "a", "text": "hello"}, {"id": 7, "image": "pics/x.jpg"}, {"text": "no id"}, "not json {",
             {"id": "b", "text": "x", "image": "y"}, {"id": [1], "text": "x"}, {"id": "c", "image": "data:image/png;base64,AAAA"}]
    path.write_text("\n".join(json.dumps(x) if isinstance(x, dict) else x for x in lines) + "\n\n", encoding="utf-8")
    items = list(sources.jsonl_file(str(path)))
    assert [(i.id, i.kind, i.error is None) for i in items] == [
        ("a", "text", True), ("7", "image", True), (f"{path}:3", "text", True), (f"{path}:4", "text", False),
        ("b", "text", False), (f"{path}:6", "text", False), ("c", "image", True)]
    assert items[1].value == str(path.parent / "pics" / "x.jpg")  # relative to the JSONL file's folder
    assert items[6].value.startswith("data:")
    assert "not valid JSON" in items[3].error and "exactly one of" in items[4].error  # type: ignore[operator]


def test_image_dirs_follow_links_once_and_count_what_they_skip(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    (root / "trip").mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    Image.new("RGB", (8, 8)).save(root / "a.jpg")
    Image.new("RGB", (8, 8)).save(outside / "linked.png")
    Image.new("RGB", (8, 8)).save(root / "trip" / "b.PNG")
    (root / "._a.jpg").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (root / ".hidden.jpg").write_bytes(b"x")
    (root / "notes.txt").write_text("x")
    (root / "phone.heic").write_bytes(b"x")
    os.symlink(outside, root / "link")
    os.symlink(root, root / "trip" / "loop")  # a cycle back to the top
    report = ScanReport()
    found = [i.id for i in sources.image_dir(str(root), report, suffixes=sources.CLASSIC_IMAGE_SUFFIXES)]  # as without pillow-heif
    assert found == [str(root / "a.jpg"), str(root / "link" / "linked.png"), str(root / "trip" / "b.PNG")]
    assert report.hidden == 2 and report.skipped_suffixes == {".txt": 1}
    assert report.unsupported == {".heic": 1}
    assert "1 .heic" in report.lines()[0] and "pillow-heif" in report.lines()[0]
    if optional_decoders()["heif"]:  # with pillow-heif the HEIC file is walked too (and fails to decode later: it is junk)
        assert str(root / "phone.heic") in [i.id for i in sources.image_dir(str(root), ScanReport())]


def test_heic_images_embed_with_pillow_heif(tmp_path: Path) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    import numpy as np

    from edgeclip.preprocess import open_image

    pillow_heif.register_heif_opener()
    path = tmp_path / "phone.heic"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path, format="HEIF")
    assert [i.id for i in sources.image_dir(str(tmp_path), ScanReport())] == [str(path)]
    assert optional_decoders()["heif"] and optional_decoders()["avif"]
    decoded = np.asarray(Image.open(path).convert("RGB"))
    assert np.array_equal(np.asarray(open_image(str(path))), decoded)


def test_fingerprints_change_with_the_input(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(path)
    before = sources.file_fingerprint(path)
    os.utime(path, ns=(1, 1))
    assert sources.file_fingerprint(path) != before
    assert sources.content_fingerprint("a") != sources.content_fingerprint("b")
    assert sources.file_fingerprint(tmp_path / "missing.png") == ""


@pytest.mark.parametrize("name", ["-"])
def test_stdin_is_read_as_bytes(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"first\nsecond\r\n")))
    assert [(i.id, i.value) for i in sources.text_file(name)] == [("stdin:1", "first"), ("stdin:2", "second")]
