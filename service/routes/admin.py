"""Admin: add and remove catalog products, reload the catalog from disk; all behind X-API-Key.

An acknowledged add is durable: the image is written atomically under INDEX/images/ and the product is
appended to the catalog's write-ahead log (fsynced; `rtdgan.index.catalog.file.Catalog.write`) before the 201 goes out,
so a crash right after loses nothing, and every replica serving the folder picks it up on its own.
"""

from __future__ import annotations

import errno
import io
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, File, Form, UploadFile
from PIL import Image
from pydantic import BaseModel

from rtdgan.index.catalog.base import ProductMeta
from rtdgan.index.images import decode_image
from rtdgan.service.errors import ApiError, error_responses
from rtdgan.service.routes.deps import (
    PRODUCT_ID_SCHEMA,
    DecodeLimiterDep,
    EngineDep,
    ProductIdPath,
    SettingsDep,
    check_product_id,
    image_url,
    preprocess_upload,
    read_upload,
    require_admin,
    strict_form,
)

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)],
                   responses=error_responses(401, 403, 503))

# Formats browsers show, kept byte for byte; anything else (TIFF, BMP, ...) is stored as PNG.
WEB_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif"}


class Added(BaseModel):
    product_id: str
    count: int  # products in the catalog after the add
    image_url: str


class Removed(BaseModel):
    product_id: str
    count: int


class Reloaded(BaseModel):
    count: int


def _stored_image(data: bytes, max_pixels: int) -> tuple[bytes, str]:
    """The bytes and file suffix to keep for a catalog image (already checked to decode)."""
    fmt = Image.open(io.BytesIO(data)).format
    if fmt in WEB_FORMATS:
        return data, WEB_FORMATS[fmt]
    buf = io.BytesIO()
    decode_image(data, max_pixels=max_pixels).save(buf, format="PNG")
    return buf.getvalue(), ".png"


def _not_writable(e: OSError) -> ApiError:
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return ApiError(409, "index_read_only", f"the index folder cannot be written ({e.strerror}); "
                        "admin writes need a writable index mount")
    return ApiError(500, "index_write_failed", f"saving the catalog failed: {e.strerror or e}")


@router.post("/products", status_code=201, response_model=Added, summary="Add (or replace) a catalog product",
             responses=error_responses(400, 409, 413, 415, 422),
             dependencies=[Depends(strict_form("image", "product_id", "title", "category", typed=("product_id",)))])
async def add_product(
    engine: EngineDep,
    settings: SettingsDep,
    decodes: DecodeLimiterDep,
    image: Annotated[UploadFile, File(description="the product image (catalog style: the garment on white)")],
    product_id: Annotated[str, Form(description="1-64 of A-Z a-z 0-9 . _ - (not only dots)",
                                    json_schema_extra=PRODUCT_ID_SCHEMA)],
    title: Annotated[str | None, Form(max_length=200)] = None,
    category: Annotated[str | None, Form(max_length=64)] = None,
) -> Added:
    """Embed the product image as it is (no generator: it is already a product image) and add it."""
    check_product_id(product_id)
    data = await read_upload(image, settings)
    array = await preprocess_upload(data, engine.size, settings, decodes)  # (3, S, S)
    vector = await engine.embed_catalog(array)  # (D,), or (E,) through the retrieval head's catalog side
    stored, suffix = await anyio.to_thread.run_sync(_stored_image, data, settings.max_pixels, limiter=decodes)
    try:
        count = await engine.add_product(ProductMeta(product_id, title or None, category or None), stored, suffix,
                                         vector)
    except OSError as e:
        raise _not_writable(e) from e
    return Added(product_id=product_id, count=count, image_url=image_url(settings, product_id))


@router.delete("/products/{product_id}", response_model=Removed, summary="Remove a catalog product",
               responses=error_responses(400, 404, 409))
async def remove_product(product_id: ProductIdPath, engine: EngineDep) -> Removed:
    """Remove a product (404 when absent) and save the catalog before answering."""
    check_product_id(product_id)
    try:
        removed = await engine.remove_product(product_id)
    except OSError as e:
        raise _not_writable(e) from e
    if not removed:
        raise ApiError(404, "not_found", f"no product {product_id!r} in the catalog")
    count = await anyio.to_thread.run_sync(lambda: engine.product_count)  # Milvus: a call to its server
    return Removed(product_id=product_id, count=count)


@router.post("/reload", response_model=Reloaded, summary="Re-read the catalog from the index folder")
async def reload(engine: EngineDep) -> Reloaded:
    """Swap in the catalog as saved on disk now (e.g. after `rtd index build` or another replica's write)."""
    return Reloaded(count=await engine.reload())
