"""A local stand-in for the Electricity Maps v3 API whose intensity the test sets.

The test replays a dirty period exactly when the trainer has made progress (not at a wall-clock
guess), so a pause always lands mid-run on a machine of any speed.
"""

from __future__ import annotations

import http.server
import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlparse


class CarbonServer:
    def __init__(self, grams_per_kwh: float) -> None:
        self.value = grams_per_kwh
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
                path = urlparse(self.path).path
                body: dict[str, Any]
                if path.endswith("/latest"):
                    body = {
                        "zone": "XX",
                        "carbonIntensity": outer.value,
                        "datetime": now.isoformat().replace("+00:00", "Z"),
                        "emissionFactorType": "lifecycle",
                    }
                elif path.endswith("/forecast"):
                    body = {
                        "zone": "XX",
                        "forecast": [
                            {
                                "carbonIntensity": outer.value,
                                "datetime": (now + timedelta(hours=i)).isoformat().replace("+00:00", "Z"),
                            }
                            for i in range(1, 25)
                        ],
                    }
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> CarbonServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
