"""Fixtures of the connectors tests: a real local HTTP server and clean pooled clients."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from connectors.http import clients_close


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class LocalServer:
    """A tiny HTTP server on 127.0.0.1 and a random port; routes map (method, path) to a responder."""

    url: str
    requests: list[Recorded] = field(default_factory=list)
    routes: dict[tuple[str, str], Callable[[Recorded], tuple[int, Any, dict[str, str]]]] = field(default_factory=dict)

    def route(self, method: str, path: str, status: int = 200, body: Any = None, headers: dict | None = None) -> None:
        self.routes[(method, path)] = lambda _request: (status, body, headers or {})

    def route_fn(self, method: str, path: str, responder: Callable[[Recorded], tuple[int, Any, dict]]) -> None:
        self.routes[(method, path)] = responder


def _handler(server: LocalServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like a real API server
        # Headers and body are two writes: without this, Nagle holds the body for the client's delayed ACK.
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = self.path.split("?", 1)[0]
            recorded = Recorded(self.command, self.path, dict(self.headers.items()), body)
            server.requests.append(recorded)
            responder = server.routes.get((self.command, path))
            status, payload, headers = responder(recorded) if responder else (404, {"error": "not found"}, {})
            data = json.dumps(payload).encode() if payload is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = _serve
        do_POST = _serve

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def local_server() -> Iterator[LocalServer]:
    server = LocalServer(url="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    httpd.daemon_threads = True
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        clients_close()
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(autouse=True)
def _fresh_http_clients() -> Iterator[None]:
    yield
    clients_close()
