"""Shared fixtures: a tiny random checkpoint and a bundle built from it, once per session.

Slow (full-size), GPU and network tests are opt-in: --run-slow, --run-gpu, --run-network.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# The same examples every run (CI must pass every run, not most): derandomized, no example database.
# For a wider random search locally: HYPOTHESIS_PROFILE=explore python -m pytest tests/runtime
settings.register_profile("deterministic", derandomize=True, database=None)
settings.register_profile("explore", max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))

OPT_IN = {"slow": "--run-slow", "gpu": "--run-gpu", "network": "--run-network"}


def pytest_addoption(parser: pytest.Parser) -> None:
    for marker, flag in OPT_IN.items():
        parser.addoption(flag, action="store_true", default=False, help=f"run tests marked {marker}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for marker, flag in OPT_IN.items():
            if marker in item.keywords and not config.getoption(flag):
                item.add_marker(pytest.mark.skip(reason=f"{marker} test: run with {flag}"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from converters.make_checkpoint import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", size="tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from converters.build import build_bundle

    out = tmp_path_factory.mktemp("bundle") / "tiny"
    build_bundle(str(tiny_checkpoint), out)
    return out
