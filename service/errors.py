"""Every error the service answers is JSON `{"error": code, "detail": text}` with the right status.

Bad images carry their own status (`rtdgan.index.errors.ImageError`: 400 corrupt, 413 too many pixels, 415 not an
image); framework errors (404, 405, 422) are reshaped by the handlers here; anything unhandled is caught
by `rtdgan.service.middleware` and becomes a 500 with no traceback sent to the client.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from rtdgan.index.errors import CatalogUnavailable, ImageError, UserError
from rtdgan.service.batching import QueueFull

log = logging.getLogger(__name__)

# Short machine-readable codes for the statuses the framework raises on its own.
STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
                422: "invalid_request", 429: "too_many_requests", 500: "internal_error", 503: "unavailable"}


class ErrorBody(BaseModel):
    """The body of every error the service answers."""

    error: str  # a short machine-readable code, e.g. "too_many_pixels"
    detail: str  # what went wrong and what to do, for a person


# What each error status means on this API (the OpenAPI document declares them per route).
ERROR_MEANINGS = {
    400: "bad input: a corrupt or absurdly shaped image, an invalid product id, a second image part",
    401: "missing or wrong X-API-Key",
    403: "admin endpoints are disabled on this server (set RTD_ADMIN_KEY)",
    404: "no such product, image or endpoint",
    408: "the request body did not arrive in time",
    409: "the index folder cannot be written",
    413: "the upload is too large, or the image has too many pixels",
    415: "the upload is not an image format we read",
    422: "invalid form fields or query parameters (including an unknown category)",
    503: "not ready yet, overloaded or past the request deadline: retry after Retry-After seconds",
}


def error_responses(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI `responses` entries for these error statuses, all with the ErrorBody model."""
    return {status: {"model": ErrorBody, "description": ERROR_MEANINGS[status]} for status in statuses}


class ApiError(Exception):
    """An error with its HTTP status, short code and human detail; raise it from any route."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}


def unavailable(code: str, detail: str, retry_after_s: int) -> ApiError:
    """A 503 that tells the client when to try again."""
    return ApiError(503, code, detail, {"Retry-After": str(retry_after_s)})


def error_response(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one shape of every error body."""
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header"))
        parts.append(f"{where or 'request'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _allowed_methods(request: Request) -> list[str]:
    """The methods of every route whose path matches this request's (RFC 9110: the Allow of a 405)."""
    from starlette.routing import Match

    scope = dict(request.scope)
    methods: set[str] = set()

    def visit(routes: list) -> None:
        for route in routes:
            if route.matches(scope)[0] == Match.NONE:
                continue
            inner = getattr(route, "original_router", None)  # FastAPI's included routers wrap their routes
            if inner is not None:
                visit(inner.routes)
            else:
                methods.update(getattr(route, "methods", None) or ())

    visit(request.app.routes)
    return sorted(methods)


def install_error_handlers(app: FastAPI, retry_after_s: int) -> None:
    """Register the JSON handlers for our errors and the framework's."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.detail, exc.headers)

    @app.exception_handler(ImageError)
    async def _image_error(request: Request, exc: ImageError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.reason)

    @app.exception_handler(UserError)
    async def _user_error(request: Request, exc: UserError) -> JSONResponse:
        return error_response(400, "bad_request", str(exc))

    @app.exception_handler(QueueFull)
    async def _queue_full(request: Request, exc: QueueFull) -> JSONResponse:
        return error_response(503, "overloaded", str(exc), {"Retry-After": str(retry_after_s)})

    @app.exception_handler(CatalogUnavailable)
    async def _catalog_unavailable(request: Request, exc: CatalogUnavailable) -> JSONResponse:
        log.warning("catalog engine unavailable: %s", exc)  # the server side's view; the client gets a retry
        return error_response(503, "catalog_unavailable", "the catalog engine is unavailable: retry later",
                              {"Retry-After": str(retry_after_s)})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":  # the router's own: say what was asked for
            detail = f"no such endpoint: {request.method} {request.url.path}"
        headers = dict(exc.headers or {})
        if exc.status_code == 405 and detail == "Method Not Allowed":
            detail = f"{request.method} is not allowed on {request.url.path}"
            headers["Allow"] = ", ".join(_allowed_methods(request))  # every route on this path, not just the first that matched
        return error_response(exc.status_code, STATUS_CODES.get(exc.status_code, "error"), detail, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", _validation_detail(exc))
