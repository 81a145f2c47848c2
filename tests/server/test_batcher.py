"""The batcher alone, with fake runners: when it waits for batch-mates, when it refuses, what it reports."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from edgeclip.server.batcher import Batcher, Overloaded, TowerQueue


class Recorder:
    def __init__(self, gate: threading.Event | None = None, log: list[list[Any]] | None = None) -> None:
        self.batches: list[list[Any]] = []
        self.gate, self.log = gate, log

    def __call__(self, payloads: Sequence[Any]) -> np.ndarray:
        if self.gate is not None:
            self.gate.wait(10)
        self.batches.append(list(payloads))
        if self.log is not None:
            self.log.append(list(payloads))
        return np.array([[float(p)] for p in payloads], dtype=np.float32)


def batcher(text: Recorder, vision: Recorder | None = None, *, wait_s: float = 10.0, max_queue: int = 100) -> Batcher:
    towers = {"text": TowerQueue(text, 8, max_queue, 10_000)}
    if vision is not None:
        towers["vision"] = TowerQueue(vision, 4, max_queue, 4)
    return Batcher(towers, wait_s)  # type: ignore[arg-type]


def test_a_lone_item_runs_at_once_however_long_max_wait_is() -> None:
    runner = Recorder()
    b = batcher(runner, wait_s=10.0)
    started = time.monotonic()
    assert b.submit("text", [7], [1])[0].result(5)[0] == 7.0
    assert time.monotonic() - started < 2  # nobody was on the way: no 10 s wait
    b.stop()


def test_items_wait_for_a_request_that_is_on_its_way() -> None:
    runner = Recorder()
    b = batcher(runner, wait_s=10.0)
    with b.arriving("text"):  # a second request is being tokenized
        first = b.submit("text", [1], [1])
        time.sleep(0.2)
        second = b.submit("text", [2, 3], [1, 1])
    assert [f.result(5)[0] for f in (*first, *second)] == [1.0, 2.0, 3.0]
    assert runner.batches == [[1, 2, 3]]  # one session call
    b.stop()


def test_max_wait_bounds_the_wait_for_company() -> None:
    runner = Recorder()
    b = batcher(runner, wait_s=0.2)
    with b.arriving("text"):  # it never comes
        started = time.monotonic()
        assert b.submit("text", [1], [1])[0].result(5)[0] == 1.0
        assert time.monotonic() - started < 2
    b.stop()


def test_a_full_queue_refuses_at_once_and_the_towers_take_turns() -> None:
    gate = threading.Event()
    order: list[list[Any]] = []
    text, vision = Recorder(gate, order), Recorder(log=order)
    b = batcher(text, vision, wait_s=0.0, max_queue=3)
    running = b.submit("text", [0], [1])  # holds the thread at the gate
    time.sleep(0.2)
    queued = b.submit("text", [1, 2, 3], [1, 1, 1])  # admitted whole while there was room
    images = b.submit("vision", [10], [1])
    with pytest.raises(Overloaded) as refused:
        b.submit("text", [4], [1])
    assert refused.value.retry_after_s >= 1
    gate.set()
    assert [f.result(5)[0] for f in (*running, *queued, *images)] == [0.0, 1.0, 2.0, 3.0, 10.0]
    assert order == [[0], [10], [1, 2, 3]]  # text just ran, so the waiting image goes before more text
    b.stop()


def test_a_failing_batch_fails_each_of_its_items_and_the_thread_goes_on() -> None:
    calls = []

    def flaky(payloads: Sequence[Any]) -> np.ndarray:
        calls.append(list(payloads))
        if len(calls) == 1:
            raise RuntimeError("session failed")
        return np.ones((len(payloads), 1), np.float32)

    b = Batcher({"text": TowerQueue(flaky, 8, 100, 10_000)}, 0.0)
    with pytest.raises(RuntimeError, match="session failed"):
        b.submit("text", [1], [1])[0].result(5)
    assert b.submit("text", [2], [1])[0].result(5)[0] == 1.0
    b.stop()
