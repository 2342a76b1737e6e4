"""The service on the Milvus engine: two processes serving one Milvus catalog share every write at
once, with no follow interval and no reload. Milvus here is real: Milvus Lite's gRPC server (what
`milvus-lite server` runs) in a thread of the test process, reached as a server (`milvus://127.0.0.1:PORT/...`)
by an `rtd serve` process and by an in-process app."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rtdgan.index.build import build_index
from tests.service.conftest import (
    Tiny,
    free_port,
    png_bytes,
    running_client,
    settings_for,
    swap_red_blue,
    wait_http_ready,
)
from tests.service.test_admin import AUTH, KEY, add, new_product

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

pytestmark = pytest.mark.slow  # starts a Milvus Lite server and `rtd serve` processes


@pytest.fixture
def milvus_server(tmp_path: Path) -> Iterator[int]:
    from milvus_lite.adapter.grpc.server import start_server_in_thread

    server, db, port = start_server_in_thread(str(tmp_path / "milvus-data"), host="127.0.0.1", port=0)
    try:
        yield port
    finally:
        server.stop(grace=0)
        db.close()


def test_an_add_through_one_process_is_searchable_through_another(tiny: Tiny, milvus_server: int,
                                                                   tmp_path: Path) -> None:
    location = f"milvus://127.0.0.1:{milvus_server}/shop"
    summary = build_index(tiny.artifacts, tiny.products.parent / "catalog.csv", location)
    assert summary["engine"] == "milvus" and summary["count"] == len(tiny.product_ids)
    catalog = Path(shutil.copytree(tiny.products, tmp_path / "catalog"))  # the shared mount: admin images land here
    env = os.environ | {"RTD_ADMIN_KEY": KEY, "RTD_PROVIDERS": "CPUExecutionProvider", "RTD_THREADS": "1",
                        "RTD_CATALOG": str(catalog), "RTD_FOLLOW_INTERVAL_S": "0"}
    port = free_port()
    log = tmp_path / "server.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "rtdgan.service.serve_cli", "--artifacts", str(tiny.artifacts), "--index", location,
         "--port", str(port), "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http_ready(base, server, log)
        settings = settings_for(tiny, index=Path(location), admin_key=KEY, catalog=catalog, follow_interval_s=0)
        with httpx.Client(base_url=base, timeout=30) as a, running_client(settings) as b:
            assert a.get("/health/ready").json()["products"] == b.get("/health/ready").json()["products"] == 10
            picture = new_product(7)
            assert add(a, "NEW-1", png_bytes(picture), title="added through A", category="shirt").status_code == 201
            # B sees it at once: metadata, the image A stored in the shared catalog folder, and search
            assert b.get("/products/NEW-1").json()["title"] == "added through A"
            assert b.get("/products/NEW-1/image").content == png_bytes(picture)
            found = b.post("/search", files={"image": ("q.png", png_bytes(swap_red_blue(picture)), "image/png")},
                           data={"k": "3", "category": "shirt"}).json()["results"]
            assert found[0]["product_id"] == "NEW-1" and {r["category"] for r in found} == {"shirt"}
            assert b.get("/categories").json()["categories"]["shirt"] == 6
            # and a delete through B is gone from A at once
            assert b.delete("/admin/products/NEW-1", headers=AUTH).status_code == 200
            assert a.get("/products/NEW-1").status_code == 404
            hits = a.post("/search", files={"image": ("q.png", png_bytes(swap_red_blue(picture)), "image/png")},
                          data={"k": "20"}).json()["results"]
            assert "NEW-1" not in {r["product_id"] for r in hits} and len(hits) == 10
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_serve_refuses_an_unreachable_milvus_in_one_line(tiny: Tiny) -> None:
    result = subprocess.run([sys.executable, "-m", "rtdgan.service.cli", "serve", "--artifacts", str(tiny.artifacts),
                             "--index", "milvus://127.0.0.1:1/shop"], capture_output=True, text=True, timeout=60,
                            env=os.environ | {"RTD_PROVIDERS": "CPUExecutionProvider"})
    assert result.returncode == 2, result.stderr
    assert "cannot reach Milvus at http://127.0.0.1:1" in result.stderr and "Traceback" not in result.stderr


def test_a_milvus_server_lost_mid_service_is_a_503_with_retry_after(tiny: Tiny, tmp_path: Path) -> None:
    """Not the client's fault and not a crash: the catalog engine is away, so /search says when to retry."""
    from milvus_lite.adapter.grpc.server import start_server_in_thread

    server, db, port = start_server_in_thread(str(tmp_path / "milvus-data"), host="127.0.0.1", port=0)
    try:
        location = f"milvus://127.0.0.1:{port}/shop"
        build_index(tiny.artifacts, tiny.products.parent / "catalog.csv", location)
        photo = png_bytes(new_product(3))
        with running_client(settings_for(tiny, index=Path(location))) as client:
            assert client.post("/search", files={"image": ("q.png", photo, "image/png")}, data={"k": "3"}).status_code == 200
            server.stop(grace=0)
            r = client.post("/search", files={"image": ("q.png", photo, "image/png")}, data={"k": "3"})
            assert r.status_code == 503 and r.json()["error"] == "catalog_unavailable", r.text
            assert int(r.headers["Retry-After"]) >= 1 and "retry" in r.json()["detail"]
    finally:
        server.stop(grace=0)
        db.close()
