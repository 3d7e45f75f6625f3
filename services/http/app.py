"""The read API: `uvicorn services.http.app:app`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Literal

from aiokafka.admin import AIOKafkaAdminClient
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from contracts.base import AmountString, Money
from services.http.auth import (
    ALL_BUSINESSES,
    EVERYONE,
    KeysUnavailableError,
    UnauthorizedError,
    verifier_for,
)
from services.kernel.db import make_engine
from services.kernel.settings import Settings, load_settings
from services.records import api as records
from services.redemption import api as redemption

NOT_FOUND = "not found"
ID_MAX_LENGTH = 64


def _storable(value: str) -> bool:
    """True where PostgreSQL can hold the text: no NUL, nothing UTF-8 cannot encode."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


def _checked_text(value: str) -> str:
    if not _storable(value):
        raise ValueError("holds a character that is not allowed")
    return value


# Path ids outside these bounds name nothing, so they answer 404 (see `_authorize`); a query
# parameter outside them is a bad request, 422.
PathId = Annotated[str, Path(min_length=1, max_length=ID_MAX_LENGTH)]
QueryId = Annotated[
    str, Query(min_length=1, max_length=ID_MAX_LENGTH), AfterValidator(_checked_text)
]


class BookingAsked(BaseModel):
    """The booking the form is filling in: which service, when, at what price."""

    model_config = ConfigDict(extra="forbid")

    service_id: QueryId
    starts_at: AwareDatetime = Field(description="The appointment, RFC 3339")
    price: AmountString = Field(description='The service\'s price, e.g. "60.00"')
    currency: str = Field(pattern="^[A-Z]{3}$", description="ISO 4217, e.g. EUR")


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
    app.state.verifier = verifier_for(app.state.settings)
    app.include_router(_routes())
    app.include_router(_health())
    app.add_exception_handler(RequestValidationError, _invalid_request)
    return app


def __getattr__(name: str) -> FastAPI:
    """`services.http.app:app` for uvicorn, made from the environment when it is asked for."""
    if name == "app":
        return create_app()
    raise AttributeError(name)


async def _invalid_request(_request: Request, exc: Exception) -> Response:
    """422 naming each bad parameter, without echoing what was sent."""
    assert isinstance(exc, RequestValidationError)
    problems = [{"loc": e["loc"], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return JSONResponse({"detail": problems}, status_code=422)


def _unauthorized() -> HTTPException:
    return HTTPException(401, "unauthorized", headers={"WWW-Authenticate": "Bearer"})


# Reads the header and, for OpenAPI, says that /v1 wants a Bearer token; the checks are ours.
_BEARER = HTTPBearer(auto_error=False, bearerFormat="JWT")


def _authorize(
    request: Request, bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]
) -> None:
    """Every /v1 request: a valid token, ids that can exist, and a business the token names.

    A business outside the token answers as a record of another business does: 404.
    Synchronous on purpose: fetching a JWKS blocks, so it runs on FastAPI's thread pool.
    """
    verify = request.app.state.verifier
    caller = EVERYONE
    if verify is not None:
        if bearer is None or not bearer.credentials.strip():
            raise _unauthorized()
        try:
            caller = verify(bearer.credentials.strip())
        except UnauthorizedError:
            raise _unauthorized() from None
        except KeysUnavailableError:
            raise HTTPException(503, "unavailable", headers={"Retry-After": "5"}) from None
    ids = request.path_params.values()
    if not all(len(v) <= ID_MAX_LENGTH and _storable(v) for v in ids):
        raise HTTPException(404, NOT_FOUND)
    # A route of no one business is for platform-wide callers only.
    if not caller.may_read(request.path_params.get("business_id", ALL_BUSINESSES)):
        raise HTTPException(404, NOT_FOUND)


async def _conn(request: Request) -> AsyncIterator[AsyncConnection]:
    engine: AsyncEngine = request.app.state.engine
    async with engine.connect() as conn:
        yield conn


Conn = Annotated[AsyncConnection, Depends(_conn)]


def _routes() -> APIRouter:
    router = APIRouter(
        dependencies=[Depends(_authorize)],
        responses={401: {"description": "No valid Bearer token"}},
    )

    @router.get(
        "/v1/businesses/{business_id}/clients/{client_id}/package-records",
        response_model=list[records.RecordView],
        summary="A client's records with their balances, newest first",
    )
    async def client_records(
        business_id: PathId,
        client_id: PathId,
        conn: Conn,
        service_id: QueryId | None = None,
        status: Literal["active", "exhausted", "frozen", "expired", "cancelled"] | None = None,
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
        business_id: PathId, package_record_id: PathId, conn: Conn
    ) -> records.RecordWithHistory:
        found = await records.record_with_history(conn, business_id, package_record_id)
        if found is None:
            raise HTTPException(404, NOT_FOUND)
        return found

    @router.get(
        "/v1/businesses/{business_id}/clients/{client_id}/package-options",
        response_model=list[redemption.PackageOption],
        summary="The records that would serve such a booking, in the order they would be picked",
    )
    async def package_options(
        business_id: PathId,
        client_id: PathId,
        conn: Conn,
        asked: Annotated[BookingAsked, Query()],
    ) -> list[redemption.PackageOption]:
        return await redemption.package_options(
            conn,
            business_id,
            client_id,
            service_id=asked.service_id,
            starts_at=asked.starts_at,
            price=Money.model_construct(amount=asked.price, currency=asked.currency),
        )

    @router.get(
        "/v1/businesses/{business_id}/bookings/{booking_id}/package",
        response_model=redemption.BookingPackage,
        responses={404: {"description": "No such booking in this business"}},
        summary="Which record the booking holds, if any, and the prices",
    )
    async def booking_package(
        business_id: PathId, booking_id: PathId, conn: Conn
    ) -> redemption.BookingPackage:
        found = await redemption.booking_package(conn, business_id, booking_id)
        if found is None:
            raise HTTPException(404, NOT_FOUND)
        return found

    return router


def _health() -> APIRouter:
    """Health and metrics: no token, nothing of any business."""
    router = APIRouter()

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
