"""What the commands share: argument types, Ctrl-C handling for long jobs, the progress bar."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def comma_list(kind: type = str) -> Callable[[str], list[Any]]:
    """An argparse type: 'a,b,c' -> a list of `kind` (ints must be positive)."""
    def parse(value: str) -> list[Any]:
        items = [v.strip() for v in value.split(",") if v.strip()]
        if not items:
            raise argparse.ArgumentTypeError("give a comma-separated list")
        try:
            parsed = [kind(v) for v in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a comma-separated list of {kind.__name__}s") from None
        if kind is int and any(v < 1 for v in parsed):
            raise argparse.ArgumentTypeError(f"every value must be a positive integer, got {value!r}")
        return parsed
    return parse


def tower_list(value: str) -> list[str]:
    """An argparse type: 'text,vision' -> the towers, each one edgeclip knows."""
    towers = comma_list()(value)
    unknown = [t for t in towers if t not in ("text", "vision")]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown tower {', '.join(unknown)}; choose from text, vision")
    return towers


def check_output_file(path: Path | None, option: str) -> None:
    """Refuse, before any work, a file option (--html, --json) that could not be written: a folder, a
    missing or unwritable folder, a read-only file. One line; the command exits 2."""
    from ..errors import InputError

    if path is None:
        return
    if path.is_dir():
        raise InputError(f"{option} {path} is a folder; give a file path, e.g. {path / ('out' + (path.suffix or '.html'))}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{option} {path}: the folder {parent} does not exist; create it or choose another path")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InputError(f"{option} {path} cannot be written (permission denied); choose another path")


def run_interruptibly(job: Callable[[threading.Event], Any]) -> Any:
    """Run `job(stop)` in a thread; the first Ctrl-C (or SIGTERM) sets `stop`, the second quits at once."""
    stop = threading.Event()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = job(stop)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            outcome["error"] = exc

    def on_signal(signum: int, frame: Any) -> None:  # noqa: ARG001
        if stop.is_set():
            print("\nquitting now; rows already written are kept (a rerun repairs a torn last line)", file=sys.stderr)
            os._exit(130)
        stop.set()
        print("\nstopping after the batch in progress (Ctrl-C again to quit at once)", file=sys.stderr)

    worker = threading.Thread(target=target, name="edgeclip-job")
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker.start()
        while worker.is_alive():
            worker.join(0.2)
    finally:
        for sig, previous in handlers.items():
            signal.signal(sig, previous)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def progress_bar(total: int | None, quiet: bool) -> Any:
    from tqdm import tqdm  # installed with tokenizers (via huggingface_hub)

    # disable=None: drawn on a terminal only, so logs and pipes stay clean.
    return tqdm(total=total, unit="item", disable=True if quiet else None, file=sys.stderr, dynamic_ncols=True,
                mininterval=0.5, smoothing=0.1)
