"""The detector's one HTTP endpoint: Prometheus metrics at /metrics, its state at /health.

/health answers 200 with a JSON body whose `status` is `ok` or `degraded` (the brokers are
away, or windows wait for a model that is away). It stays 200 when degraded: a restart mends
neither outage, so a liveness probe must not act on it; alerting reads the body or the
`rationanomaly_model_degraded` gauge.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def serve(registry: CollectorRegistry, health: Callable[[], dict[str, Any]], port: int, addr: str = "0.0.0.0") -> int:
    """Serve on a daemon thread; returns the bound port (0 picks a free one)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            path = self.path.split("?", 1)[0]
            if path == "/health":
                body, kind = orjson.dumps(health()), "application/json"
            elif path in ("/metrics", "/"):
                body, kind = generate_latest(registry), CONTENT_TYPE_LATEST
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # scrapes every few seconds: not worth a line each
            pass

    server = ThreadingHTTPServer((addr, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return int(server.server_address[1])
