"""Stage-by-stage build progress: what is running, how long it took, and the memory it peaked at.

A full-size build runs for minutes and its peak memory decides whether it fits a laptop, so each
stage reports its wall time and its peak RSS. The stage peak is sampled (10 Hz) from /proc/self/status
by a thread; the kernel's own high-water mark (VmHWM) is left alone, since resetting it would also
reset what `/usr/bin/time -v` reports. Where /proc is missing (macOS) the memory figures are omitted.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("converters.progress")

_STATUS = Path("/proc/self/status")
SAMPLE_SECONDS = 0.1


def status_gb(field: str) -> float | None:
    """A memory field of /proc/self/status (VmRSS: now, VmHWM: process peak) in GB, None where unavailable."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1e6
    except OSError:
        return None
    return None


class _PeakSampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = status_gb("VmRSS")  # None where /proc is missing: then it stays None
        self.finished = threading.Event()

    def _sample(self) -> None:
        now = status_gb("VmRSS")
        if now is not None and self.peak is not None:
            self.peak = max(self.peak, now)

    def run(self) -> None:
        while not self.finished.wait(SAMPLE_SECONDS):
            self._sample()

    def stop(self) -> float | None:
        self.finished.set()
        self.join()
        self._sample()
        return self.peak


@contextlib.contextmanager
def stage(label: str) -> Iterator[None]:
    """Log `label` now and, when it finishes, `label: 34 s, peak 4.52 GB RSS (process peak 6.10 GB)`."""
    log.info("%s ...", label)
    sampler = _PeakSampler()
    sampler.start()
    start = time.monotonic()
    try:
        yield
    finally:
        peak = sampler.stop()
    seconds = time.monotonic() - start
    process_peak = status_gb("VmHWM")
    memory = "" if peak is None else f", peak {peak:.2f} GB RSS (process peak {process_peak:.2f} GB)"
    log.info("%s: %.0f s%s", label, seconds, memory)
