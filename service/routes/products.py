"""The catalog as a resource: GET /products (paginated, by category), /products/{id}, its image, /categories."""

from __future__ import annotations

import mimetypes
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel

from rtdgan.index.catalog.base import ProductMeta
from rtdgan.service.errors import ApiError, error_responses
from rtdgan.service.routes.deps import CatalogDep, ProductIdPath, SettingsDep, check_product_id, image_url
from rtdgan.service.settings import Settings

router = APIRouter(tags=["products"])

MAX_PAGE = 1000
MAX_OFFSET = 2**53  # far past any catalog; SQLite integers are 64-bit


def checked_id(product_id: ProductIdPath) -> str:
    return check_product_id(product_id)


ProductId = Annotated[str, Depends(checked_id)]


class Product(BaseModel):
    product_id: str
    title: str | None
    category: str | None
    added_at: str | None
    image_url: str


class ProductPage(BaseModel):
    products: list[Product]
    total: int  # products matching the filter
    offset: int
    limit: int


class Categories(BaseModel):
    categories: dict[str, int]  # category -> number of products


def _product(meta: ProductMeta, settings: Settings) -> Product:
    return Product(product_id=meta.product_id, title=meta.title, category=meta.category, added_at=meta.added_at,
                   image_url=image_url(settings, meta.product_id))


@router.get("/products", response_model=ProductPage, summary="The catalog's products, a page at a time",
            responses=error_responses(422, 503))
def products(
    engine: CatalogDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="products per page")] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="products to skip (insertion order)")] = 0,
    category: Annotated[str | None, Query(max_length=64, description="only this category")] = None,
) -> ProductPage:
    """A page of products in the order they were added; `total` counts every match."""
    page, total = engine.page(limit, offset, category or None)
    return ProductPage(products=[_product(m, settings) for m in page], total=total, offset=offset, limit=limit)


@router.get("/categories", response_model=Categories, summary="The catalog's categories and their sizes",
            responses=error_responses(503))
def categories(engine: CatalogDep) -> Categories:
    """Every category with its number of products (what /search's `category` accepts)."""
    return Categories(categories=engine.categories())


@router.get("/products/{product_id}", response_model=Product, summary="A catalog product's metadata",
            responses=error_responses(400, 404, 503))
def product(product_id: ProductId, engine: CatalogDep, settings: SettingsDep) -> Product:
    """Metadata of one product, 404 when the catalog has no such id."""
    meta = engine.product(product_id)
    if meta is None:
        raise ApiError(404, "not_found", f"no product {product_id!r} in the catalog")
    return _product(meta, settings)


@router.get("/products/{product_id}/image", response_class=FileResponse, summary="A catalog product's image",
            responses={200: {"content": {"image/*": {}}, "description": "the catalog image file"},
                       **error_responses(400, 404, 503)})
def product_image(product_id: ProductId, engine: CatalogDep) -> FileResponse:
    """The product's catalog image file, with its content type."""
    meta = engine.product(product_id)
    if meta is None:
        raise ApiError(404, "not_found", f"no product {product_id!r} in the catalog")
    path = engine.image_file(meta)
    if path is None:
        raise ApiError(404, "image_missing", f"product {product_id!r} has no image file on this server")
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "public, max-age=3600"})
