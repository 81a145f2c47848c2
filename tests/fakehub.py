"""A local HTTP server that answers as the Hugging Face Hub does, for `edgeclip pull` (tests/hub, tests/docs).

It implements the one route huggingface_hub's hf_hub_download uses:
HEAD/GET /{owner}/{name}/resolve/{revision}/{path}, with X-Repo-Commit, ETag and Content-Length, and
404s carrying X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound).
"""

from __future__ import annotations

import hashlib
import http.server

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub(http.server.ThreadingHTTPServer):
    """Serves `files` as the repo `repo` at revisions main, COMMIT and `tags` (each answering as COMMIT)."""

    def __init__(self, files: dict[str, bytes], repo: str, tags: tuple[str, ...] = ()) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files, self.repo, self.revisions = files, repo, {"main", COMMIT, *tags}
        self.requests: list[tuple[str, str]] = []


class _Handler(http.server.BaseHTTPRequestHandler):
    server: FakeHub

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _answer(self, body: bool) -> None:
        parts = self.path.split("?")[0].lstrip("/").split("/")
        self.server.requests.append((self.command, self.path))
        if len(parts) < 5 or parts[2] != "resolve":
            return self._error(404, "RepoNotFound")
        repo, revision, name = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        if repo != self.server.repo:
            return self._error(404, "RepoNotFound")
        if revision not in self.server.revisions:
            return self._error(404, "RevisionNotFound")
        if name not in self.server.files:
            return self._error(404, "EntryNotFound")
        data = self.server.files[name]
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _error(self, status: int, code: str) -> None:
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Repo-Commit", COMMIT) if code == "EntryNotFound" else None
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(body=True)
