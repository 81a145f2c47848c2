"""`edgeclip serve BUNDLE`: the local embeddings server (needs the `server` extra)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..bundle import MANIFEST_FILE
from ..errors import InputError
from ..fetch import FetchPolicy
from .common import positive


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="serve embeddings over HTTP in Jina's API shape (OpenAI clients work too)",
                       description="POST /v1/embeddings, GET /v1/models, /health, /live, /ready, /metrics. Binds to "
                                   "loopback unless --host says otherwise; stops gracefully on SIGTERM.")
    p.add_argument("bundle", type=Path, help="bundle directory (made by `python -m converters build`)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; ::1 for IPv6)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: $EDGECLIP_API_KEY, else none)")
    p.add_argument("--fetch-urls", action="store_true", help="fetch http(s) image URLs (public addresses only)")
    p.add_argument("--allow-host", action="append", default=[], metavar="HOST",
                   help="with --fetch-urls: also fetch from HOST when it resolves to a loopback/private address (repeatable)")
    p.add_argument("--threads", type=positive, help="onnxruntime threads (default: one per core)")
    p.add_argument("--variant", help="bundle variant, e.g. fp32 (default: int8 on CPU)")
    p.add_argument("--max-batch", type=positive, default=32, help="text items per session call (default 32; images: one per call on a CPU, at most 4 on a GPU)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long an item waits for batch-mates (default 5)")
    p.add_argument("--served-model-name", action="append", default=[], metavar="NAME",
                   help="also accept NAME as `model` (repeatable): a client's default model name, accepted on purpose")
    p.add_argument("--index", type=Path, metavar="DB", help="an `edgeclip index` file: serve its search page at / "
                   "(and GET /v1/search, /v1/thumbnail)")
    limits = p.add_argument_group("limits")
    limits.add_argument("--max-items", type=positive, default=2048, help="inputs per request (default 2048)")
    limits.add_argument("--max-body-mb", type=positive, default=64, help="request body size (default 64 MiB)")
    limits.add_argument("--max-image-mb", type=positive, default=8, help="bytes per image (default 8 MiB, as Jina)")
    limits.add_argument("--max-tokens", type=positive, default=8192, help="tokens per text (default 8192)")
    limits.add_argument("--max-queue", type=positive, default=512, help="texts waiting before 429 (default 512; images: a 16th of it)")
    limits.add_argument("--body-timeout", type=float, default=30.0, help="seconds for a request body to arrive (default 30)")
    limits.add_argument("--max-images", type=positive, default=256, help="images per request (default 256)")
    limits.add_argument("--max-request-megapixels", type=positive, default=1024,
                        help="all images of one request together, in megapixels (default 1024)")
    limits.add_argument("--header-timeout", type=float, default=10.0,
                        help="seconds for a connection's request headers to arrive, else it is closed (default 10)")
    limits.add_argument("--max-connections", type=positive, default=1000,
                        help="open connections; more are answered 503 and closed at once (default 1000)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        from ..server import Limits, ServerConfig
        from ..server import run as serve
        from ..server.config import api_key_from, base64_size
    except ImportError as exc:
        raise InputError(f"edgeclip serve needs the server extra ({exc.name} is missing): "
                         "pip install 'edgeclip[server]'") from exc
    if not (args.bundle / MANIFEST_FILE).is_file():
        raise InputError(f"{args.bundle} is not a bundle (no {MANIFEST_FILE}); build one with `python -m converters build`")
    if not 0 <= args.port <= 65535:
        raise InputError(f"--port must be 0-65535, got {args.port}")
    if not 0 <= args.max_wait_ms <= 1000:
        raise InputError(f"--max-wait-ms must be 0-1000, got {args.max_wait_ms:g}")
    for option, value in (("--body-timeout", args.body_timeout), ("--header-timeout", args.header_timeout)):
        if not value > 0:
            raise InputError(f"{option} must be positive, got {value:g}")
    mib = 1024 * 1024
    if args.max_body_mb * mib < base64_size(args.max_image_mb * mib) + 1024:
        raise InputError(f"--max-body-mb {args.max_body_mb} cannot hold one image of --max-image-mb {args.max_image_mb} "
                         f"as base64; raise --max-body-mb to at least {-(-base64_size(args.max_image_mb * mib) // mib) + 1}")
    limits = Limits(max_items=args.max_items, max_body_bytes=args.max_body_mb * mib, max_image_bytes=args.max_image_mb * mib,
                    max_tokens=args.max_tokens, max_queue=args.max_queue, body_timeout_s=args.body_timeout,
                    max_images=args.max_images, max_request_pixels=args.max_request_megapixels * 1_000_000)
    fetch = FetchPolicy(max_bytes=limits.max_image_bytes, allow_hosts=tuple(h.lower() for h in args.allow_host)) if args.fetch_urls else None
    if args.allow_host and not args.fetch_urls:
        raise InputError("--allow-host only matters with --fetch-urls; add --fetch-urls")
    config = ServerConfig(bundle=args.bundle, host=args.host, port=args.port, api_key=api_key_from(args.api_key),
                          fetch=fetch, threads=args.threads, variant=args.variant, max_batch=args.max_batch,
                          max_wait_ms=args.max_wait_ms, limits=limits, index=args.index,
                          served_model_names=tuple(name.strip() for name in args.served_model_name if name.strip()),
                          header_timeout_s=args.header_timeout, max_connections=args.max_connections)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(config)
    return 0
