"""data: URIs and opt-in URL fetching, against a server on loopback."""

from __future__ import annotations

import base64
import http.server
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import edgeclip
from edgeclip.errors import InputError
from edgeclip.fetch import FetchPolicy, decode_data_uri, fetch_url, is_url


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (10, 200, 30)).save(buffer, "PNG")
    return buffer.getvalue()


PNG = _png()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/photo.png":
            self._send(200, PNG)
        elif self.path == "/big":
            self._send(200, b"x" * 5000)
        elif self.path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.end_headers()
        elif self.path == "/elsewhere":
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{self.server.server_port}/photo.png")  # type: ignore[attr-defined]
            self.end_headers()
        else:
            self._send(404, b"no")

    def _send(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


LOCAL = FetchPolicy(allow_hosts=("127.0.0.1",))  # the test server is on loopback: allow-listed


def test_urls_are_fetched_only_when_allowed_and_within_limits(server: str, tiny_bundle: Path) -> None:
    assert fetch_url(f"{server}/photo.png", LOCAL) == PNG
    with pytest.raises(InputError, match="HTTP 404"):
        fetch_url(f"{server}/missing", LOCAL)
    with pytest.raises(InputError, match="over the limit of 100 bytes"):
        fetch_url(f"{server}/big", FetchPolicy(allow_hosts=("127.0.0.1",), max_bytes=100))
    with pytest.raises(InputError, match="localhost resolves to .*loopback address; refused"):  # the redirect is checked too
        fetch_url(f"{server}/elsewhere", LOCAL)
    with pytest.raises(InputError, match="more than 3 redirects"):
        fetch_url(f"{server}/loop", LOCAL)
    with pytest.raises(InputError, match="only http, https"):
        fetch_url("ftp://127.0.0.1/x", LOCAL)
    model = edgeclip.load(tiny_bundle, variant="fp32")
    with pytest.raises(InputError, match="image 0: .*fetch_urls=True"):
        model.encode_image([f"{server}/photo.png"])
    with pytest.raises(InputError, match="image 0: .*loopback address; refused"):
        model.encode_image([f"{server}/photo.png"], fetch_urls=True)  # on by default, loopback is not
    fetched = model.encode_image([f"{server}/photo.png"], fetch_urls=LOCAL)
    np.testing.assert_allclose(fetched, model.encode_image([PNG]), atol=1e-6)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/", "http://127.9.9.9/", "http://[::1]/", "http://0.0.0.0/", "http://169.254.169.254/latest/meta-data/",
    "http://10.1.2.3/", "http://172.16.0.1/", "http://172.31.255.255/", "http://192.168.1.1/", "http://100.64.0.1/",
    "http://[::ffff:127.0.0.1]/", "http://[::ffff:10.0.0.1]/", "http://[fd00:ec2::254]/", "http://[fe80::1]/",
    "http://[64:ff9b::a00:1]/", "http://[2002:7f00:1::]/", "http://224.0.0.1/", "http://localhost:8080/",
    "http://2130706433/", "http://0x7f.1/", "https://127.0.0.1:443/",
])
def test_non_public_addresses_are_refused_before_connecting(url: str) -> None:
    """Checked on the resolved addresses, so no probe ever leaves the machine."""
    with pytest.raises(InputError, match="address; refused"):
        fetch_url(url, FetchPolicy())


def test_public_addresses_pass_the_check() -> None:
    import ipaddress

    from edgeclip.fetch import non_public

    for public in ("93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8"):
        assert non_public(ipaddress.ip_address(public)) is None, public
    assert non_public(ipaddress.ip_address("::ffff:192.168.0.1")) == "private"


def test_data_uris_decode_or_say_why() -> None:
    uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert decode_data_uri(uri) == PNG
    assert decode_data_uri("data:,hello%20there") == b"hello there"
    for bad, message in (("data:image/png;base64", "no ','"), ("data:image/png;base64,@@", "not valid base64"),
                         ("data:image/png;base64,", "holds no data")):
        with pytest.raises(InputError, match=message):
            decode_data_uri(bad)
    with pytest.raises(InputError, match="over the limit"):
        decode_data_uri(uri, max_bytes=10)
    assert is_url("https://x/y") and not is_url("C:\\photos\\a.jpg") and not is_url("photos/a.jpg")


def test_data_uris_embed_like_their_bytes(tiny_bundle: Path) -> None:
    model = edgeclip.load(tiny_bundle, variant="fp32")
    uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    np.testing.assert_allclose(model.encode_image([uri]), model.encode_image([PNG]), atol=1e-7)
    with pytest.raises(InputError, match="image 0: 'file:///etc/passwd': file:// references are not supported"):
        model.encode_image(["file:///etc/passwd"])


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """HTTPS on loopback with a self-signed certificate for 127.0.0.1; yields (base URL, the certificate)."""
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{httpd.server_port}", str(cert)
    httpd.shutdown()


def test_https_verifies_the_certificate_on_the_pinned_address(tls_server: tuple[str, str]) -> None:
    base, cert = tls_server
    with pytest.raises(InputError, match="could not be fetched.*CERTIFICATE_VERIFY_FAILED"):
        fetch_url(f"{base}/photo.png", LOCAL)  # self-signed: not trusted by the system store
    assert fetch_url(f"{base}/photo.png", FetchPolicy(allow_hosts=("127.0.0.1",), ca_file=cert)) == PNG
