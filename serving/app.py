"""The FastAPI app: the routers, the API key, CORS when configured, and the shared clients."""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager
from typing import Any

from clickhouse_connect.driver.exceptions import ClickHouseError
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from serving.auth import ApiKeyMiddleware
from serving.warehouse import Warehouse
from settings import ServeSettings, Settings


def warehouse(request: Request) -> Warehouse:
    """The app's Warehouse (a FastAPI dependency)."""
    return request.app.state.warehouse


async def _warehouse_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """503 naming what is missing: ClickHouse down, or a mart not built yet."""
    text = str(exc)
    if getattr(exc, "code", None) == 60 or "UNKNOWN_TABLE" in text:
        detail = f"a table this endpoint reads does not exist yet (has `dbt build` run?): {text[:300]}"
    else:
        detail = f"ClickHouse could not answer: {text[:300]}"
    return JSONResponse({"detail": detail}, status_code=503)


def create_app(settings: Settings, serve: ServeSettings, publisher: Any = None) -> FastAPI:
    """The app. `publisher` (an ingestion.publisher.Publisher) is created on the collector's first
    request when not given, so the read-only API starts and answers without Kafka."""
    from serving import anomalies, clickstream, collector, commerce, dashboards, game, health, pipeline

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        app.state.warehouse.close()
        collector.close_publisher(app)
        if getattr(app.state, "kafka_probe", None) is not None:
            app.state.kafka_probe.close()

    app = FastAPI(
        title="eventhouse",
        summary="The event collector and the read-only KPI API over the eventhouse warehouse",
        version="1",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.serve = serve
    app.state.warehouse = Warehouse(settings.clickhouse)
    app.state.publisher = publisher
    app.state.lock = threading.Lock()  # guards lazily created clients (collector, health)
    for module in (health, clickstream, anomalies, commerce, game, pipeline, collector, dashboards):
        app.include_router(module.router)
    dashboards.mount_static(app)
    app.add_exception_handler(ClickHouseError, _warehouse_unavailable)
    if serve.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(serve.cors_origins), allow_methods=["GET", "POST"])
    if serve.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=serve.api_key)
    return app
