"""A tiny study for the study tests, made without torch: a LookBook folder and three methods' artifacts.

Each method's generator.onnx is a 1x1 Conv mixing the channels with its own matrix (the identity, the red-blue
swap, a grey mix), so the three methods' images differ and a simulated rater (RMSE against the product image,
which is the photo here) has a known best method: the identity.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rtdgan.index.files import sha256_file
from rtdgan.service.study.study import CreateConfig, Study, create_study
from tests.helpers import random_picture
from tests.service.conftest import SIZE, make_artifacts

MIXES = {
    "identity": np.eye(3, dtype=np.float32),
    "swap": np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], np.float32),
    "grey": np.full((3, 3), 1 / 3, np.float32),
}


def make_method(folder: Path, mix: np.ndarray) -> Path:
    """Artifacts whose generator multiplies each pixel's RGB by `mix` (model.json's sha256 kept in step)."""
    make_artifacts(folder)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["photo", "w"], ["product"])], "tiny_mix",
        [helper.make_tensor_value_info("photo", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("product", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [numpy_helper.from_array(mix.reshape(3, 3, 1, 1), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    (folder / "generator.onnx").write_bytes(model.SerializeToString())
    doc = json.loads((folder / "model.json").read_text())
    doc["generator"]["onnx_sha256"] = sha256_file(folder / "generator.onnx")
    (folder / "model.json").write_text(json.dumps(doc, indent=1))
    onnx.checker.check_model(str(folder / "generator.onnx"))
    return folder


def make_lookbook(folder: Path, products: int = 8, photos: int = 2, seed: int = 0) -> Path:
    """A LookBook folder: per product its image (CLEAN1) and `photos` photos (CLEAN0, the same picture)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for p in range(products):
        picture = random_picture(rng, 32)
        first = p * (photos + 1)
        picture.save(folder / f"PID{p:06d}_CLEAN1_IID{first:06d}.png")
        for k in range(photos):
            picture.save(folder / f"PID{p:06d}_CLEAN0_IID{first + 1 + k:06d}.png")
    return folder


def make_study(root: Path, items: int = 5, seed: int = 0) -> Study:
    """A study of `items` photos and the three MIXES methods, written by `create_study`."""
    methods = tuple(f"{name}={make_method(root / name, mix)}" for name, mix in MIXES.items())
    data = make_lookbook(root / "lookbook")
    return create_study(CreateConfig(out=root / "study", methods=methods, data=data, count=items, seed=seed))
