"""`edgeclip serve`: a local embeddings server in Jina's jina-clip-v2 API shape (the `server` extra).

    from edgeclip.server import ServerConfig, create_app, run
    run(ServerConfig(bundle=Path("bundles/jina-clip-v2")))
"""

from __future__ import annotations

from .app import create_app
from .config import Limits, ServerConfig
from .run import run

__all__ = ["Limits", "ServerConfig", "create_app", "run"]
