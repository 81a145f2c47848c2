"""Dynamic batching across concurrent requests: one queue per tower, one inference thread.

An item waits for batch-mates only while more are on their way (a request admitted but still being
tokenized or decoded), and at most `max_wait_s` after it arrived: a lone query runs at once, and
under load batches form from what queues up while the previous batch runs. The thread alternates
between the towers whenever both have work, so a queue of images cannot starve short queries (a text
waits for at most one image batch). One inference at a time is the right number on a CPU: ONNX
Runtime already spreads each call over `threads` cores, and two concurrent calls would only contend.
A full queue refuses new items at once (the caller answers 429) instead of letting them time out.
Items whose futures were cancelled (their client hung up) are dropped unrun, and a session call that
only such items wait for is interrupted.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..bundle import Tower

log = logging.getLogger("edgeclip.server")
Runner = Callable[[Sequence[Any]], np.ndarray]  # payloads -> (N, D) float32 rows, in order


class Overloaded(Exception):
    def __init__(self, tower: Tower, retry_after_s: int) -> None:
        super().__init__(f"the {tower} queue is full")
        self.tower, self.retry_after_s = tower, retry_after_s


@dataclass
class _Job:
    payload: Any  # token ids (text) or a (3, S, S) pixel array (image)
    cost: int  # padded-token cost of a text row; 1 for an image
    future: Future[np.ndarray]
    arrived: float = field(default_factory=time.monotonic)


@dataclass
class TowerQueue:
    runner: Runner
    max_batch: int
    max_queue: int
    max_batch_cost: int  # a text batch stops growing past this many padded tokens (memory and latency)
    jobs: deque[_Job] = field(default_factory=deque)
    seconds_per_item: float = 0.05  # running estimate, for Retry-After
    arriving: int = 0  # requests admitted for this tower whose items are not queued yet
    interrupt: Callable[[], None] = lambda: None  # stops the runner's call in progress, from another thread


class Batcher:
    def __init__(self, towers: dict[Tower, TowerQueue], max_wait_s: float,
                 observe: Callable[[Tower, int, float], None] = lambda tower, size, seconds: None) -> None:
        self.towers, self.max_wait_s, self.observe = towers, max_wait_s, observe
        self._cond = threading.Condition()
        self._stopping = False
        self._order: list[Tower] = list(towers)
        self._running: tuple[Tower, list[_Job]] | None = None
        self._thread = threading.Thread(target=self._loop, name="edgeclip-inference", daemon=True)
        self._thread.start()

    def depth(self, tower: Tower) -> int:
        with self._cond:
            return len(self.towers[tower].jobs)

    def overloaded(self, tower: Tower) -> Overloaded | None:
        """Overloaded (with a Retry-After estimate) once a tower's queue holds max_queue items, else None.

        A request is admitted whole while there is room, so one request larger than the queue is
        still served (the queue is bounded by max_queue + the items of one request)."""
        queue = self.towers[tower]
        waiting = len(queue.jobs)
        if waiting < queue.max_queue and not self._stopping:
            return None
        return Overloaded(tower, max(1, int(waiting * queue.seconds_per_item + 0.999)))

    @contextlib.contextmanager
    def arriving(self, tower: Tower) -> Iterator[None]:
        """Around a request's decoding and submit: batches forming meanwhile wait for its items."""
        queue = self.towers[tower]
        with self._cond:
            queue.arriving += 1
        try:
            yield
        finally:
            with self._cond:
                queue.arriving -= 1
                self._cond.notify_all()

    def submit(self, tower: Tower, payloads: Sequence[Any], costs: Sequence[int]) -> list[Future[np.ndarray]]:
        """Queue a request's items of one tower together, or refuse them all (Overloaded)."""
        queue = self.towers[tower]
        with self._cond:
            refusal = self.overloaded(tower)
            if refusal is not None:
                raise refusal
            jobs = [_Job(p, c, Future()) for p, c in zip(payloads, costs)]
            queue.jobs.extend(jobs)
            self._cond.notify_all()
        return [job.future for job in jobs]

    def drop_cancelled(self, tower: Tower) -> None:
        """Forget the tower's cancelled items now (so they stop counting against the queue), and interrupt
        the batch in progress if every item in it is cancelled."""
        queue = self.towers[tower]
        with self._cond:
            queue.jobs = deque(job for job in queue.jobs if not job.future.cancelled())
            running = self._running
            if running is not None and running[0] == tower and all(job.future.cancelled() for job in running[1]):
                queue.interrupt()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Finish what is queued, then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout_s)

    def _loop(self) -> None:
        while True:
            picked = self._next_batch()
            if picked is None:
                return
            tower, jobs = picked
            queue = self.towers[tower]
            started = time.monotonic()
            try:
                rows = queue.runner([job.payload for job in jobs])
            except BaseException as exc:  # noqa: BLE001 - every waiting request must hear about it
                if not all(job.future.cancelled() for job in jobs):
                    log.exception("%s batch of %d failed", tower, len(jobs))
                for job in jobs:
                    _settle(job.future, exception=exc)
                continue
            finally:
                with self._cond:
                    self._running = None
            seconds = time.monotonic() - started
            queue.seconds_per_item = 0.8 * queue.seconds_per_item + 0.2 * seconds / len(jobs)
            for job, row in zip(jobs, rows):
                _settle(job.future, row)
            self.observe(tower, len(jobs), seconds)

    def _next_batch(self) -> tuple[Tower, list[_Job]] | None:
        with self._cond:
            while True:
                waiting = [t for t in self._order if self.towers[t].jobs]
                if not waiting:
                    if self._stopping:
                        return None
                    self._cond.wait()
                    continue
                tower = waiting[0]
                queue = self.towers[tower]
                # Wait for company only while some is on its way, until the first item has waited max_wait,
                # unless the batch is full (or we are stopping, or another tower has work: take what is here).
                due = queue.jobs[0].arrived + self.max_wait_s
                now = time.monotonic()
                if (queue.arriving and len(queue.jobs) < queue.max_batch and now < due and not self._stopping
                        and len(waiting) == 1):
                    self._cond.wait(due - now)
                    continue
                self._order.remove(tower)
                self._order.append(tower)  # the other tower goes first next time
                jobs = self._take(queue)
                if not jobs:
                    continue
                self._running = (tower, jobs)
                return tower, jobs

    @staticmethod
    def _take(queue: TowerQueue) -> list[_Job]:
        """The next batch from the queue's head, skipping items whose client hung up."""
        while queue.jobs and queue.jobs[0].future.cancelled():
            queue.jobs.popleft()
        if not queue.jobs:
            return []
        jobs = [queue.jobs.popleft()]
        widest = jobs[0].cost
        while queue.jobs and len(jobs) < queue.max_batch:
            wider = max(widest, queue.jobs[0].cost)
            if wider * (len(jobs) + 1) > queue.max_batch_cost:
                break
            widest = wider
            job = queue.jobs.popleft()
            if not job.future.cancelled():
                jobs.append(job)
        return jobs


def _settle(future: Future[np.ndarray], row: np.ndarray | None = None, exception: BaseException | None = None) -> None:
    """Hand the result over unless the future was cancelled meanwhile (its client is gone)."""
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(row)
    except InvalidStateError:
        pass
