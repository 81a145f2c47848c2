"""Are the bundle's graph files the ones its manifest lists? Checked before a job resumes an output, so rows
from damaged or changed weights are never appended to rows of the intact ones.

A full sha256 of a full-size graph takes seconds, so a file's verdict is cached (in the user's cache folder)
under its identity: path, size, mtime, inode, and a hash of 16 spread samples of its bytes. An unchanged
file costs one stat and 16 small reads; a file written since (mtime or size), replaced (inode), or changed
in place where a sample falls is hashed in full again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ._files import atomic_write_bytes
from .bundle import Bundle, FileEntry, sha256_file
from .errors import BundleError

SAMPLES = 16
SAMPLE_BYTES = 4096


def cache_path() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "edgeclip" / "verified-files.json"


def _sample_hash(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for i in range(SAMPLES):
            handle.seek(max(0, (size - SAMPLE_BYTES) * i // max(1, SAMPLES - 1)))
            digest.update(handle.read(SAMPLE_BYTES))
    return digest.hexdigest()


def _identity(path: Path) -> list[object]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns, stat.st_ino, _sample_hash(path, stat.st_size)]


def verify_files(bundle: Bundle, entries: tuple[FileEntry, ...]) -> None:
    """Raise BundleError (one line per bad file) unless every entry's bytes hash to the manifest's sha256."""
    bundle.check_files(entries)  # presence and size first: cheap, and names a pulled bundle's missing files
    cache_file = cache_path()
    try:
        cache: dict[str, list[object]] = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    changed, bad = False, []
    for entry in entries:
        path = bundle.path(entry.path)
        identity = _identity(path)
        key = str(path)
        if cache.get(key) == [*identity, entry.sha256]:
            continue
        if sha256_file(path) != entry.sha256:
            bad.append(entry.path)
            continue
        cache[key] = [*identity, entry.sha256]
        changed = True
    if changed:
        try:
            atomic_write_bytes(cache_file, json.dumps(cache).encode())
        except OSError:
            pass  # a read-only home: the next run hashes again
    if bad:
        raise BundleError(f"bundle {bundle.directory}: {', '.join(bad)} differ from the checksums in its manifest "
                          "(damaged or changed): rows made with it would not match the output's; re-download or "
                          "rebuild the bundle (`edgeclip verify` lists every file)")


def verify_variants(bundle: Bundle, variants: dict[str, str]) -> None:
    """The graph files of these tower -> variant choices, and the tokenizer."""
    entries: list[FileEntry] = []
    if bundle.manifest.text is not None:
        entries.append(bundle.manifest.text.tokenizer)
    for tower, name in variants.items():
        entries += bundle.variant(tower, name).files  # type: ignore[arg-type]
    verify_files(bundle, tuple(entries))
