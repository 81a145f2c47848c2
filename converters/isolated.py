"""Run one heavy build step (a tower) in a fresh process, so all of its memory goes back to the OS when it ends.

Exporting a tower holds the PyTorch model, the exporter's folded copies of its weights and the
serialized graph at once (full-size text: ~5 GB), and validating it holds the model and an ONNX
Runtime session. In one process the allocator keeps much of that afterwards and the next tower starts
on top of it (full int8 build: the vision export peaked at 6.9 GB after the text tower). A spawned
child starts from a bare interpreter and hands back only the manifest entries it wrote.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

Job = TypeVar("Job")
Result = TypeVar("Result")

LOG_FORMAT = "%(asctime)s %(message)s"
LOG_DATE_FORMAT = "%H:%M:%S"


def _configure_child_logging(level: int) -> None:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, datefmt=LOG_DATE_FORMAT)
    logging.getLogger("converters").setLevel(level)


def run_in_fresh_process(function: Callable[[Job], Result], job: Job) -> Result:
    """`function(job)` in a spawned process (both must be picklable); its exceptions are raised here."""
    level = logging.getLogger("converters").getEffectiveLevel()
    context = multiprocessing.get_context("spawn")  # not fork: a forked child would share the parent's heap
    with ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_configure_child_logging,
                             initargs=(level,)) as pool:
        return pool.submit(function, job).result()
