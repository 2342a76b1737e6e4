"""The ranking study (Sec. 5.3): `create_study`'s folder, the raters' app through the real app, bad inputs refused
with nothing stored, nothing the page receives naming a method, simulated raters."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from rtdgan.index.errors import UserError
from rtdgan.service.study.app import COOKIE, StudySettings, create_study_app
from rtdgan.service.study.simulate import simulate
from rtdgan.service.study.store import Store
from rtdgan.service.study.study import (
    ID_RE,
    IMAGES,
    MANIFEST,
    CreateConfig,
    Study,
    create_study,
    draw,
    parse_methods,
    products_of_test_set,
    read_study,
)
from tests.service.study_world import MIXES, make_study

ADMIN = "admin-key-for-tests"


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    return make_study(tmp_path_factory.mktemp("study_world"), items=5)


@pytest.fixture
def app_client(study: Study, tmp_path: Path) -> Iterator[TestClient]:
    """The app over the shared study, with a private responses database."""
    app = create_study_app(StudySettings(study.folder, responses=tmp_path / "responses.sqlite", admin_key=ADMIN))
    with TestClient(app) as client:
        client.app_state = app.state  # type: ignore[attr-defined]
        yield client
    app.state.store.close()


def start(client: TestClient, name: str = "") -> dict:
    response = client.post("/api/raters", json={"name": name})
    assert response.status_code == 201, response.text
    return response.json()


def counts(client: TestClient) -> dict[str, int]:
    return client.app_state.store.counts()  # type: ignore[attr-defined]


def test_create_writes_images_under_random_ids_and_a_manifest(study: Study) -> None:
    doc = json.loads((study.folder / MANIFEST).read_text())
    assert [m["name"] for m in doc["methods"]] == list(MIXES) and doc["seed"] == 0
    assert all(len(m["generator_sha256"]) == 64 for m in doc["methods"])
    assert {t["key"] for t in doc["tasks"]} == {"realism", "similarity"}
    assert len({i.product_id for i in study.items}) == 5  # one photo per product
    files = sorted(p.stem for p in (study.folder / IMAGES).iterdir())
    assert files == sorted(study.images) and all(ID_RE.match(f) for f in files)
    generated = study.images[study.items[0].images["grey"]]
    with Image.open(generated) as img:
        assert img.format == "PNG" and img.size == (16, 16)  # the generator's S, not resized
    assert read_study(study.folder).items == study.items


def test_create_refuses_bad_requests(study: Study, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="holds a study already"):
        create_study(CreateConfig(out=study.folder, methods=("a=x", "b=y"), data=tmp_path))
    with pytest.raises(UserError, match="no model.json"):  # checked before anything is written
        create_study(CreateConfig(out=tmp_path / "new", methods=("a=/nope", "b=/nope"), data=tmp_path))
    assert not (tmp_path / "new").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        create_study(CreateConfig(out=tmp_path / "busy", methods=("a=/x", "b=/y"), data=tmp_path))
    with pytest.raises(UserError, match="two or more"):
        parse_methods(("only=/x",))
    with pytest.raises(UserError, match="twice"):
        parse_methods(("a=/x", "a=/y"))
    with pytest.raises(UserError, match="NAME=ARTIFACTS"):
        parse_methods(("no-folder",))
    products = {f"{i:06d}": (Path("p"), [Path(f"a{i}"), Path(f"b{i}")]) for i in range(6)}
    with pytest.raises(UserError, match="has 6 products"):
        draw(products, 7, 0)
    assert draw(products, 4, 3) == draw(products, 4, 3)  # seeded
    assert len({pid for pid, _, _ in draw(products, 6, 0)}) == 6


def test_the_test_set_comes_from_a_split_or_a_lookbook_folder(study: Study, tmp_path: Path) -> None:
    data = study.folder.parent / "lookbook"
    from_folder = products_of_test_set(CreateConfig(out=tmp_path, methods=(), data=data))
    assert sorted(from_folder) == [f"{i:06d}" for i in range(8)] and len(from_folder["000003"][1]) == 2
    split = tmp_path / "split.json"  # as `rtd data split` writes it: paths relative to the data folder
    split.write_text(json.dumps({"format": 1, "data": str(data), "train": [], "test": [
        {"product_id": "000002", "product_image": "PID000002_CLEAN1_IID000006.png",
         "photos": ["PID000002_CLEAN0_IID000007.png"]}]}))
    assert products_of_test_set(CreateConfig(out=tmp_path, methods=(), split=split)) == {
        "000002": (data / "PID000002_CLEAN1_IID000006.png", [data / "PID000002_CLEAN0_IID000007.png"])}
    split.write_text("{}")
    with pytest.raises(UserError, match="not a split file"):
        products_of_test_set(CreateConfig(out=tmp_path, methods=(), split=split))
    with pytest.raises(UserError, match="give the test set"):
        products_of_test_set(CreateConfig(out=tmp_path, methods=()))


def test_a_rater_ranks_resumes_and_is_refused_a_second_ranking(app_client: TestClient, study: Study) -> None:
    first = start(app_client, "ada")
    assert first["done"] == 0 and first["total"] == 10
    assert app_client.cookies.get(COOKIE)
    step = first["step"]
    ids = [c["id"] for c in step["candidates"]]
    reply = app_client.post("/api/responses", json={"item": step["item"], "task": step["task"], "ranking": ids})
    assert reply.status_code == 201 and reply.json()["done"] == 1
    again = app_client.post("/api/responses", json={"item": step["item"], "task": step["task"], "ranking": ids[::-1]})
    assert again.status_code == 409
    resumed = app_client.get("/api/next").json()  # a reload: the same rater, the next unanswered step
    assert resumed["done"] == 1
    assert (resumed["step"]["item"], resumed["step"]["task"]) != (step["item"], step["task"])
    (row,) = app_client.app_state.store.responses()  # type: ignore[attr-defined]
    item = study.item(step["item"])
    assert item is not None
    by_image = {v: k for k, v in item.images.items()}
    assert row["ranking"] == [by_image[i] for i in ids] and row["shown"] == [by_image[i] for i in ids]
    assert row["name"] == "ada"
    # Acknowledged = committed: another connection sees it.
    with sqlite3.connect(app_client.app_state.store.path) as other:  # type: ignore[attr-defined]
        assert other.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 1
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_bad_inputs_are_refused_and_store_nothing(app_client: TestClient, study: Study) -> None:
    assert app_client.get("/api/next").status_code == 401  # no rater yet
    step = start(app_client)["step"]
    item = study.item(step["item"])
    assert item is not None
    ids = [c["id"] for c in step["candidates"]]
    other = next(i for i in study.items if i.id != item.id)
    before = counts(app_client)
    bad_bodies = {
        "unknown item": {"item": "0" * 20, "task": step["task"], "ranking": ids},
        "not a permutation (repeat)": {"item": item.id, "task": step["task"], "ranking": [ids[0], ids[0], ids[1]]},
        "not a permutation (short)": {"item": item.id, "task": step["task"], "ranking": ids[:2]},
        "another item's image": {"item": item.id, "task": step["task"], "ranking": [*ids[:2], other.photo]},
        "a method named": {"item": item.id, "task": step["task"], "ranking": ids, "method": "identity"},
        "methods instead of images": {"item": item.id, "task": step["task"], "ranking": list(MIXES)},
        "unknown task": {"item": item.id, "task": "beauty", "ranking": ids},
        "ranking not a list": {"item": item.id, "task": step["task"], "ranking": "abc"},
        "too long": {"item": item.id, "task": step["task"], "ranking": ids * 10},
    }
    for why, body in bad_bodies.items():
        response = app_client.post("/api/responses", json=body)
        assert 400 <= response.status_code < 500, (why, response.status_code, response.text)
        assert set(response.json()) == {"error", "detail"}
    huge = json.dumps({"item": item.id, "task": step["task"], "ranking": ids, "pad": "x" * 20000})
    assert app_client.post("/api/responses", content=huge, headers={"Content-Type": "application/json"}).status_code == 413
    assert app_client.post("/api/responses", content=b"{nope", headers={"Content-Type": "application/json"}).status_code == 400
    assert app_client.post("/api/responses", content=b"item=x", headers={"Content-Type": "text/plain"}).status_code == 415
    assert app_client.post("/api/raters", json={"name": "x" * 81}).status_code == 422
    assert app_client.post("/api/raters", json={"name": "a", "admin": True}).status_code == 422
    stranger = TestClient(app_client.app, cookies={COOKIE: "forged"})
    assert stranger.post("/api/responses", json={"item": item.id, "task": step["task"], "ranking": ids}).status_code == 401
    assert counts(app_client) == before  # nothing stored
    for path in ("/images/nope.png", f"/images/{item.photo}", f"/images/{item.photo}.jpg", "/images/..%2Fstudy.json",
                 "/static/app.js", "/static/../study.json", "/truth/x.png", f"/images/{'0' * 20}.png"):
        assert app_client.get(path).status_code == 404, path


def test_export_needs_the_admin_key(app_client: TestClient, study: Study, tmp_path: Path) -> None:
    step = start(app_client)["step"]
    app_client.post("/api/responses", json={"item": step["item"], "task": step["task"],
                                            "ranking": [c["id"] for c in step["candidates"]]})
    assert app_client.get("/api/export").status_code == 401
    assert app_client.get("/api/export", headers={"X-Admin-Key": "wrong"}).status_code == 401
    doc = app_client.get("/api/export", headers={"X-Admin-Key": ADMIN}).json()
    assert doc["methods"] == list(MIXES) and len(doc["responses"]) == 1
    text = app_client.get("/api/export?format=csv", headers={"X-Admin-Key": ADMIN}).text
    assert text.splitlines()[0].endswith("rank_identity,rank_swap,rank_grey") and len(text.splitlines()) == 2
    off = create_study_app(StudySettings(study.folder, responses=tmp_path / "off.sqlite"))
    with TestClient(off) as client:
        assert client.get("/api/export", headers={"X-Admin-Key": ADMIN}).status_code == 403
    off.state.store.close()


def test_nothing_the_page_receives_names_a_method(app_client: TestClient, study: Study) -> None:
    secrets_ = {*study.methods, *(m["artifacts"] for m in study.doc["methods"]),
                *(m["generator_sha256"] for m in study.doc["methods"]), "tiny-channel-swap", "study.json", "truth"}
    received: list[str] = []
    for path in ("/", "/static/study.js", "/static/study.css"):
        received.append(app_client.get(path).text)
    orders: list[tuple[str, ...]] = []
    for rater in range(3):
        app_client.cookies.clear()
        doc = start(app_client, f"r{rater}")
        while doc["step"] is not None:
            step = doc["step"]
            item = study.item(step["item"])
            assert item is not None
            method_of = {v: k for k, v in item.images.items()}
            ids = [c["id"] for c in step["candidates"]]
            assert [c["url"] for c in step["candidates"]] == [f"images/{i}.png" for i in ids]
            orders.append(tuple(method_of[i] for i in ids))
            reply = app_client.post("/api/responses", json={"item": step["item"], "task": step["task"], "ranking": ids})
            received += [json.dumps(doc), json.dumps(dict(reply.headers)), reply.text]
            doc = reply.json()
    for image in list(study.images)[:6]:
        response = app_client.get(f"/images/{image}.png")
        received.append(json.dumps(dict(response.headers)))
        # Headers the same for every image but the length: no write time (methods are written one after another).
        assert set(response.headers) == {"content-type", "content-length", "cache-control"}, response.headers
        with Image.open(study.images[image]) as img:
            assert not img.text  # type: ignore[attr-defined]  # no PNG text chunks
    blob = "\n".join(received)
    assert not [s for s in secrets_ if s in blob]
    assert len(orders) == 30 and len(set(orders)) > 1  # the order of the methods varies
    first = [order[0] for order in orders]
    assert len(set(first)) == len(MIXES)  # no method always shown first


def test_simulated_raters_fill_part_of_a_plan(study: Study, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(study.folder, tmp_path / "study"))
    assert simulate(folder, 3, complete=0.5, seed=1) == {"raters": 3, "responses": 15, "planned": 30}
    store = Store(folder / "responses.sqlite")
    rows = store.responses()
    store.close()
    assert all(r["simulated"] for r in rows)
    # The identity generator reproduces the product (the photo is the product picture here): ranked first mostly.
    assert sum(r["ranking"][0] == "identity" for r in rows) >= 12


@pytest.mark.parametrize("command", ["", "create", "serve", "simulate", "report"])
def test_every_study_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    from rtdgan.service.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["study", *filter(None, [command]), "--help"])
    assert exit_.value.code == 0 and "usage: rtd study" in capsys.readouterr().out
