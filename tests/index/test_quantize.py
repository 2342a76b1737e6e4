"""int8 graphs (training/quantize.py, `rtd quantize`; index/quantize.py) on the tiny real artifacts: NNCF quantizes them beside the
fp32 graphs, `--backend openvino --precision int8` loads them, and the unchanged parity gate passes or refuses
them. Real onnxruntime, OpenVINO and nncf; no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rtdgan.index.errors import UserError
from rtdgan.index.files import sha256_file
from rtdgan.index.parity import CheckConfig, parity_path, require_parity, run_check
from rtdgan.index.runtime import backends as B
from rtdgan.index.runtime.onnx import OnnxEmbedder
from rtdgan.index.runtime.quantize import INT8_JSON, int8_graph
from rtdgan.training.quantize import QuantizeConfig, quantize
from tests.service.conftest import Tiny, make_head, make_world

pytest.importorskip("openvino", reason="int8 runs on OpenVINO, the [cpu] extra's optional backend")
pytest.importorskip("nncf", reason="`rtd quantize` needs nncf (the [train] extra)")

FILES = ("generator.onnx", "embedder.onnx", "model.json", "head.json", "head_query.onnx", "head_catalog.onnx")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    """A private tiny world with a fused head (quantizing writes into its artifacts)."""
    tiny = make_world(tmp_path_factory.mktemp("int8_world"))
    make_head(tiny.artifacts, mode="fused")
    return tiny


def _digests(folder: Path) -> dict[str, str]:
    return {name: sha256_file(folder / name) for name in FILES}


def _config(world: Tiny, **kw) -> QuantizeConfig:  # noqa: ANN003
    return QuantizeConfig(**{"artifacts": world.artifacts, "data": world.samples, "graphs": ("embedder", "generator"),
                             "keep_first": 0, "keep_last": 0, **kw})


def test_quantize_writes_int8_graphs_beside_the_untouched_fp32_ones(world: Tiny) -> None:
    before = _digests(world.artifacts)
    int8 = B.make_backend("openvino", "int8")
    assert int8.key == "openvino-int8" and not int8.is_reference
    with pytest.raises(UserError, match="no int8 graphs in .*run `rtd quantize"):
        OnnxEmbedder(world.artifacts / "embedder.onnx", backend=int8)
    doc = quantize(_config(world))
    assert _digests(world.artifacts) == before  # the fp32 reference is never replaced
    record = json.loads((world.artifacts / INT8_JSON).read_text())
    assert record == doc and set(record["graphs"]) == {"embedder", "generator"}
    for name, entry in record["graphs"].items():
        assert entry["file"] == f"{name}.int8.onnx" and entry["source_sha256"] == before[f"{name}.onnx"]
        assert entry["sha256"] == sha256_file(world.artifacts / entry["file"])
    assert record["calibration"]["photos"] == 10
    # int8 loads the quantized sibling; the head has none and runs fp32.
    assert int8_graph(world.artifacts / "embedder.onnx") == world.artifacts / "embedder.int8.onnx"
    assert int8_graph(world.artifacts / "head_query.onnx") is None
    rng = np.random.default_rng(0)
    photos = rng.uniform(-1, 1, (4, 3, 16, 16)).astype(np.float32)
    ref, got = OnnxEmbedder(world.artifacts / "embedder.onnx"), OnnxEmbedder(world.artifacts / "embedder.onnx", backend=int8)
    cos = np.sum(ref(photos) * got(photos), axis=1)  # unit vectors
    assert got.providers == ["OpenVINO/CPU"] and cos.min() > 0.99 and not np.array_equal(ref(photos), got(photos))


def test_the_gate_passes_int8_and_refuses_stale_or_failing_records(world: Tiny, tmp_path: Path) -> None:
    if not (world.artifacts / INT8_JSON).is_file():
        quantize(_config(world))
    int8 = B.make_backend("openvino", "int8")
    doc = run_check(CheckConfig(artifacts=world.artifacts, backend="openvino", precision="int8",
                                photos=world.samples, gallery=world.products))[0]
    assert doc["passed"], doc["failures"]
    assert doc["artifacts"]["int8_sha256"] == {name: e["sha256"] for name, e in
                                               json.loads((world.artifacts / INT8_JSON).read_text())["graphs"].items()}
    assert require_parity(world.artifacts, int8)["passed"]
    # Unasked, check-backend measures int8 here (it was quantized) besides OpenVINO fp32.
    keys = {f"{d['backend']}-{d['precision']}" for d in run_check(CheckConfig(
        artifacts=world.artifacts, photos=world.samples, gallery=world.products))}
    assert {"openvino-fp32", "openvino-int8"} <= keys
    # Re-quantizing (other calibration: uniform grey pictures, which squeeze every range) makes the record stale...
    grey = tmp_path / "grey"
    grey.mkdir()
    for i in range(4):
        Image.new("RGB", (16, 16), (128 + i, 128, 128)).save(grey / f"g{i}.png")
    quantize(_config(world, data=grey, graphs=("embedder",)))
    assert not (world.artifacts / "generator.int8.onnx").exists()  # the record lists exactly this run's graphs
    with pytest.raises(UserError, match=r"measured on other graphs \(int8 differ\)"):
        require_parity(world.artifacts, int8)
    # ... and the gate refuses the badly calibrated graph, in one line with the measured figures.
    doc = run_check(CheckConfig(artifacts=world.artifacts, backend="openvino", precision="int8",
                                photos=world.samples, gallery=world.products))[0]
    assert not doc["passed"] and any("embedding cosine" in f for f in doc["failures"]), doc["figures"]
    with pytest.raises(UserError, match=r"openvino-int8 failed its parity check \(embedding cosine -?0\.\d+ < 0\.99") as e:
        require_parity(world.artifacts, int8)
    assert "\n" not in str(e.value)
    assert json.loads(parity_path(world.artifacts, int8).read_text())["passed"] is False


def test_bad_inputs_are_one_line_errors(world: Tiny, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="calibration folder not found: .*missing"):
        quantize(_config(world, data=tmp_path / "missing"))
    with pytest.raises(UserError, match="--graphs: unknown head"):
        quantize(_config(world, graphs=("head",)))
    with pytest.raises(UserError, match="nothing left to quantize"):
        quantize(_config(world, graphs=("embedder",), keep_first=1))
    with pytest.raises(UserError, match="for int8 use --backend openvino"):
        B.make_backend("onnxruntime", "int8")
    (tmp_path / "empty").mkdir()
    result = subprocess.run([sys.executable, "-m", "rtdgan.service.cli", "quantize", "--artifacts", str(world.artifacts),
                             "--data", str(tmp_path / "nope")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("rtd quantize: error: calibration folder not found")
