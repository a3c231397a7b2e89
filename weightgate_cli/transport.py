"""HTTP/1.1 GETs over the standard library's `http.client`, for the API and the object store.

A presigned URL needs nothing but a plain GET, and that is where a download spends its CPU.
`http.client` reads a body straight into a buffer we own (`readinto`, `readinto_some`), so each
byte is copied once, from the socket; httpx went through h11, copying each byte several times
(bench/downloads.py (c), 8 x 64 MiB: the whole CLI run went from 1.09 s to 0.86 s, and the
transfer alone, in a bare loop like this one, takes 0.45 s against curl's 0.48 s). The API's
small JSON answers take the same road (`fetch`): importing httpx cost every run ~50 ms.

Connections are kept alive per thread and host, and go through the proxy the environment names
(`https_proxy`, `http_proxy`, `no_proxy`). Redirects are followed only when asked: an API
redirect would carry the token to wherever it points.
"""

import base64
import http.client
import io
import json
import os
import re
import ssl
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

from weightgate_cli.errors import CliError

MiB = 1024 * 1024
BUFFER_SIZE = 4 * MiB  # per range thread: 2-8 MiB measured alike, 1 MiB and below slower
MAX_REDIRECTS = 5
REDIRECTS = {301, 302, 303, 307, 308}
# Whatever the network or a server's HTTP can do to us: refused, reset or timed-out sockets,
# a connection closed mid-body (IncompleteRead), an answer that is not HTTP.
_TRANSPORT_ERRORS = (OSError, http.client.HTTPException)
# What a server's closing of an idle keep-alive connection looks like to the next request.
_STALE_CONNECTION = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
)
_S3_MESSAGE = re.compile(rb"<Message>([^<]{1,300})</Message>")


class TransferError(Exception):
    """The connection to a server failed: worth another attempt, unlike a disk error."""


def transfer_error(error: BaseException) -> TransferError:
    return TransferError(f"{error.__class__.__name__}: {error}" if str(error) else repr(error))


def readinto(response: http.client.HTTPResponse, buffer: memoryview) -> int:
    """Fill `buffer` from the body; 0 at its end. A failure mid-body is a TransferError."""
    try:
        return response.readinto(buffer)
    except _TRANSPORT_ERRORS as error:
        raise transfer_error(error) from error


def readinto_some(response: http.client.HTTPResponse, buffer: memoryview) -> int:
    """Like `readinto`, but with at most one read from the socket: `readinto` reads on until the
    buffer is full, and a failure half-way loses what it had gathered (up to the whole buffer),
    where here it loses nothing an earlier call returned. 0 at the body's end, or where the
    server closed early (the Content-Length not met: the caller compares)."""
    if response.chunked or response.length is None or response.fp is None:
        return readinto(response, buffer)
    wanted = response.length
    if wanted == _content_length(response):
        # The first read hands over what reading the headers left in the file's buffer; asking
        # for more than that buffer's size would also read the socket, and a failure of that
        # read would lose those bytes.
        wanted = min(wanted, io.DEFAULT_BUFFER_SIZE)
    try:
        count = response.fp.readinto1(buffer[:wanted])
    except _TRANSPORT_ERRORS as error:
        raise transfer_error(error) from error
    response.length -= count  # `readinto` closes the response once it reads 0 at the end
    return count


def _content_length(response: http.client.HTTPResponse) -> int | None:
    try:
        return int(response.getheader("Content-Length", ""))
    except ValueError:
        return None


def store_message(response: http.client.HTTPResponse) -> str:
    """What an S3-style error body says (`<Message>…</Message>`), else the status line."""
    try:
        body = response.read(64 * 1024)
    except _TRANSPORT_ERRORS:
        body = b""
    match = _S3_MESSAGE.search(body)
    if match:
        return match.group(1).decode("utf-8", "replace").strip()
    return f"HTTP {response.status} {response.reason}"


@dataclass
class _Connection:
    http: http.client.HTTPConnection
    absolute: bool  # through a plain-HTTP proxy: the request line names the whole URL
    headers: dict[str, str]  # the proxy's credentials, when it takes them on each request
    used: bool = False


@dataclass(frozen=True)
class Reply:
    """A whole answer, read: the API's JSON, or an error page."""

    status_code: int
    reason_phrase: str
    headers: http.client.HTTPMessage  # case-insensitive `get`
    content: bytes

    @property
    def text(self) -> str:
        charset = self.headers.get_content_charset() or "utf-8"
        try:
            return self.content.decode(charset, "replace")
        except LookupError:  # a charset Python does not know
            return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        return json.loads(self.content)


@cache
def ssl_context() -> ssl.SSLContext:
    """One TLS context for the process, built only when something speaks TLS (each costs ~40 ms
    of CPU), trusting as httpx did: `SSL_CERT_FILE` / `SSL_CERT_DIR` when set; on macOS and
    Windows the system's own verifier (truststore, as pip does); elsewhere OpenSSL's default
    locations, or certifi's bundle where a Python finds none there."""
    cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
    if cafile or capath:
        return ssl.create_default_context(cafile=cafile or None, capath=capath or None)
    if sys.platform in ("darwin", "win32"):
        import truststore

        return truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context = ssl.create_default_context()
    if not context.cert_store_stats()["x509_ca"]:
        import certifi

        context.load_verify_locations(certifi.where())
    return context


