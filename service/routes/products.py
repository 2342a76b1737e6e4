"""GET /products/{id} (metadata) and GET /products/{id}/image (the catalog image file)."""

from __future__ import annotations

import mimetypes
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse
from pydantic import BaseModel

from service.errors import ApiError
from service.routes.deps import CatalogDep, SettingsDep, check_product_id, image_url

router = APIRouter(prefix="/products", tags=["products"])

ProductId = Annotated[str, Depends(check_product_id)]


class Product(BaseModel):
    product_id: str
    title: str | None
    category: str | None
    added_at: str | None
    image_url: str


@router.get("/{product_id}", response_model=Product, summary="A catalog product's metadata")
def product(product_id: ProductId, engine: CatalogDep, settings: SettingsDep) -> Product:
    """Metadata of one product, 404 when the catalog has no such id."""
    meta = engine.catalog.get(product_id)
    if meta is None:
        raise ApiError(404, "not_found", f"no product {product_id!r} in the catalog")
    return Product(product_id=meta.product_id, title=meta.title, category=meta.category, added_at=meta.added_at,
                   image_url=image_url(settings, meta.product_id))


@router.get("/{product_id}/image", response_class=FileResponse, summary="A catalog product's image",
            responses={200: {"content": {"image/*": {}}}})
def product_image(product_id: ProductId, engine: CatalogDep) -> FileResponse:
    """The product's catalog image file, with its content type."""
    meta = engine.catalog.get(product_id)
    if meta is None:
        raise ApiError(404, "not_found", f"no product {product_id!r} in the catalog")
    path = engine.image_file(meta)
    if path is None:
        raise ApiError(404, "image_missing", f"product {product_id!r} has no image file on this server")
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "public, max-age=3600"})
