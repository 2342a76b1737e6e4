"""POST /generate (street photo -> product image) and POST /search (street photo -> top-K products).

The search path is the paper's use of rtdGAN for retrieval (Sec. 5, "Recall@K", Fig. 4): the generated
product image, not the street photo, is the query, because it lives in the catalog's domain.
"""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Iterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, File, Form, Response, UploadFile
from pydantic import BaseModel

from rtdgan.index.images import to_png_bytes
from rtdgan.service.batching import DeadlineExceeded, check_capacity, deadline_in, stage_deadline
from rtdgan.service.errors import error_responses, unavailable
from rtdgan.service.middleware import body_received_at
from rtdgan.service.routes.deps import (
    DecodeLimiterDep,
    EngineDep,
    SettingsDep,
    image_url,
    prepare_query_upload,
    read_upload,
    strict_form,
)
from rtdgan.service.settings import Settings

MAX_LISTED_CATEGORIES = 50


router = APIRouter(tags=["search"])
SEARCH_FORM = strict_form("image", "k", "category", "include_generated", typed=("k", "include_generated"))

ImageUpload = Annotated[UploadFile, File(description="a street photo (JPEG, PNG, WebP, GIF, ...)")]


class SearchResult(BaseModel):
    rank: int
    product_id: str
    score: float  # cosine of the query vector and the product's (the embedder's space, or the retrieval head's)
    title: str | None
    category: str | None
    image_url: str


class SearchResponse(BaseModel):
    results: list[SearchResult]
    timings_ms: dict[str, float]
    generated_png_base64: str | None = None
    note: str | None = None  # why the results are empty when a filter matched nothing (e.g. unknown category)


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)


@contextlib.contextmanager
def _deadline(settings: Settings) -> Iterator[None]:
    """RTD_REQUEST_TIMEOUT_MS for the stages inside (decode, models, catalog: service/batching.py), counted from
    the moment the body was all in; a stage past it is not started: 503 deadline_exceeded + Retry-After."""
    with deadline_in(settings.request_timeout_ms / 1000.0, body_received_at()):
        try:
            yield
        except DeadlineExceeded as e:
            raise unavailable("deadline_exceeded", f"the request passed its {settings.request_timeout_ms:g} ms "
                              f"deadline before the {e.stage} stage (the server is busy); try again shortly",
                              settings.retry_after_s) from None


UPLOAD_ERRORS = error_responses(400, 408, 413, 415, 422, 503)


@router.post("/generate", response_class=Response, summary="Generate the product image of a street photo",
             responses={200: {"content": {"image/png": {}}, "description": "the generated product image"},
                        **UPLOAD_ERRORS}, dependencies=[Depends(strict_form("image"))])
async def generate(engine: EngineDep, settings: SettingsDep, decodes: DecodeLimiterDep, image: ImageUpload) -> Response:
    """Street photo -> the generated product image as PNG."""
    start = time.perf_counter()
    with _deadline(settings):
        check_capacity("decode", decodes, settings.queue_size, engine.metrics)  # a bounded decode queue too
        with stage_deadline("decode"):
            photo = await prepare_query_upload(await read_upload(image, settings), engine, settings, decodes)
        product = await engine.generate(photo)  # (3, S, S) in [-1, 1]
    png = await anyio.to_thread.run_sync(to_png_bytes, product)
    return Response(png, media_type="image/png", headers={"X-Elapsed-Ms": str(_ms(start))})


@router.post("/search", response_model=SearchResponse, summary="Find catalog products matching a street photo",
             responses=UPLOAD_ERRORS, dependencies=[Depends(SEARCH_FORM)])
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
    with _deadline(settings):
        check_capacity("decode", decodes, settings.queue_size, engine.metrics)  # a bounded decode queue too
        with stage_deadline("decode"):
            photo = await prepare_query_upload(await read_upload(image, settings), engine, settings, decodes)
        preprocess_ms = _ms(start)
        category = category or None
        # In a worker thread: with a Milvus catalog these are calls to its server, which must not hold the
        # event loop (the catalog search itself runs in a thread too).
        if category is not None and not await anyio.to_thread.run_sync(engine.has_category, category):
            known = list(await anyio.to_thread.run_sync(engine.categories))
            listed = ", ".join(known[:MAX_LISTED_CATEGORIES]) + (" ..." if len(known) > MAX_LISTED_CATEGORIES else "")
            # A schema-valid filter that matches nothing: an explicit empty result saying why (a 422 would
            # tell the client its request was malformed; it is not, the catalog just has no such category).
            return SearchResponse(results=[], timings_ms={"preprocess": preprocess_ms, "total": _ms(start)},
                                  note=f"no product has category {category!r}; the catalog's categories: "
                                       f"{listed or '(none)'} (GET /categories)")
        found = await engine.query(photo, k, category)
    generated = None
    if include_generated and found.generated is not None:
        generated = base64.b64encode(await anyio.to_thread.run_sync(to_png_bytes, found.generated[0])).decode("ascii")
    timings = {"preprocess": preprocess_ms, **found.timings_ms, "total": _ms(start)}
    results = [SearchResult(rank=rank, product_id=hit.product_id, score=hit.score, title=hit.title,
                            category=hit.category, image_url=image_url(settings, hit.product_id))
               for rank, hit in enumerate(found.hits[0], start=1)]
    return SearchResponse(results=results, timings_ms=timings, generated_png_base64=generated)
