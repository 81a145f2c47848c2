"""A request body read within bounds: its size, the time it takes to arrive, and how many JSON values it holds.

The values are counted chunk by chunk as the body arrives, so a body of a million tiny items is refused
after its first few kilobytes, before anything has been parsed (parsing 3,000,000 `{"text": "a"}`
items took 48 s of event loop and 2.3 GB here). The rest of a refused body is read and discarded (by
uvicorn, after the answer) when its declared length is at most twice the cap, so that the client reads
the 413 rather than a connection reset; a body that may be endless (declared larger, chunked, or
trickling past the deadline) gets its answer and then the connection is closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Receive = Callable[[], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Refusal:
    status: int
    code: str
    detail: str
    close: bool = False  # the client is still sending: answer, then close instead of reading the rest
QUOTE, BACKSLASH, COMMA, OPEN_ARRAY, OPEN_OBJECT = 34, 92, 44, 91, 123
_STRUCTURAL = (b'"', b"\\", b",", b"[", b"{")


class JsonValueCounter:
    """Counts the commas and opened arrays/objects outside JSON strings, fed a body in chunks.

    For n inputs that is about n (strings) or 2n (objects) plus a few for the options: a bound on how
    many Python objects parsing the body would make, whatever its byte size. Exact for valid JSON (a
    backslash occurs only inside strings, where an odd run of them escapes the next quote), and so for
    every prefix a parser reads before it stops at an error.
    """

    def __init__(self) -> None:
        self.count = 0
        self.in_string = False
        self.trailing_backslashes = 0  # the run of backslashes that ended the previous chunk

    def feed(self, chunk: bytes) -> int:
        if not any(mark in chunk for mark in _STRUCTURAL):  # base64 and plain text: nothing to count
            if chunk:
                self.trailing_backslashes = 0
            return self.count
        data = np.frombuffer(chunk, np.uint8)
        positions = np.arange(data.size)
        # index of the last byte at or before each position that is not a backslash (-1: none in this chunk)
        last_plain = np.maximum.accumulate(np.where(data == BACKSLASH, -1, positions))
        quotes = np.flatnonzero(data == QUOTE)
        before = quotes - 1
        plain_before = np.where(before >= 0, last_plain[np.maximum(before, 0)], -1)
        run = before - plain_before + np.where(plain_before < 0, self.trailing_backslashes, 0)
        toggles = np.zeros(data.size, np.int32)
        toggles[quotes[run % 2 == 0]] = 1  # quotes that open or close a string
        inside = (np.cumsum(toggles, dtype=np.int32) + int(self.in_string)) % 2 == 1
        counted = (data == COMMA) | (data == OPEN_ARRAY) | (data == OPEN_OBJECT)
        self.count += int(np.count_nonzero(counted & ~inside))
        self.in_string = bool(inside[-1])
        tail = data.size - 1 - int(last_plain[-1])
        self.trailing_backslashes = tail + (self.trailing_backslashes if last_plain[-1] < 0 else 0)
        return self.count


def value_limit(max_items: int) -> int:
    """Values a body of max_items object inputs and every option holds, with room to spare."""
    return 2 * max_items + 64


async def read_body(receive: Receive, max_bytes: int, max_items: int, timeout_s: float,
                    declared: int | None) -> tuple[bytes | None, Refusal | None]:
    """The whole body, or why not: over max_bytes (413), more values than max_items inputs can hold
    (413), not all there after timeout_s (408), or the client gone (400). `declared`: its Content-Length."""
    too_large = Refusal(413, "body_too_large", f"the request body is over {max_bytes} bytes; send fewer or smaller "
                        "inputs", close=True)
    too_many = (f"the request holds more than {max_items} inputs (or more JSON arrays, objects and commas than they "
                "need); split it, or start the server with a larger --max-items")
    chunks: list[bytes] = []
    counter = JsonValueCounter()
    limit = value_limit(max_items)
    size = 0

    async def read_all() -> Refusal | None:
        nonlocal size
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return Refusal(400, "client_disconnected", "the client closed the connection before the body arrived")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_bytes:
                return too_large
            if counter.feed(chunk) > limit:
                return Refusal(413, "too_many_items", too_many, close=message.get("more_body", False) and declared is None)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return None

    try:
        refusal = await asyncio.wait_for(read_all(), timeout_s)
    except asyncio.TimeoutError:
        refusal = Refusal(408, "body_timeout", f"the request body took longer than {timeout_s:g} s to arrive", close=True)
    return (None, refusal) if refusal else (b"".join(chunks), None)
