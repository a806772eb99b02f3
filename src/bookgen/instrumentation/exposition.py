"""`GET /metrics` on the app, and the optional per-worker metrics port."""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import Response

log = logging.getLogger(__name__)


def metrics_endpoint(registry: CollectorRegistry) -> Callable[[Request], Awaitable[Response]]:
    """OpenMetrics (with exemplars) when the Accept header asks for it, else Prometheus text."""

    async def metrics(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(registry), media_type=content_type)

    return metrics


class WorkerMetricsServer:
    """This worker's registry on 127.0.0.1:port, so each worker is its own scrape target."""

    def __init__(self, registry: CollectorRegistry, port: int, host: str = "127.0.0.1") -> None:
        self._registry = registry
        self.port = port
        self.host = host
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        try:
            self._server, self._thread = start_http_server(
                self.port, addr=self.host, registry=self._registry
            )
        except OSError:
            # Serving traffic matters more than a second copy of /metrics; say so loudly.
            log.error("cannot serve worker metrics on %s:%d", self.host, self.port, exc_info=True)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
