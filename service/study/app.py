"""The raters' web app of a study (Sec. 5.3): `create_study_app(settings)`, served by `rtd study serve`.

    GET  /                   the page (service/static/study.html, .js, .css): one item at a time
    POST /api/raters         start as a new rater (optional name); sets the rater cookie, returns the next step
    GET  /api/next           this rater's next step (resume: the first unanswered one) and progress; 401 without a rater
    POST /api/responses      one ranking: {"item", "task", "ranking": [image ids, best first]}
    GET  /images/{id}.png    a photo or generated image of the study, by its random id
    GET  /api/export         every response with its methods (JSON or ?format=csv), behind X-Admin-Key

What the page receives never names a method: images have random ids (study.py), the candidates of each
(item, task) come in the rater's own random order (store.py), and a ranking is sent as image ids, which the
server maps to methods. A request that does not fit (an unknown item or image id, a ranking that is not a
permutation of the item's images, any extra field such as a method, a body over `max_body_bytes`) is answered
4xx and stores nothing.
"""

from __future__ import annotations

import contextlib
import csv
import hmac
import io
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Cookie, FastAPI, Header, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rtdgan.service.errors import ApiError, install_error_handlers
from rtdgan.service.study.store import Duplicate, Planned, Store
from rtdgan.service.study.study import ID_RE, TASKS, Study, read_study

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent.parent / "static"
PAGE_FILES = {"study.js": "text/javascript", "study.css": "text/css"}
COOKIE = "rtd_rater"


@dataclass(frozen=True)
class StudySettings:
    """What the study app serves and how."""

    study: Path  # the study folder (`rtd study create`)
    responses: Path | None = None  # the SQLite file; None: STUDY/responses.sqlite
    admin_key: str | None = None  # unlocks GET /api/export; None: export disabled (403)
    max_body_bytes: int = 8192  # a ranking of a few ids is about 200 bytes
    secure_cookie: bool = False  # set the cookie's Secure flag (behind HTTPS)


