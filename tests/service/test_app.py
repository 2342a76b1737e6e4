"""The HTTP API through the real app: real onnxruntime, FAISS, SQLite and files (tests/service/conftest.py)."""

from __future__ import annotations

import base64
import io
import json
import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from rtdgan.index.images import preprocess
from rtdgan.service.settings import Settings
from tests.service.conftest import SIZE, Tiny, running_client, settings_for


def upload(data: bytes, name: str = "photo.png", kind: str = "image/png") -> dict:
    return {"image": (name, data, kind)}


def test_generate_returns_the_generators_png(client: TestClient, tiny: Tiny) -> None:
    query = tiny.query_for("P002")
    response = client.post("/generate", files=upload(query))
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    got = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))  # (S, S, 3)
    assert got.shape == (SIZE, SIZE, 3)
    # The tiny generator swaps red and blue: the PNG must be the swapped preprocessed upload.
    expected = preprocess(query, SIZE)[[2, 1, 0]]  # (3, S, S)
    expected_u8 = np.clip((expected.transpose(1, 2, 0) + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    assert np.abs(got.astype(int) - expected_u8.astype(int)).max() <= 1


def test_search_finds_the_product_first(client: TestClient, tiny: Tiny) -> None:
    response = client.post("/search", files=upload(tiny.query_for("P007")), data={"k": "5"})
    assert response.status_code == 200, response.text
    body = response.json()
    results = body["results"]
    assert [r["rank"] for r in results] == [1, 2, 3, 4, 5]
    assert results[0]["product_id"] == "P007"
    assert results[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert all(a["score"] >= b["score"] for a, b in zip(results, results[1:], strict=False))
    assert results[0] == {"rank": 1, "product_id": "P007", "score": results[0]["score"], "title": "product 7",
                          "category": "shirt", "image_url": "/products/P007/image"}
    assert set(body["timings_ms"]) >= {"preprocess", "generate", "embed", "search", "total"}
    assert "generated_png_base64" not in body or body["generated_png_base64"] is None


def test_search_k_category_and_generated_image(client: TestClient, tiny: Tiny) -> None:
    response = client.post("/search", files=upload(tiny.query_for("P004")),
                           data={"k": "100", "category": "dress", "include_generated": "true"})
    body = response.json()
    assert response.status_code == 200
    assert len(body["results"]) == 5  # k is capped by the 5 dresses of the catalog
    assert {r["category"] for r in body["results"]} == {"dress"}
    assert body["results"][0]["product_id"] == "P004"
    generated = Image.open(io.BytesIO(base64.b64decode(body["generated_png_base64"])))
    assert generated.format == "PNG" and generated.size == (SIZE, SIZE)
    default = client.post("/search", files=upload(tiny.query_for("P004"))).json()
    assert len(default["results"]) == 10  # default k = 10, the whole tiny catalog


@pytest.mark.parametrize("k", ["0", "101", "ten"])
def test_search_rejects_bad_k(client: TestClient, tiny: Tiny, k: str) -> None:
    response = client.post("/search", files=upload(tiny.query_for("P000")), data={"k": k})
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request" and "k" in response.json()["detail"]


def test_search_without_image_is_422(client: TestClient) -> None:
    response = client.post("/search", data={"k": "3"})
    assert response.status_code == 422
    assert response.json() == {"error": "invalid_request", "detail": "image: Field required"}


def test_product_metadata_and_image(client: TestClient, tiny: Tiny) -> None:
    meta = client.get("/products/P001")
    assert meta.status_code == 200
    assert meta.json() | {"added_at": None} == {"product_id": "P001", "title": "product 1", "category": "shirt",
                                                "added_at": None, "image_url": "/products/P001/image"}
    image = client.get("/products/P001/image")
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content == (tiny.products / "P001.png").read_bytes()


@pytest.mark.parametrize(("path", "status", "code"), [
    ("/products/NOPE", 404, "not_found"),
    ("/products/NOPE/image", 404, "not_found"),
    ("/products/bad%20id", 400, "invalid_product_id"),
    ("/products/%2E%2E", 400, "invalid_product_id"),  # ".." once decoded
    ("/products/" + "x" * 65, 400, "invalid_product_id"),
    ("/products/..%2F..%2Fetc%2Fpasswd/image", 404, "not_found"),  # %2F is a path separator to the router
    ("/no/such/route", 404, "not_found"),
])
def test_error_paths_are_json(client: TestClient, path: str, status: int, code: str) -> None:
    response = client.get(path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == code and response.json()["detail"]


def test_wrong_method_is_json_405(client: TestClient) -> None:
    response = client.get("/search")
    assert response.status_code == 405
    assert response.json() == {"error": "method_not_allowed", "detail": "GET is not allowed on /search"}


def test_unhandled_error_is_500_without_traceback(client: TestClient, tiny: Tiny,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: object, product_id: str) -> None:
        raise RuntimeError("secret internal state")

    catalog = client.app.state.engine.catalog
    monkeypatch.setattr(type(catalog), "get", broken)
    response = client.get("/products/P001", headers={"X-Request-ID": "req-500"})
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "internal_error" and "req-500" in body["detail"]
    assert "secret" not in response.text and "Traceback" not in response.text
    assert response.headers["x-request-id"] == "req-500"


def test_request_id_echoed_generated_and_logged(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="rtdgan.service.access"):
        given = client.get("/health/live", headers={"X-Request-ID": "abc-123"})
        fresh = client.get("/health/live")
        hostile = client.get("/health/live", headers={"X-Request-ID": "bad id\twith spaces"})
    assert given.headers["x-request-id"] == "abc-123"
    assert len(fresh.headers["x-request-id"]) == 32
    assert hostile.headers["x-request-id"] != "bad id\twith spaces"  # never echo unsafe text into logs
    ids = {getattr(r, "request_id", None) for r in caplog.records if r.name == "rtdgan.service.access"}
    assert {"abc-123", fresh.headers["x-request-id"]} <= ids


def test_health_live_and_ready(client: TestClient) -> None:
    assert client.get("/health/live").json() == {"status": "alive"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "products": 10, "image_size": SIZE,
                            "providers": ["CPUExecutionProvider"], "query": "generated",
                            "backend": "onnxruntime", "precision": "fp32",
                            "index_backend": {"backend": "onnxruntime", "precision": "fp32"}, "head": None, "crop": None}


def test_metrics_counts_requests_and_batches(client: TestClient, tiny: Tiny) -> None:
    client.post("/search", files=upload(tiny.query_for("P001")))
    client.get("/products/NOPE")
    text = client.get("/metrics").text
    assert 'rtd_http_requests_total{method="POST",route="/search",status="200"} 1.0' in text
    assert 'rtd_http_requests_total{method="GET",route="/products/{product_id}",status="404"} 1.0' in text
    assert 'rtd_http_request_seconds_count{method="POST",route="/search",status="200"} 1.0' in text
    # warm-up + one search: two single-item batches per model
    assert 'rtd_batch_size_count{model="generator"} 2.0' in text
    assert 'rtd_batch_size_count{model="embedder"} 2.0' in text
    assert 'rtd_inference_seconds_count{model="embedder"} 2.0' in text
    assert 'rtd_queue_depth{model="generator"} 0.0' in text
    assert "rtd_catalog_products 10.0" in text


def test_two_apps_have_separate_metrics(tiny: Tiny) -> None:
    with running_client(settings_for(tiny)) as a, running_client(settings_for(tiny)) as b:
        a.get("/health/live")
        assert 'route="/health/live"' in a.get("/metrics").text
        assert 'route="/health/live"' not in b.get("/metrics").text


def test_docs_and_openapi(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/generate", "/search", "/products/{product_id}", "/products/{product_id}/image", "/admin/products",
            "/admin/products/{product_id}", "/admin/reload", "/health/live", "/health/ready", "/metrics"} <= set(paths)


def test_cors_and_public_base_url(tiny: Tiny) -> None:
    settings = settings_for(tiny, cors_origins=["https://shop.example"], public_base_url="https://api.example/rtd/")
    with running_client(settings) as c:
        pre = c.options("/search", headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"})
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == "https://shop.example"
        other = c.get("/health/live", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        hit = c.post("/search", files=upload(tiny.query_for("P001")), data={"k": "1"}).json()["results"][0]
        assert hit["image_url"] == "https://api.example/rtd/products/P001/image"


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTD_PROVIDERS", "CUDAExecutionProvider, CPUExecutionProvider")
    monkeypatch.setenv("RTD_CORS_ORIGINS", "https://a.example,https://b.example")
    monkeypatch.setenv("RTD_MAX_BATCH", "4")
    monkeypatch.setenv("RTD_ADMIN_KEY", "k3y")
    s = Settings()
    assert s.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert s.cors_origins == ["https://a.example", "https://b.example"]
    assert s.max_batch == 4 and s.admin_key.get_secret_value() == "k3y"
    assert "k3y" not in repr(s)
    monkeypatch.setenv("RTD_MAX_BATCH", "0")
    with pytest.raises(ValueError):
        Settings()


def test_service_never_imports_torch(tiny: Tiny) -> None:
    # A fresh interpreter: in this one, other test packages may have imported torch already.
    code = textwrap.dedent(f"""
        import sys, json
        from fastapi.testclient import TestClient
        from rtdgan.service.app import create_app
        from rtdgan.service.serve_cli import build_settings
        from rtdgan.service.settings import Settings
        s = Settings(artifacts={str(tiny.artifacts)!r}, index={str(tiny.index)!r}, providers=["CPUExecutionProvider"])
        with TestClient(create_app(s)) as c:
            import time
            for _ in range(300):
                if c.get("/health/ready").status_code == 200:
                    break
                time.sleep(0.02)
            r = c.post("/search", files={{"image": ("q.png", open({str(tiny.products / 'P001.png')!r}, "rb").read())}})
            assert r.status_code == 200, r.text
        bad = [m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision")
               or m.startswith(("rtdgan.training", "rtdgan.models"))]
        print(json.dumps(bad))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []

