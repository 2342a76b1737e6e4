"""Replica-safe catalog writes: an append-only log shared by every process serving one index folder.

What it prevents: two replicas on one folder, each writing without reloading, losing each other's
acknowledged writes (a save that wrote the whole in-memory catalog over the folder).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from rtdgan.index.catalog.base import ProductMeta
from rtdgan.index.catalog.engines import read_manifest
from rtdgan.index.catalog.file import KINDS, Catalog, StaleCatalog, compact
from tests.index.conftest import unit_vectors

DIM = 8
ROOT = Path(__file__).resolve().parents[2]


def folder_with(tmp_path: Path, n: int = 20, kind: str = "flat") -> tuple[Path, np.ndarray]:
    vectors = unit_vectors(np.random.default_rng(0), n + 100, DIM)
    catalog = Catalog.create(DIM, "tiny", "sha-a", kind)
    catalog.add([ProductMeta(f"p{i}", category=f"c{i % 2}") for i in range(n)], vectors[:n])
    catalog.save(tmp_path / "index")
    return tmp_path / "index", vectors


def ids_on_disk(folder: Path) -> set[str]:
    return {p.product_id for p in Catalog.open(folder).products()}


@pytest.mark.parametrize("kind", KINDS)
def test_two_replicas_never_lose_each_others_writes(tmp_path: Path, kind: str) -> None:
    folder, vectors = folder_with(tmp_path, kind=kind)
    a, b = Catalog.open(folder), Catalog.open(folder)
    a.write([ProductMeta("Y")], vectors[50:51])  # A adds Y ...
    b.write([ProductMeta("Z")], vectors[51:52])  # ... B adds Z without reloading: Y must survive
    assert {"Y", "Z"} <= ids_on_disk(folder)
    b.write(removed=["p3"])  # B deletes P ...
    a.write([ProductMeta("Q")], vectors[52:53])  # ... A, not reloaded, adds Q: P must stay deleted
    on_disk = ids_on_disk(folder)
    assert "p3" not in on_disk and {"Y", "Z", "Q"} <= on_disk
    # Both replicas converge on the same catalog, FAISS ids included.
    assert not a.refresh() and not b.refresh()
    assert [p.product_id for p in a.products()] == [p.product_id for p in b.products()]
    for q in vectors[50:53]:
        assert a.search(q, 5) == b.search(q, 5)
    assert a.search(vectors[51], 1)[0][0].product_id == "Z"


def test_write_returns_what_was_there_and_upserts(tmp_path: Path) -> None:
    folder, vectors = folder_with(tmp_path)
    catalog = Catalog.open(folder)
    before = catalog.write([ProductMeta("p1", "new title")], vectors[60:61], removed=["p2", "nope"])
    assert before["p1"].product_id == "p1" and before["p2"] is not None and before["nope"] is None
    reopened = Catalog.open(folder)
    assert reopened.get("p1").title == "new title" and reopened.get("p2") is None and len(reopened) == 19


def test_a_torn_tail_is_ignored_then_cut_off(tmp_path: Path) -> None:
    folder, vectors = folder_with(tmp_path)
    catalog = Catalog.open(folder)
    catalog.write([ProductMeta("A")], vectors[40:41])
    log = folder / f"catalog-{catalog.generation:06d}.log"
    with log.open("ab") as f:
        f.write(b"\x30\x00\x00\x00garbage")  # a crash mid-append
    assert "A" in ids_on_disk(folder)  # the whole records before the torn one are read
    Catalog.open(folder).write([ProductMeta("B")], vectors[41:42])
    assert {"A", "B"} <= ids_on_disk(folder)


def test_saving_a_stale_copy_is_refused(tmp_path: Path) -> None:
    folder, vectors = folder_with(tmp_path)
    a, b = Catalog.open(folder), Catalog.open(folder)
    b.write([ProductMeta("Z")], vectors[51:52])
    with pytest.raises(StaleCatalog, match="has changed since this catalog was loaded"):
        a.save(folder)
    assert not a.refresh()
    a.save(folder)  # once it has seen B's write, a full save keeps it
    assert "Z" in ids_on_disk(folder)


def test_compaction_folds_the_log_and_followers_reload(tmp_path: Path) -> None:
    folder, vectors = folder_with(tmp_path)
    writer, follower = Catalog.open(folder), Catalog.open(folder)
    for i in range(5):
        writer.write([ProductMeta(f"n{i}")], vectors[60 + i:61 + i])
    writer.write(removed=["p0"])
    generation = compact(folder)
    assert generation == writer.generation + 1 and read_manifest(folder)["generation"] == generation
    assert not (folder / f"catalog-{writer.generation:06d}.log").exists()  # the old generation is gone
    assert follower.refresh() is True  # a newer generation: reopen
    reopened = Catalog.open(folder)
    assert len(reopened) == 24 and reopened.get("p0") is None and reopened.log_size() == 0
    with pytest.raises(StaleCatalog):  # the old copy must not write into the new generation blindly
        writer.write([ProductMeta("late")], vectors[70:71])


WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from pathlib import Path
    from rtdgan.index.catalog.file import Catalog
    from rtdgan.index.catalog.base import ProductMeta
    folder, name, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    catalog = Catalog.open(folder)
    rng = np.random.default_rng(abs(hash(name)) % 1000)
    done = []
    for i in range(n):
        v = rng.standard_normal((1, 8)).astype(np.float32)
        catalog.write([ProductMeta(f"{name}{i}")], v / np.linalg.norm(v))
        done.append(f"{name}{i}")
        if i % 5 == 4:
            catalog.write(removed=[f"{name}{i - 1}"])
            done.remove(f"{name}{i - 1}")
    print(",".join(done))
""")


def test_two_processes_writing_at_once_keep_every_acknowledged_write(tmp_path: Path) -> None:
    folder, _ = folder_with(tmp_path)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(folder), name, "25"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in ("A", "B")]
    acknowledged = set()
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        acknowledged |= set(out.strip().split(","))
    on_disk = ids_on_disk(folder)
    assert len(acknowledged) == 40 and acknowledged <= on_disk
    deleted = {f"{n}{i - 1}" for n in "AB" for i in range(4, 25, 5)}
    assert not deleted & on_disk
    assert json.loads((folder / "index.json").read_text())["generation"] == 1  # no rewrite happened
