"""GET /metrics: Prometheus text format from this app's own registry."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
def metrics(request: Request) -> Response:
    """Requests, latencies, batch sizes, queue depths and inference times."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
