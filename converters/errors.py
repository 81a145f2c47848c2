"""Typed errors of the converters; each message names the problem and the fix."""

from __future__ import annotations


class ConverterError(Exception):
    """Base class for every error the converters raise on purpose."""


class ConfigError(ConverterError):
    """config.json is missing a field or describes a model we do not implement."""


class CheckpointError(ConverterError):
    """The checkpoint cannot be found, is not safetensors, or its keys/shapes differ from the config."""


class ToleranceExceeded(ConverterError):
    """An exported graph disagrees with the PyTorch reference beyond the tolerance."""

    def __init__(self, failures: list[str]) -> None:
        self.failures = failures
        super().__init__("export validation failed:\n  " + "\n  ".join(failures))


class MissingDependency(ConverterError):
    """An optional package of the `convert` extra is not installed."""
