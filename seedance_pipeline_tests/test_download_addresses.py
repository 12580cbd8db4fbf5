"""A result link's name is checked, and so is the address each download connection reaches.

A public-looking name may resolve to 127.0.0.1 or 10.x (the attacker runs its DNS, or rebinds
it): `url_problem` reads only the name, so the client checks the connected peer and refuses
it before TLS starts. Real sockets on loopback; `socket.getaddrinfo` plays the attacker's DNS
for one name, and a TLS host with a certificate for that name (trusted by the test's client)
stands for an internal service, so the old client fetched from it. Nothing leaves loopback.
"""

from __future__ import annotations

import contextlib
import datetime
import http.server
import os
import socket
import ssl
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from seedance_pipeline.seedance import Client, RetryPolicy, TransportError, UnsafeLinkError, _client
from seedance_pipeline.seedance._urls import api_root_problem, url_problem

from .client_support import KEY, loopback_server

NAME = "cdn.rebound-example.com"  # public-looking; resolves to 127.0.0.1 here
VIDEO = b"INTERNAL-SERVICE-SECRET " * 8


class _Host(http.server.BaseHTTPRequestHandler):
    """Records what each connection sent before anything else (b"": nothing, not even a TLS
    ClientHello) and every request; answers a redirect if the server has one, else VIDEO."""

    def setup(self):
        self.server.first_bytes.append(self.request.recv(1, socket.MSG_PEEK))
        if self.server.tls is not None:
            self.request = self.server.tls.wrap_socket(self.request, server_side=True)
        super().setup()

    def do_GET(self):
        self.server.requests.append(self.path)
        if self.server.redirect:
            self.send_response(302)
            self.send_header("Location", self.server.redirect)
            self.send_header("Content-Length", "0")
        else:
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(VIDEO)))
        self.end_headers()
        if not self.server.redirect:
            self.wfile.write(VIDEO)

    def do_CONNECT(self):  # a proxy that refuses every tunnel
        self.server.requests.append(self.requestline)
        self.send_response(403)
        self.end_headers()

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def host(tls: ssl.SSLContext | None = None, redirect: str = "") -> Iterator:
    """A threaded host on 127.0.0.1 (see `_Host`); `tls`: it speaks https."""
    state = {"tls": tls, "redirect": redirect, "first_bytes": [], "requests": []}
    quiet = {"handle_error": lambda *args: None}  # a connection cut before TLS: expected here
    with loopback_server(_Host, **state, **quiet) as server:
        server.port = server.server_address[1]
        yield server


@pytest.fixture
def internal_tls(tmp_path_factory, monkeypatch) -> ssl.SSLContext:
    """A server TLS context with a certificate for NAME, which the clients made during the test
    trust: an attacker would use a real certificate for its own name."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    monkeypatch.setattr(_client, "_tls", lambda: ssl.create_default_context(cafile=cert_file))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    return server


@pytest.fixture
def lookups(monkeypatch) -> list[str]:
    """NAME resolves to 127.0.0.1 (every other name as usual); the names looked up. No proxy
    from the environment: connections go where the test says."""
    for variable in [v for v in os.environ if v.lower().endswith("_proxy")]:
        monkeypatch.delenv(variable)
    seen: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(name, *args, **kwargs):
        seen.append(name)
        return real("127.0.0.1" if name == NAME else name, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return seen


def test_a_public_name_that_resolves_to_loopback_is_refused_before_tls(
    internal_tls, lookups, tmp_path
):
    with host(internal_tls) as internal:
        url = f"https://{NAME}:{internal.port}/internal/admin.mp4?sig=x"
        assert url_problem(url) is None  # the name is fine; where it leads is not
        with (
            Client(KEY, retry=RetryPolicy(max_attempts=3)) as client,
            pytest.raises(UnsafeLinkError) as info,
        ):
            client.download(url, tmp_path / "v.mp4")
    assert "127.0.0.1 is private, loopback or reserved" in str(info.value)
    assert NAME in lookups and not info.value.retryable
    assert internal.requests == []  # no HTTP request reached it
    assert set(internal.first_bytes) <= {b""}  # at most a TCP connection: not a ClientHello
    assert list(tmp_path.iterdir()) == []


def test_a_redirect_to_such_a_name_is_refused(internal_tls, lookups, tmp_path):
    """The first hop, on the emulator's own loopback origin, is fetched; the redirect to a
    public-looking name that resolves to loopback is not."""
    with host(internal_tls) as internal:
        target = f"https://{NAME}:{internal.port}/internal/admin.mp4"
        with host(redirect=target) as emulator:
            base = f"http://127.0.0.1:{emulator.port}"
            with Client(KEY, base_url=base) as client, pytest.raises(UnsafeLinkError):
                client.download(f"{base}/results/t.mp4", tmp_path / "v.mp4")
            assert emulator.requests == ["/results/t.mp4"]
    assert internal.requests == []
    assert set(internal.first_bytes) <= {b""}
    assert list(tmp_path.iterdir()) == []


def test_the_emulator_s_own_loopback_origin_still_downloads(lookups, tmp_path):
    with host() as emulator:
        base = f"http://127.0.0.1:{emulator.port}"
        with Client(KEY, base_url=base) as client:
            saved = client.download(f"{base}/results/t.mp4", tmp_path / "v.mp4")
    assert (tmp_path / "v.mp4").read_bytes() == VIDEO and saved.bytes == len(VIDEO)


def test_through_a_proxy_the_proxy_resolves_the_name_and_its_address_is_not_checked(
    lookups, monkeypatch, tmp_path
):
    """The peer is then the proxy (here on loopback): refusing it would refuse every download
    behind a proxy, and the link's name is never resolved by the client."""
    with host() as proxy:
        monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{proxy.port}")
        with (
            Client(KEY, retry=RetryPolicy(max_attempts=1)) as client,
            pytest.raises(TransportError) as info,
        ):
            client.download(f"https://{NAME}/v.mp4", tmp_path / "v.mp4")
    assert type(info.value) is TransportError  # the proxy's 403, not UnsafeLinkError
    assert proxy.requests == [f"CONNECT {NAME}:443 HTTP/1.1"]
    assert NAME not in lookups


@pytest.mark.parametrize(
    ("setting", "url", "refused"),
    [
        ("EVOLINK_BASE_URL", "https://api.evolink.ai", None),
        ("EVOLINK_BASE_URL", "https://api.evolink.ai/v1/", "/v1"),
        # a gateway serving the API under /api: calls go to .../evolink/api/v1/..., as they must
        ("EVOLINK_BASE_URL", "https://gw.example.com/evolink/api", None),
        ("EVOLINK_FILES_URL", "https://files-api.evolink.ai", None),
        ("EVOLINK_FILES_URL", "https://files-api.evolink.ai/api", "/api"),
        ("EVOLINK_FILES_URL", "https://files-api.evolink.ai/api/v1", "/api/v1"),
        ("EVOLINK_FILES_URL", "https://gw.example.com/files", None),
    ],
)
def test_an_api_root_may_not_end_in_what_its_calls_add(setting, url, refused):
    problem = api_root_problem(url, setting)
    assert (problem is None) if refused is None else problem.startswith(f"ends in {refused},")
