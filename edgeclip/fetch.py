"""Image references given as strings: `data:` URIs, and http(s) URLs when the caller opts in.

One module so the CLI, the Python API and the server apply the same rules: a URL is fetched only
with a FetchPolicy (timeout, byte cap, allowed schemes and hosts, every redirect re-checked), and
everything that goes wrong is an InputError naming the reference and the fix.
"""

from __future__ import annotations

import base64
import binascii
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from .errors import InputError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
DEFAULT_MAX_BYTES = 32_000_000  # a 40 MP JPEG is ~20 MB; anything larger is more likely a mistake or an attack


@dataclass(frozen=True)
class FetchPolicy:
    """How http(s) image URLs are fetched. `allowed_hosts=None` allows any host."""

    timeout_s: float = 10.0  # per connection and per read
    max_bytes: int = DEFAULT_MAX_BYTES  # larger bodies are refused, not truncated
    allowed_hosts: tuple[str, ...] | None = None  # exact host names (lower case); None: any
    schemes: tuple[str, ...] = ("http", "https")

    def __post_init__(self) -> None:
        if not self.timeout_s > 0 or isinstance(self.max_bytes, bool) or self.max_bytes < 1:
            raise InputError(f"FetchPolicy needs timeout_s > 0 and max_bytes >= 1, got {self.timeout_s!r}, {self.max_bytes!r}")

    def check(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme.lower() not in self.schemes:
            raise InputError(f"URL {_short(url)} has scheme {parts.scheme!r}; only {', '.join(self.schemes)} are fetched")
        host = (parts.hostname or "").lower()
        if not host:
            raise InputError(f"URL {_short(url)} has no host")
        if self.allowed_hosts is not None and host not in self.allowed_hosts:
            raise InputError(f"URL {_short(url)}: host {host!r} is not allowed (allowed: {', '.join(self.allowed_hosts) or 'none'})")


def is_data_uri(value: str) -> bool:
    return value[:5].lower() == "data:"


def is_url(value: str) -> bool:
    """True for 'scheme://...' strings (http, https, ftp, file, ...); Windows paths like C:\\x are not URLs."""
    return bool(_URL.match(value))


def decode_data_uri(uri: str, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """RFC 2397: data:[<mediatype>][;base64],<data> -> bytes."""
    header, comma, payload = uri.partition(",")
    if not comma:
        raise InputError(f"data URI {_short(uri)} has no ',' before its data; expected data:image/png;base64,...")
    if header.lower().endswith(";base64"):
        try:
            data = base64.b64decode(payload.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InputError(f"data URI {_short(uri)} is not valid base64 ({exc})") from exc
    else:
        data = urllib.parse.unquote_to_bytes(payload)
    if not data:
        raise InputError(f"data URI {_short(uri)} holds no data")
    if len(data) > max_bytes:
        raise InputError(f"data URI {_short(uri)} holds {len(data):,} bytes, over the limit of {max_bytes:,} bytes")
    return data


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Each redirect target must pass the same policy as the first URL (no https -> file:, no host hop)."""

    def __init__(self, policy: FetchPolicy) -> None:
        self.policy = policy

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        self.policy.check(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch_url(url: str, policy: FetchPolicy) -> bytes:
    """GET an http(s) URL under the policy; the body is read up to max_bytes + 1 and refused if larger."""
    policy.check(url)
    opener = urllib.request.build_opener(_CheckedRedirects(policy))
    request = urllib.request.Request(url, headers={"User-Agent": "edgeclip", "Accept": "image/*"})
    try:
        with opener.open(request, timeout=policy.timeout_s) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > policy.max_bytes:
                raise InputError(f"URL {_short(url)} is {int(declared):,} bytes, over the limit of {policy.max_bytes:,} bytes")
            body = response.read(policy.max_bytes + 1)
    except InputError:
        raise
    except urllib.error.HTTPError as exc:
        raise InputError(f"URL {_short(url)}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InputError(f"URL {_short(url)} could not be fetched ({reason}); check the address and the network") from exc
    if len(body) > policy.max_bytes:
        raise InputError(f"URL {_short(url)} is over the limit of {policy.max_bytes:,} bytes")
    if not body:
        raise InputError(f"URL {_short(url)} returned no data")
    return body


def image_reference(value: str, fetch: FetchPolicy | None) -> bytes | None:
    """Bytes for a data URI or a URL string; None for anything else (a file path)."""
    if is_data_uri(value):
        return decode_data_uri(value, fetch.max_bytes if fetch else DEFAULT_MAX_BYTES)
    if not is_url(value):
        return None
    scheme = _SCHEME.match(value).group(1).lower()  # type: ignore[union-attr]
    if scheme not in ("http", "https"):
        raise InputError(f"{_short(value)}: {scheme}:// references are not supported; give a file path, an http(s) URL or a data: URI")
    if fetch is None:
        raise InputError(f"{_short(value)} is a URL; downloading is off by default: pass fetch_urls=True "
                         "(CLI: --fetch-urls) to allow it")
    return fetch_url(value, fetch)


def _short(value: str, limit: int = 80) -> str:
    return repr(value if len(value) <= limit else value[: limit - 3] + "...")
