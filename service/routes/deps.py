"""Dependencies shared by the routers: settings, the engine (ready or not), uploads, the admin key, image links."""

from __future__ import annotations

import functools
import hmac
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Annotated

import anyio
import numpy as np
from fastapi import Depends, Path, Request, UploadFile
from fastapi.security import APIKeyHeader
from PIL import Image

from rtdgan.index.images import preprocess
from rtdgan.service.engine import Engine, valid_product_id
from rtdgan.service.errors import ApiError, unavailable
from rtdgan.service.settings import Settings

CHUNK = 1 << 16


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def ready_engine(request: Request, settings: SettingsDep) -> Engine:
    """The engine, or 503 + Retry-After with the reason while it is loading, warming up or broken."""
    engine: Engine = request.app.state.engine
    if not engine.ready:
        raise unavailable("not_ready", engine.reason or "not ready", settings.retry_after_s)
    return engine


def catalog_engine(request: Request, settings: SettingsDep) -> Engine:
    """The engine once its catalog is loaded (product pages do not need the models)."""
    engine: Engine = request.app.state.engine
    if not engine.has_catalog:
        raise unavailable("not_ready", engine.reason or "catalog not loaded", settings.retry_after_s)
    return engine


EngineDep = Annotated[Engine, Depends(ready_engine)]
CatalogDep = Annotated[Engine, Depends(catalog_engine)]


# The admin key as an OpenAPI security scheme (generated clients send it); checked by require_admin.
API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="AdminKey",
                       description="the server's RTD_ADMIN_KEY; admin endpoints only")


def require_admin(settings: SettingsDep, x_api_key: Annotated[str | None, Depends(API_KEY)] = None) -> None:
    """401 without the right X-API-Key; 403 when no key is configured (admin is off, not unavailable)."""
    if settings.admin_key is None or not settings.admin_key.get_secret_value():
        raise ApiError(403, "admin_disabled", "admin endpoints are disabled on this server: start it with "
                       "RTD_ADMIN_KEY set (the key clients send as X-API-Key) to enable them")
    expected = settings.admin_key.get_secret_value().encode()
    # compare_digest: the time taken does not tell an attacker how much of the key was right.
    if x_api_key is None or not hmac.compare_digest(x_api_key.encode(), expected):
        raise ApiError(401, "unauthorized", "missing or wrong X-API-Key header", {"WWW-Authenticate": "X-API-Key"})


def strict_form(*fields: str, typed: tuple[str, ...] = ()) -> Callable[[Request], Awaitable[None]]:
    """A dependency for a multipart route that reads exactly `fields`: nothing is silently ignored.

    Query parameters are a 422 (these routes read form fields only), an unknown form field is a 422 naming
    it, a field sent twice is a 400 (which `image` would we search?), and an empty value of a `typed`
    field (a number, a flag, an id) is a 422 (the framework would quietly read it as "not sent")."""
    known = set(fields)

    async def check(request: Request) -> None:
        if request.query_params:
            names = ", ".join(sorted(set(request.query_params.keys())))
            raise ApiError(422, "invalid_request", f"{request.method} {request.url.path} reads no query parameters "
                           f"(got {names}); send {', '.join(fields)} as multipart form fields")
        form = await request.form()  # parsed once: FastAPI reuses it for the File and Form parameters
        unknown = sorted(set(form.keys()) - known)
        if unknown:
            raise ApiError(422, "invalid_request", f"unknown form field(s) {', '.join(map(repr, unknown))}; "
                           f"{request.url.path} reads {', '.join(fields)}")
        for name in fields:
            if len(form.getlist(name)) > 1:
                raise ApiError(400, "bad_request", f"send exactly one `{name}` part; this request has "
                               f"{len(form.getlist(name))}")
        for name in typed:
            if form.get(name) == "":
                raise ApiError(422, "invalid_request", f"{name}: an empty value; send a value or leave the field out")

    return check


def image_url(settings: Settings, product_id: str) -> str:
    """Where a client fetches a product's image (absolute when public_base_url is set)."""
    return f"{settings.public_base_url}/products/{urllib.parse.quote(product_id, safe='')}/image"


# The rule of valid_product_id as a JSON-schema pattern (1-64 of [A-Za-z0-9._-], not only dots), so the
# OpenAPI document says what is accepted; the check itself stays ours (a 400 with the reason).
PRODUCT_ID_PATTERN = r"^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"
PRODUCT_ID_SCHEMA = {"pattern": PRODUCT_ID_PATTERN, "minLength": 1, "maxLength": 64}


ProductIdPath = Annotated[str, Path(description="1-64 of A-Z a-z 0-9 . _ - (not only dots)",
                                    json_schema_extra=PRODUCT_ID_SCHEMA)]


def check_product_id(product_id: str) -> str:
    """The product id, or 400 when it is not 1-64 of [A-Za-z0-9._-] (ids name files: no traversal)."""
    if not valid_product_id(product_id):
        raise ApiError(400, "invalid_product_id", "product id must be 1-64 characters of A-Z a-z 0-9 . _ - "
                       "and not only dots")
    return product_id


async def read_upload(upload: UploadFile, settings: Settings) -> bytes:
    """The uploaded file's bytes, read in chunks; 413 as soon as it passes max_upload_bytes."""
    parts, total = [], 0
    while chunk := await upload.read(CHUNK):
        total += len(chunk)
        if total > settings.max_upload_bytes:
            raise ApiError(413, "too_large", f"image upload is larger than {settings.max_upload_bytes} bytes")
        parts.append(chunk)
    return b"".join(parts)


def decode_limiter(request: Request) -> anyio.CapacityLimiter:
    """Bounds how many uploads are decoded at once: a decoded image may take up to max_pixels x 4 bytes."""
    return request.app.state.decode_limiter


DecodeLimiterDep = Annotated[anyio.CapacityLimiter, Depends(decode_limiter)]


async def prepare_query_upload(data: bytes, engine: Engine, settings: Settings,
                               limiter: anyio.CapacityLimiter) -> np.ndarray | Image.Image:
    """A query photo in a worker thread, as the pipeline's plan takes it (index/pipeline.py `prepare`): (3, S, S),
    or with a person crop the decoded photo reduced to about 256 px (the plan's crop stage cuts and resizes it)."""
    return await anyio.to_thread.run_sync(functools.partial(engine.prepare, data, max_pixels=settings.max_pixels),
                                          limiter=limiter)


async def preprocess_upload(data: bytes, size: int, settings: Settings, limiter: anyio.CapacityLimiter) -> np.ndarray:
    """Decode + letterbox + resize in a worker thread (PIL is CPU work): (3, S, S) float32 in [-1, 1]."""
    return await anyio.to_thread.run_sync(functools.partial(preprocess, data, size, max_pixels=settings.max_pixels),
                                          limiter=limiter)
