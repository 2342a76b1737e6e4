"""The FastAPI app: `create_app(settings)` wires settings, engine, routers, errors, metrics and middleware.

The lifespan starts loading the models and the catalog in the background and returns at once: the
server answers /health/live immediately and /health/ready turns 200 only after the warm-up inference
(`rtdgan.service.engine`). This module never imports torch, `training/` or `models/`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import anyio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from rtdgan.service.engine import Engine
from rtdgan.service.errors import install_error_handlers
from rtdgan.service.metrics import Metrics
from rtdgan.service.middleware import RequestContextMiddleware, install_request_id_logging
from rtdgan.service.routes import admin, demo, health, metrics, products, search
from rtdgan.service.settings import Settings

log = logging.getLogger(__name__)

# Multipart framing and the small form fields (k, category, title, ...) on top of the image itself.
FORM_OVERHEAD_BYTES = 64 * 1024


def strict_openapi(app: FastAPI) -> None:
    """The OpenAPI document says what the routes enforce: a multipart body has no other fields
    (`routes.deps.strict_form` refuses unknown ones), and its `image` part is an image (encoding
    contentType `image/*`: generated clients and fuzzers send pictures, not arbitrary bytes)."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            doc = generate()
            for name, schema in doc.get("components", {}).get("schemas", {}).items():
                if name.startswith("Body_"):
                    schema["additionalProperties"] = False
            for path in doc.get("paths", {}).values():
                for operation in path.values():
                    form = operation.get("requestBody", {}).get("content", {}).get("multipart/form-data")
                    if form is not None:
                        form["encoding"] = {"image": {"contentType": "image/*"}}
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service app; settings default to the `RTD_*` environment."""
    settings = settings or Settings()
    app_metrics = Metrics()
    engine = Engine(settings, app_metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("starting: artifacts %s, index %s", settings.artifacts, settings.index)
        loading = asyncio.create_task(engine.start(), name="engine-start")
        try:
            yield
        finally:
            loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loading
            await engine.stop()

    app = FastAPI(title="rtdgan", version="0.1.0", lifespan=lifespan,
                  description="Clothing product search: street photo -> rtdGAN product image -> "
                              "embedding -> catalog match (Kwon et al., VISAPP 2019).")
    app.state.settings = settings
    app.state.engine = engine
    app.state.metrics = app_metrics
    app.state.decode_limiter = anyio.CapacityLimiter(settings.max_decodes)
    install_error_handlers(app, settings.retry_after_s)
    strict_openapi(app)
    for module in (search, products, admin, health, metrics, demo):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=demo.STATIC), name="static")
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Content-Type", "X-API-Key", "X-Request-ID"],
                           expose_headers=["X-Request-ID", "Retry-After"])
    # Added last, so outermost: it sees every request, including the ones CORS answers itself.
    app.add_middleware(RequestContextMiddleware, metrics=app_metrics,
                       max_body_bytes=settings.max_upload_bytes + FORM_OVERHEAD_BYTES)
    install_request_id_logging()
    return app
