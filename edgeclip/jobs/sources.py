"""Where a job's inputs come from: each source yields Items lazily, with an id and a fingerprint.

Ids: `--text[3]`, `notes.txt:12` (1-based line), the image path as found, or the user's own id from
JSONL input. Fingerprints let a rerun skip what is already embedded: size and mtime for files
(cheap: one stat), a hash of the content for texts, URLs and data: URIs.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

from ..fetch import is_data_uri, is_url
from ..preprocess import optional_decoders

Kind = Literal["text", "image"]
STDIN = "-"
STDIN_ID_PREFIX = "stdin:"  # ids of --text-file - lines: stdin:1, stdin:2, ...
CLASSIC_IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
HEIF_SUFFIXES = frozenset({".heic", ".heif"})
AVIF_SUFFIXES = frozenset({".avif"})


@dataclass(frozen=True)
class Item:
    """One input of a job. `error` marks an input that cannot even be read (a bad line): it is reported, never embedded."""

    id: str
    kind: Kind
    value: str  # the text, or the image reference (path, URL or data: URI)
    fingerprint: str
    error: str | None = None


@dataclass
class ScanReport:
    """What the folder walks left out, for the job's summary."""

    skipped_suffixes: Counter[str] = field(default_factory=Counter)  # suffix -> files not embedded
    unsupported: Counter[str] = field(default_factory=Counter)  # image suffixes this install cannot decode
    hidden: int = 0  # dot files and folders, AppleDouble (._*) files

    def clear(self) -> None:
        self.skipped_suffixes.clear()
        self.unsupported.clear()
        self.hidden = 0

    def lines(self) -> list[str]:
        out = []
        if self.unsupported:
            kinds = ", ".join(f"{n} {s}" for s, n in sorted(self.unsupported.items()))
            out.append(f"not embedded, format unsupported here: {kinds} (HEIC/AVIF: pip install pillow-heif)")
        if self.skipped_suffixes:
            kinds = ", ".join(f"{n} {s or '(no suffix)'}" for s, n in self.skipped_suffixes.most_common(8))
            out.append(f"skipped by extension: {kinds}{' ...' if len(self.skipped_suffixes) > 8 else ''}")
        if self.hidden:
            out.append(f"skipped {self.hidden} hidden entries (dot files and folders, AppleDouble ._* files)")
        return out


def content_fingerprint(value: str) -> str:
    return "sha1:" + hashlib.sha1(value.encode("utf-8", "surrogatepass")).hexdigest()[:20]


def file_fingerprint(path: str | os.PathLike[str]) -> str:
    """size and mtime: a changed file is re-embedded on rerun. An unreadable path gets an empty
    fingerprint (the decode step reports why)."""
    try:
        stat = os.stat(path)
    except (OSError, ValueError):
        return ""
    return f"stat:{stat.st_size}:{stat.st_mtime_ns}"


def image_fingerprint(reference: str) -> str:
    return content_fingerprint(reference) if is_url(reference) or is_data_uri(reference) else file_fingerprint(reference)


def image_suffixes() -> frozenset[str]:
    """Suffixes an --image-dir walk embeds on this install."""
    decoders = optional_decoders()
    return CLASSIC_IMAGE_SUFFIXES | (HEIF_SUFFIXES if decoders["heif"] else frozenset()) | (
        AVIF_SUFFIXES if decoders["avif"] else frozenset())


# ---- texts ---------------------------------------------------------------------------------------------


def texts(values: Iterable[str]) -> Iterator[Item]:
    for index, text in enumerate(values):
        yield Item(f"--text[{index}]", "text", text, content_fingerprint(text))


def _open_binary(name: str) -> BinaryIO:
    return sys.stdin.buffer if name == STDIN else open(name, "rb")  # noqa: SIM115 - closed by the caller


def _lines(name: str) -> Iterator[tuple[int, bytes]]:
    """(1-based number, line without its \\n or \\r\\n). Only \\n ends a line: U+2028, NEL and form
    feed stay inside it (str.splitlines would split there). A UTF-8 BOM at the start is dropped."""
    handle = _open_binary(name)
    try:
        for number, raw in enumerate(handle, 1):  # binary iteration splits on b"\n" only
            line = raw[:-1] if raw.endswith(b"\n") else raw
            line = line[:-1] if line.endswith(b"\r") else line
            if number == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            yield number, line
    finally:
        if handle is not sys.stdin.buffer:
            handle.close()


