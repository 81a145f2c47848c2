"""The model behind the server: loaded and warmed in the background, fed through the batcher.

Tokenizing, decoding, base64 and URL fetches run on a small thread pool (the event loop never
blocks on them); session calls run on the batcher's one inference thread.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..bundle import Tower
from ..errors import EdgeClipError
from ..model import EdgeClip, load
from .batcher import Batcher, Overloaded, TowerQueue
from .config import MODEL_ALIASES, VISION_MAX_BATCH, ServerConfig
from .errors import ApiError, invalid_item
from .items import ImageItem, Item, Options, TextItem, check_image_budget, image_area, image_bytes, image_pixels
from .metrics import Metrics

log = logging.getLogger("edgeclip.server")
# Short texts are tokenized on the event loop (tens of microseconds, less than a hop to a thread and back).
INLINE_TOKENIZE_CHARS = 2000
TEXT_BATCH_TOKENS = 16384
# The image queue holds a 16th of --max-queue: an image costs ~100 short queries (32 images ~ a minute
# of backlog on 2 cores, where 512 would be 20 minutes of waiting before anyone heard 429).
IMAGE_QUEUE_SHARE = 16  # padded tokens per text session call (32 x 512), one long text always fits alone


@dataclass(frozen=True)
class Embedded:
    rows: np.ndarray  # (N, D) raw graph rows, in the request's item order
    text_tokens: int
    image_tokens: int


class Engine:
    def __init__(self, config: ServerConfig, metrics: Metrics) -> None:
        self.config, self.metrics = config, metrics
        self.model: EdgeClip = load(config.bundle, variant=config.variant, threads=config.threads,
                                    max_image_pixels=config.limits.max_image_pixels)
        manifest = self.model.manifest
        self.towers: tuple[Tower, ...] = tuple(t for t in ("text", "vision") if getattr(manifest, t) is not None)  # type: ignore[misc]
        self.model_names = tuple(dict.fromkeys([*MODEL_ALIASES, config.bundle.resolve().name, manifest.source.model_id,
                                                *config.served_model_names]))
        self.ready = threading.Event()
        self.load_error: str | None = None
        self.batcher: Batcher | None = None
        self.pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="edgeclip-decode")
        self._loader = threading.Thread(target=self._load, name="edgeclip-load", daemon=True)

    @property
    def output_dim(self) -> int:
        return self.model.output_dim(self.towers[0])

    def start(self) -> None:
        self._loader.start()

    def stop(self) -> None:
        self._loader.join(timeout=60)
        if self.batcher is not None:
            self.batcher.stop()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _load(self) -> None:
        """Open the sessions and run each once, so the first request does not pay for it."""
        started = time.monotonic()
        try:
            self.model.open_towers(self.towers)
            queues: dict[Tower, TowerQueue] = {}
            for tower in self.towers:
                variant = self.model.bundle.variant(tower, self.model.variant_name(tower))
                # images: one per call on CPUs, where batching does not speed them up (and a hung-up client's
                # images stop at the next call); VISION_MAX_BATCH on GPUs
                cap = self.config.max_batch if tower == "text" else min(self.config.max_batch,
                                                                         VISION_MAX_BATCH if self.model.on_gpu else 1)
                if not variant.batch_independent:
                    log.warning("the %s %s graph has per-tensor activation scales (built before edgeclip 0.1.0's "
                                "per-row scales): items are embedded one at a time so that batch-mates cannot change "
                                "them; rebuild the bundle to batch", tower, variant.precision)
                    cap = 1
                runner = self._run_text if tower == "text" else self._run_vision
                limit = self.config.limits.max_queue
                queues[tower] = TowerQueue(runner, cap, limit if tower == "text" else max(1, limit // IMAGE_QUEUE_SHARE),
                                           TEXT_BATCH_TOKENS if tower == "text" else cap,
                                           interrupt=functools.partial(self.model.interrupt, tower))
                self._warm(tower)
            self.batcher = Batcher(queues, self.config.max_wait_ms / 1000, self.metrics.observe_batch)
        except EdgeClipError as exc:
            self.load_error = str(exc)
            log.error("cannot serve this bundle: %s", exc)
            return
        self.ready.set()
        self.metrics.ready.set(1)
        log.info("ready in %.1f s: towers %s, variants %s", time.monotonic() - started, ", ".join(self.towers),
                 ", ".join(self.model.variant_name(t) for t in self.towers))

    def _warm(self, tower: Tower) -> None:
        if tower == "text":
            self._run_text([self.model.tokenize(["warm up"])[0].ids])
        else:
            size = self.model.manifest.vision.image_size  # type: ignore[union-attr]
            self._run_vision([np.zeros((3, size, size), np.float32)])

    def _run_text(self, payloads: Sequence[Any]) -> np.ndarray:
        return self.model.run_tokens(list(payloads), batch_size=len(payloads))

    def _run_vision(self, payloads: Sequence[Any]) -> np.ndarray:
        return self.model.run_pixels(np.stack(payloads))  # the model's own batch: 1 per call on CPUs

    # ---- one request ---------------------------------------------------------------------------

    async def embed(self, items: list[Item], options: Options) -> Embedded:
        """Embed a request's items. Cancelled (its client hung up): the items still queued are dropped, and
        a session call that only they were waiting for is stopped."""
        if not self.ready.is_set() or self.batcher is None:
            raise ApiError(503, "not_ready", self.load_error or "the model is still loading; retry in a few seconds",
                           headers={"Retry-After": "5"})
        texts = [i for i in items if isinstance(i, TextItem)]
        images = [i for i in items if isinstance(i, ImageItem)]
        for tower, group in (("text", texts), ("vision", images)):
            if group and tower not in self.towers:
                raise invalid_item(group[0].index, "", f"this bundle has no {tower} tower; rebuild it with "
                                   "--towers text,vision", None, "tower_missing")
            refusal = self.batcher.overloaded(tower) if group else None  # type: ignore[arg-type]
            if refusal is not None:  # refused before any decoding or tokenizing
                raise self._overloaded(refusal)
        loop = asyncio.get_running_loop()
        text_job = None
        if texts and sum(len(t.text) for t in texts) > INLINE_TOKENIZE_CHARS:
            text_job = loop.run_in_executor(self.pool, self._tokenize, texts, options)
        image_jobs = [loop.run_in_executor(self.pool, self._image_bytes, item) for item in images]
        text_tokens = image_tokens = 0
        futures: dict[Tower, list[Future[np.ndarray]]] = {"text": [], "vision": []}
        try:
            if texts:
                with self.batcher.arriving("text"):
                    ids = await text_job if text_job is not None else self._tokenize(texts, options)
                    text_tokens = sum(len(row) for row in ids)
                    futures["text"] = self.batcher.submit("text", ids, [len(r) for r in ids])
            if image_jobs:
                with self.batcher.arriving("vision"):
                    encoded = await asyncio.gather(*image_jobs)
                    check_image_budget([area for _, area in encoded], self.config.limits)
                    image_jobs = [loop.run_in_executor(self.pool, self._pixels, item, data)
                                  for item, (data, _) in zip(images, encoded)]
                    decoded = await asyncio.gather(*image_jobs)
                    image_tokens = sum(tokens for _, tokens in decoded)
                    futures["vision"] = self.batcher.submit("vision", [p for p, _ in decoded], [1] * len(decoded))
            rows = [await asyncio.wrap_future(f) for f in futures["text"]] + [await asyncio.wrap_future(f) for f in futures["vision"]]
        except Overloaded as exc:
            raise self._overloaded(exc) from exc
        except asyncio.CancelledError:
            self._drop(futures, len(texts), len(images))
            raise
        finally:
            for job in image_jobs:
                job.cancel()
        by_index = dict(zip([i.index for i in texts] + [i.index for i in images], rows))
        return Embedded(np.stack([by_index[i.index] for i in items]), text_tokens, image_tokens)

    def _drop(self, futures: dict[Tower, list[Future[np.ndarray]]], texts: int, images: int) -> None:
        """The client is gone: cancel what has not run, stop a session call that only this request waits
        for, and count every item not computed for it."""
        assert self.batcher is not None
        for tower, total in (("text", texts), ("vision", images)):
            if not total:
                continue
            done = sum(1 for f in futures[tower] if not f.cancel() and f.done())
            self.batcher.drop_cancelled(tower)  # type: ignore[arg-type]
            self.metrics.dropped.labels(tower).inc(total - done)

    def _overloaded(self, exc: Overloaded) -> ApiError:
        return ApiError(429, "overloaded", f"the server is at capacity ({exc.tower} queue full); retry after "
                        f"{exc.retry_after_s} s", headers={"Retry-After": str(exc.retry_after_s)})

    def _tokenize(self, texts: list[TextItem], options: Options) -> list[list[int]]:
        task = "retrieval.query" if options.task == "retrieval.query" else None
        spec = self.model.manifest.text
        assert spec is not None
        limit = min(self.config.limits.max_tokens, spec.max_length)
        if task is not None and task not in spec.task_prefixes:
            task = None  # a bundle without the instruction (a test checkpoint): embed as is
        tokenized = self.model.tokenize([t.text for t in texts], task=task, max_length=limit)
        too_long = [(item, t.tokens) for item, t in zip(texts, tokenized) if t.truncated]
        if too_long and not options.truncate:
            errors = [{"field": f"input[{item.index}]", "input": item.text[:200], "type": "too_long",
                       "message": f"{tokens} tokens, over the limit of {limit}"} for item, tokens in too_long[:20]]
            first, tokens = too_long[0]
            raise ApiError(422, "input_too_long", f"input[{first.index}]: the text is {tokens} tokens, over the limit of "
                           f"{limit}; shorten it or send \"truncate\": true", errors=errors)
        return [t.ids for t in tokenized]

    def _image_bytes(self, item: ImageItem) -> tuple[bytes, int]:
        """The image's bytes (decoded base64, or fetched) and its area from the header, for the request's budget."""
        data = image_bytes(item, self.config.limits, self.config.fetch)
        return data, image_area(data)

    def _pixels(self, item: ImageItem, data: bytes) -> tuple[np.ndarray, int]:
        spec = self.model.manifest.vision
        assert spec is not None
        return image_pixels(item, data, spec, self.config.limits)
