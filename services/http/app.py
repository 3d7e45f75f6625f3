"""The read API: `uvicorn services.http.app:app`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Literal

from aiokafka.admin import AIOKafkaAdminClient
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.kernel.db import make_engine
from services.kernel.settings import Settings, load_settings
from services.records import api as records
from services.redemption import api as redemption

NOT_FOUND = "not found"


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    app.state.engine = make_engine(settings)
    yield
    await app.state.engine.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The read API with its health and metrics endpoints."""
    app = FastAPI(
        title="Packages read API",
        version="1",
        description="Clients' package records, balances and bookings' packages.",
        lifespan=_lifespan,
    )
    app.state.settings = settings or load_settings()
    app.include_router(_routes())
    return app


async def _conn(request: Request) -> AsyncIterator[AsyncConnection]:
    engine: AsyncEngine = request.app.state.engine
    async with engine.connect() as conn:
        yield conn


Conn = Annotated[AsyncConnection, Depends(_conn)]


def _routes() -> APIRouter:
    router = APIRouter()

    @router.get(
        "/v1/businesses/{business_id}/clients/{client_id}/package-records",
        response_model=list[records.RecordView],
        summary="A client's records with their balances, newest first",
    )
    async def client_records(
        business_id: str,
        client_id: str,
        conn: Conn,
        service_id: Annotated[str | None, Query(max_length=64)] = None,
        status: Literal["active", "exhausted", "expired", "cancelled"] | None = None,
    ) -> list[records.RecordView]:
        return await records.client_records(
            conn, business_id, client_id, service_id=service_id, status=status
        )

    @router.get(
        "/v1/businesses/{business_id}/package-records/{package_record_id}",
        response_model=records.RecordWithHistory,
        responses={404: {"description": "No such record in this business"}},
        summary="One record with its history",
    )
    async def one_record(
        business_id: str, package_record_id: str, conn: Conn
    ) -> records.RecordWithHistory:
        found = await records.record_with_history(conn, business_id, package_record_id)
        if found is None:
            raise HTTPException(404, NOT_FOUND)
        return found

    @router.get(
        "/v1/businesses/{business_id}/bookings/{booking_id}/package",
        response_model=redemption.BookingPackage,
        responses={404: {"description": "No such booking in this business"}},
        summary="Which record the booking holds, if any, and the prices",
    )
    async def booking_package(
        business_id: str, booking_id: str, conn: Conn
    ) -> redemption.BookingPackage:
        found = await redemption.booking_package(conn, business_id, booking_id)
        if found is None:
            raise HTTPException(404, NOT_FOUND)
        return found

    @router.get("/health/live", summary="The process runs")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/health/ready", summary="PostgreSQL and Kafka answer")
    async def ready(request: Request, response: Response) -> dict[str, str]:
        checks = {
            "postgres": await _postgres_ok(request.app.state.engine),
            "kafka": await _kafka_ok(request.app.state.settings),
        }
        if not all(v == "ok" for v in checks.values()):
            response.status_code = 503
        return checks

    @router.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


async def _postgres_ok(engine: AsyncEngine) -> str:
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return f"unavailable: {type(exc).__name__}"
    return "ok"


async def _kafka_ok(settings: Settings) -> str:
    admin = AIOKafkaAdminClient(**settings.kafka_options(), request_timeout_ms=3000)
    try:
        await admin.start()
        await admin.list_topics()
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return f"unavailable: {type(exc).__name__}"
    finally:
        await admin.close()
    return "ok"


app = create_app()
