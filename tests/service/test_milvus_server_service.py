"""`rtd serve` on a real Milvus server (tests/milvus_server.py: the run's 2.3 standalone server, slow): two
replicas share every write at once, concurrent adds through both lose nothing, and a server lost mid-service is
a 503 with Retry-After within the request deadline, then recovered from without a restart.

Every process here talks to 127.0.0.1 only; every request loop is bounded by a deadline."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from rtdgan.index.build import build_index
from tests.milvus_server import LocalMilvus
from tests.service.conftest import Tiny, free_port, png_bytes, swap_red_blue, wait_http_ready
from tests.service.test_admin import AUTH, KEY, add, new_product

pytestmark = pytest.mark.slow
pytest.importorskip("pymilvus")
pytest.importorskip("milvus")

REQUEST_TIMEOUT_S = 3.0  # the services' request deadline here (RTD_REQUEST_TIMEOUT_MS): a shared 2-core machine
SLACK_S = 1.0  # what a loaded machine adds between the service's deadline and the client's clock


@contextlib.contextmanager
def serving(tiny: Tiny, location: str, catalog: Path, log: Path) -> Iterator[str]:
    """An `rtd serve` process on the Milvus catalog at `location` (admin on, images under `catalog`)."""
    env = os.environ | {"RTD_ADMIN_KEY": KEY, "RTD_PROVIDERS": "CPUExecutionProvider", "RTD_THREADS": "1",
                        "RTD_CATALOG": str(catalog), "RTD_FOLLOW_INTERVAL_S": "0",
                        "RTD_REQUEST_TIMEOUT_MS": str(REQUEST_TIMEOUT_S * 1000)}
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "rtdgan.service.serve_cli", "--artifacts", str(tiny.artifacts), "--index", location,
         "--port", str(port), "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http_ready(base, server, log, timeout_s=120)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=20)


def built(tiny: Tiny, server: LocalMilvus, collection: str, tmp_path: Path) -> tuple[str, Path]:
    """The tiny world's catalog built into `collection` on the server, and a shared catalog folder for images."""
    location = server.location(collection)
    summary = build_index(tiny.artifacts, tiny.products.parent / "catalog.csv", location)
    assert summary["engine"] == "milvus" and summary["count"] == len(tiny.product_ids)
    return location, Path(shutil.copytree(tiny.products, tmp_path / "catalog"))


def search(client: httpx.Client, picture_png: bytes, **fields: str) -> httpx.Response:
    return client.post("/search", files={"image": ("q.png", picture_png, "image/png")}, data={"k": "3", **fields})


