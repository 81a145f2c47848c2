"""Skip a test whose tool or package is missing, unless CI says it must run (then fail, naming it)."""

from __future__ import annotations

import os

import pytest


def need(variable: str, reason: str) -> None:
    """Skip with `reason`; fail instead where the environment variable `variable` is "1" (.ci/run sets it)."""
    if os.environ.get(variable) == "1":
        pytest.fail(f"{reason} ({variable}=1)")
    pytest.skip(reason)
