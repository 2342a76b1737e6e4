"""The same catalog cases against every engine: the file catalog, Milvus Lite and a real Milvus server.

One Milvus Lite database per module (its in-process server starts once); the Milvus server is the run's one
(tests/milvus_server.py: the 2.3 standalone server of the PyPI package `milvus`, slow); each test gets its own
collection.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest

from rtdgan.index.catalog.base import Location, ProductMeta, parse_location
from rtdgan.index.catalog.engines import build_catalog, open_catalog, read_manifest
from rtdgan.index.errors import UserError
from tests.milvus_server import is_loopback

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

DIM = 16
CATEGORIES = ("dress", "shirt", "coat")
_names = itertools.count()


@pytest.fixture(scope="module")
def lite_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("milvus") / "catalog.db"


SERVER = pytest.param("milvus-server", marks=pytest.mark.slow)  # the run's Milvus server (about 10 s to start)


@pytest.fixture(params=["milvus-lite", SERVER])
def milvus_base(request: pytest.FixtureRequest, lite_db: Path) -> str:
    """Where a Milvus catalog goes, without its collection: the Lite database or the server."""
    if request.param == "milvus-lite":
        return f"milvus://{lite_db}"
    return request.getfixturevalue("milvus_server").location("")[:-1]


@pytest.fixture(params=["file", pytest.param("milvus-lite", marks=pytest.mark.slow), SERVER])
def location(request: pytest.FixtureRequest, tmp_path: Path, lite_db: Path) -> str:
    """A fresh catalog location of each engine."""
    if request.param == "file":
        return str(tmp_path / "index")
    if request.param == "milvus-lite":
        return f"milvus://{lite_db}/c{next(_names)}"
    return request.getfixturevalue("milvus_server").location(f"c{next(_names)}")


def clustered(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(3, n // 20), DIM))
    x = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def products(n: int) -> list[ProductMeta]:
    return [ProductMeta(f"p{i}", f"title {i}", CATEGORIES[i % 3], f"img/p{i}.png") for i in range(n)]


def build(location: str, vectors: np.ndarray, factory: str = "flat", head: dict | None = None):
    return build_catalog(location, products(len(vectors)), vectors, embedder_name="tiny", embedder_sha256="sha-a",
                         head=head, factory=factory, nprobe=8, ef_search=64, catalog_root="/catalog", recall_k=10)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def test_same_top10_as_exact_search(location: str) -> None:
    vectors = clustered(300)
    build(location, vectors)
    catalog = open_catalog(location, "sha-a", None)
    rng = np.random.default_rng(1)
    queries = unit(vectors[rng.integers(0, 300, 20)] + 0.3 * rng.standard_normal((20, DIM)).astype(np.float32))
    hits = catalog.search(queries, 10)
    exact = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :10]
    for row, truth, q in zip(hits, exact, queries, strict=True):
        assert [h.product_id for h in row] == [f"p{i}" for i in truth]
        assert np.allclose([h.score for h in row], vectors[truth] @ q, atol=1e-4)
    first = hits[0][0]
    assert (first.title, first.category, first.image_path) == (f"title {first.product_id[1:]}",
                                                               CATEGORIES[int(first.product_id[1:]) % 3],
                                                               f"img/{first.product_id}.png")
    assert len(catalog) == 300 and catalog.dim == DIM and catalog.catalog_root == "/catalog"
    manifest = read_manifest(location)  # what pipeline.py and the service check before opening
    assert manifest["embedder"]["sha256"] == "sha-a" and manifest["factory"] == "Flat" and manifest["dim"] == DIM


def test_upsert_remove_and_metadata(location: str) -> None:
    vectors = clustered(60)
    build(location, vectors)
    catalog = open_catalog(location)
    new = unit(np.ones(DIM, np.float32))
    before = catalog.write([ProductMeta("new", "a new coat", "coat", "images/new.png")], new[None])
    assert before == {"new": None} and len(catalog) == 61
    assert catalog.search(new[None], 1)[0][0].product_id == "new"
    got = catalog.get("new")
    assert (got.title, got.category, got.image_path) == ("a new coat", "coat", "images/new.png") and got.added_at
    before = catalog.write([ProductMeta("new", "renamed", "dress")], new[None])  # upsert: replaced, not added
    assert before["new"].title == "a new coat" and len(catalog) == 61 and catalog.get("new").category == "dress"
    before = catalog.write(removed=["new", "p3"])
    assert before["p3"].title == "title 3" and len(catalog) == 59
    assert catalog.get("new") is None and catalog.get("p3") is None
    found = {h.product_id for h in catalog.search(np.stack([new, vectors[3]]), 10)[0]}
    found |= {h.product_id for h in catalog.search(vectors[3][None], 59)[0]}
    assert not found & {"new", "p3"}
    assert catalog.remove(["nope"]) == 0


def test_category_filter_count_and_page(location: str) -> None:
    vectors = clustered(90)
    build(location, vectors)
    catalog = open_catalog(location)
    hits = catalog.search(vectors[:2], 7, category="shirt")
    assert all(len(row) == 7 and {h.category for h in row} == {"shirt"} for row in hits)
    exact = [f"p{i}" for i in np.argsort(-(vectors[1::3] @ vectors[0]), kind="stable")[:7] * 3 + 1]
    assert [h.product_id for h in hits[0]] == exact
    assert catalog.search(vectors[:1], 5, category="hat") == [[]] and not catalog.has_category("hat")
    assert catalog.has_category("coat") and catalog.categories() == {"coat": 30, "dress": 30, "shirt": 30}
    if location.startswith("milvus"):  # past the distinct-category queries, the rest by a scan: the same counts
        import rtdgan.index.catalog.milvus as M

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(M, "MAX_DISTINCT_QUERIES", 1)
            assert catalog.categories() == {"coat": 30, "dress": 30, "shirt": 30}
    page, total = catalog.page(10, 25, category="dress")
    assert total == 30 and len(page) == 5 and {p.category for p in page} == {"dress"}
    everything, total = catalog.page(100)
    assert total == 90 and len({p.product_id for p in everything}) == 90
    assert len(catalog.products()) == 90


def test_mismatched_embedder_or_head_is_refused(location: str) -> None:
    build(location, clustered(20), head={"mode": "fused", "sha256": "head-1"})
    with pytest.raises(UserError, match="another embedder"):
        open_catalog(location, "sha-b", "head-1")
    with pytest.raises(UserError, match="another retrieval head"):
        open_catalog(location, "sha-a", "head-2")
    with pytest.raises(UserError, match="that the artifacts do not have"):
        open_catalog(location, "sha-a", None)
    assert open_catalog(location, "sha-a", "head-1").head["sha256"] == "head-1"


def test_a_write_reaches_another_handle(location: str) -> None:
    """Two handles on one catalog (as two replicas hold): Milvus shows a write at once; the file catalog after
    following its log (`refresh`)."""
    vectors = clustered(30)
    build(location, vectors)
    writer, reader = open_catalog(location), open_catalog(location)
    v = unit(-np.ones(DIM, np.float32))
    writer.write([ProductMeta("fresh", category="coat")], v[None])
    assert reader.refresh() is False  # nothing newer than the log: applied in place
    assert reader.search(v[None], 1, category="coat")[0][0].product_id == "fresh" and len(reader) == 31


def test_approximate_index_records_recall(location: str) -> None:
    vectors = clustered(400)
    built = build(location, vectors, factory="IVF8,Flat")
    assert built.recall["k"] == 10 and built.recall["recall"] >= 0.8
    reopened = open_catalog(location)
    assert reopened.recall == built.recall and read_manifest(location)["factory"] == "IVF8,Flat"
    assert reopened.search(vectors[:1], 1)[0][0].product_id == "p0"


def test_products_without_title_or_category(location: str) -> None:
    """None stays none on every engine (a 2.3 server has no nullable fields: the catalog stores "" there)."""
    vectors = clustered(12)
    bare = [ProductMeta(f"p{i}", None if i % 2 else f"title {i}", None if i % 3 == 0 else "coat") for i in range(12)]
    build_catalog(location, bare, vectors, embedder_name="tiny", embedder_sha256="sha-a", head=None, factory="flat",
                  nprobe=8, ef_search=64, catalog_root=None, recall_k=None)
    catalog = open_catalog(location)
    assert catalog.categories() == {"coat": 8} and catalog.get("p3").category is None
    assert (catalog.get("p1").title, catalog.get("p1").image_path) == (None, None)
    hit = catalog.search(vectors[3][None], 1)[0][0]
    assert (hit.product_id, hit.title, hit.category, hit.image_path) == ("p3", None, None, None)
    catalog.write([ProductMeta("new")], vectors[:1])
    assert catalog.get("new") == ProductMeta("new", None, None, None, catalog.get("new").added_at)
    page, total = catalog.page(20, category="coat")
    assert total == 8 and {p.category for p in page} == {"coat"}


@pytest.mark.slow
def test_milvus_rebuild_swaps_the_collection_under_open_handles(milvus_base: str) -> None:
    location = f"{milvus_base}/swap{next(_names)}"
    build(location, clustered(20))
    handle = open_catalog(location)
    build(location, clustered(30, seed=5))
    assert len(handle) == 30  # the alias now names the new collection; the old one is dropped
    client = handle.client
    prefix = location.rsplit("/", 1)[1] + "_"
    assert len([n for n in client.list_collections() if n.startswith(prefix)]) == 1


def test_locations_parse_and_bad_ones_fail_in_one_line(tmp_path: Path) -> None:
    assert parse_location(tmp_path) == Location("file", path=tmp_path)
    lite = parse_location("milvus:///data/shop/catalog.db")
    assert (lite.engine, lite.path, lite.collection) == ("milvus-lite", Path("/data/shop/catalog.db"), "products")
    assert parse_location(Path("milvus:///data/catalog.db/shop2")).collection == "shop2"  # Path folds the "//"
    server = parse_location("milvus://milvus:19530/shop")
    assert (server.engine, server.uri, server.collection, str(server)) == (
        "milvus", "http://milvus:19530", "shop", "milvus://milvus:19530/shop")
    assert parse_location(Path("milvus://milvus")).uri == "http://milvus:19530"
    for bad, why in (("milvus://", "HOST"), ("milvus://h:x/c", "HOST"), ("milvus://h/c/d", "HOST"),
                     ("milvus://h/1bad", "collection name"), ("milvus:///a.db/b/c", "Milvus Lite location")):
        with pytest.raises(UserError, match=why):
            parse_location(bad)
    for bad, why in ((f"milvus://{tmp_path}/nowhere/catalog.db", "does not exist"),
                     (f"milvus://{tmp_path}/absent.db", "no Milvus Lite database"),
                     ("milvus://127.0.0.1:1/products", "cannot reach Milvus at http://127.0.0.1:1")):
        with pytest.raises(UserError, match=why) as caught:
            open_catalog(bad)
        assert "\n" not in str(caught.value)


@pytest.mark.slow
def test_missing_collection_and_faiss_only_strings_are_refused(milvus_base: str) -> None:
    present = f"{milvus_base}/present{next(_names)}"
    build(present, clustered(12))
    with pytest.raises(UserError, match="no catalog collection 'absent'"):
        open_catalog(f"{milvus_base}/absent")
    with pytest.raises(UserError, match="FAISS-only"):
        build(f"{milvus_base}/pq", clustered(12), factory="IVF2,PQ4")
    assert len(open_catalog(present)) == 12


def test_the_server_version_chooses_the_features() -> None:
    from rtdgan.index.catalog.milvus import ServerFeatures, server_features

    assert server_features("v2.3.5-lite") == ServerFeatures("v2.3.5-lite", "Trie", nullable=False)
    assert server_features("v2.4.15") == ServerFeatures("v2.4.15", "INVERTED", nullable=False)
    assert server_features("v2.6.9") == ServerFeatures("v2.6.9", "INVERTED", nullable=True)
    assert server_features("milvus_lite-3.2.2") == ServerFeatures("milvus_lite-3.2.2", "INVERTED", nullable=True)
    assert server_features("v2.7.0").newer_than_tested and not server_features("v2.6.9").newer_than_tested
    for version, why in (("v2.2.16", "not supported: the catalog needs upsert, new in Milvus 2.3"),
                         ("nightly", "not a Milvus version this catalog knows")):
        with pytest.raises(UserError, match=why) as caught:
            server_features(version, "milvus://h:19530/shop")
        assert "\n" not in str(caught.value) and "2.3 to 2.6" in str(caught.value)


def test_a_bad_consistency_level_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from rtdgan.index.catalog.milvus import CONSISTENCY_ENV, consistency_level

    monkeypatch.setenv(CONSISTENCY_ENV, "session")
    assert consistency_level() == "Session"
    monkeypatch.setenv(CONSISTENCY_ENV, "strongest")
    with pytest.raises(UserError, match="RTD_MILVUS_CONSISTENCY='strongest': choose one of Strong, Session"):
        consistency_level()
    monkeypatch.delenv(CONSISTENCY_ENV)
    assert consistency_level() is None


@pytest.mark.slow
def test_the_server_is_2_3_and_talks_only_to_loopback(milvus_server) -> None:
    """The run's server: the 2.3 one whose features differ from Lite's, every connection on loopback."""
    if shutil.which("ss") is None:
        pytest.skip("`ss` (iproute2) lists the server's connections")
    built = build(milvus_server.location(f"loop{next(_names)}"), clustered(12))
    assert built.features.version.startswith("v2.3") and built.features.scalar_index == "Trie"
    assert not built.nullable
    connections = milvus_server.connections()
    assert connections and all(is_loopback(local) and is_loopback(peer) for local, peer in connections), connections
