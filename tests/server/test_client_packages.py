"""The client packages people use, as they are, against a served test bundle: every snippet of
docs/clients.md runs in the clients' own virtualenv (tests/clients/requirements.txt) and must embed
exactly what the in-process model does (1e-6).

The virtualenv is EDGECLIP_CLIENTS_PYTHON, else .venv-clients/bin/python (.ci/run makes it); without it
these tests skip, unless EDGECLIP_REQUIRE_CLIENTS=1 (CI), where they fail.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgeclip
from skips import clients_python

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "clients.md"
RUNNER = ROOT / "tests" / "clients" / "run_snippet.py"
SNIPPET = re.compile(r"<!--\s*client:\s*(\w+)\s*-->\s*```python\n(.*?)```", re.DOTALL)
SNIPPETS = dict(SNIPPET.findall(PAGE.read_text(encoding="utf-8")))
DOCS_URL = "http://127.0.0.1:8080"
# the packages' own network habits, off: litellm's price-list download, Chroma's and Haystack's telemetry
QUIET = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "ANONYMIZED_TELEMETRY": "False", "HAYSTACK_TELEMETRY_ENABLED": "False",
         "LITELLM_TELEMETRY": "False", "DO_NOT_TRACK": "1"}


@pytest.fixture(scope="module", name="clients_python")
def clients_python_fixture() -> str:
    return clients_python()


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory, make_png: Any) -> Path:
    folder = tmp_path_factory.mktemp("client-run")
    (folder / "photo.jpg").write_bytes(make_png(320, 240, 7, "JPEG"))
    return folder


def test_the_page_has_a_snippet_per_client() -> None:
    assert set(SNIPPETS) == {"openai", "litellm", "langchain", "llamaindex", "haystack", "chroma"}
    assert all(DOCS_URL in code for code in SNIPPETS.values())


@pytest.mark.parametrize("client", sorted(SNIPPETS))
def test_the_documented_snippet_embeds_what_edgeclip_does(client: str, clients_python: str, server: str, photo: Path,
                                                         model: edgeclip.EdgeClip) -> None:
    snippet = photo / f"{client}.py"
    snippet.write_text(SNIPPETS[client].replace(DOCS_URL, server), encoding="utf-8")
    out = photo / f"{client}.json"
    env = {**os.environ, **QUIET}
    for variable in ("PYTHONPATH", "VIRTUAL_ENV"):  # nothing of the main environment leaks in
        env.pop(variable, None)
    run = subprocess.run([clients_python, str(RUNNER), str(snippet), str(out)], cwd=photo, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(out.read_text(encoding="utf-8"))
    np.testing.assert_allclose(np.array(got["text_vectors"]), model.encode_text(got["texts"]), atol=1e-6)
    np.testing.assert_allclose(np.array(got["image_vectors"]), model.encode_image([photo / "photo.jpg"]), atol=1e-6)
