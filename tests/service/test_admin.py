"""Admin endpoints: the API key, adds and removes that are durable, reload from disk."""

from __future__ import annotations

import errno
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from rtdgan.index.catalog.file import Catalog
from tests.helpers import random_picture
from tests.service.conftest import Tiny, free_port, png_bytes, running_client, settings_for, swap_red_blue

KEY = "s3cret-admin-key"
AUTH = {"X-API-Key": KEY}


def new_product(seed: int = 42) -> Image.Image:
    return random_picture(np.random.default_rng(seed), 32)


def add(client: httpx.Client, product_id: str, image: bytes, **fields: str) -> httpx.Response:
    return client.post("/admin/products", headers=AUTH, files={"image": ("p.png", image, "image/png")},
                       data={"product_id": product_id, **fields})


def test_admin_is_disabled_without_a_key(tiny: Tiny, index_copy: Path) -> None:
    with running_client(settings_for(tiny, index=index_copy)) as c:
        for response in (add(c, "X1", png_bytes(new_product())), c.delete("/admin/products/P001", headers=AUTH),
                         c.post("/admin/reload", headers=AUTH)):
            # 403, not 503: admin is off on this server, not temporarily unavailable
            assert response.status_code == 403
            assert response.json()["error"] == "admin_disabled" and "RTD_ADMIN_KEY" in response.json()["detail"]


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": KEY + "x"}, {"X-API-Key": ""}])
def test_admin_needs_the_right_key(tiny: Tiny, index_copy: Path, headers: dict[str, str]) -> None:
    with running_client(settings_for(tiny, index=index_copy, admin_key=KEY)) as c:
        for response in (c.post("/admin/reload", headers=headers), c.delete("/admin/products/P001", headers=headers),
                         c.post("/admin/products", headers=headers, data={"product_id": "X"},
                                files={"image": ("p.png", png_bytes(new_product()), "image/png")})):
            assert response.status_code == 401
            assert response.json()["error"] == "unauthorized"
        assert c.get("/products/P001").status_code == 200  # nothing was removed


def test_add_search_replace_and_remove(tiny: Tiny, index_copy: Path) -> None:
    with running_client(settings_for(tiny, index=index_copy, admin_key=KEY)) as c:
        picture = new_product()
        response = add(c, "NEW-1", png_bytes(picture), title="a new coat", category="coat")
        assert response.status_code == 201, response.text
        assert response.json() == {"product_id": "NEW-1", "count": 11, "image_url": "/products/NEW-1/image"}
        # The catalog image is embedded as it is: its swapped version (what the generator undoes) finds it.
        hit = c.post("/search", files={"image": ("q.png", png_bytes(swap_red_blue(picture)), "image/png")},
                     data={"k": "1"}).json()["results"][0]
        assert hit["product_id"] == "NEW-1" and hit["score"] == pytest.approx(1.0, abs=1e-4)
        assert c.get("/products/NEW-1").json()["title"] == "a new coat"
        assert c.get("/products/NEW-1/image").content == png_bytes(picture)
        stored = list((index_copy / "images").iterdir())
        assert [p.name.startswith("NEW-1-") and p.suffix == ".png" for p in stored] == [True]

        # The same id again replaces (upsert), and the old stored image goes away.
        other = new_product(7)
        tiff = io.BytesIO()
        other.save(tiff, format="TIFF")
        response = add(c, "NEW-1", tiff.getvalue(), title="the coat, new photo")
        assert response.status_code == 201 and response.json()["count"] == 11
        image = c.get("/products/NEW-1/image")
        assert image.headers["content-type"] == "image/png"  # a TIFF is kept as PNG
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(image.content))), np.asarray(other))
        assert len(list((index_copy / "images").iterdir())) == 1

        removed = c.delete("/admin/products/NEW-1", headers=AUTH)
        assert removed.status_code == 200 and removed.json() == {"product_id": "NEW-1", "count": 10}
        assert c.get("/products/NEW-1").status_code == 404
        assert list((index_copy / "images").iterdir()) == []
        again = c.delete("/admin/products/NEW-1", headers=AUTH)
        assert again.status_code == 404 and again.json()["error"] == "not_found"
        # Removing a product of the built catalog leaves its data-set image alone.
        assert c.delete("/admin/products/P002", headers=AUTH).status_code == 200
        assert (tiny.products / "P002.png").is_file()
    assert len(Catalog.open(index_copy)) == 9  # saved on disk, not just in memory


@pytest.mark.parametrize("product_id", ["../escape", "a/b", "x" * 65, "..", "sp ace", "semi;colon"])
def test_add_refuses_bad_product_ids(tiny: Tiny, index_copy: Path, product_id: str) -> None:
    with running_client(settings_for(tiny, index=index_copy, admin_key=KEY)) as c:
        response = add(c, product_id, png_bytes(new_product()))
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_product_id"
        assert len(Catalog.open(index_copy)) == 10
    assert not (index_copy / "images").exists()


