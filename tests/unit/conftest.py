"""A real local HTTP server for the carbon provider tests: mocks only at the network boundary."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "carbon"


@dataclass
class Route:
    status: int = 200
    body: bytes = b"{}"
    delay_s: float = 0.0


@dataclass
class FakeApi:
    """Routes by path (query ignored); records each request's path, query and headers."""

    base_url: str = ""
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def set(self, path: str, *, status: int = 200, body: bytes | str = b"{}", delay_s: float = 0.0) -> None:
        self.routes[path] = Route(status, body.encode() if isinstance(body, str) else body, delay_s)

    def fixture(self, path: str, name: str) -> None:
        self.set(path, body=(FIXTURES / name).read_bytes())


@pytest.fixture
def fake_api() -> Iterator[FakeApi]:
    api = FakeApi()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path, _, query = self.path.partition("?")
            api.requests.append((path, query, dict(self.headers.items())))
            route = api.routes.get(path)
            if route is None:
                route = next(
                    (r for p, r in api.routes.items() if p.endswith("*") and path.startswith(p[:-1])), None
                )
            if route is None:
                route = Route(404, b'{"error":"not found"}')
            if route.delay_s:
                time.sleep(route.delay_s)
            try:
                self.send_response(route.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                self.wfile.write(route.body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    api.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
