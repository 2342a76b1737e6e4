"""Inference backends (index/backends.py) and the parity gate (index/parity.py, `rtd check-backend`) on tiny real
artifacts: OpenVINO against onnxruntime fp32 for every graph, bf16 where the CPU has bf16 units, and a
deliberately perturbed backend that the gate must refuse."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rtdgan.index.errors import UserError
from rtdgan.index.parity import (
    CheckConfig,
    check_backend,
    load_images,
    load_photos,
    parity_path,
    require_parity,
    run_check,
)
from rtdgan.index.runtime import backends as B
from rtdgan.index.runtime.artifacts import read_artifacts
from rtdgan.index.runtime.onnx import OnnxEmbedder, OnnxGenerator, OnnxHead
from tests.service.conftest import Tiny, make_artifacts, make_crop, make_head, make_world

ov = pytest.importorskip("openvino", reason="OpenVINO is the [cpu] extra's optional backend")


def _cpu_has_bf16() -> bool:
    return B.cpu_has_bf16()


NO_BF16 = "this CPU has no bf16 units (OpenVINO's OPTIMIZATION_CAPABILITIES lists no BF16): bf16 cannot run here"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    """A private tiny world (the gate writes parity records into its artifacts)."""
    return make_world(tmp_path_factory.mktemp("backend_world"))


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_openvino_fp32_matches_onnxruntime_for_every_graph(tmp_path: Path) -> None:
    folder = make_head(make_artifacts(tmp_path / "a"), mode="fused")
    openvino = B.make_backend("openvino", "fp32", threads=1)
    assert openvino.describe() == {"backend": "openvino", "precision": "fp32"} and not openvino.is_reference
    rng = np.random.default_rng(0)
    photos = rng.uniform(-1, 1, (5, 3, 16, 16)).astype(np.float32)
    ref_gen, ov_gen = OnnxGenerator(folder / "generator.onnx"), OnnxGenerator(folder / "generator.onnx", backend=openvino)
    assert ov_gen.providers == ["OpenVINO/CPU"] and ov_gen.size == 16
    assert np.abs(ov_gen(photos) - ref_gen(photos)).max() < 1e-5
    ref_emb, ov_emb = OnnxEmbedder(folder / "embedder.onnx"), OnnxEmbedder(folder / "embedder.onnx", backend=openvino)
    assert ov_emb.dim == ref_emb.dim == 8
    assert _cosine(ov_emb(photos), ref_emb(photos)).min() > 0.999
    features = rng.standard_normal((5, 16)).astype(np.float32)
    ref_head = OnnxHead(folder / "head_query.onnx")
    ov_head = OnnxHead(folder / "head_query.onnx", backend=openvino)
    assert ov_head.in_dim == 16
    assert _cosine(ov_head(features), ref_head(features)).min() > 0.999
    with pytest.raises(ValueError, match="takes 16x16"):
        ov_emb(photos[:, :, :8, :8])  # the same input check as on onnxruntime


def test_auto_precision_and_bad_choices() -> None:
    assert B.make_backend().describe() == {"backend": "onnxruntime", "precision": "fp32"}
    assert B.make_backend("onnxruntime", "auto").is_reference  # auto never picks TensorRT fp16 by itself
    assert B.make_backend("openvino", "auto").precision == ("bf16" if _cpu_has_bf16() else "fp32")
    with pytest.raises(UserError, match="unknown backend 'tensorflow'; choose one of onnxruntime, openvino"):
        B.make_backend("tensorflow")
    with pytest.raises(UserError, match="unknown precision 'int4'"):
        B.make_backend("openvino", "int4")
    with pytest.raises(UserError, match="use --backend openvino"):
        B.make_backend("onnxruntime", "bf16")
    with pytest.raises(UserError, match="fp16 is onnxruntime's TensorRT"):
        B.make_backend("openvino", "fp16")


def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTD_BACKEND", "openvino")
    monkeypatch.setenv("RTD_PRECISION", "fp32")
    assert B.from_env().key == "openvino-fp32"
    assert B.from_env("onnxruntime", "auto").key == "onnxruntime-fp32"  # flags win over the environment


@pytest.mark.skipif(not _cpu_has_bf16(), reason=NO_BF16)
def test_openvino_bf16_passes_parity_where_the_cpu_has_bf16(world: Tiny) -> None:
    doc = run_check(CheckConfig(artifacts=world.artifacts, backend="openvino", precision="bf16",
                                photos=world.samples, gallery=world.products))[0]
    assert doc["precision"] == "bf16" and doc["passed"], doc["failures"]


@pytest.mark.skipif(_cpu_has_bf16(), reason="this CPU has bf16 units: an explicit bf16 runs")
def test_explicit_bf16_is_refused_on_a_cpu_without_bf16_units() -> None:
    # OpenVINO 2026.4 accepts the bf16 hint here and silently compiles fp32: we refuse instead of mislabelling.
    with pytest.raises(UserError, match="no bf16 units"):
        B.make_backend("openvino", "bf16")


def test_check_backend_records_a_pass_and_the_gate_accepts_it(world: Tiny, capsys: pytest.CaptureFixture) -> None:
    openvino = B.make_backend("openvino", "fp32")
    with pytest.raises(UserError, match="no recorded parity .*rtd check-backend .*--backend openvino --precision fp32"):
        require_parity(world.artifacts, openvino)
    docs = run_check(CheckConfig(artifacts=world.artifacts, photos=world.samples, gallery=world.products))
    keys = [f"{d['backend']}-{d['precision']}" for d in docs]
    assert "openvino-fp32" in keys and "onnxruntime-fp32" not in keys  # the reference is not checked
    doc = docs[keys.index("openvino-fp32")]
    assert doc["passed"] and doc["figures"]["min_cosine"] > 0.999 and doc["figures"]["generated_max_abs"] < 1e-4
    assert doc["inputs"] == {"photos": 10, "gallery": 10, "k": 5, "photos_from": "../samples",
                             "gallery_from": "../catalog"}  # relative to the artifacts: no path of this machine
    assert "| openvino | fp32 |" in capsys.readouterr().out
    record = json.loads(parity_path(world.artifacts, openvino).read_text())
    assert record == doc and record["engines"]["openvino"] == ov.__version__
    assert require_parity(world.artifacts, openvino)["passed"]


def test_check_backend_measures_the_served_path_with_a_person_crop(world: Tiny, tmp_path: Path) -> None:
    """With a crop the photos are read as the service prepares them (decoded, for the crop stage); the gallery,
    when none is given, is those photos letterboxed to S."""
    cropped = make_crop(Path(shutil.copytree(world.artifacts, tmp_path / "cropped")))
    photos = load_photos(world.samples, read_artifacts(cropped), 6)
    assert isinstance(photos, list) and len(photos) == 6
    docs = run_check(CheckConfig(artifacts=cropped, backend="openvino", precision="fp32", photos=world.samples,
                                 limit=6))
    assert [d["passed"] for d in docs] == [True] and docs[0]["inputs"]["photos"] == docs[0]["inputs"]["gallery"] == 6
    assert require_parity(cropped, B.make_backend("openvino", "fp32"))["passed"]
    assert require_parity(world.artifacts, B.make_backend()) is None  # the reference needs no record


# ---- a deliberately perturbed backend -------------------------------------------------------------------


class NoisyRunner:
    """onnxruntime, with noise added to every embedding (2-D output) and re-normalised: what a broken
    low-precision kernel could do to the vectors while the images still look right."""

    def __init__(self, inner: B.Runner, sigma: float) -> None:
        self.inner, self.sigma = inner, sigma
        self.input_name, self.output_name = inner.input_name, inner.output_name
        self.input_shape, self.output_shape, self.providers = inner.input_shape, inner.output_shape, inner.providers
        self.rng = np.random.default_rng(0)

    def run(self, batch: np.ndarray) -> np.ndarray:
        out = self.inner.run(batch)
        if out.ndim != 2:
            return out
        out = out + self.rng.normal(0, self.sigma, out.shape).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def noisy_kind(sigma: float) -> B.Kind:
    return B.Kind(("fp32",), lambda precision: "fp32",
                  lambda backend, path: NoisyRunner(B.Backend(threads=backend.threads).load(path), sigma))


def test_the_gate_refuses_a_perturbed_backend(world: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(B.KINDS, "noisy", noisy_kind(0.5))
    noisy = B.make_backend("noisy", "fp32")
    photos = load_images(world.samples, 16, 32, "photos")
    doc = check_backend(world.artifacts, noisy, photos, load_images(world.products, 16, 200, "gallery"))
    assert not doc["passed"]
    assert doc["figures"]["generated_max_abs"] == 0.0  # the images are exact: only retrieval shows the damage
    assert any("embedding cosine" in f for f in doc["failures"]), doc["failures"]
    with pytest.raises(UserError, match=r"noisy-fp32 failed its parity check \(embedding cosine .*rtd check-backend"):
        require_parity(world.artifacts, noisy)
    # A record of other graphs (here: another embedder in a copy of the artifacts) counts as missing.
    other = make_artifacts(tmp_path / "other", seed=1)
    shutil.copy(parity_path(world.artifacts, noisy), parity_path(other, noisy))
    with pytest.raises(UserError, match=r"measured on other graphs \(embedder differ\)"):
        require_parity(other, noisy)
    # Tiny noise stays within the thresholds: the gate is about retrieval, not bit-exactness.
    monkeypatch.setitem(B.KINDS, "noisy", noisy_kind(1e-4))
    assert check_backend(world.artifacts, noisy, photos)["passed"]


def test_check_backend_cli_bad_backend_is_one_line(world: Tiny) -> None:
    for args in (["check-backend", "--artifacts", str(world.artifacts), "--backend", "tensorflow"],
                 ["index", "build", "--artifacts", str(world.artifacts), "--catalog", str(world.products),
                  "--out", "/nonexistent/out", "--backend", "tensorflow"]):
        result = subprocess.run([sys.executable, "-m", "rtdgan.service.cli", *args], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 2, result.stderr
        assert "unknown backend 'tensorflow'" in result.stderr and "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("rtd ")  # config line, then the one error line
    result = subprocess.run([sys.executable, "-m", "rtdgan.service.cli", "check-backend", "--artifacts",
                             str(world.artifacts)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "pass --photos" in result.stderr  # the tiny model.json names no data
