"""Skip a test whose tool or package is missing, unless CI says it must run (then fail, naming it)."""

from __future__ import annotations

import os

import pytest


def need(variable: str, reason: str) -> None:
    """Skip with `reason`; fail instead where the environment variable `variable` is "1" (.ci/run sets it)."""
    if os.environ.get(variable) == "1":
        pytest.fail(f"{reason} ({variable}=1)")
    pytest.skip(reason)


def clients_python() -> str:
    """The clients' virtualenv's python (EDGECLIP_CLIENTS_PYTHON, else .venv-clients, which .ci/run makes), or skip."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    python = os.environ.get("EDGECLIP_CLIENTS_PYTHON") or os.path.join(root, ".venv-clients", "bin", "python")
    if not os.path.exists(python):
        need("EDGECLIP_REQUIRE_CLIENTS", f"no clients virtualenv at {python} (python -m venv .venv-clients && "
             ".venv-clients/bin/pip install -r tests/clients/requirements.txt)")
    return python
