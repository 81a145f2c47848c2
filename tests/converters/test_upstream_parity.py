"""Our reference against the official remote-code model (opt-in: --run-network; needs transformers)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from converters.checkpoint import resolve_source  # noqa: E402
from converters.parity import upstream_parity  # noqa: E402


@pytest.mark.network
def test_reference_matches_the_official_model() -> None:
    rows = upstream_parity(resolve_source("jinaai/jina-clip-v2"))
    assert {row.tower for row in rows} == {"text", "vision"}
    assert min(row.cosine for row in rows) >= 0.9999, rows
