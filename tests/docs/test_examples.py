"""Every `bash` example in README.md and docs/*.md runs, so the docs cannot drift from the code.

Each fenced ```bash block runs with `bash -euo pipefail`, the blocks of a page in order in one folder
(a page reads as a walk-through: a later block may use what an earlier one made), laid out as a user's
would be after the set-up: `bundles/jina-clip-v2` and `bundles/clip` (a tiny random bundle with the default
variants plus fp32-portable), `checkpoints/tiny`, `photos/`, `notes/`, `docs.jsonl`, `queries.txt`,
`notes.txt`, `query.jpg`, `~/Pictures` (HOME is the folder). What the tiny model cannot take is swapped,
and only that (SUBSTITUTIONS: the hub id becomes the tiny checkpoint, full size becomes tiny, 256-wide
dims become 32, 10-second benches become 0.2 s, port 8080 becomes a free one). Paths a block creates
with `build`, `make-checkpoint` or `pull` are removed first, as on a fresh machine. `edgeclip pull`
talks to a local server that answers as the Hub does (HF_ENDPOINT). Blocks that start Ray run in a
loopback-only network namespace (`unshare -rn`). A block preceded by `<!-- docs-test: skip: REASON -->`
is not run; `pip install` lines are not run either (the wheel job in .ci/wheel.sh installs).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skips import need

from fakehub import FakeHub

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP = re.compile(r"<!--\s*docs-test:\s*skip:\s*(.+?)\s*-->")
HUB_REPO = "owner/jina-clip-v2-edgeclip"
SUBSTITUTIONS = [
    ("converters build jinaai/jina-clip-v2", "converters build checkpoints/tiny"),
    ("converters parity jinaai/jina-clip-v2", "converters parity checkpoints/tiny"),
    ("--size full", "--size tiny"),
    ("--dim 256", "--dim 32"),
    ("--dims 64", "--dims 32"),
    ("--seconds 10", "--seconds 0.2"),
]
CREATED = re.compile(r"(?:converters build|edgeclip pull)\s[^\n]*?--out\s+(\S+)|make-checkpoint\s+(\S+)")


@dataclass(frozen=True)
class Example:
    file: str
    line: int
    code: str
    skip: str | None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


def examples() -> list[Example]:
    found = []
    for path in DOC_FILES:
        lines = path.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            if lines[i].strip() == "```bash":
                start = i
                i += 1
                while lines[i].strip() != "```":
                    i += 1
                before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
                skip = SKIP.search(before)
                found.append(Example(path.relative_to(ROOT).as_posix(), start + 1, "\n".join(lines[start + 1 : i]),
                                     skip.group(1) if skip else None))
            i += 1
    return found


EXAMPLES = examples()



@pytest.fixture(scope="module")
def template(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from converters.build import BuildOptions, build_bundle

    root = tmp_path_factory.mktemp("docs-template")
    shutil.copytree(tiny_checkpoint, root / "checkpoints" / "tiny")
    build_bundle(str(tiny_checkpoint), root / "bundles" / "jina-clip-v2",
                 BuildOptions(variants=("fp32", "int8", "int8-vnni", "fp32-portable")))
    shutil.copytree(root / "bundles" / "jina-clip-v2", root / "bundles" / "clip")
    for folder in ("photos", "Pictures"):
        (root / folder).mkdir()
        for i, name in enumerate(("seal.jpg", "beach1.jpg", "beach2.jpg")):
            ramp = np.add.outer(np.arange(48 + 8 * i), np.arange(64))[..., None] * np.array([1, 2, 3]) + 40 * i
            Image.fromarray((ramp % 256).astype(np.uint8)).save(root / folder / name)
    shutil.copy(root / "photos" / "seal.jpg", root / "query.jpg")
    (root / "notes").mkdir()
    (root / "notes" / "seal.md").write_text("The seal sleeps on the rock.\n", encoding="utf-8")
    (root / "docs.jsonl").write_text('{"id": "d1", "text": "a seal on a rock"}\n{"id": "d2", "image": "photos/seal.jpg"}\n')
    (root / "queries.txt").write_text("a seal on a rock\nuna foca en una roca\n", encoding="utf-8")
    (root / "notes.txt").write_text("offline search\nthe seal sleeps\n", encoding="utf-8")
    (root / "bench").symlink_to(ROOT / "bench")  # `bench/results/...` files the speed page compares against
    return root


@pytest.fixture(scope="module")
def hub(template: Path) -> Iterator[FakeHub]:
    bundle = template / "bundles" / "jina-clip-v2"
    files = {str(p.relative_to(bundle)): p.read_bytes() for p in bundle.rglob("*") if p.is_file()}
    server = FakeHub(files, HUB_REPO, tags=("v1.0",))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def runnable(code: str, work: Path) -> str:
    """The block as it runs here: substitutions made, `pip install` lines left out, outputs removed first."""
    for old, new in SUBSTITUTIONS:
        code = code.replace(old, new)
    code = code.replace("8080", str(_free_port()))
    code = "\n".join(": skipped here, the wheel job installs" if line.lstrip().startswith("pip install") else line
                     for line in code.splitlines())
    for match in CREATED.finditer(code):
        target = work / (match.group(1) or match.group(2))
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)
    return code


@pytest.fixture(scope="module")
def page_folders(template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {}  # page -> its folder, made fresh from the template for the page's first block


@pytest.mark.parametrize("example", EXAMPLES, ids=str)
def test_example_runs(example: Example, template: Path, hub: FakeHub, page_folders: dict[str, Path],
                      tmp_path_factory: pytest.TempPathFactory) -> None:
    if example.skip:
        pytest.skip(f"{example}: {example.skip}")
    if example.file not in page_folders:
        page_folders[example.file] = tmp_path_factory.mktemp("page") / "work"
        shutil.copytree(template, page_folders[example.file], symlinks=True)
    work = page_folders[example.file]
    code = runnable(example.code, work)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE", "EDGECLIP_"))}
    env.update(HOME=str(work), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               HF_ENDPOINT=f"http://127.0.0.1:{hub.server_address[1]}", HF_HOME=str(work / ".hf"),
               HF_HUB_DISABLE_TELEMETRY="1", NO_PROXY="127.0.0.1,localhost", PYTHONPATH=str(ROOT))
    command = ["bash", "-euo", "pipefail", "-c", code]
    if "--engine ray" in code:  # a local Ray listens on every interface: only inside a loopback-only namespace
        if shutil.which("unshare") is None or subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode:
            need("EDGECLIP_REQUIRE_DOCS", "the Ray example needs a loopback-only network namespace (unshare -rn)")
        command = ["unshare", "-rn", "bash", "-euo", "pipefail", "-c", f"ip link set lo up\n{code}"]
    # its own process group: a timed-out example's background server is killed with it
    process = subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
    done = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    assert done.returncode == 0, f"{example} exited {done.returncode}\n--- ran:\n{code}\n--- stdout:\n{done.stdout[-3000:]}\n--- stderr:\n{done.stderr[-5000:]}"
    assert "Traceback" not in done.stderr, done.stderr[-5000:]


def test_every_command_page_has_runnable_examples_and_skips_say_why() -> None:
    """Each page about a command shows at least one example that runs; a skip gives its reason. Prints the
    count, for the record."""
    run = [e for e in EXAMPLES if not e.skip]
    skipped = [e for e in EXAMPLES if e.skip]
    pages = {"README.md", *(f"docs/{name}.md" for name in ("bundles", "embed", "serve", "search", "scale-out", "speed"))}
    assert pages <= {e.file for e in run}, pages - {e.file for e in run}
    assert all(len(e.skip or "") > 10 for e in skipped)
    print(f"\n{len(run)} bash examples run, {len(skipped)} skipped:", *(f"{e}: {e.skip}" for e in skipped), sep="\n  ")


def test_readme_is_short_and_its_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    for target in re.findall(r"\]\(((?!https?:)[^)#]+)", readme):
        assert (ROOT / target).exists(), f"README links to {target}, which is not in the repository"
