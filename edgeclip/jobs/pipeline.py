"""The job: items -> decode (a thread, overlapped with the model) -> batches -> sessions -> sink.

Memory stays bounded whatever the job's size: the decode thread runs at most a few batches ahead
(a bounded queue), texts are embedded in windows of a few batches (length-sorted inside a window,
written in arrival order), and rows go to the sink as each batch finishes.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from .sources import STDIN_ID_PREFIX
from ..fetch import FetchPolicy
from ..model import EdgeClip
from .sinks import RowBatch, Sink
from .sources import Item

_END = object()  # the decode thread has no more items
IMAGE_GROUP = 4  # images decoded ahead and written together when no image_batch is set


@dataclass(frozen=True)
class JobOptions:
    task: str | None = None
    truncate_dim: int | None = None
    precision: str = "float32"
    max_length: int | None = None
    text_batch: int = 32  # texts per session call
    image_batch: int | None = None  # images per session call (None: the model's default, 1 on CPUs)
    exif_transpose: bool = True
    fetch: FetchPolicy | None = None  # None: URLs are refused
    # Text batches length-sorted together: less padding (at 8 batches, 1,000 short texts ran 8 % slower than
    # one globally sorted encode_text call); rows are still written in arrival order.
    text_window: int = 32


@dataclass(frozen=True)
class Failure:
    id: str
    kind: str
    reason: str


@dataclass
class JobSummary:
    texts: int = 0  # embedded by this run
    images: int = 0
    skipped: int = 0  # already in the output with the same fingerprint
    changed: int = 0  # in the output, but the input changed: embedded again, the old row dropped
    truncated: int = 0  # texts cut to max_length
    failures: list[Failure] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def embedded(self) -> int:
        return self.texts + self.images


@dataclass
class _Decoded:
    item: Item
    payload: Any  # token ids (list[int]) for texts, (3, S, S) float32 pixels for images


class _Decoder(threading.Thread):
    """Reads items and prepares them (tokens, pixels) ahead of the model, into a bounded queue.

    Entries travel in chunks: texts are tokenized CHUNK at a time (one encode_batch call, which the
    tokenizer parallelizes), and skips and failures are grouped, so the queue costs little per item.
    """

    CHUNK = 64

    def __init__(self, model: EdgeClip, items: Iterable[Item], sink: Sink, options: JobOptions, stop: threading.Event) -> None:
        super().__init__(name="edgeclip-decode", daemon=True)
        self.model, self.items, self.sink, self.options, self.stop = model, items, sink, options, stop
        self.out: queue.Queue[Any] = queue.Queue(maxsize=max(2, options.text_batch * options.text_window // self.CHUNK))
        # Decoded images are 3 MB each at 512 px: at most two batches of them exist at once.
        self.image_slots = threading.BoundedSemaphore(2 * (options.image_batch or IMAGE_GROUP))
        self.error: BaseException | None = None
        self._outbox: list[Any] = []
        self._texts: list[Item] = []

    def put(self, value: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.out.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _send(self) -> bool:
        if self._texts:
            self._outbox += self._tokenized(self._texts)
            self._texts = []
        outbox, self._outbox = self._outbox, []
        return not outbox or self.put(outbox)

    def run(self) -> None:
        try:
            seen: set[str] = set()
            for item in self.items:
                if self.stop.is_set():
                    return
                entry = self._screen(item, seen)
                if entry is item and item.kind == "text":
                    self._texts.append(item)
                elif entry is item:
                    self._outbox.append(self._image(item))
                    if not self._send():
                        return
                else:
                    self._outbox.append(entry)
                if len(self._texts) + len(self._outbox) >= self.CHUNK and not self._send():
                    return
            self._send()
        except BaseException as exc:  # noqa: BLE001 - handed to the job's thread, which re-raises it
            self.error = exc
        finally:
            self.put(_END)

    def _screen(self, item: Item, seen: set[str]) -> Item | Failure | None:
        """None: skip (already embedded). Failure: reported. Else the item itself, to prepare."""
        if item.error is not None:
            return Failure(item.id, item.kind, item.error)
        if item.id in seen:
            return Failure(item.id, item.kind, "duplicate id in this job's inputs: the first one is kept")
        seen.add(item.id)
        stored = self.sink.done.get(item.id)
        if stored is not None and stored == item.fingerprint and item.fingerprint:
            return None
        if stored is not None and item.id.startswith(STDIN_ID_PREFIX):
            # stdin lines are numbered, not named: another stream would take over the first one's rows. Lines
            # that match are skipped before this one (a resume of the same stream), so nothing is written yet.
            raise InputError(f"stdin line {item.id.removeprefix(STDIN_ID_PREFIX)} differs from the row {item.id} already "
                             "in the output: this is another stream, whose lines would replace that one's rows. Write "
                             "it to a new --out, or pass --overwrite to replace the output (piping the same stream "
                             "again resumes it)")
        return item

    def _tokenized(self, items: list[Item]) -> list[_Decoded | Failure]:
        task, max_length = self.options.task, self.options.max_length
        try:
            tokens = self.model.tokenize([i.value for i in items], task=task, max_length=max_length)
            return [_Decoded(item, t) for item, t in zip(items, tokens)]
        except InputError:  # one bad text (a lone surrogate from JSON): find it, keep the others
            out: list[_Decoded | Failure] = []
            for item in items:
                try:
                    out.append(_Decoded(item, self.model.tokenize([item.value], task=task, max_length=max_length)[0]))
                except InputError as exc:
                    out.append(Failure(item.id, item.kind, str(exc).removeprefix("text 0 ")))
            return out

    def _image(self, item: Item) -> _Decoded | Failure | None:
        while not self.image_slots.acquire(timeout=0.1):  # released once the image's batch is embedded
            if self.stop.is_set():
                return None
        try:
            pixels = self.model.image_pixels(item.value, exif_transpose=self.options.exif_transpose,
                                             fetch_urls=self.options.fetch or False)
            return _Decoded(item, pixels)
        except InputError as exc:
            self.image_slots.release()
            return Failure(item.id, item.kind, str(exc))


def run_job(model: EdgeClip, items: Iterable[Item], sink: Sink, options: JobOptions = JobOptions(), *,
            stop: threading.Event | None = None, progress: Callable[[int], None] | None = None) -> JobSummary:
    """Embed `items` into `sink`, skipping ids it already holds with the same fingerprint.

    `stop` (set from another thread, e.g. on Ctrl-C) ends the job after the batch in progress;
    every row written stays. `progress(n)` is called as items finish (embedded, skipped or failed).
    Closing the sink is the caller's job (it may still compact or merge).
    """
    stop = stop or threading.Event()
    advance = progress or (lambda n: None)
    summary = JobSummary()
    started = time.perf_counter()
    text_window = options.text_batch * options.text_window
    decoder = _Decoder(model, items, sink, options, stop)
    texts: list[_Decoded] = []
    images: list[_Decoded] = []

    def write(batch: list[_Decoded], vectors: np.ndarray) -> None:
        for decoded in batch:
            if decoded.item.id in sink.done:
                summary.changed += 1
        sink.write(RowBatch([d.item.id for d in batch], [d.item.kind for d in batch],
                            [d.item.fingerprint for d in batch], vectors))

    def flush_texts() -> None:
        """The window's texts in length-sorted batches (the model splits them by exact length: no padding), the bar moving per batch;
        rows are written in arrival order, and on a stop the batches already done are written."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i].payload.ids))
        rows: dict[int, np.ndarray] = {}
        for start in range(0, len(order), options.text_batch):
            chunk = order[start : start + options.text_batch]
            vectors = model.embed_tokens([texts[i].payload.ids for i in chunk], truncate_dim=options.truncate_dim,
                                         precision=options.precision, batch_size=options.text_batch)  # type: ignore[arg-type]
            rows.update(zip(chunk, vectors))
            advance(len(chunk))
            if stop.is_set():
                break
        done = sorted(rows)
        if done:
            write([texts[i] for i in done], np.stack([rows[i] for i in done]))
            summary.texts += len(done)
            summary.truncated += sum(texts[i].payload.truncated for i in done)
        texts.clear()

    def flush_images() -> None:
        if images:
            vectors = model.embed_pixels(np.stack([d.payload for d in images]), truncate_dim=options.truncate_dim,
                                         precision=options.precision, batch_size=options.image_batch)  # type: ignore[arg-type]
            summary.images += len(images)
            write(images, vectors)
            advance(len(images))
            for _ in images:
                decoder.image_slots.release()
            images.clear()

    decoder.start()
    finished = False
    try:
        while not stop.is_set():
            try:
                entry = decoder.out.get(timeout=0.1)
            except queue.Empty:
                continue
            if entry is _END:
                if decoder.error is not None:
                    raise decoder.error
                flush_texts()
                if not stop.is_set():
                    flush_images()
                finished = not stop.is_set()  # a stop during the last batches leaves some undone
                break
            passed = 0  # skips and failures in this chunk, shown in one progress step
            for one in entry:
                if stop.is_set():
                    break
                if one is None:
                    summary.skipped += 1
                    passed += 1
                elif isinstance(one, Failure):
                    summary.failures.append(one)
                    passed += 1
                elif one.item.kind == "text":
                    texts.append(one)
                    if len(texts) >= text_window:
                        flush_texts()
                else:
                    images.append(one)
                    if len(images) >= (options.image_batch or IMAGE_GROUP):
                        flush_images()
            if passed:
                advance(passed)
        summary.interrupted = not finished
    finally:
        stop.set()  # the decode thread ends at its next put
        decoder.join(timeout=5)
        summary.seconds = time.perf_counter() - started
    return summary
