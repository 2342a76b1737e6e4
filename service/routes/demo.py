"""GET / (the demo page) and its sample photos: GET /demo/samples, GET /demo/samples/{name}.

Samples come from the folder in RTD_DEMO_SAMPLES (e.g. the data set's street photos); only names in the
listing are served, so a request can never reach another file.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel

from rtdgan.index.files import is_image_file
from rtdgan.index.lookbook import is_street_photo
from rtdgan.service.errors import ApiError, error_responses
from rtdgan.service.routes.deps import SettingsDep
from rtdgan.service.settings import Settings

STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(tags=["demo"])


class Sample(BaseModel):
    name: str
    url: str


class Samples(BaseModel):
    samples: list[Sample]


def list_samples(settings: Settings) -> dict[str, Path]:
    """Up to demo_sample_count photos, spread evenly over the sorted folder (street photos preferred)."""
    folder = settings.demo_samples
    if folder is None or not folder.is_dir() or settings.demo_sample_count == 0:
        return {}
    files = sorted(p for p in folder.iterdir() if is_image_file(p))
    street = [p for p in files if is_street_photo(p.name)]  # LookBook CLEAN0: photos of people
    files = street or files
    n = min(settings.demo_sample_count, len(files))
    picked = [files[i * len(files) // n] for i in range(n)]  # evenly spaced: different products
    return {p.name: p for p in picked}


def _samples(request: Request) -> dict[str, Path]:
    # Listed once per app: a data set folder can hold 100k files.
    state = request.app.state
    if getattr(state, "demo_samples", None) is None:
        state.demo_samples = list_samples(state.settings)
    return state.demo_samples


@router.get("/", response_class=FileResponse, include_in_schema=False)
def page() -> FileResponse:
    """The demo page: drop a photo, see the generated product and the top-K matches."""
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/demo/samples", response_model=Samples, summary="Sample street photos for the demo page")
def samples(request: Request, settings: SettingsDep) -> Samples:
    """The sample photos the demo page offers (empty when RTD_DEMO_SAMPLES is not set)."""
    return Samples(samples=[Sample(name=name, url=f"{settings.public_base_url}/demo/samples/{quote(name)}")
                            for name in _samples(request)])


@router.get("/demo/samples/{name}", response_class=FileResponse, summary="One sample photo",
            responses={200: {"content": {"image/*": {}}, "description": "the sample photo"}, **error_responses(404)})
def sample(name: str, request: Request) -> FileResponse:
    """A listed sample photo; 404 for any other name."""
    path = _samples(request).get(name)
    if path is None:
        raise ApiError(404, "not_found", f"no sample photo named {name!r}")
    return FileResponse(path, media_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream")
