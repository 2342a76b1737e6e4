"""bench/experiments/results_synthetic.py redraws docs/results-synthetic.md from the committed per-model files: Tables 1-3 and
the Recall@K plots of Tables 1 and 3 (matplotlib, PNG + SVG), byte-identical when nothing changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

KS = (1, 5, 10, 20, 60)
GALLERY = 50


def result_row(method: str, query: str, label: str, scale: float) -> dict:
    recall = {str(k): min(1.0, scale * (0.2 + k / 75)) for k in KS}
    return {"method": method, "query": query, "label": label, "rmse": 0.13, "ssim": 0.62, "recall": recall,
            "recall_ci": {k: [max(0.0, v - 0.03), min(1.0, v + 0.03)] for k, v in recall.items()},
            "median_rank": 20.0}


def model_file(name: str, scale: float, head: float | None = None) -> dict:
    doc = {"name": name, "train": {"steps": 1000, "train_s": 600.0},
           "test_set": {"products": GALLERY, "queries": 2 * GALLERY,
                        "chance_recall": {str(k): k / GALLERY for k in KS}},
           "results": [result_row("generated", "generated", name, scale),
                       result_row("photo", "photo", "photo (no generation)", 0.4)]}
    if head is not None:
        doc["head"] = {"result": result_row("head", "fused", f"head fused, {name}", head)}
    return doc


@pytest.fixture()
def committed(results, tmp_path: Path, monkeypatch) -> Path:
    """A docs/ folder of its own: the doc with its markers and a hand-written discussion after them."""
    folder = tmp_path / "docs" / "results-synthetic"
    folder.mkdir(parents=True)
    doc = tmp_path / "docs" / "results-synthetic.md"
    doc.write_text(f"# Results\n\nintro\n\n{results.BEGIN}\nold tables\n{results.END}\n\n## Discussion\n\nkept\n")
    monkeypatch.setattr(results, "RESULTS", folder)
    monkeypatch.setattr(results, "DOC", doc)
    return folder


def write(folder: Path, name: str, doc: dict) -> None:
    (folder / f"{name}.json").write_text(json.dumps(doc))


def test_the_doc_gets_tables_and_both_recall_plots(results, committed: Path, tmp_path: Path) -> None:
    write(committed, "rtdgan-n3", model_file("rtdgan-n3", 0.8, head=1.0))
    write(committed, "pix2pix", model_file("pix2pix", 0.5))
    write(committed, "photo-head", {"result": result_row("head", "photo", "head photo", 0.7),
                                             "world": {"products": 100, "photos_per_product": 2, "seed": 9,
                                                       "train_products": 99}})
    e = results.Experiment(root=tmp_path / "unused")
    results.write_doc(e, "CMD")

    text = results.DOC.read_text()
    assert text.startswith("# Results\n\nintro\n") and text.endswith("## Discussion\n\nkept\n")  # only the block
    assert "old tables" not in text
    assert "| rtdgan-n2 | not yet run |" in text and "| pix2pix, fused head | not yet run |" in text
    assert "![Recall@K, Table 1](results-synthetic/recall.png)" in text
    assert "![Recall@K, Table 3](results-synthetic/recall-head.png)" in text
    for stem in ("recall", "recall-head"):
        with Image.open(committed / f"{stem}.png") as im:
            assert im.format == "PNG" and im.size == (880, 480)
    table1, table3 = (committed / "recall.svg").read_text(), (committed / "recall-head.svg").read_text()
    assert "pix2pix" in table1 and "rtdgan-n3" in table1 and "the photo itself (no generator)" in table1
    assert f"chance (K / {GALLERY})" in table1
    assert "rtdgan-n3, fused head" in table3 and "photo-only head (no generator)" in table3
    assert "pix2pix" not in table3  # it has no head yet
    # A model keeps its colour from plot to plot and whichever models are missing: pix2pix is C3 (#d62728).
    assert "#d62728" in table1 and "#1f77b4" in table1 and "#1f77b4" in table3

    before = {p.name: p.read_bytes() for p in committed.glob("recall*")}
    results.write_doc(e, "CMD")
    assert {p.name: p.read_bytes() for p in committed.glob("recall*")} == before  # redrawn: no diff to commit


def test_without_heads_there_is_no_table_3_plot(results, committed: Path, tmp_path: Path) -> None:
    write(committed, "rtdgan-n1", model_file("rtdgan-n1", 0.6))
    results.write_doc(results.Experiment(root=tmp_path / "unused"), "CMD")
    text = results.DOC.read_text()
    assert "results-synthetic/recall.png" in text and "recall-head" not in text
    assert (committed / "recall.svg").is_file() and not (committed / "recall-head.png").exists()


def test_another_size_writes_its_own_doc_and_files(results, committed: Path, tmp_path: Path) -> None:
    """A GPU run at 128 px gets docs/results-synthetic-128px-w16.md and its folder; the CPU
    run's doc and files are untouched."""
    e = results.Experiment(root=tmp_path / "unused", size=128)
    assert results.results_dir(e) == committed.with_name("results-synthetic-128px-w16")
    assert results.doc_path(e) == results.DOC.with_name("results-synthetic-128px-w16.md")
    folder = results.results_dir(e)
    folder.mkdir()
    n3 = model_file("rtdgan-n3", 0.8) | {"train": {"steps": 22000, "train_s": 600.0, "device": "cuda (NVIDIA H200)"}}
    write(folder, "rtdgan-n3", n3)
    (folder / "samples-rtdgan-n3.png").write_bytes(b"png")
    before = results.DOC.read_text()
    results.write_doc(e, "CMD")

    assert results.DOC.read_text() == before and not (committed / "recall.png").exists()
    text = results.doc_path(e).read_text()
    assert text.startswith("# Results on the synthetic set, 128 px, width 16\n")
    assert "![Recall@K, Table 1](results-synthetic-128px-w16/recall.png)" in text and (folder / "recall.svg").is_file()
    assert "(results-synthetic-128px-w16/samples-rtdgan-n3.png)" in text
    assert "each took on cuda (NVIDIA H200) are in Table 1" in text
    assert "at 32, 64, 128 px, then 12 more at 128 px" in text and "committed demo generator" not in text
