"""The FAISS + SQLite catalog: recall against exact search, filters, add/remove, atomic saves."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import faiss
import numpy as np
import pytest

from rtdgan.index.catalog.base import ProductMeta
from rtdgan.index.catalog.engines import read_manifest
from rtdgan.index.catalog.file import CRASH_ENV, KINDS, Catalog, write_faiss, write_sqlite
from rtdgan.index.errors import UserError
from tests.index.conftest import unit_vectors

faiss.omp_set_num_threads(1)
DIM = 32
REPO = Path(__file__).resolve().parents[2]


def products(n: int, categories: int = 4, prefix: str = "p") -> list[ProductMeta]:
    return [ProductMeta(f"{prefix}{i}", f"title {i}", f"cat{i % categories}", f"/img/{prefix}{i}.jpg") for i in range(n)]


def filled(kind: str, n: int = 300, seed: int = 0, **params: int) -> tuple[Catalog, np.ndarray]:
    catalog = Catalog.create(DIM, "tiny", "sha-a", kind, **params)
    vectors = unit_vectors(np.random.default_rng(seed), n, DIM)
    catalog.add(products(n), vectors)
    return catalog, vectors


def recall_vs_numpy(catalog: Catalog, base: np.ndarray, queries: np.ndarray, k: int) -> float:
    """Recall@k of catalog.search against a brute-force numpy top-k (ids are 'p<row>')."""
    truth = np.argsort(-(queries @ base.T), axis=1)[:, :k]
    hits = catalog.search(queries, k)
    return float(np.mean([len({int(h.product_id[1:]) for h in row} & set(t.tolist())) / k
                          for row, t in zip(hits, truth, strict=True)]))


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_kinds_recall_against_exact(kind: str) -> None:
    catalog, base = filled(kind, n=2000)
    queries = unit_vectors(np.random.default_rng(1), 200, DIM)  # fresh random queries, the hard case
    assert recall_vs_numpy(catalog, base, queries, 10) >= 0.9
    report = catalog.check_recall(k=10, queries=300)
    assert report["k"] == 10 and report["queries"] == 300 and report["recall"] >= 0.9
    if kind == "ivf":
        assert catalog.nlist == 51  # 4 sqrt(2000) = 179 capped at 2000 // 39 points per list


def test_ivf_nprobe_and_hnsw_ef_search_change_recall() -> None:
    queries = unit_vectors(np.random.default_rng(1), 200, DIM)
    ivf, base = filled("ivf", n=2000)
    ivf.nprobe = 1
    low = recall_vs_numpy(ivf, base, queries, 10)
    ivf.nprobe = ivf.nlist  # every list scanned: exact
    assert low < 0.5 and recall_vs_numpy(ivf, base, queries, 10) == 1.0
    hnsw, base = filled("hnsw", n=2000)
    hnsw.ef_search = 10
    low = recall_vs_numpy(hnsw, base, queries, 10)
    hnsw.ef_search = 256
    assert low < recall_vs_numpy(hnsw, base, queries, 10)


@pytest.mark.parametrize("kind", KINDS)
def test_own_vector_is_rank_one_with_metadata(kind: str) -> None:
    catalog, vectors = filled(kind)
    hits = catalog.search(vectors[:20], 5)
    assert [row[0].product_id for row in hits] == [f"p{i}" for i in range(20)]
    first = hits[7][0]
    assert first.score == pytest.approx(1.0, abs=1e-4)
    assert (first.title, first.category, first.image_path) == ("title 7", "cat3", "/img/p7.jpg")
    assert all(len(row) == 5 and row[0].score >= row[-1].score for row in hits)
    assert len(catalog.search(vectors[0], 1000)[0]) == 300  # k above the catalog size: everything


# Narrow search settings make filtered HNSW and IVF run out of candidates, so the exact fallback must fire.
@pytest.mark.parametrize("kind, params", [
    ("flat", {}), ("hnsw", {}), ("ivf", {}), ("hnsw", {"ef_search": 1}), ("ivf", {"nprobe": 1}),
])
def test_category_filter_returns_k_hits_of_that_category(kind: str, params: dict, monkeypatch) -> None:
    fallbacks = []
    real_exact = Catalog._exact
    monkeypatch.setattr(Catalog, "_exact", lambda self, *a: fallbacks.append(1) or real_exact(self, *a))
    catalog = Catalog.create(DIM, "tiny", "sha-a", kind, **params)
    vectors = unit_vectors(np.random.default_rng(0), 1000, DIM)
    # 13 rare products among 987 common ones.
    catalog.add([ProductMeta(f"p{i}", category="rare" if i % 83 == 0 else "common") for i in range(1000)], vectors)
    rare = {f"p{i}" for i in range(0, 1000, 83)}
    queries = vectors[1:6]  # common products
    for row in catalog.search(queries, 10, category="rare"):
        assert len(row) == 10 and {h.product_id for h in row} <= rare
    everything = catalog.search(queries, 20, category="rare")
    assert all({h.product_id for h in row} == rare for row in everything)  # fewer than k: all of them
    exact = np.argsort(-(queries @ vectors[[int(p[1:]) for p in sorted(rare)]].T), axis=1)[:, :3]
    best = [[sorted(rare)[j] for j in row] for row in exact]
    assert [[h.product_id for h in row[:3]] for row in catalog.search(queries, 3, category="rare")] == best
    assert catalog.search(queries, 5, category="no such category") == [[]] * 5
    assert catalog.categories() == {"common": 987, "rare": 13}
    assert fallbacks or not params


@pytest.mark.parametrize("kind", KINDS)
def test_add_remove_upsert_get(kind: str) -> None:
    catalog, vectors = filled(kind, n=200)
    assert len(catalog) == 200 and catalog.get("p5").category == "cat1" and catalog.get("nope") is None
    assert catalog.remove(["p5", "p6", "not there"]) == 2
    assert len(catalog) == 198 and catalog.get("p5") is None
    assert catalog.search(vectors[5], 3)[0][0].product_id != "p5"
    assert all(h.product_id not in ("p5", "p6") for h in catalog.search(vectors[5], 198)[0])
    # Upsert: p7 gets p9's vector and a new title; still one p7.
    catalog.add([ProductMeta("p7", "new title", "cat9")], vectors[9:10])
    assert len(catalog) == 198 and catalog.get("p7").title == "new title"
    top = [h.product_id for h in catalog.search(vectors[9], 2)[0]]
    assert sorted(top) == ["p7", "p9"]
    catalog.add([ProductMeta("p5")], vectors[5:6])  # a removed product comes back
    assert catalog.search(vectors[5], 1)[0][0].product_id == "p5"


@pytest.mark.parametrize("kind", KINDS)
def test_removal_leaves_tombstones_then_purges(kind: str, tmp_path: Path) -> None:
    # A delete only records a tombstone (no O(n) remove_ids scan while searches wait): every kind.
    catalog, vectors = filled(kind, n=200)
    catalog.remove([f"p{i}" for i in range(30)])  # 15%: tombstones
    assert catalog.index.ntotal == 200 and catalog._tombstone_count() == 30
    removed = {f"p{i}" for i in range(30)}
    assert not removed & {h.product_id for row in catalog.search(vectors[:30], 170) for h in row}
    assert not removed & {h.product_id for row in catalog.search(vectors[:30], 100, "cat1") for h in row}
    catalog.save(tmp_path / "index")  # tombstones survive a save and an open
    reopened = Catalog.open(tmp_path / "index")
    assert len(reopened) == 170 and not removed & {h.product_id for h in reopened.search(vectors[0], 170)[0]}
    catalog.remove([f"p{i}" for i in range(30, 60)])  # 30% > 20%: the vectors are dropped for good
    assert catalog.index.ntotal == 140 and catalog._tombstone_count() == 0
    assert [row[0].product_id for row in catalog.search(vectors[60:65], 1)] == [f"p{i}" for i in range(60, 65)]


def test_bad_input_is_refused() -> None:
    catalog = Catalog.create(DIM, "tiny", "sha-a")
    vectors = unit_vectors(np.random.default_rng(0), 2, DIM)
    with pytest.raises(ValueError, match="L2-normalised"):
        catalog.add(products(2), vectors * 2)
    with pytest.raises(ValueError, match="shape"):
        catalog.add(products(2), vectors[:, :8])
    with pytest.raises(UserError, match="twice"):
        catalog.add([ProductMeta("a"), ProductMeta("a")], vectors)
    with pytest.raises(UserError, match="kind"):
        Catalog.create(DIM, "tiny", "sha-a", "annoy")
    assert catalog.search(vectors, 3) == [[], []] and len(catalog) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_reopen(tmp_path: Path, kind: str) -> None:
    catalog, vectors = filled(kind, n=200, nprobe=7, ef_search=33)
    catalog.remove(["p3"])
    catalog.save(tmp_path / "index")
    before = catalog.search(vectors[:10], 5)
    reopened = Catalog.open(tmp_path / "index", expect_embedder_sha256="sha-a")
    assert len(reopened) == 199 and reopened.get("p10") == catalog.get("p10")
    assert reopened.search(vectors[:10], 5) == before
    assert (reopened.nprobe, reopened.ef_search, reopened.kind, reopened.dim) == (7, 33, kind, DIM)
    manifest = read_manifest(tmp_path / "index")
    assert manifest["count"] == 199 and manifest["embedder"] == {"name": "tiny", "sha256": "sha-a"}
    # A second save is generation 2; generation 1's files are gone.
    reopened.add([ProductMeta("extra")], vectors[3:4])
    reopened.save(tmp_path / "index")
    names = sorted(p.name for p in (tmp_path / "index").iterdir() if p.name != ".lock")
    assert names == ["catalog-000002.faiss", "catalog-000002.sqlite", "index.json"]
    assert Catalog.open(tmp_path / "index").search(vectors[3], 1)[0][0].product_id == "extra"


def test_base_files_are_written_with_paced_write_back(tmp_path: Path, monkeypatch) -> None:
    """A save or compaction syncs its big files as it writes them (at most `pace` bytes dirty, so the
    log's fsyncs never queue behind gigabytes of write-back), and the files read back the same."""
    syncs: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (syncs.append(fd), real(fd))[1])
    x = unit_vectors(np.random.default_rng(3), 2000, 64)  # 512 KB of vectors
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(64))
    index.add_with_ids(x, np.arange(2000, dtype=np.int64) + 7)
    write_faiss(index, tmp_path / "a.faiss", pace=64 << 10)
    assert len(syncs) >= (2000 * 64 * 4) // (64 << 10) - 1
    back = faiss.read_index(str(tmp_path / "a.faiss"))
    assert np.array_equal(faiss.vector_to_array(back.id_map), np.arange(2000) + 7)
    assert np.array_equal(back.index.reconstruct_n(0, 2000), x)

    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT)")
    with db:  # committed, as the catalog's own writes are (a backup waits for an open transaction)
        db.executemany("INSERT INTO t (s) VALUES (?)", [(f"{i:0200d}",) for i in range(3000)])  # ~700 KB
    syncs.clear()
    write_sqlite(db, tmp_path / "a.sqlite", pace=64 << 10)
    assert len(syncs) >= 5
    copy = sqlite3.connect(tmp_path / "a.sqlite")
    assert copy.execute("SELECT COUNT(*), MAX(s) FROM t").fetchone() == (3000, f"{2999:0200d}")
    copy.close()


