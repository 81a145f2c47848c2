"""Typed errors of the runtime; every message names the problem and the fix."""

from __future__ import annotations

import errno


class EdgeClipError(Exception):
    """Base class for every error edgeclip raises on purpose."""


class BundleError(EdgeClipError):
    """The bundle is missing, incomplete, tampered with, or of an unknown schema."""


class InputError(EdgeClipError, ValueError):
    """A text, image or option given to edgeclip cannot be used as it is (also a ValueError)."""


class InputTooLarge(InputError):
    """An input is over a size limit (bytes): a server answers 413 rather than 422."""


class StorageError(EdgeClipError):
    """The system refused a file edgeclip writes: the disk is full, permission was lost, the file system
    went read-only. Nothing is left torn (a failed append is cut back to its last whole row, temporary
    files are removed); the command line exits 4, and a rerun after the fix completes the job."""


_REASONS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
            errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
            errno.EPERM: "permission denied", errno.EIO: "an I/O error", errno.EFBIG: "the file is too large"}


def storage_error(path: object, exc: OSError, done: str = "finished rows are kept") -> StorageError:
    """One line: which file, why, and the fix."""
    reason = _REASONS.get(exc.errno or 0, exc.strerror or str(exc))
    return StorageError(f"cannot write {path}: {reason}; {done}. Free space (or restore write access) and rerun "
                        "the same command to complete it")
