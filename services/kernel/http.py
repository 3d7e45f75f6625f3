"""A worker's HTTP side: `/health/live`, `/health/ready` and `/metrics` on PACKAGES_HTTP_PORT."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI, Response
from prometheus_client import make_asgi_app
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from services.kernel.watch import OK, Watch

HOST = "0.0.0.0"  # noqa: S104 - probes and scrapers come from outside the container


def health_app(watch: Watch) -> FastAPI:
    """The ASGI app: health from `watch`, metrics from prometheus-client's own ASGI app."""
    app = FastAPI(title=f"Packages {watch.service} worker", openapi_url=None, docs_url=None)

    @app.get("/health/live", summary="The event loop answers")
    async def live() -> dict[str, str]:
        return {"status": OK}

    @app.get(
        "/health/ready", summary="PostgreSQL answers, the consumer is in its group, the relay runs"
    )
    async def ready(response: Response) -> dict[str, str]:
        checks = await watch.checks()
        if any(v != OK for v in checks.values()):
            response.status_code = 503
        return checks

    # An ASGI app given as a route's endpoint answers `/metrics` itself (a mount would redirect).
    app.router.routes.append(Route("/metrics", endpoint=_Metrics(), methods=["GET"]))
    return app


class _Metrics:
    """prometheus-client's ASGI app (content negotiation and gzip included)."""

    def __init__(self) -> None:
        self._app = make_asgi_app()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


class _Server(uvicorn.Server):
    """uvicorn inside the worker's loop: the worker, not uvicorn, handles the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """Serves `health_app(watch)` on a port bound at once, so a taken port stops the start."""

    def __init__(self, watch: Watch, port: int) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((HOST, port))
        except OSError as exc:
            self._socket.close()
            raise SystemExit(
                f"cannot serve health and metrics on PACKAGES_HTTP_PORT={port}: {exc.strerror}"
            ) from None
        self.port = self._socket.getsockname()[1]
        config = uvicorn.Config(
            health_app(watch), log_config=None, access_log=False, lifespan="off"
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin answering."""
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))

    async def stop(self) -> None:
        """Stop answering and close the port."""
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, timeout=5)
        self._socket.close()
