"""POST /generate (street photo -> product image) and POST /search (street photo -> top-K products).

The search path is the paper's use of rtdGAN for retrieval (Sec. 5, "Recall@K", Fig. 4): the generated
product image, not the street photo, is the query, because it lives in the catalog's domain.
"""

from __future__ import annotations

import base64
import time
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile
from pydantic import BaseModel

from index.images import to_png_bytes
from service.errors import ApiError
from service.routes.deps import (
    DecodeLimiterDep,
    EngineDep,
    SettingsDep,
    image_url,
    preprocess_upload,
    read_upload,
)

MAX_LISTED_CATEGORIES = 50


async def one_image_no_query(request: Request) -> None:
    """Nothing is silently ignored: query parameters are a 422 (the fields are form fields), and a second
    `image` part is a 400 (which one would we search?)."""
    if request.query_params:
        names = ", ".join(sorted(set(request.query_params.keys())))
        raise ApiError(422, "invalid_request", f"{request.method} {request.url.path} reads no query parameters "
                       f"(got {names}); send k, category and include_generated as multipart form fields")
    form = await request.form()  # parsed once: FastAPI reuses it for the File and Form parameters
    if len(form.getlist("image")) > 1:
        raise ApiError(400, "bad_request", "send exactly one `image` part; this request has "
                       f"{len(form.getlist('image'))}")


router = APIRouter(tags=["search"], dependencies=[Depends(one_image_no_query)])

ImageUpload = Annotated[UploadFile, File(description="a street photo (JPEG, PNG, WebP, GIF, ...)")]


class SearchResult(BaseModel):
    rank: int
    product_id: str
    score: float  # cosine similarity of the generated image's and the product's embeddings
    title: str | None
    category: str | None
    image_url: str


class SearchResponse(BaseModel):
    results: list[SearchResult]
    timings_ms: dict[str, float]
    generated_png_base64: str | None = None


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)


@router.post("/generate", response_class=Response, summary="Generate the product image of a street photo",
             responses={200: {"content": {"image/png": {}}, "description": "the generated product image"}})
async def generate(engine: EngineDep, settings: SettingsDep, decodes: DecodeLimiterDep, image: ImageUpload) -> Response:
    """Street photo -> the generated product image as PNG."""
    start = time.perf_counter()
    photo = await preprocess_upload(await read_upload(image, settings), engine.size, settings, decodes)  # (3, S, S)
    product = await engine.generate(photo)  # (3, S, S) in [-1, 1]
    png = await anyio.to_thread.run_sync(to_png_bytes, product)
    return Response(png, media_type="image/png", headers={"X-Elapsed-Ms": str(_ms(start))})


@router.post("/search", response_model=SearchResponse, summary="Find catalog products matching a street photo")
async def search(
    engine: EngineDep,
    settings: SettingsDep,
    decodes: DecodeLimiterDep,
    image: ImageUpload,
    k: Annotated[int, Form(ge=1, le=100, description="how many products")] = 10,
    category: Annotated[str | None, Form(max_length=64, description="only this category")] = None,
    include_generated: Annotated[bool, Form(description="also return the generated image (PNG, base64)")] = False,
) -> SearchResponse:
    """Street photo -> the pipeline (generator -> embedder -> catalog) -> top-K products by cosine."""
    start = time.perf_counter()
    photo = await preprocess_upload(await read_upload(image, settings), engine.size, settings, decodes)  # (3, S, S)
    preprocess_ms = _ms(start)
    category = category or None
    if category is not None and engine.catalog is not None and not engine.catalog.has_category(category):
        known = list(engine.catalog.categories())
        listed = ", ".join(known[:MAX_LISTED_CATEGORIES]) + (" ..." if len(known) > MAX_LISTED_CATEGORIES else "")
        raise ApiError(422, "unknown_category", f"no product has category {category!r}; the catalog's "
                       f"categories: {listed or '(none)'}")
    found = await engine.query(photo, k, category)
    generated = None
    if include_generated and found.generated is not None:
        generated = base64.b64encode(await anyio.to_thread.run_sync(to_png_bytes, found.generated[0])).decode("ascii")
    timings = {"preprocess": preprocess_ms, **found.timings_ms, "total": _ms(start)}
    results = [SearchResult(rank=rank, product_id=hit.product_id, score=hit.score, title=hit.title,
                            category=hit.category, image_url=image_url(settings, hit.product_id))
               for rank, hit in enumerate(found.hits[0], start=1)]
    return SearchResponse(results=results, timings_ms=timings, generated_png_base64=generated)