class Transport:
    """GETs, one keep-alive connection per thread and host."""

    def __init__(self, *, timeout: float, user_agent: str) -> None:
        self.timeout = timeout
        self.user_agent = user_agent
        self.proxies = urllib.request.getproxies()  # the environment's, read once
        self._local = threading.local()
        self._all: set[http.client.HTTPConnection] = set()  # every thread's, for close()
        self._lock = threading.Lock()

    def _proxy(self, url: SplitResult) -> SplitResult | None:
        proxy = self.proxies.get(url.scheme)
        if not proxy or urllib.request.proxy_bypass(url.hostname or ""):
            return None
        return urlsplit(proxy if "://" in proxy else f"http://{proxy}")

    def _connections(self) -> dict[tuple[str, str | None, int | None], _Connection]:
        if not hasattr(self._local, "connections"):
            self._local.connections = {}
        return self._local.connections  # type: ignore[no-any-return]

    def _connection(self, url: SplitResult) -> _Connection:
        """This thread's connection to `url`'s host, opened on first use."""
        key = (url.scheme, url.hostname, url.port)
        connections = self._connections()
        if key in connections:
            return connections[key]
        proxy = self._proxy(url)
        secure = url.scheme == "https"
        host, port = (proxy.hostname, proxy.port) if proxy else (url.hostname, url.port)
        connection: http.client.HTTPConnection
        if secure or (proxy is not None and proxy.scheme == "https"):
            connection = http.client.HTTPSConnection(
                host or "", port, timeout=self.timeout, context=ssl_context()
            )
        else:
            connection = http.client.HTTPConnection(host or "", port, timeout=self.timeout)
        credentials = {}
        if proxy is not None and proxy.username:
            pair = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}"
            credentials["Proxy-Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        if proxy is not None and secure:  # a CONNECT tunnel: TLS runs end to end with the store
            connection.set_tunnel(url.hostname or "", url.port, headers=credentials)
            credentials = {}
        connections[key] = found = _Connection(
            connection, proxy is not None and not secure, credentials
        )
        with self._lock:
            self._all.add(connection)
        return found

    def _forget(self, url: SplitResult) -> None:
        """Close this thread's connection to `url`'s host (broken, or left mid-body)."""
        found = self._connections().pop((url.scheme, url.hostname, url.port), None)
        if found is not None:
            found.http.close()
            with self._lock:
                self._all.discard(found.http)

    def _send(self, url: SplitResult, headers: dict[str, str]) -> http.client.HTTPResponse:
        connection = self._connection(url)
        target = url.path or "/"
        if url.query:
            target += "?" + url.query
        sent = {
            "User-Agent": self.user_agent,
            # The stored bytes as they are (the digest is of those): no compression.
            "Accept-Encoding": "identity",
            **connection.headers,
            **headers,
        }
        try:
            connection.http.request(
                "GET", url.geturl() if connection.absolute else target, headers=sent
            )
            response = connection.http.getresponse()
        except _TRANSPORT_ERRORS as error:
            self._forget(url)
            if connection.used and isinstance(error, _STALE_CONNECTION):
                # The server closed a keep-alive connection while it sat idle: a new one, once.
                return self._send(url, headers)
            raise transfer_error(error) from error
        connection.used = True
        return response

    def _response(
        self, url: str, headers: dict[str, str], *, follow_redirects: bool
    ) -> tuple[SplitResult, http.client.HTTPResponse]:
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise CliError(f"not an HTTP(S) URL: {url[:80]!r}")  # callers check theirs first
            response = self._send(parts, headers)
            location = response.getheader("Location")
            if not follow_redirects or response.status not in REDIRECTS or not location:
                return parts, response
            try:
                response.read()
            except _TRANSPORT_ERRORS:
                self._forget(parts)
            url = urljoin(url, location)
        raise CliError(f"{parts.hostname} redirected more than {MAX_REDIRECTS} times")

    @contextmanager
    def get(
        self, url: str, headers: dict[str, str], *, follow_redirects: bool
    ) -> Iterator[http.client.HTTPResponse]:
        """The response to a GET, its body for the block to read. A body left unread closes the
        connection, which could not carry another request."""
        parts, response = self._response(url, headers, follow_redirects=follow_redirects)
        try:
            yield response
        finally:
            if not response.isclosed():
                response.close()
                self._forget(parts)

    def fetch(self, url: str, headers: dict[str, str], *, follow_redirects: bool) -> Reply:
        """A GET whose whole (small) body is read; network failures are a TransferError."""
        with self.get(url, headers, follow_redirects=follow_redirects) as response:
            try:
                content = response.read()
            except _TRANSPORT_ERRORS as error:
                raise transfer_error(error) from error
        return Reply(response.status, response.reason, response.headers, content)

    def close(self) -> None:
        with self._lock:
            connections, self._all = self._all, set()
        for connection in connections:
            connection.close()
