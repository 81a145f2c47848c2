"""Typed errors of the runtime; every message names the problem and the fix."""

from __future__ import annotations


class EdgeClipError(Exception):
    """Base class for every error edgeclip raises on purpose."""


class BundleError(EdgeClipError):
    """The bundle is missing, incomplete, tampered with, or of an unknown schema."""


class InputError(EdgeClipError, ValueError):
    """A text, image or option given to edgeclip cannot be used as it is (also a ValueError)."""


class InputTooLarge(InputError):
    """An input is over a size limit (bytes): a server answers 413 rather than 422."""