def test_two_replicas_share_adds_and_deletes_at_once(tiny: Tiny, milvus_server: LocalMilvus, tmp_path: Path) -> None:
    location, catalog = built(tiny, milvus_server, "replicas", tmp_path)
    with serving(tiny, location, catalog, tmp_path / "a.log") as base_a, \
            serving(tiny, location, catalog, tmp_path / "b.log") as base_b, \
            httpx.Client(base_url=base_a, timeout=30) as a, httpx.Client(base_url=base_b, timeout=30) as b:
        picture = new_product(7)
        assert add(a, "NEW-1", png_bytes(picture), title="added through A", category="shirt").status_code == 201
        # B sees it at once, on its first try: search (with and without the category), metadata, image
        query = png_bytes(swap_red_blue(picture))
        assert search(b, query).json()["results"][0]["product_id"] == "NEW-1"
        found = search(b, query, category="shirt").json()["results"]
        assert found[0]["product_id"] == "NEW-1" and {r["category"] for r in found} == {"shirt"}
        assert b.get("/products/NEW-1").json()["title"] == "added through A"
        assert b.get("/products/NEW-1/image").content == png_bytes(picture)
        assert b.get("/categories").json()["categories"]["shirt"] == 6
        # a delete through B is gone from A at once
        assert b.delete("/admin/products/NEW-1", headers=AUTH).status_code == 200
        assert a.get("/products/NEW-1").status_code == 404
        assert "NEW-1" not in {r["product_id"] for r in search(a, query).json()["results"]}

        # 2 x 50 concurrent adds, through both replicas at once: every acknowledged product is there after
        def add_through(client: httpx.Client, product_id: str, seed: int) -> str | None:
            response = add(client, product_id, png_bytes(new_product(seed)), category="coat")
            return product_id if response.status_code == 201 else None

        jobs = [(client, f"{name}-{i:02d}", 1000 * (j + 1) + i)
                for j, (name, client) in enumerate((("A", a), ("B", b))) for i in range(50)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            acknowledged = {pid for pid in pool.map(lambda job: add_through(*job), jobs) if pid is not None}
        assert len(acknowledged) == 100, f"only {len(acknowledged)} of 100 adds acknowledged"
        for client in (a, b):
            assert client.get("/health/ready").json()["products"] == len(tiny.product_ids) + 100
            listed, offset = set(), 0
            while offset < 200:  # bounded: the catalog holds 110
                page = client.get("/products", params={"limit": 100, "offset": offset}).json()
                listed |= {p["product_id"] for p in page["products"]}
                offset += 100
                if offset >= page["total"]:
                    break
            assert acknowledged <= listed and len(listed) == len(tiny.product_ids) + 100


def test_a_lost_server_is_a_503_in_time_and_the_service_recovers(tiny: Tiny, milvus_server: LocalMilvus,
                                                                  tmp_path: Path) -> None:
    """Stop the server while /search requests are in flight: 503 + Retry-After within the deadline, never a 500
    or a hang; /health/ready says why; start it again: the same `rtd serve` answers again by itself, and every
    product acknowledged before the stop is there. Then a hard kill right after an acknowledged add: the add
    survives (Milvus acknowledges a write once it is in its log)."""
    location, catalog = built(tiny, milvus_server, "faults", tmp_path)
    query = png_bytes(swap_red_blue(tiny.product_image(tiny.product_ids[0])))
    try:
        with serving(tiny, location, catalog, tmp_path / "serve.log") as base, \
                httpx.Client(base_url=base, timeout=30) as client:
            assert add(client, "BEFORE", png_bytes(new_product(3)), category="dress").status_code == 201
            answers: list[tuple[int, float, str | None]] = []
            stop = threading.Event()

            def keep_searching() -> None:
                with httpx.Client(base_url=base, timeout=30) as own:
                    deadline = time.monotonic() + 120
                    while not stop.is_set() and time.monotonic() < deadline:
                        start = time.monotonic()
                        r = search(own, query)
                        answers.append((r.status_code, time.monotonic() - start, r.headers.get("Retry-After")))

            searchers = [threading.Thread(target=keep_searching) for _ in range(3)]
            for t in searchers:
                t.start()
            try:
                time.sleep(1.0)  # in flight before the stop
                milvus_server.stop()
                time.sleep(3.0)  # and after it
            finally:
                stop.set()
                for t in searchers:
                    t.join(timeout=60)
            statuses = {status for status, _, _ in answers}
            assert statuses <= {200, 503} and 503 in statuses, statuses
            assert max(seconds for _, seconds, _ in answers) < REQUEST_TIMEOUT_S + SLACK_S, answers
            assert all(int(retry) >= 1 for status, _, retry in answers if status == 503)
            r = search(client, query)
            assert r.status_code == 503 and r.json()["error"] == "catalog_unavailable", r.text
            ready = client.get("/health/ready")
            assert ready.status_code == 503 and "Milvus" in ready.json()["detail"], ready.text

            started = time.monotonic()
            milvus_server.start()  # the same port and data; `rtd serve` is not restarted
            print(f"graceful stop: server up again in {time.monotonic() - started:.1f} s")
            recovered = time.monotonic() + 120
            while (r := search(client, query)).status_code != 200:
                assert r.status_code == 503, r.text
                assert time.monotonic() < recovered, f"no recovery after 120 s: {r.text}"
                time.sleep(0.5)
            print(f"graceful stop: /search answers 200 {time.monotonic() - started:.1f} s after the start")
            assert r.json()["results"][0]["product_id"] == tiny.product_ids[0]
            assert client.get("/health/ready").json()["products"] == len(tiny.product_ids) + 1
            assert client.get("/products/BEFORE").json()["category"] == "dress"

            # durability: an add acknowledged just before a hard kill (SIGKILL, nothing flushed) survives it
            assert add(client, "LAST", png_bytes(new_product(4)), category="coat").status_code == 201
            milvus_server.kill()
            started = time.monotonic()
            milvus_server.start()
            print(f"hard kill: server up again in {time.monotonic() - started:.1f} s")
            recovered = time.monotonic() + 180
            while (r := client.get("/products/LAST")).status_code != 200:
                assert r.status_code == 503, r.text
                assert time.monotonic() < recovered, f"no recovery after 180 s: {r.text}"
                time.sleep(0.5)
            print(f"hard kill: the last acknowledged add read back {time.monotonic() - started:.1f} s after the start")
            assert r.json()["category"] == "coat"
            assert client.get("/health/ready").json()["products"] == len(tiny.product_ids) + 2
    finally:
        if not milvus_server.running:
            milvus_server.start()  # the run's server, for the tests after this one
