"""Fixtures for the index tests: a tiny embedder.onnx written with onnx.helper (no torch, no weights)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from rtdgan.index.files import sha256_file

TINY_SIZE = 32  # S of the tiny artifacts
TINY_DIM = 48  # 3 channels x 4 x 4 pooled cells


def write_tiny_embedder(path: Path, size: int = TINY_SIZE) -> Path:
    """An embedder.onnx that average-pools (B, 3, S, S) to 4x4 cells and L2-normalises: D = 48."""
    cell = size // 4
    graph = helper.make_graph(
        [
            helper.make_node("AveragePool", ["image"], ["pooled"], kernel_shape=[cell, cell], strides=[cell, cell]),
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
            helper.make_node("LpNormalization", ["flat"], ["embedding"], axis=1, p=2),
        ],
        "tiny_embedder",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", TINY_DIM])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9  # what every onnxruntime >= 1.16 reads
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_artifacts(folder: Path, size: int = TINY_SIZE, model_json: bool = True) -> Path:
    """An artifacts folder with the tiny embedder.onnx and, optionally, a model.json describing it."""
    onnx_path = write_tiny_embedder(folder / "embedder.onnx", size)
    if model_json:
        doc = {"format_version": 1, "preprocessing": {"size": size},
               "embedder": {"backbone": "tiny_avgpool", "weights_source": "none", "weights_sha256": "",
                            "dim": TINY_DIM, "input_size": size, "onnx_sha256": sha256_file(onnx_path)}}
        (folder / "model.json").write_text(json.dumps(doc), encoding="utf-8")
    return folder


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    """Artifacts folder: tiny embedder.onnx + model.json (S = 32)."""
    return write_artifacts(tmp_path / "artifacts")


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """(n, dim) float32 random unit vectors (uniform on the sphere)."""
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)
