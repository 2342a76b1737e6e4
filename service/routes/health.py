"""GET /health/live (the process answers) and GET /health/ready (it can serve a search right now)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from rtdgan.index.errors import CatalogUnavailable
from rtdgan.service.engine import Engine
from rtdgan.service.errors import error_response, error_responses
from rtdgan.service.routes.deps import SettingsDep

router = APIRouter(prefix="/health", tags=["health"])


# HEAD too: load balancers and uptime checkers probe with HEAD (the same status, no body).
@router.get("/live", summary="Liveness: 200 while the process runs")
@router.head("/live", summary="Liveness: 200 while the process runs")
def live() -> dict:
    """Always 200: restart the process only if this stops answering."""
    return {"status": "alive"}


@router.get("/ready", summary="Readiness: 200 once models and catalog are loaded and warm, else 503 + reason",
            responses=error_responses(503))
@router.head("/ready", summary="Readiness: 200 once models and catalog are loaded and warm, else 503 + reason",
             responses=error_responses(503))
def ready(request: Request, settings: SettingsDep) -> JSONResponse:
    """200 only after a warm-up inference went through; 503 with the reason before (or if loading failed)."""
    engine: Engine = request.app.state.engine
    if not engine.ready:
        return error_response(503, "not_ready", engine.reason or "not ready",
                              {"Retry-After": str(settings.retry_after_s)})
    try:
        described = engine.describe()
    except CatalogUnavailable as e:  # a catalog server lost after start: say which and why (a search says less)
        return error_response(503, "catalog_unavailable", f"the catalog engine is unavailable: {e}",
                              {"Retry-After": str(settings.retry_after_s)})
    return JSONResponse({"status": "ready", **described})
