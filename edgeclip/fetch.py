"""Image references given as strings: `data:` URIs, and http(s) URLs when the caller opts in.

One module so the CLI, the Python API and the server apply the same rules. A URL is fetched only
with a FetchPolicy: http/https only; every address the host name resolves to must be a public one
(loopback, private, link-local, CGNAT, multicast, reserved and cloud-metadata addresses are refused,
IPv4-mapped IPv6 included) unless the host is in `allow_hosts`; the connection goes to the address
that was checked (no second DNS lookup to rebind); at most `max_redirects` redirects, each checked
the same way; connect/read timeouts and an overall deadline; the body is read up to the byte cap
and refused past it. Whether the bytes are an image is decided by decoding them, not by headers.
Environment proxies are not used. Everything that goes wrong is an InputError naming the fix.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import ipaddress
import re
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass

from .errors import InputError, InputTooLarge

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
DEFAULT_MAX_BYTES = 32_000_000  # a 40 MP JPEG is ~20 MB; anything larger is more likely a mistake or an attack
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class FetchPolicy:
    """How http(s) image URLs are fetched."""

    timeout_s: float = 10.0  # to connect, and for each read
    deadline_s: float = 30.0  # for the whole fetch, redirects included (a slow drip ends here)
    max_bytes: int = DEFAULT_MAX_BYTES  # larger bodies are refused, not truncated
    allow_hosts: tuple[str, ...] = ()  # host names (lower case) that may resolve to non-public addresses, e.g. a LAN NAS
    max_redirects: int = 3
    schemes: tuple[str, ...] = ("http", "https")
    ca_file: str | None = None  # a CA bundle to trust instead of the system's (a private CA on the local network)

    def __post_init__(self) -> None:
        if not (self.timeout_s > 0 and self.deadline_s > 0) or isinstance(self.max_bytes, bool) or self.max_bytes < 1:
            raise InputError(f"FetchPolicy needs positive timeouts and max_bytes, got {self.timeout_s!r}, "
                             f"{self.deadline_s!r}, {self.max_bytes!r}")

    def target(self, url: str) -> tuple[urllib.parse.SplitResult, str, int, list[IPAddress]]:
        """The URL's parts, host, port and the checked addresses to connect to; InputError if refused."""
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in self.schemes:
            raise InputError(f"URL {_short(url)} has scheme {parts.scheme!r}; only {', '.join(self.schemes)} are fetched")
        host = (parts.hostname or "").lower()
        if not host:
            raise InputError(f"URL {_short(url)} has no host")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError as exc:
            raise InputError(f"URL {_short(url)} has a bad port ({exc})") from exc
        addresses = _resolve(host, port, url)
        if host not in self.allow_hosts:
            for address in addresses:
                reason = non_public(address)
                if reason:
                    raise InputError(f"URL {_short(url)}: {host} resolves to {address}, a {reason} address; refused "
                                     f"(allow it with --allow-host {host} / FetchPolicy(allow_hosts=...))")
        return parts, host, port, addresses


def non_public(address: IPAddress) -> str | None:
    """Why an address must not be fetched from by default, or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (
            ipaddress.IPv4Address(int(address) & 0xFFFFFFFF) if address in _NAT64 else None)
        if embedded is not None:
            return non_public(embedded)
    for label, test in (("loopback", "is_loopback"), ("link-local (cloud metadata)", "is_link_local"),
                        ("unspecified", "is_unspecified"), ("multicast", "is_multicast"), ("private", "is_private"),
                        ("reserved", "is_reserved")):
        if getattr(address, test):
            return label
    return None if address.is_global else "non-global"


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _resolve(host: str, port: int, url: str) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise InputError(f"URL {_short(url)}: cannot resolve {host!r} ({exc}); check the address and the network") from exc
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])  # drop an IPv6 zone id
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise InputError(f"URL {_short(url)}: {host!r} resolves to no address")
    return addresses


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
        raise InputTooLarge(f"data URI {_short(uri)} holds {len(data):,} bytes, over the limit of {max_bytes:,} bytes")
    return data


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to the address that was checked, whatever DNS says now."""

    def __init__(self, host: str, port: int, address: IPAddress, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((str(self._address), self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """TLS to the checked address; the certificate is still verified against the host name."""

    def __init__(self, host: str, port: int, address: IPAddress, timeout: float, ca_file: str | None = None) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context(cafile=ca_file))
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((str(self._address), self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def fetch_url(url: str, policy: FetchPolicy) -> bytes:
    """GET an http(s) URL under the policy. The body is read in chunks and refused past max_bytes."""
    started = time.monotonic()
    for _ in range(policy.max_redirects + 1):
        parts, host, port, addresses = policy.target(url)
        connection: http.client.HTTPConnection
        if parts.scheme.lower() == "https":
            connection = _PinnedHTTPS(host, port, addresses[0], policy.timeout_s, policy.ca_file)
        else:
            connection = _PinnedHTTP(host, port, addresses[0], policy.timeout_s)
        try:
            path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
            connection.request("GET", path, headers={"User-Agent": "edgeclip", "Accept": "image/*"})
            response = connection.getresponse()
            if response.status in _REDIRECTS and response.getheader("Location"):
                url = urllib.parse.urljoin(url, response.getheader("Location", ""))
                continue
            if response.status != 200:
                raise InputError(f"URL {_short(url)}: HTTP {response.status} {response.reason}")
            return _read_capped(response, url, policy, started)
        except InputError:
            raise
        except (OSError, http.client.HTTPException, ValueError) as exc:  # timeouts, resets, TLS, bad status lines
            raise InputError(f"URL {_short(url)} could not be fetched ({type(exc).__name__}: {exc}); "
                             "check the address and the network") from exc
        finally:
            connection.close()
    raise InputError(f"URL {_short(url)}: more than {policy.max_redirects} redirects")


def _read_capped(response: http.client.HTTPResponse, url: str, policy: FetchPolicy, started: float) -> bytes:
    declared = response.getheader("Content-Length")
    if declared and declared.isdigit() and int(declared) > policy.max_bytes:
        raise InputTooLarge(f"URL {_short(url)} is {int(declared):,} bytes, over the limit of {policy.max_bytes:,} bytes")
    chunks: list[bytes] = []
    size = 0
    while chunk := response.read(65536):
        size += len(chunk)
        if size > policy.max_bytes:
            raise InputTooLarge(f"URL {_short(url)} is over the limit of {policy.max_bytes:,} bytes")
        if time.monotonic() - started > policy.deadline_s:
            raise InputError(f"URL {_short(url)} took longer than {policy.deadline_s:g} s; refused")
        chunks.append(chunk)
    if not size:
        raise InputError(f"URL {_short(url)} returned no data")
    return b"".join(chunks)


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
