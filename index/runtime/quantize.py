"""int8 graphs beside the fp32 ones: their record (int8.json) and what `RTD_PRECISION=int8` loads.

`rtd quantize` (training/quantize.py) calibrates NNCF's post-training static quantization (its ONNX backend:
per-channel symmetric int8 weights, int8 activations, fast bias correction, and the overflow fix that keeps weights to 7 bits so CPUs
without VNNI, whose u8 x s8 multiply-add saturates in 16 bits, compute the same as the others) on real
preprocessed images from a data folder, and writes `<graph>.int8.onnx` (a QDQ graph) into the artifacts'
version folder beside `<graph>.onnx`, with `int8.json` recording both files' sha256s, the calibration and the
layers kept in fp32. The fp32 graphs are never replaced: they stay the reference that parity is measured
against (index/parity.py), and `rtd export` starts a new version folder without any int8 graphs.

Calibration inputs are what each graph sees in the service: the generator, street photos; the embedder, the
same photos, the fp32 generator's images of them and whatever catalog images the folder holds (LookBook
folders hold both). The first 4 and the last weighted layers (Conv, MatMul, Gemm; `--keep-first/--keep-last`) stay fp32: on
the demo's EfficientNet-Lite0 quantizing the stem and the 1280-channel head conv cost most of the embedding
cosine (docs/benchmarks.md).

At run time `int8_graph(path)` maps an fp32 graph to its int8 sibling (sha256-checked), or None for a graph
that was not quantized (the retrieval head, the person crop, the generator unless asked): those run fp32.
The int8 graphs run on OpenVINO (`--backend openvino --precision int8`, index/backends.py); onnxruntime ran
them slower than fp32 on this project's CPUs. Only quantizing needs nncf and onnx (the `train` extra); this
module needs neither.
"""

from __future__ import annotations

import json
from pathlib import Path

from rtdgan.index.errors import UserError
from rtdgan.index.files import sha256_file

INT8_JSON = "int8.json"
INT8_FORMAT = 1
GRAPHS = ("embedder", "generator")


def int8_name(graph: str) -> str:
    return f"{graph}.int8.onnx"


def read_record(folder: Path) -> dict | None:
    """The version folder's int8.json, or None when nothing was quantized; UserError when unreadable."""
    path = Path(folder) / INT8_JSON
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc.get("graphs"), dict):
            raise TypeError("no 'graphs' object")
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, AttributeError) as e:
        raise UserError(f"{path}: not an int8 record ({type(e).__name__}: {e}); re-run `rtd quantize`") from e
    return doc


def int8_graph(path: Path) -> Path | None:
    """The int8 graph recorded for the fp32 graph `path`, both sha256-checked; None when its folder's int8.json
    does not list it (that graph runs fp32); UserError when there is no int8.json or a file does not match."""
    path = Path(path)
    doc = read_record(path.parent)
    if doc is None:
        raise UserError(f"no int8 graphs in {path.parent}: run `rtd quantize --artifacts ARTIFACTS --data "
                        f"TRAINING_PHOTOS`, then `rtd check-backend --backend openvino --precision int8`")
    entry = next((e for e in doc["graphs"].values() if isinstance(e, dict) and e.get("source") == path.name), None)
    if entry is None:
        return None
    quantized = path.parent / str(entry.get("file"))
    if sha256_file(path) != entry.get("source_sha256"):
        raise UserError(f"{quantized.name} was quantized from another {path.name}: re-run `rtd quantize`")
    if not quantized.is_file() or sha256_file(quantized) != entry.get("sha256"):
        raise UserError(f"{quantized} is missing or does not match {INT8_JSON}: re-run `rtd quantize`")
    return quantized


def int8_identity(folder: Path) -> dict[str, str] | None:
    """{graph: int8 sha256} as recorded (what a parity record of int8 was measured on), or None."""
    doc = read_record(folder)
    if doc is None:
        return None
    return {name: str(e.get("sha256")) for name, e in sorted(doc["graphs"].items()) if isinstance(e, dict)}