def test_add_refuses_a_bad_image_and_missing_fields(tiny: Tiny, index_copy: Path) -> None:
    with running_client(settings_for(tiny, index=index_copy, admin_key=KEY)) as c:
        bad = add(c, "X2", b"not an image at all")
        assert bad.status_code == 415 and bad.json()["error"] == "unsupported_image"
        missing = c.post("/admin/products", headers=AUTH, files={"image": ("p.png", png_bytes(new_product()))})
        assert missing.status_code == 422 and "product_id" in missing.json()["detail"]
        long_title = add(c, "X3", png_bytes(new_product()), title="t" * 201)
        assert long_title.status_code == 422
    assert len(Catalog.open(index_copy)) == 10


def test_read_only_index_is_a_clear_409(tiny: Tiny, index_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def read_only(self: Catalog, *args: object, **kwargs: object) -> dict:
        raise OSError(errno.EROFS, "Read-only file system", str(index_copy))

    with running_client(settings_for(tiny, index=index_copy, admin_key=KEY)) as c:
        monkeypatch.setattr(Catalog, "write", read_only)  # admin writes append to the catalog's log
        response = add(c, "X4", png_bytes(new_product()))
    assert response.status_code == 409 and response.json()["error"] == "index_read_only"


def test_reload_picks_up_another_writer(tiny: Tiny, index_copy: Path) -> None:
    settings = settings_for(tiny, index=index_copy, admin_key=KEY, follow_interval_s=0)  # no automatic following
    with running_client(settings) as writer, running_client(settings) as reader:
        assert add(writer, "NEW-2", png_bytes(new_product())).status_code == 201
        assert reader.get("/products/NEW-2").status_code == 404  # its catalog is the one it loaded
        reloaded = reader.post("/admin/reload", headers=AUTH)
        assert reloaded.status_code == 200 and reloaded.json() == {"count": 11}
        assert reader.get("/products/NEW-2").status_code == 200
        assert 'rtd_catalog_products 11.0' in reader.get("/metrics").text


def test_an_acknowledged_add_survives_a_crash(tiny: Tiny, index_copy: Path, tmp_path: Path) -> None:
    env = os.environ | {"RTD_ADMIN_KEY": KEY, "RTD_PROVIDERS": "CPUExecutionProvider", "RTD_THREADS": "1"}
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "rtdgan.service.serve_cli", "--artifacts", str(tiny.artifacts), "--index", str(index_copy),
         "--port", str(port), "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "server.log").open("w"))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            time.sleep(0.1)
        picture = png_bytes(new_product(99))
        with httpx.Client(base_url=base, timeout=30) as c:
            assert add(c, "CRASH-1", picture, title="saved before the 201").status_code == 201
        server.send_signal(signal.SIGKILL)  # no shutdown hook, no flush: a crash
        server.wait(timeout=10)
    finally:
        if server.poll() is None:
            server.kill()
    with running_client(settings_for(tiny, index=index_copy)) as c:
        assert c.get("/products/CRASH-1").json()["title"] == "saved before the 201"
        assert c.get("/products/CRASH-1/image").content == picture
        assert c.get("/health/ready").json()["products"] == 11



def test_two_replicas_share_writes_without_a_reload(tiny: Tiny, index_copy: Path) -> None:
    """Two service processes' worth of engines on one writable folder: concurrent adds and deletes through
    both, then every acknowledged write is on disk, no deleted product returns, and each replica sees the
    other's writes on its own (following the catalog's log), with no /admin/reload."""
    import concurrent.futures
    import time

    settings = settings_for(tiny, index=index_copy, admin_key=KEY, follow_interval_s=0.2)
    with running_client(settings) as a, running_client(settings) as b:
        def adds(client: object, name: str) -> list[str]:
            return [f"{name}{i}" for i in range(12) if add(client, f"{name}{i}", png_bytes(new_product())).status_code == 201]

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            done = [f.result() for f in [pool.submit(adds, a, "A"), pool.submit(adds, b, "B")]]
        assert len(done[0]) == len(done[1]) == 12
        assert b.delete(f"/admin/products/{tiny.product_ids[0]}", headers=AUTH).status_code == 200
        assert add(a, "LATE", png_bytes(new_product())).status_code == 201  # A has not reloaded
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (a.get("/products/B11").status_code != 200
                                                or b.get("/products/LATE").status_code != 200):
            time.sleep(0.1)
        assert a.get("/products/B11").status_code == 200 and b.get("/products/LATE").status_code == 200
        assert a.get(f"/products/{tiny.product_ids[0]}").status_code == 404
    on_disk = {p.product_id for p in Catalog.open(index_copy).products()}
    assert set(done[0] + done[1] + ["LATE"]) <= on_disk and tiny.product_ids[0] not in on_disk