def test_open_refuses_another_embedder_and_non_index_folders(tmp_path: Path) -> None:
    catalog, _ = filled("flat", n=10)
    catalog.save(tmp_path / "index")
    with pytest.raises(UserError, match=r"another embedder \(tiny.*rtd index build"):
        Catalog.open(tmp_path / "index", expect_embedder_sha256="sha-b")
    with pytest.raises(UserError, match="not an index folder"):
        Catalog.open(tmp_path)
    faiss_file = tmp_path / "index" / read_manifest(tmp_path / "index")["files"]["faiss"]
    faiss_file.write_bytes(faiss_file.read_bytes()[:100])  # truncated
    with pytest.raises(UserError, match="damaged"):
        Catalog.open(tmp_path / "index")
    faiss_file.unlink()
    with pytest.raises(UserError, match="do not exist"):
        Catalog.open(tmp_path / "index")


SAVE_IN_CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from rtdgan.index.catalog.file import Catalog
    from rtdgan.index.catalog.base import ProductMeta
    catalog = Catalog.open(sys.argv[1])
    vectors = np.load(sys.argv[2])
    catalog.remove(["p0", "p1"])
    catalog.add([ProductMeta("new")], vectors[:1])
    catalog.save(sys.argv[1])
    print("saved")
""")


@pytest.mark.parametrize("point, committed", [
    ("faiss_written", False), ("sqlite_written", False), ("manifest_written", False), ("committed", True),
])
def test_crash_during_save_leaves_a_readable_index(tmp_path: Path, point: str, committed: bool) -> None:
    index = tmp_path / "index"
    catalog, vectors = filled("flat", n=50)
    catalog.save(index)
    np.save(tmp_path / "v.npy", unit_vectors(np.random.default_rng(5), 1, DIM))
    env = {**os.environ, CRASH_ENV: point, "PYTHONPATH": str(REPO)}
    child = subprocess.run([sys.executable, "-c", SAVE_IN_CHILD, str(index), str(tmp_path / "v.npy")],
                           env=env, capture_output=True, text=True, timeout=60)
    assert child.returncode == 17 and "saved" not in child.stdout, child.stderr  # died inside save
    after = Catalog.open(index)
    if committed:
        assert len(after) == 49 and after.get("new") is not None and after.get("p0") is None
    else:
        assert len(after) == 50 and after.get("new") is None and after.get("p0") is not None
        assert after.search(vectors[0], 1)[0][0].product_id == "p0"
    # The next save cleans up what the crash left behind.
    after.save(index)
    assert len(list(index.glob("catalog-*"))) == 2 and not list(index.glob("*.tmp"))
    assert json.loads((index / "index.json").read_text())["generation"] == 3
