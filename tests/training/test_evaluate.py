"""`rtd eval` (training/evaluate.py, eval_protocol.py, eval_report.py, eval_cli.py) on artifacts with known answers.

The artifacts are hand-written ONNX graphs (no torch, no training): an identity or a negating generator,
and an embedder that average-pools to 4x4 cells and L2-normalises. With photos that are copies of their
product image, the identity generator must give RMSE 0, SSIM 1 and Recall@1 = 1; the negating one turns
every embedding around (embed(-x) = -embed(x)), so the true product is ranked last.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from rtdgan.index.build import build_index
from rtdgan.index.errors import UserError
from rtdgan.index.files import sha256_file
from rtdgan.index.images import preprocess
from rtdgan.training import eval_cli
from rtdgan.training.data import load_records, write_split
from rtdgan.training.eval_protocol import EvalConfig
from rtdgan.training.eval_report import compare_reports
from rtdgan.training.evaluate import evaluate
from tests.helpers import make_lookbook
from tests.service.conftest import make_crop

SIZE = 32
ROOT = Path(__file__).resolve().parents[2]


def _save(nodes: list, inp: str, out: str, out_shape: list, path: Path) -> None:
    graph = helper.make_graph(nodes, path.stem, [helper.make_tensor_value_info(inp, TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def write_graph_artifacts(folder: Path, generator_op: str, stages: int = 2) -> Path:
    """generator.onnx (Identity or Neg), the 4x4-cell average-pool embedder, and a model.json for both."""
    folder.mkdir(parents=True)
    _save([helper.make_node(generator_op, ["photo"], ["product"])], "photo", "product",
          ["batch", 3, SIZE, SIZE], folder / "generator.onnx")
    cell = SIZE // 4
    _save([helper.make_node("AveragePool", ["image"], ["pooled"], kernel_shape=[cell, cell], strides=[cell, cell]),
           helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
           helper.make_node("LpNormalization", ["flat"], ["embedding"], axis=1, p=2)],
          "image", "embedding", ["batch", 48], folder / "embedder.onnx")
    doc = {"format_version": 1,
           "generator": {"architecture": "rtdgan", "stages": stages, "stage": stages, "native_size": SIZE,
                         "onnx_sha256": sha256_file(folder / "generator.onnx")},
           "embedder": {"backbone": "avgpool4x4", "dim": 48, "onnx_sha256": sha256_file(folder / "embedder.onnx")},
           "preprocessing": {"size": SIZE}}
    (folder / "model.json").write_text(json.dumps(doc), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def testset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """6 products x 3 photos, each photo a byte copy of its product image; a split with all of them as test."""
    root = tmp_path_factory.mktemp("eval")
    lb = make_lookbook(root / "lb", products=6, photos=3, size=SIZE, seed=5)
    for path in lb.glob("*_CLEAN0_*"):
        product = next(lb.glob(f"{path.name[:9]}_CLEAN1_*"))
        shutil.copyfile(product, path)
    split = root / "split.json"
    write_split(split, {"data": str(lb)}, [], load_records(lb).records)
    return lb, split


def config(testset: tuple[Path, Path], artifacts: Path, out: Path, **kw: object) -> EvalConfig:
    return EvalConfig(artifacts=artifacts, data=testset[0], split=testset[1], out=out, ks=(1, 5, 6), **kw)


def test_identity_generator_gives_perfect_scores_and_every_file(testset: tuple[Path, Path], tmp_path: Path) -> None:
    art = write_graph_artifacts(tmp_path / "art", "Identity")
    report = evaluate(config(testset, art, tmp_path / "rep", batch_size=4))
    assert report["test_set"] == {"split": str(testset[1]), "products": 6, "queries": 18, "crop": None, "skipped": [],
                                  "gallery": {"kind": "test products", "products": 6, "index": "Flat (exact, in memory)",
                                              "ranks": "all"},
                                  "chance_recall": pytest.approx({"1": 1 / 6, "5": 5 / 6, "6": 1.0}),
                                  "categories": {"(none)": {"products": 6, "queries": 18}}}
    assert report["head"] is None and report["bootstrap"]["resamples"] == 1000
    for row in report["results"]:
        assert row["rmse"] == pytest.approx(0.0, abs=1e-9)
        assert row["ssim"] == pytest.approx(1.0)
        assert row["recall"] == {"1": 1.0, "5": 1.0, "6": 1.0}
        assert row["recall_ci"] == {"1": [1.0, 1.0], "5": [1.0, 1.0], "6": [1.0, 1.0]}  # every product always hits
        assert row["by_category"] == {"(none)": {"1": 1.0, "10": 1.0}}
        assert row["embedder"] == "avgpool4x4"
    assert [r["label"] for r in report["results"]] == ["rtdGAN (N=2)", "photo (no generation)"]
    out = tmp_path / "rep"
    assert json.loads((out / "report.json").read_text())["model"]["embedder"]["backbone"] == "avgpool4x4"
    md = (out / "report.md").read_text()
    assert "| rtdGAN (N=2) | 0.0000 | 1.0000 | 1.0000 | 1.0000 | 1.0000 |" in md and "avgpool4x4" in md
    rows = list(csv.DictReader((out / "queries.csv").open()))
    assert len(rows) == 18 and {r["rank_generated"] for r in rows} == {"1"} and {r["rank_photo"] for r in rows} == {"1"}
    for name in ("recall.png", "samples.png"):
        assert Image.open(out / name).size[0] > 100
    assert report["throughput"]["queries_per_s"] > 0


def test_negating_generator_ranks_the_true_product_last(testset: tuple[Path, Path], tmp_path: Path) -> None:
    art = write_graph_artifacts(tmp_path / "art", "Neg")
    report = evaluate(config(testset, art, tmp_path / "rep", query="both"))
    generated, photo = report["results"]
    assert generated["recall"] == {"1": 0.0, "5": 0.0, "6": 1.0}  # cosine -1: last of 6
    assert generated["median_rank"] == 6
    assert photo["recall"]["1"] == 1.0
    # RMSE of -x against x, computed independently: per image on the [0, 1] scale, then averaged.
    x = np.stack([(preprocess(p, SIZE) + 1) / 2 for p in sorted(testset[0].glob("*_CLEAN1_*"))])
    expected = np.sqrt(((x - (1 - x)) ** 2).mean(axis=(1, 2, 3))).mean()
    assert generated["rmse"] == pytest.approx(expected, rel=1e-5)
    assert generated["ssim"] < 0.5


def shop_catalog_csv(testset: tuple[Path, Path], root: Path, drop: str | None = None) -> Path:
    """A shop's catalog as `rtd index build` reads it: the 6 test products and 20 other products (D00..D19)."""
    others = make_lookbook(root / "others", products=20, photos=1, size=SIZE, seed=11)
    rows = [f"{r.product_id},{r.product_image}" for r in load_records(testset[0]).records if r.product_id != drop]
    rows += [f"D{i:02d},{path}" for i, path in enumerate(sorted(others.glob("*_CLEAN1_*")))]
    (root / "catalog.csv").write_text("id,image\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return root / "catalog.csv"


@pytest.mark.parametrize("engine", ["file", pytest.param("milvus-lite", marks=pytest.mark.slow)])
def test_against_a_prebuilt_catalog_ranks_are_read_down_to_the_largest_k(testset: tuple[Path, Path], tmp_path: Path,
                                                                        engine: str) -> None:
    if engine == "milvus-lite":
        pytest.importorskip("pymilvus")
        pytest.importorskip("milvus_lite")
    location = str(tmp_path / "index") if engine == "file" else f"milvus://{tmp_path / 'catalog.db'}/shop"
    art = write_graph_artifacts(tmp_path / "art", "Neg")
    build_index(art, shop_catalog_csv(testset, tmp_path), location)
    report = evaluate(config(testset, art, tmp_path / "rep", catalog=location, query="both", samples=2))
    gallery = report["test_set"]["gallery"]
    assert (gallery["kind"], gallery["products"], gallery["location"]) == ("catalog", 26, location)
    assert report["test_set"]["chance_recall"] == pytest.approx({"1": 1 / 26, "5": 5 / 26, "6": 6 / 26})
    generated, photo = report["results"]
    assert photo["recall"] == {"1": 1.0, "5": 1.0, "6": 1.0} and photo["median_rank"] == 1
    # The negated query ranks its product last of 26: past the 10 ranks read (max of K and the category K).
    assert generated["recall"] == {"1": 0.0, "5": 0.0, "6": 0.0} and generated["by_category"]["(none)"]["10"] == 0.0
    assert generated["median_rank"] is None and generated["mean_rank"] is None
    rows = list(csv.DictReader((tmp_path / "rep" / "queries.csv").open()))
    assert {r["rank_generated"] for r in rows} == {">10"} and {r["rank_photo"] for r in rows} == {"1"}
    shown = report["samples"]["rows"]  # the default kind's grid: generated, its top tiles other products
    assert len(shown) == 2 and all(row["rank"] is None and row["score"] is None for row in shown)
    assert any(pid.startswith("D") for row in shown for pid in row["top"])  # tiles read from the catalog's files
    assert all(row["product"] not in row["top"] for row in shown)
    assert "ranked among the 26 of the catalog" in (tmp_path / "rep" / "report.md").read_text()
    assert Image.open(tmp_path / "rep" / "samples.png").size[0] > 100


def test_a_catalog_without_a_test_product_or_in_another_space_is_refused(testset: tuple[Path, Path],
                                                                        tmp_path: Path) -> None:
    art = write_graph_artifacts(tmp_path / "art", "Identity")
    first = load_records(testset[0]).records[0].product_id
    build_index(art, shop_catalog_csv(testset, tmp_path / "a", drop=first), tmp_path / "a" / "index")
    with pytest.raises(UserError, match=f"1 of the 6 test products are not in it \\(e.g. {first}\\)"):
        evaluate(config(testset, art, tmp_path / "rep", catalog=str(tmp_path / "a" / "index")))
    other = write_graph_artifacts(tmp_path / "other", "Identity")
    graph = onnx.load(str(other / "embedder.onnx"))
    graph.doc_string = "another embedder"  # other bytes, another sha256
    onnx.save(graph, str(other / "embedder.onnx"))
    doc = json.loads((other / "model.json").read_text())
    doc["embedder"]["onnx_sha256"] = sha256_file(other / "embedder.onnx")
    (other / "model.json").write_text(json.dumps(doc))
    build_index(other, shop_catalog_csv(testset, tmp_path / "b"), tmp_path / "b" / "index")
    with pytest.raises(UserError, match="no query of .* is in its space .*another embedder"):
        evaluate(config(testset, art, tmp_path / "rep", catalog=str(tmp_path / "b" / "index")))


def test_photo_query_and_limit(testset: tuple[Path, Path], tmp_path: Path) -> None:
    art = write_graph_artifacts(tmp_path / "art", "Identity")
    (art / "generator.onnx").unlink()  # the artifacts folder is checked whole, even for photo queries
    with pytest.raises(UserError, match="generator.onnx"):
        evaluate(config(testset, art, tmp_path / "rep", query="photo"))
    art = write_graph_artifacts(tmp_path / "art2", "Neg")
    report = evaluate(config(testset, art, tmp_path / "rep", query="photo", limit=4, samples=2))
    assert [r["method"] for r in report["results"]] == ["photo"]
    assert report["test_set"]["queries"] == 4
    rows = list(csv.DictReader((tmp_path / "rep" / "queries.csv").open()))
    assert len({r["product"] for r in rows}) == 4  # --limit spreads over products (round-robin)
    assert "rank_generated" not in rows[0]
    assert Image.open(tmp_path / "rep" / "samples.png").size[1] < 3 * 96 + 40  # 2 rows


def test_without_a_split_every_product_is_evaluated_and_a_person_crop_cuts_every_photo(
        testset: tuple[Path, Path], tmp_path: Path) -> None:
    """A held-out shop needs no split; with crop.json each photo is cut to its person before every kind, as /search
    cuts it (here a constant box: the centre half, so the identity generator no longer returns the product)."""
    art = write_graph_artifacts(tmp_path / "art", "Identity")
    whole = evaluate(EvalConfig(artifacts=art, data=testset[0], split=None, out=tmp_path / "a", ks=(1, 6)))
    t = whole["test_set"]
    assert t["split"] == f"all of {testset[0]}" and t["products"] == 6 and t["queries"] == 18 and t["crop"] is None
    rows = {r["method"]: r for r in whole["results"]}
    assert rows["generated"]["rmse"] < 1e-6 and rows["generated"]["recall"]["1"] == 1.0
    make_crop(art, (0.25, 0.25, 0.75, 0.75), input_size=16)
    cut = evaluate(EvalConfig(artifacts=art, data=testset[0], split=None, out=tmp_path / "b", ks=(1, 6)))
    assert cut["test_set"]["crop"]["input_size"] == 16
    rows = {r["method"]: r for r in cut["results"]}
    assert rows["generated"]["rmse"] > 0.05 and rows["photo"]["rmse"] == rows["generated"]["rmse"]


def test_bad_inputs_are_one_line_errors(testset: tuple[Path, Path], tmp_path: Path) -> None:
    art = write_graph_artifacts(tmp_path / "art", "Identity")
    with pytest.raises(UserError, match="was made from"):
        evaluate(EvalConfig(art, tmp_path, tmp_path / "rep", testset[1]))
    with pytest.raises(UserError, match="--query"):
        evaluate(config(testset, art, tmp_path / "rep", query="street"))
    (art / "embedder.onnx").write_bytes(b"not the exported file")
    with pytest.raises(UserError, match="does not match model.json"):
        evaluate(config(testset, art, tmp_path / "rep"))


def test_cli_eval_and_compare(testset: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    parser = argparse.ArgumentParser()
    eval_cli.add_arguments(parser)
    for op, stages in (("Identity", 3), ("Neg", 1)):
        art = write_graph_artifacts(tmp_path / f"art{stages}", op, stages)
        args = parser.parse_args(["--artifacts", str(art), "--data", str(testset[0]), "--split", str(testset[1]),
                                  "--out", str(tmp_path / f"rep{stages}"), "--k", "6,1", "--batch-size", "5"])
        assert args.k == (1, 6)
        assert eval_cli.run(args) == 0
    assert "queries_per_s" in capsys.readouterr().out
    args = parser.parse_args(["compare", str(tmp_path / "rep3" / "report.json"), str(tmp_path / "rep1"),
                              "--out", str(tmp_path / "cmp")])
    assert eval_cli.run(args) == 0
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert md.count("photo (no generation)") == 1  # one baseline for the shared test set and embedder
    assert "Chance level with a 6-product gallery" in md
    table2 = md.split("Table 2")[1]
    assert table2.index("rtdGAN (N=1)") < table2.index("rtdGAN (N=3)")
    assert "| rtdGAN (N=3) | 0.0000 | 1.0000 | 1.0000 | 1.0000 | avgpool4x4 | 18 |" in md
    assert len(json.loads((tmp_path / "cmp" / "compare.json").read_text())["rows"]) == 3
    assert Image.open(tmp_path / "cmp" / "recall.png").size == (880, 480)
    with pytest.raises(UserError, match="--artifacts"):
        eval_cli.run(parser.parse_args(["--out", str(tmp_path)]))
    with pytest.raises(UserError, match="not a readable report"):
        compare_reports([tmp_path / "nothing.json"], tmp_path / "cmp2")


def test_cli_modules_do_not_import_torch() -> None:
    code = ("import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
            "import rtdgan.training.eval_cli, rtdgan.training.export_cli, rtdgan.training.evaluate, rtdgan.index.search_cli\n"
            "import argparse; p = argparse.ArgumentParser(); rtdgan.training.export_cli.add_arguments(p)\n"
            "print('ok')")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


BLOCK_TORCH = """
import sys
class NoTorch:  # any import of torch or torchvision fails, as where PyTorch is not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
sys.meta_path.insert(0, NoTorch())
from rtdgan.service.cli import main
code = main(sys.argv[1:])
assert not any(m.split(".")[0] in ("torch", "torchvision") for m in sys.modules), "torch was imported"
sys.exit(code)
"""


def test_eval_runs_with_torch_unimportable(testset: tuple[Path, Path], tmp_path: Path) -> None:
    """The `eval` extra (scikit-image, matplotlib; no PyTorch): `rtd eval` and `rtd eval compare` on exported
    artifacts, end to end in a process where `import torch` fails."""
    art = write_graph_artifacts(tmp_path / "art", "Identity")
    out = tmp_path / "rep"
    done = subprocess.run([sys.executable, "-c", BLOCK_TORCH, "eval", "--artifacts", str(art), "--data", str(testset[0]),
                           "--split", str(testset[1]), "--out", str(out), "--k", "1,5", "--bootstrap", "50"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["queries"] == 18
    assert {p.name for p in out.iterdir()} >= {"report.json", "report.md", "queries.csv", "recall.png", "recall.svg",
                                               "samples.png"}
    done = subprocess.run([sys.executable, "-c", BLOCK_TORCH, "eval", "compare", str(out), "--out", str(tmp_path / "cmp")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "cmp" / "recall.svg").is_file()
