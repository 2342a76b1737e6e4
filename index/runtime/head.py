"""The learned retrieval head at run time: head.json and its two ONNX graphs, read and checked. No torch.

`rtd fit-head` (training/head.py) writes three files beside the artifacts' generator.onnx and embedder.onnx
(in the current version folder, so that a later `rtd export` does not inherit a head trained for its
predecessor):

  head_query.onnx    `features` (B, F) -> `embedding` (B, E): the query side. F is D for a head whose query
                     is the generated image or the photo alone, 2D for "fused" ([generated ‖ photo], in the
                     order head.json's `query.inputs` lists);
  head_catalog.onnx  `features` (B, D) -> `embedding` (B, E): the catalog side (product images);
  head.json          mode, inputs, dims, the sha256 of both graphs and of the generator and embedder the
                     head was trained on, training data, validation recall, parity.

`read_head` refuses a head whose files do not match head.json, or that was trained on another embedder's
features or (when its query uses the generated image) another generator's images. `head_id` is what an
index records: an index embedded through one head's catalog side is refused with any other head, and with
none (index/pipeline.py `check_index`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rtdgan.index.errors import UserError
from rtdgan.index.files import sha256_file
from rtdgan.index.runtime.artifacts import Artifacts
from rtdgan.index.runtime.backends import Backend
from rtdgan.index.runtime.onnx import OnnxHead

HEAD_FORMAT = 1
HEAD_JSON, QUERY_ONNX, CATALOG_ONNX = "head.json", "head_query.onnx", "head_catalog.onnx"
# The query side's input, in this order: embedder features of these images, each (B, D), concatenated.
QUERY_INPUTS: dict[str, tuple[str, ...]] = {"fused": ("generated", "photo"), "generated": ("generated",),
                                            "photo": ("photo",)}


@dataclass(frozen=True)
class HeadInfo:
    """An artifacts folder's head.json whose ONNX files, generator and embedder all match."""

    folder: Path  # the folder holding head.json and both graphs
    doc: dict
    sha256: str  # of head.json: names this fit (it holds both graphs' sha256)

    @property
    def mode(self) -> str:
        return str(self.doc["mode"])

    @property
    def query_inputs(self) -> tuple[str, ...]:
        return tuple(self.doc["query"]["inputs"])

    def sessions(self, providers: Sequence[str] | None = None, threads: int | None = None,
                 backend: Backend | None = None) -> tuple[OnnxHead, OnnxHead]:
        """(query side, catalog side) sessions on `backend` (None: onnxruntime with providers and threads)."""
        return (OnnxHead(self.folder / QUERY_ONNX, providers, threads, backend),
                OnnxHead(self.folder / CATALOG_ONNX, providers, threads, backend))

    def describe(self) -> dict:
        """What an index records and /health/ready shows: mode and identity."""
        return {"mode": self.mode, "sha256": self.sha256, "embedding_dim": self.doc.get("embedding_dim")}


def has_head(artifacts: Artifacts) -> bool:
    return (artifacts.folder / HEAD_JSON).is_file()


def read_head(artifacts: Artifacts) -> HeadInfo:
    """The artifacts' head.json checked against its ONNX files and the artifacts' generator and embedder.

    UserError (one line) when any of them differs: a head only means something on the features it was
    trained on. The generator is checked when the query uses the generated image (modes fused, generated)."""
    folder = artifacts.folder
    path = folder / HEAD_JSON
    if not path.is_file():
        raise UserError(f"{folder} has no {HEAD_JSON}: train a retrieval head with `rtd fit-head`")
    try:
        raw = path.read_bytes()
        doc = json.loads(raw.decode("utf-8"))
        fmt, inputs = doc["format_version"], tuple(doc["query"]["inputs"])
        trained_with = doc["trained_with"]
        if doc["mode"] not in QUERY_INPUTS or inputs != QUERY_INPUTS[doc["mode"]]:
            raise ValueError(f"mode {doc['mode']!r} with query inputs {list(inputs)}")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path}: not a head.json written by `rtd fit-head` ({type(e).__name__}: {e})") from e
    if fmt != HEAD_FORMAT:
        raise UserError(f"{path}: format {fmt}, this code reads {HEAD_FORMAT}; re-run `rtd fit-head`")
    for side, name in (("query", QUERY_ONNX), ("catalog", CATALOG_ONNX)):
        onnx_path = folder / name
        if not onnx_path.is_file():
            raise UserError(f"{folder} has {HEAD_JSON} but no {name}")
        if sha256_file(onnx_path) != doc[side].get("onnx_sha256"):
            raise UserError(f"{onnx_path} does not match {HEAD_JSON} (sha256): a partial copy or another fit")
    generator = artifacts.model["generator"]["onnx_sha256"]
    if "generated" in inputs and trained_with.get("generator_sha256") != generator:
        raise UserError(f"{path}: the head was trained on another generator's images (sha256 "
                        f"{str(trained_with.get('generator_sha256'))[:12]}, artifacts {generator[:12]}); "
                        f"re-run `rtd fit-head`")
    if trained_with.get("embedder_sha256") != artifacts.embedder_sha256:
        raise UserError(f"{path}: the head was trained on another embedder's features (sha256 "
                        f"{str(trained_with.get('embedder_sha256'))[:12]}, artifacts "
                        f"{artifacts.embedder_sha256[:12]}); re-run `rtd fit-head`")
    return HeadInfo(folder, doc, hashlib.sha256(raw).hexdigest())


def query_features(inputs: Sequence[str], features: Mapping[str, np.ndarray]) -> np.ndarray:
    """The query side's input: the features named by `inputs` (head.json's `query.inputs`), concatenated."""
    try:
        parts = [np.asarray(features[name], dtype=np.float32) for name in inputs]
    except KeyError as e:
        raise UserError(f"the head's query needs the {e.args[0]} image's features") from e
    return np.ascontiguousarray(np.concatenate(parts, axis=1))
