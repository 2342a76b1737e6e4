"""Dependencies shared by the routers: settings, the engine (ready or not), uploads, the admin key, image links."""

from __future__ import annotations

import functools
import hmac
import urllib.parse
from typing import Annotated

import anyio
import numpy as np
from fastapi import Depends, Header, Request, UploadFile

from index.images import preprocess
from service.engine import Engine, valid_product_id
from service.errors import ApiError, unavailable
from service.settings import Settings

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
    if engine.catalog is None:
        raise unavailable("not_ready", engine.reason or "catalog not loaded", settings.retry_after_s)
    return engine


EngineDep = Annotated[Engine, Depends(ready_engine)]
CatalogDep = Annotated[Engine, Depends(catalog_engine)]


def require_admin(settings: SettingsDep, x_api_key: Annotated[str | None, Header()] = None) -> None:
    """401 without the right X-API-Key; 503 when no key is configured (admin disabled)."""
    if settings.admin_key is None or not settings.admin_key.get_secret_value():
        raise ApiError(503, "admin_disabled", "admin endpoints are disabled: set RTD_ADMIN_KEY to enable them")
    expected = settings.admin_key.get_secret_value().encode()
    # compare_digest: the time taken does not tell an attacker how much of the key was right.
    if x_api_key is None or not hmac.compare_digest(x_api_key.encode(), expected):
        raise ApiError(401, "unauthorized", "missing or wrong X-API-Key header", {"WWW-Authenticate": "X-API-Key"})


def image_url(settings: Settings, product_id: str) -> str:
    """Where a client fetches a product's image (absolute when public_base_url is set)."""
    return f"{settings.public_base_url}/products/{urllib.parse.quote(product_id, safe='')}/image"


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


async def preprocess_upload(data: bytes, size: int, settings: Settings, limiter: anyio.CapacityLimiter) -> np.ndarray:
    """Decode + letterbox + resize in a worker thread (PIL is CPU work): (3, S, S) float32 in [-1, 1]."""
    return await anyio.to_thread.run_sync(functools.partial(preprocess, data, size, max_pixels=settings.max_pixels),
                                          limiter=limiter)
