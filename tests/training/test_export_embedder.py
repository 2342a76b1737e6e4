"""embedder.onnx: export, onnxruntime parity, loading without torch, and a real-feature index end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rtdgan.index.build import build_index
from rtdgan.index.catalog.file import Catalog
from rtdgan.index.files import sha256_file
from rtdgan.index.images import preprocess
from rtdgan.models.embedders import Embedder, EmbedderInfo
from rtdgan.training import export_embedder as export_module
from rtdgan.training.export_embedder import export_embedder
from rtdgan.training.weights import load_embedder

pytestmark = pytest.mark.slow  # exports the real EfficientNet-Lite0 (the module fixture alone takes seconds)

torch.set_num_threads(1)
SIZE = 32
REPO = Path(__file__).resolve().parents[2]

LOAD_WITHOUT_TORCH = """
import sys
import numpy as np
from rtdgan.index.runtime.onnx import OnnxEmbedder
embedder = OnnxEmbedder(sys.argv[1], threads=1)
np.save(sys.argv[3], embedder(np.load(sys.argv[2])))
assert "torch" not in sys.modules, "rtdgan.index.runtime.onnx pulled in torch"
print(embedder.size, embedder.dim, embedder.providers)
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    """EfficientNet-Lite0 exported once at S = 32 with a batch of real preprocessed pictures."""
    from tests.helpers import make_lookbook

    folder = tmp_path_factory.mktemp("export")
    lookbook = make_lookbook(folder / "lookbook", products=6, photos=1)
    sample = np.stack([preprocess(p, SIZE) for p in sorted(lookbook.glob("*_CLEAN1_*"))[:3]])  # (3, 3, S, S)
    embedder, info = load_embedder("efficientnet_lite0")
    fragment = export_embedder(embedder, info, folder / "artifacts" / "embedder.onnx", SIZE, sample)
    return embedder, info, fragment, folder, sample, lookbook


def test_export_writes_the_file_and_model_json_fragment(exported) -> None:
    _, info, fragment, folder, _, _ = exported
    onnx_path = folder / "artifacts" / "embedder.onnx"
    assert fragment == {"backbone": "efficientnet_lite0", "weights_source": info.weights_source,
                        "weights_sha256": info.weights_sha256, "dim": 1280, "input_size": 224, "level": 0,
                        "onnx_sha256": sha256_file(onnx_path)}
    assert [p.name for p in onnx_path.parent.iterdir()] == ["embedder.onnx"]  # no .tmp, no external data


def test_onnx_loads_without_torch_and_matches(exported, tmp_path: Path) -> None:
    embedder, _, _, folder, sample, _ = exported
    batch = np.concatenate([sample, sample[:1] * 0.5])  # another batch size than the export's
    np.save(tmp_path / "in.npy", batch)
    child = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_TORCH, str(folder / "artifacts" / "embedder.onnx"),
         str(tmp_path / "in.npy"), str(tmp_path / "out.npy")],
        capture_output=True, text=True, timeout=120, cwd=REPO)
    assert child.returncode == 0, child.stderr
    assert child.stdout.split()[:2] == [str(SIZE), "1280"]
    got = np.load(tmp_path / "out.npy")
    with torch.no_grad():
        expected = embedder(torch.from_numpy(batch)).numpy()
    assert got.shape == (4, 1280)
    assert np.all((got * expected).sum(1) > 0.9999)


def test_failed_parity_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exported) -> None:
    sample = exported[4]
    # A tiny embedder keeps this export fast; the check and the cleanup do not depend on the backbone.
    embedder = Embedder(nn.Conv2d(3, 8, 1), dim=8, input_size=16, mean=(0.0,) * 3, std=(1.0,) * 3)
    info = EmbedderInfo("tiny", 8, 16, "test", "0" * 64)
    monkeypatch.setattr(export_module, "MIN_PARITY_COSINE", 1.5)  # unreachable: the check must fail
    with pytest.raises(RuntimeError, match="parity failed"):
        export_embedder(embedder, info, tmp_path / "embedder.onnx", SIZE, sample)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="sample"):
        export_embedder(embedder, info, tmp_path / "embedder.onnx", 64, sample)


def test_real_embedder_index_finds_each_product(exported, tmp_path: Path) -> None:
    _, _, fragment, folder, _, lookbook = exported
    artifacts = folder / "artifacts"
    (artifacts / "model.json").write_text(json.dumps({"embedder": fragment, "preprocessing": {"size": SIZE}}))
    summary = build_index(artifacts, lookbook, tmp_path / "index")
    assert summary["count"] == 6 and summary["embedder"]["name"] == "efficientnet_lite0" and summary["dim"] == 1280
    catalog = Catalog.open(tmp_path / "index", expect_embedder_sha256=fragment["onnx_sha256"])
    products = sorted(lookbook.glob("*_CLEAN1_*"))
    with torch.no_grad():
        queries = load_embedder("efficientnet_lite0")[0](torch.from_numpy(np.stack([preprocess(p, SIZE) for p in products])))
    assert [row[0].product_id for row in catalog.search(queries.numpy(), 1)] == [p.name[3:9] for p in products]