def _decoded(raw: bytes) -> tuple[str | None, str | None]:
    """(text, None) or (None, a reason naming the first bad byte)."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return None, (f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                      "re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)")


def _where(name: str) -> str:
    return "stdin" if name == STDIN else name


def text_file(name: str) -> Iterator[Item]:
    """One text per non-empty line; an undecodable line is reported with its number, the others go on."""
    for number, raw in _lines(name):
        item_id = f"{STDIN_ID_PREFIX}{number}" if name == STDIN else f"{name}:{number}"
        text, problem = _decoded(raw)
        if problem is not None:
            yield Item(item_id, "text", "", "", error=problem)
        elif text.strip():  # type: ignore[union-attr]
            yield Item(item_id, "text", text, content_fingerprint(text))  # type: ignore[arg-type]


def jsonl_file(name: str) -> Iterator[Item]:
    """{"id": ..., "text": ...} or {"id": ..., "image": path | URL | data URI}, one object per line.

    Ids may be strings or integers (written back as strings); without one, the line is the id
    (`file.jsonl:7`). Relative image paths are relative to the JSONL file's folder (stdin: the
    current folder). Blank lines are ignored.
    """
    base = Path(".") if name == STDIN else Path(name).parent
    for number, raw in _lines(name):
        where = f"{_where(name)}:{number}"
        text, problem = _decoded(raw)
        if problem is None and not text.strip():  # type: ignore[union-attr]
            continue
        record = None
        if problem is None:
            try:
                record = json.loads(text)  # type: ignore[arg-type]
            except json.JSONDecodeError as exc:
                problem = f"not valid JSON ({exc.msg} at column {exc.colno})"
        yield _record_item(record, where, base, problem)


def _record_item(record: object, where: str, base: Path, problem: str | None) -> Item:
    if problem is not None:
        return Item(where, "text", "", "", error=problem)
    if not isinstance(record, dict):
        return Item(where, "text", "", "", error='expected an object like {"id": "a", "text": "..."}')
    raw_id = record.get("id", where)
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or raw_id == "":
        return Item(where, "text", "", "", error=f"id must be a non-empty string or an integer, got {raw_id!r}")
    item_id = str(raw_id)
    has_text, has_image = "text" in record, "image" in record
    if has_text == has_image:
        return Item(item_id, "text", "", "", error='give exactly one of "text" or "image"')
    value = record["text"] if has_text else record["image"]
    if not isinstance(value, str):
        return Item(item_id, "text", "", "", error=f"{'text' if has_text else 'image'} must be a string, got {type(value).__name__}")
    if has_text:
        return Item(item_id, "text", value, content_fingerprint(value))
    if not (is_url(value) or is_data_uri(value)) and not os.path.isabs(value):
        value = str(base / value)
    return Item(item_id, "image", value, image_fingerprint(value))


# ---- images --------------------------------------------------------------------------------------------


def image_files(references: Iterable[str]) -> Iterator[Item]:
    """Paths, URLs or data: URIs as given; the decode step reports the bad ones."""
    for reference in references:
        item_id = reference if not is_data_uri(reference) else f"data-uri:{content_fingerprint(reference)[5:]}"
        yield Item(item_id, "image", reference, image_fingerprint(reference))


def image_dir(root: str, report: ScanReport, suffixes: frozenset[str] | None = None) -> Iterator[Item]:
    """Every image under `root`, in sorted order. Symlinked folders are followed (each real folder
    once, so a link cycle ends); hidden entries and AppleDouble `._*` files are skipped and counted."""
    wanted = image_suffixes() if suffixes is None else suffixes
    known_images = CLASSIC_IMAGE_SUFFIXES | HEIF_SUFFIXES | AVIF_SUFFIXES
    seen: set[tuple[int, int]] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        stat = os.stat(folder)
        if (stat.st_dev, stat.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        report.hidden += sum(1 for d in dirs if d.startswith("."))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = os.path.join(folder, name)
            suffix = os.path.splitext(name)[1].lower()
            if name.startswith("."):
                report.hidden += 1
            elif not os.path.isfile(path):
                continue  # a dangling link or a socket
            elif suffix in wanted:
                yield Item(path, "image", path, file_fingerprint(path))
            elif suffix in known_images:
                report.unsupported[suffix] += 1
            else:
                report.skipped_suffixes[suffix] += 1
