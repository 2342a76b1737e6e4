"""The demo page: its files and sample endpoints, then a real headless Chromium running a sample search."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.service.conftest import CHROMIUM, Tiny, run_chromium, running_client, settings_for, uvicorn_server


def test_page_and_static_files(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="static/app.js"' in page.text and "https://" not in page.text  # no CDN
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
    assert client.get("/static/../app.py").status_code == 404


def test_samples_listing_and_files(client: TestClient, tiny: Tiny) -> None:
    samples = client.get("/demo/samples").json()["samples"]
    assert len(samples) == 8  # demo_sample_count, spread over the 10 photos
    assert all("_CLEAN0_" in s["name"] and s["url"] == f"/demo/samples/{s['name']}" for s in samples)
    first = client.get(samples[0]["url"])
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    assert first.content == (tiny.samples / samples[0]["name"]).read_bytes()
    for bad in ("/demo/samples/nope.jpg", "/demo/samples/..%2F..%2Fetc%2Fpasswd", "/demo/samples/%2E%2E"):
        assert client.get(bad).status_code == 404


def test_samples_setting(tiny: Tiny) -> None:
    with running_client(settings_for(tiny, demo_samples=None)) as c:
        assert c.get("/demo/samples").json() == {"samples": []}
    with running_client(settings_for(tiny, demo_sample_count=3)) as c:
        assert len(c.get("/demo/samples").json()["samples"]) == 3


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                    "(apt-get install chromium chromium-driver)")
def test_browser_runs_a_sample_search(tiny: Tiny, tmp_path: Path) -> None:
    with uvicorn_server(settings_for(tiny)) as base:
        # `?sample=0` makes the page search with its first sample photo as soon as it loads.
        dom = run_chromium(["--dump-dom", f"{base}/?sample=0"], tmp_path / "profile1")
        shot = tmp_path / "demo.png"
        screenshot = run_chromium(["--window-size=1100,900", f"--screenshot={shot}", f"{base}/?sample=0"],
                                  tmp_path / "profile2")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert 'data-state="done"' in html, html[-3000:]
    results = re.findall(r'<li class="result"><img src="products/(\w+)/image"', html)
    assert len(results) == 10
    # Sample 0 is product P000's photo with red and blue swapped: the tiny generator undoes it.
    assert results[0] == "P000"
    assert re.search(r'<img id="generated" [^>]*src="data:image/png;base64,', html)
    assert screenshot.returncode == 0 and shot.is_file(), screenshot.stderr[-2000:]
    image = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("RGB"))
    assert image.shape == (900, 1100, 3)
    assert image.std() > 20  # a page with pictures on it, not a blank or error screen