class NewRater(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field("", max_length=80)


class Ranking(BaseModel):
    """One ranking as the page sends it: the item, the task, the item's image ids best first."""

    model_config = ConfigDict(extra="forbid")  # a method, a rank table or anything else is refused
    item: str = Field(max_length=40)
    task: Literal["realism", "similarity"]
    ranking: list[str] = Field(max_length=16)


async def read_json(request: Request, model: type[BaseModel], limit: int) -> BaseModel:
    """The request body as `model`: 413 over `limit` bytes (read no further), 415 not JSON, 422 invalid."""
    if "application/json" not in request.headers.get("content-type", ""):
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise ApiError(413, "too_large", f"the body is over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "too_large", f"the body is over {limit} bytes")
    try:
        return model.model_validate(json.loads(body or b"{}"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, "bad_request", f"the body is not JSON: {e}") from None
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ApiError(422, "invalid_request", f"{where}: {first['msg']}") from None


def step_doc(study: Study, step: Planned | None, progress: tuple[int, int]) -> dict:
    """What the page gets for a step: the task and its prompt, the photo, the candidates in the rater's order
    (image ids and URLs only), and progress."""
    done, total = progress
    doc: dict = {"done": done, "total": total, "step": None}
    if step is not None:
        item = study.item(step.item)
        assert item is not None  # plans are drawn from the manifest
        doc["step"] = {"item": item.id, "task": step.task, "prompt": TASKS[step.task],
                       "photo": f"images/{item.photo}.png",
                       "candidates": [{"id": item.images[m], "url": f"images/{item.images[m]}.png"} for m in step.shown]}
    return doc


def export_csv(rows: list[dict], methods: tuple[str, ...]) -> str:
    """Responses as CSV: one row per response, the ranking and the shown order as method names, and the rank
    of each method (1 = best) in a column of its own."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["rater", "name", "simulated", "task", "item", "product_id", "position", "submitted",
                     "ranking", "shown", *(f"rank_{m}" for m in methods)])
    for r in rows:
        writer.writerow([r["rater"], r["name"], int(r["simulated"]), r["task"], r["item"], r.get("product_id", ""),
                         r["position"], f"{r['submitted']:.3f}", " > ".join(r["ranking"]), ",".join(r["shown"]),
                         *(r["ranking"].index(m) + 1 for m in methods)])
    return out.getvalue()


def create_study_app(settings: StudySettings) -> FastAPI:
    """The raters' app over one study folder; the responses database is opened (created) now."""
    study = read_study(settings.study)
    store = Store(settings.responses or study.responses)
    images = study.images
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        store.close()  # every response was committed when it was acknowledged: nothing to flush

    app = FastAPI(title="rtdgan study", version="0.1.0", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.store, app.state.study = store, study
    install_error_handlers(app, retry_after_s=1)

    def rater_of(rater: str | None) -> str:
        if rater is None or store.rater(rater) is None:
            raise ApiError(401, "unauthorized", "no rater yet: POST /api/raters to start")
        return rater

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "study.html", media_type="text/html", headers={"Cache-Control": "no-store"})

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        if name not in PAGE_FILES:
            raise ApiError(404, "not_found", f"no file {name!r}")
        return FileResponse(STATIC / name, media_type=PAGE_FILES[name])

    @app.get("/images/{name}")
    def image(name: str) -> Response:
        image_id = name.removesuffix(".png")
        if not ID_RE.match(image_id) or image_id not in images or name != f"{image_id}.png":
            raise ApiError(404, "not_found", "no such image")
        # The bytes alone: no Last-Modified or ETag, which would carry the file's write time, and `create`
        # writes one method's images after another's, so sorting by it would tell the methods apart.
        return Response(images[image_id].read_bytes(), media_type="image/png",
                        headers={"Cache-Control": "private, max-age=86400"})

    @app.post("/api/raters", status_code=201)
    async def new_rater(request: Request) -> JSONResponse:
        body = await read_json(request, NewRater, settings.max_body_bytes)
        rater = store.add_rater(study, body.name.strip())  # type: ignore[attr-defined]
        response = JSONResponse(step_doc(study, store.next_step(rater), store.progress(rater)), status_code=201)
        response.set_cookie(COOKIE, rater, max_age=180 * 86400, httponly=True, samesite="strict",
                            secure=settings.secure_cookie)
        return response

    @app.get("/api/next")
    def next_step(rtd_rater: Annotated[str | None, Cookie()] = None) -> JSONResponse:
        rater = rater_of(rtd_rater)
        return JSONResponse(step_doc(study, store.next_step(rater), store.progress(rater)),
                            headers={"Cache-Control": "no-store"})

    @app.post("/api/responses", status_code=201)
    async def respond(request: Request, rtd_rater: Annotated[str | None, Cookie()] = None) -> JSONResponse:
        rater = rater_of(rtd_rater)
        body: Ranking = await read_json(request, Ranking, settings.max_body_bytes)  # type: ignore[assignment]
        item = study.item(body.item)
        step = store.planned(rater, body.item, body.task) if item is not None else None
        if item is None or step is None:
            raise ApiError(404, "not_found", "no such item in this rater's study")
        by_image = {image_id: method for method, image_id in item.images.items()}
        if len(body.ranking) != len(by_image) or set(body.ranking) != set(by_image):
            raise ApiError(422, "invalid_request", f"ranking must list each of the item's {len(by_image)} images "
                                                   "exactly once, best first")
        try:
            store.submit(rater, step, [by_image[i] for i in body.ranking])
        except Duplicate as e:
            raise ApiError(409, "conflict", f"{e}; a ranking is final once sent") from None
        return JSONResponse(step_doc(study, store.next_step(rater), store.progress(rater)), status_code=201)

    @app.get("/api/export")
    def export(format: Literal["json", "csv"] = "json",
               x_admin_key: Annotated[str | None, Header()] = None) -> Response:
        if not settings.admin_key:
            raise ApiError(403, "forbidden", "export is disabled: start the server with an admin key")
        if x_admin_key is None or not hmac.compare_digest(x_admin_key.encode(), settings.admin_key.encode()):
            raise ApiError(401, "unauthorized", "missing or wrong X-Admin-Key")
        products = {i.id: i.product_id for i in study.items}
        rows = [r | {"product_id": products.get(r["item"], "")} for r in store.responses()]
        if format == "csv":
            return Response(export_csv(rows, study.methods), media_type="text/csv")
        return JSONResponse({"methods": list(study.methods), "tasks": list(study.tasks), "counts": store.counts(),
                             "responses": rows})

    return app
