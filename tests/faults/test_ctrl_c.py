"""Ctrl-C at any moment is one line and exit 130 (issue 25): also while the libraries load (the commands are
imported inside main's guard; `import edgeclip` itself loads neither numpy nor onnxruntime), and during
`python -m converters build`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def test_import_edgeclip_loads_no_heavy_library() -> None:
    code = "import sys, edgeclip, edgeclip.cli; print(sorted(m for m in ('numpy', 'onnxruntime', 'PIL') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_ctrl_c_while_the_commands_load_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from edgeclip import cli

    def interrupted() -> Any:
        raise KeyboardInterrupt  # as the signal does when it lands inside an import

    monkeypatch.setattr(cli, "parser", interrupted)
    assert cli.main(["info", "x"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_ctrl_c_during_a_converter_build_is_one_line(monkeypatch: pytest.MonkeyPatch, tiny_checkpoint: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from converters import __main__ as converters_cli

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("converters.build.validate_vision", interrupted)
    assert converters_cli.main(["build", str(tiny_checkpoint), "--out", str(tmp_path / "b")]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "interrupted: nothing was written"
    assert list(tmp_path.iterdir()) == []
