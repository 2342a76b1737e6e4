"""POST /generate (street photo -> product image) and POST /search (street photo -> top-K products).

The search path is the paper's use of rtdGAN for retrieval (Sec. 5, "Recall@K", Fig. 4): the generated
product image, not the street photo, is the query, because it lives in the catalog's domain.
"""

from __future__ import annotations

import base64
import time
import urllib.parse
from typing import Annotated

import anyio
from fastapi import APIRouter, File, Form, Response, UploadFile
from pydantic import BaseModel

from index.catalog import Hit
from index.images import to_png_bytes
from service.routes.deps import DecodeLimiterDep, EngineDep, SettingsDep, preprocess_upload, read_upload
from service.settings import Settings

router = APIRouter(tags=["search"])

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


def image_url(settings: Settings, product_id: str) -> str:
    """Where a client fetches a product's image (absolute when public_base_url is set)."""
    return f"{settings.public_base_url}/products/{urllib.parse.quote(product_id, safe='')}/image"


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
    """Street photo -> generator -> embedder -> top-K catalog products by cosine."""
    timings: dict[str, float] = {}
    start = t = time.perf_counter()
    photo = await preprocess_upload(await read_upload(image, settings), engine.size, settings, decodes)  # (3, S, S)
    timings["preprocess"] = _ms(t)
    t = time.perf_counter()
    product = await engine.generate(photo)  # (3, S, S)
    timings["generate"] = _ms(t)
    t = time.perf_counter()
    vector = await engine.embed(product)  # (D,)
    timings["embed"] = _ms(t)
    t = time.perf_counter()
    hits: list[Hit] = (await engine.search(vector[None], k, category or None))[0]
    timings["search"] = _ms(t)
    generated = None
    if include_generated:
        generated = base64.b64encode(await anyio.to_thread.run_sync(to_png_bytes, product)).decode("ascii")
    timings["total"] = _ms(start)
    results = [SearchResult(rank=rank, product_id=hit.product_id, score=hit.score, title=hit.title,
                            category=hit.category, image_url=image_url(settings, hit.product_id))
               for rank, hit in enumerate(hits, start=1)]
    return SearchResponse(results=results, timings_ms=timings, generated_png_base64=generated)
