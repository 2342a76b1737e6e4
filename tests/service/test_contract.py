"""Nothing is silently ignored: every input either works or gets a 4xx saying why."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.service.conftest import Tiny


def test_query_parameters_on_post_search_are_a_422(client: TestClient, tiny: Tiny) -> None:
    r = client.post("/search?k=5&category=dress", files={"image": ("q.png", tiny.query_for(tiny.product_ids[0]))})
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"
    assert "category, k" in r.json()["detail"] and "form fields" in r.json()["detail"]
    five = client.post("/search", files={"image": ("q.png", tiny.query_for(tiny.product_ids[0]))}, data={"k": "5"})
    assert five.status_code == 200 and len(five.json()["results"]) == 5  # as a form field it works


def test_unknown_form_fields_are_a_422(client: TestClient, tiny: Tiny) -> None:
    r = client.post("/search", files={"image": ("q.png", tiny.query_for(tiny.product_ids[0]))}, data={"top_k": "5"})
    assert r.status_code == 422 and "'top_k'" in r.json()["detail"]


def test_a_second_image_part_is_a_400(client: TestClient, tiny: Tiny) -> None:
    a, b = tiny.query_for(tiny.product_ids[0]), tiny.query_for(tiny.product_ids[1])
    for route in ("/search", "/generate"):
        r = client.post(route, files=[("image", ("a.png", a)), ("image", ("b.png", b))])
        assert r.status_code == 400 and "exactly one `image` part" in r.json()["detail"], (route, r.text)


def test_unknown_category_is_an_explicit_empty_result_with_a_note(client: TestClient, tiny: Tiny) -> None:
    query = {"image": ("q.png", tiny.query_for(tiny.product_ids[0]))}
    r = client.post("/search", files=query, data={"category": "hats"})
    assert r.status_code == 200 and r.json()["results"] == []
    assert "'hats'" in r.json()["note"] and "dress, shirt" in r.json()["note"]
    ok = client.post("/search", files=query, data={"category": "dress"})
    assert ok.status_code == 200 and {h["category"] for h in ok.json()["results"]} == {"dress"}


def test_head_on_health_routes(client: TestClient) -> None:
    for path in ("/health/live", "/health/ready"):
        r = client.head(path)
        assert r.status_code == 200 and r.content == b"", path


def test_startup_removes_the_leftovers_of_a_crash(tiny: Tiny, index_copy, caplog) -> None:
    import os
    import time

    from tests.service.conftest import running_client, settings_for

    images = index_copy / "images"
    images.mkdir()
    old = time.time() - 3600
    leftovers = [index_copy / "index.json.tmp", images / ".P001-abc.png.123.tmp", images / "P002-never-committed.png"]
    fresh = images / "P003-being-written-by-another-replica.png"
    for path in [*leftovers, fresh]:
        path.write_bytes(b"x")
    for path in leftovers:
        os.utime(path, (old, old))
    with caplog.at_level("WARNING"), running_client(settings_for(tiny, index=index_copy)) as c:
        assert c.get("/health/ready").status_code == 200
    assert not any(p.exists() for p in leftovers) and fresh.exists()
    assert sum("leftover of an interrupted write" in r.message for r in caplog.records) == 3


def test_products_pages_and_categories(client: TestClient, tiny: Tiny) -> None:
    first = client.get("/products", params={"limit": 3}).json()
    assert first["total"] == 10 and [p["product_id"] for p in first["products"]] == list(tiny.product_ids[:3])
    rest = client.get("/products", params={"limit": 100, "offset": 3}).json()
    assert [p["product_id"] for p in rest["products"]] == list(tiny.product_ids[3:])
    dresses = client.get("/products", params={"category": "dress"}).json()
    assert dresses["total"] == 5 and {p["category"] for p in dresses["products"]} == {"dress"}
    assert client.get("/categories").json() == {"categories": {"dress": 5, "shirt": 5}}
    assert client.get("/products", params={"limit": 0}).status_code == 422


def test_405_says_which_methods_are_allowed(client: TestClient) -> None:
    r = client.put("/health/live")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD" and r.json()["error"] == "method_not_allowed"


def test_openapi_declares_errors_and_the_admin_key(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    search = doc["paths"]["/search"]["post"]["responses"]
    assert {"400", "413", "415", "422", "503"} <= set(search)
    assert search["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert doc["components"]["securitySchemes"]["AdminKey"] == {
        "type": "apiKey", "in": "header", "name": "X-API-Key",
        "description": "the server's RTD_ADMIN_KEY; admin endpoints only"}
    assert doc["paths"]["/admin/products"]["post"]["security"] == [{"AdminKey": []}]
    assert "head" in doc["paths"]["/health/ready"]
