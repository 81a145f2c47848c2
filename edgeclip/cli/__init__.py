"""`edgeclip info | verify | pull | embed | index | search | serve | bench ...`: one module per command, each a thin layer over the library.

Exit codes: 0 ok; 1 some inputs failed (the others were written); 2 bad arguments, bundle or
output; 4 the system refused a write (disk full, permission, read-only; nothing torn, a rerun after the
fix completes the job); 130 interrupted (what was finished is kept).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from typing import Any

from .. import __version__
from ..errors import EdgeClipError, StorageError

__all__ = ["info_text", "main", "parser"]


def __getattr__(name: str) -> Any:
    if name == "info_text":
        from .info import info_text

        return info_text
    raise AttributeError(f"module 'edgeclip.cli' has no attribute {name!r}")


def parser() -> argparse.ArgumentParser:
    from . import bench, embed, export, index, info, pull, search, serve  # numpy, onnxruntime: inside main's Ctrl-C guard

    root = argparse.ArgumentParser(prog="edgeclip", description="jina-clip-v2 embeddings on CPUs (ONNX Runtime)")
    root.add_argument("--version", action="version", version=f"edgeclip {__version__}")
    sub = root.add_subparsers(dest="command", required=True)
    info.add_parsers(sub)
    embed.add_parser(sub)
    index.add_parser(sub)
    search.add_parser(sub)
    export.add_parser(sub)
    serve.add_parser(sub)
    bench.add_parser(sub)
    pull.add_parser(sub)
    return root


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: object = None,
                  line: str | None = None) -> None:
    print(f"warning: {message}", file=sys.stderr)  # one line for a person, not a source location


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except KeyboardInterrupt:  # while the libraries load: still one line
        print("interrupted", file=sys.stderr)
        return 130
    shown, warnings.showwarning = warnings.showwarning, _show_warning
    try:
        return int(args.run(args))
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 4
    except EdgeClipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `edgeclip embed ... --out - | head`: the reader left; not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    finally:
        warnings.showwarning = shown
