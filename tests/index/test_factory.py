"""FAISS index-factory strings in the file catalog: the size rule, any string, old folders, params."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from rtdgan.index.build import build_index
from rtdgan.index.catalog import factory as factories
from rtdgan.index.catalog.base import ProductMeta
from rtdgan.index.catalog.engines import read_manifest
from rtdgan.index.catalog.file import Catalog
from rtdgan.index.errors import UserError
from rtdgan.index.index_cli import add_arguments_build, run_build

DIM = 16


def clustered(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(4, n // 25), DIM))
    x = centres[rng.integers(0, len(centres), n)] + 0.4 * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def filled(factory: str, n: int = 400, **params: int) -> tuple[Catalog, np.ndarray]:
    vectors = clustered(n)
    catalog = Catalog.create(DIM, "tiny", "sha-a", factory, **params)
    catalog.add([ProductMeta(f"p{i}", category="even" if i % 2 == 0 else "odd") for i in range(n)], vectors)
    return catalog, vectors


def test_default_follows_faiss_guidelines_by_size() -> None:
    assert factories.default_factory(300) == factories.default_factory(10_000) == "Flat"
    assert factories.default_factory(100_000) == "IVF1024,Flat"
    assert factories.default_factory(1_000_000) == "IVF4096,Flat"
    assert factories.default_factory(5_000_000) == "IVF65536_HNSW32,Flat"
    assert factories.default_factory(50_000_000) == "IVF262144_HNSW32,Flat"
    catalog, _ = filled("auto", n=50)
    assert (catalog.factory, catalog.kind) == ("Flat", "flat")


@pytest.mark.parametrize("factory", ["IVF8,Flat", "HNSW16,Flat", "IVF8,SQ8", "IVF8_HNSW16,Flat", "IVF8,PQ8x4fs,RFlat",
                                     "OPQ4_16,IVF8,PQ8x4", "PQ8x4"])
def test_any_factory_string_searches_filters_removes_and_reopens(factory: str, tmp_path: Path) -> None:
    catalog, vectors = filled(factory, nprobe=8, ef_search=64)
    assert catalog.factory == factory and catalog.index.is_trained
    hits = catalog.search(vectors[:20], 5)
    lossy = "PQ" in factory and "RFlat" not in factory  # compressed codes without a refine step: approximate order
    assert np.mean([f"p{i}" in {h.product_id for h in row} for i, row in enumerate(hits)]) >= (0.6 if lossy else 0.9)
    odd = catalog.search(vectors[:4], 7, category="odd")
    assert all(len(row) == 7 and {h.category for h in row} == {"odd"} for row in odd)
    removed = [f"p{i}" for i in range(0, 120)]  # > a fifth of the index: the tombstones are purged
    assert catalog.remove(removed) == 120 and len(catalog) == 280
    found = {h.product_id for row in catalog.search(vectors[:120], 10) for h in row}
    assert not found & set(removed)
    catalog.save(tmp_path / "index")
    reopened = Catalog.open(tmp_path / "index")
    manifest = read_manifest(tmp_path / "index")
    assert manifest["factory"] == factory and manifest["count"] == 280
    assert reopened.factory == factory and len(reopened) == 280
    assert [h.product_id for h in reopened.search(vectors[200:203], 5)[1]] == [h.product_id for h in catalog.search(vectors[200:203], 5)[1]]


def test_recall_is_against_the_original_vectors() -> None:
    catalog, vectors = filled("IVF8,PQ4x4", nprobe=8)  # 2-byte codes: reconstructions are far from the vectors
    lossy = catalog.check_recall(k=10, queries=100)["recall"]
    honest = catalog.check_recall(k=10, queries=100, vectors=vectors)["recall"]
    assert honest < lossy  # ground truth from the reconstructions flatters a compressed index
    exact, _ = filled("Flat")
    assert exact.check_recall(k=10, queries=100, vectors=vectors)["recall"] == 1.0


def test_search_params_change_recall_and_are_settable() -> None:
    catalog, vectors = filled("IVF16,Flat", n=800, nprobe=1)
    low = catalog.check_recall(k=20, queries=100, vectors=vectors)["recall"]
    catalog.set_search_params(nprobe=16)
    assert catalog.nprobe == 16 and catalog.check_recall(k=20, queries=100, vectors=vectors)["recall"] == 1.0 > low
    hnsw, vectors = filled("HNSW4,Flat", n=800, ef_search=1)
    hnsw.set_search_params(ef_search=256)
    assert hnsw.check_recall(k=20, queries=100, vectors=vectors)["recall"] >= 0.99
    with pytest.raises(UserError, match=">= 1"):
        catalog.set_search_params(nprobe=0)


def test_old_index_folders_read_as_their_alias(tmp_path: Path) -> None:
    for kind in ("flat", "hnsw", "ivf"):
        catalog, vectors = filled(kind)
        catalog.save(tmp_path / kind)
        path = tmp_path / kind / "index.json"
        manifest = json.loads(path.read_text())
        del manifest["factory"]  # what an index.json written before factory strings holds
        path.write_text(json.dumps(manifest))
        reopened = Catalog.open(tmp_path / kind)
        assert reopened.kind == kind and reopened.factory == factories.resolve(kind, 400) if kind != "ivf" else True
        assert reopened.search(vectors[:1], 1)[0][0].product_id == "p0"
        reopened.add([ProductMeta("new")], vectors[1:2])  # and it still takes writes
        assert len(reopened) == 401
    assert Catalog.open(tmp_path / "ivf").factory == f"IVF{factories.ivf_alias_nlist(400)},Flat"


def test_bad_strings_and_too_small_catalogs_are_refused(artifacts: Path, lookbook: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="FAISS index-factory string 'IVF8,Nope'"):
        Catalog.create(DIM, "tiny", "sha-a", "IVF8,Nope")
    with pytest.raises(UserError, match="needs at least 64 vectors"):
        filled("IVF64,Flat", n=20)
    with pytest.raises(UserError, match="both name the index"):
        build_index(artifacts, lookbook, tmp_path / "i", kind="hnsw", factory="Flat")
    with pytest.raises(UserError, match="LSH"):
        build_index(artifacts, lookbook, tmp_path / "i", factory="LSH")  # FAISS's LSH is L2 only
    assert not (tmp_path / "i").exists()


def test_cli_factory_build_prints_recall(artifacts: Path, lookbook: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    parser = argparse.ArgumentParser()
    add_arguments_build(parser)
    args = parser.parse_args(["--artifacts", str(artifacts), "--catalog", str(lookbook), "--out",
                              str(tmp_path / "index"), "--factory", "IVF2,Flat", "--nprobe", "2"])
    assert run_build(args) == 0
    out = capsys.readouterr().out
    assert "(IVF2,Flat, dim" in out and "recall@10 against exact search: 1.000" in out
    manifest = read_manifest(tmp_path / "index")
    assert (manifest["factory"], manifest["kind"], manifest["params"]["nlist"]) == ("IVF2,Flat", "ivf", 2)
    assert manifest["recall"]["recall"] == 1.0
