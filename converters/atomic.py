"""Write files and directories so that an interruption never leaves a half-written result."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgeclip._files import atomic_write_bytes

from .errors import ConverterError


@contextlib.contextmanager
def staged_directory(target: Path, overwrite: bool = False, marker: str = "", what: str = "output") -> Iterator[Path]:
    """Yield a hidden sibling directory; on success it is renamed to `target`, on failure removed.

    A killed process leaves only a `.NAME.partial-*` directory, never something at `target`. An existing
    `target` is replaced only with `overwrite` and only if it is a folder holding `marker` (what we wrote
    there before): a folder of photos or a file that happens to be at that path is refused untouched.
    """
    target = Path(target).absolute()
    if target.exists() or target.is_symlink():
        ours = target.is_dir() and not target.is_symlink() and (not marker or (target / marker).is_file())
        if not ours:
            raise ConverterError(f"{target} already exists and is not a {what} (no {marker} in it); it was left "
                                 "untouched: choose another path")
        if not overwrite:
            raise ConverterError(f"{target} already exists (a {what}); pass --overwrite to replace it or choose "
                                 "another path")
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield stage
        _make_readable(stage)
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, retired / target.name)
            os.replace(stage, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(stage, target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _make_readable(root: Path) -> None:
    """mkdtemp makes 0700 and some writers (onnx external data, safetensors) make 0600 files."""
    os.chmod(root, 0o755)
    for path in root.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)


def atomic_write_text(path: Path, text: str) -> None:
    """UTF-8 text, written atomically (see edgeclip._files)."""
    atomic_write_bytes(path, text.encode("utf-8"))
