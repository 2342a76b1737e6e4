"""`rtd quantize`: NNCF post-training int8 graphs of the embedder (and the generator), calibrated on
real preprocessed photos, written beside the fp32 graphs with int8.json (index/quantize.py describes the
record, what is kept fp32 and why, and how `--precision int8` loads them). Needs nncf and onnx: the train extra.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from rtdgan.index.configs import opt
from rtdgan.index.errors import UserError
from rtdgan.index.files import sha256_file, write_atomic
from rtdgan.index.runtime.quantize import GRAPHS, INT8_FORMAT, INT8_JSON, int8_name, read_record

WEIGHTED = ("Conv", "ConvTranspose", "MatMul", "Gemm")
KEEP_FIRST = 4  # the stem and first block of EfficientNet-Lite0 (measured; docs/benchmarks.md)
KEEP_LAST = 1  # its 1280-channel head conv, whose output is pooled into the embedding
BATCH = 8
NNCF_EXTRA = "pip install 'rtdgan[train]' (nncf and onnx)"


@dataclass(frozen=True)
class QuantizeConfig:
    """`rtd quantize`: its flags are derived from these fields (index/configs.py)."""

    artifacts: Path = opt(help="artifacts folder from `rtd export`; the int8 graphs go into its version folder")
    data: Path = opt(help="calibration images (a folder, searched recursively): training photos, not the "
                          "held-out ones parity or recall is measured on")
    graphs: tuple[str, ...] = opt(("embedder",), "graphs to quantize: embedder, generator")
    limit: int = opt(64, "calibration photos (spread evenly over the folder's sorted files)")
    keep_first: int = opt(KEEP_FIRST, "first weighted layers (Conv, MatMul, Gemm) of each graph left fp32")
    keep_last: int = opt(KEEP_LAST, "last weighted layers of each graph left fp32")


def _nncf():  # noqa: ANN202 - the nncf module, imported only to quantize
    try:
        import nncf
        import onnx  # noqa: F401 - nncf's ONNX backend
    except ImportError as e:
        raise UserError(f"`rtd quantize` needs nncf and onnx, which this install lacks ({e.name}): {NNCF_EXTRA}") from e
    nncf.set_log_level(logging.WARNING)  # its per-layer INFO lines
    return nncf


def kept_fp32(model, first: int, last: int) -> list[str]:  # noqa: ANN001 - an onnx.ModelProto
    """Names of the first `first` and last `last` weighted nodes of the graph (left fp32)."""
    weighted = [n.name for n in model.graph.node if n.op_type in WEIGHTED]
    return list(dict.fromkeys(weighted[:max(0, first)] + (weighted[-last:] if last > 0 else [])))


def quantize_graph(source: Path, samples: np.ndarray, keep_first: int, keep_last: int) -> tuple[bytes, dict]:
    """The int8 QDQ graph of `source` calibrated on `samples` (N, ...) as bytes, and what was done."""
    nncf = _nncf()
    import onnx
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    model = onnx.load(str(source))
    keep = kept_fp32(model, keep_first, keep_last)
    weighted = sum(n.op_type in WEIGHTED for n in model.graph.node)
    if weighted - len(keep) < 1:
        raise UserError(f"{source.name}: nothing left to quantize ({weighted} weighted layers, {len(keep)} kept fp32 "
                        f"by --keep-first/--keep-last)")
    input_name = model.graph.input[0].name
    dataset = nncf.Dataset([{input_name: samples[i:i + 1]} for i in range(len(samples))])
    quantized = nncf.quantize(model, dataset, subset_size=len(samples),
                              ignored_scope=nncf.IgnoredScope(names=keep) if keep else None,
                              advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE))
    return quantized.SerializeToString(), {"weighted_layers": weighted, "kept_fp32": keep}


def _batched(fn, images: np.ndarray) -> np.ndarray:  # noqa: ANN001
    return np.concatenate([fn(images[i:i + BATCH]) for i in range(0, len(images), BATCH)])


def quantize(cfg: QuantizeConfig) -> dict:
    """`rtd quantize`: write the int8 graphs and int8.json into the artifacts' version folder; the record."""
    from rtdgan.index.parity import load_images
    from rtdgan.index.runtime.artifacts import read_artifacts
    from rtdgan.index.runtime.onnx import OnnxGenerator

    unknown = sorted(set(cfg.graphs) - set(GRAPHS))
    if unknown or not cfg.graphs:
        raise UserError(f"--graphs: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(GRAPHS)}")
    data = Path(cfg.data)
    if not data.is_dir():
        raise UserError(f"calibration folder not found: {data} (--data: a folder of training photos)")
    info = read_artifacts(cfg.artifacts)
    _nncf()  # fail before reading images when nncf is missing
    photos = load_images(data, info.size, cfg.limit, "photos", spread=True)
    inputs = {"generator": photos}
    if "embedder" in cfg.graphs:  # what the embedder sees: photos, their generated images, catalog images
        inputs["embedder"] = np.concatenate([photos, _batched(OnnxGenerator(info.folder / "generator.onnx"), photos)])
    old = read_record(info.folder) or {"graphs": {}}
    graphs: dict[str, dict] = {}  # the record lists exactly this run's graphs
    for name in cfg.graphs:
        source = info.folder / f"{name}.onnx"
        print(f"rtd quantize: {name} on {len(inputs[name])} calibration images ...", file=sys.stderr)
        blob, done = quantize_graph(source, inputs[name], cfg.keep_first, cfg.keep_last)
        target = info.folder / int8_name(name)
        write_atomic(target, blob)
        graphs[name] = {"source": source.name, "source_sha256": sha256_file(source), "file": target.name,
                        "sha256": sha256_file(target), **done}
    import nncf
    import onnx

    doc = {"format_version": INT8_FORMAT, "method": "nncf post-training static quantization (ONNX backend): "
           "int8 QDQ, per-channel symmetric weights, overflow fix (7-bit weights)", "graphs": graphs,
           "calibration": {"data": str(data), "photos": len(photos), "spread": True,
                           "embedder_inputs": "photos + fp32 generated images"},
           "tools": {"nncf": nncf.__version__, "onnx": onnx.__version__},
           "quantized_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_atomic(info.folder / INT8_JSON, (json.dumps(doc, indent=1) + "\n").encode())
    for name, entry in old["graphs"].items():  # int8 graphs of an earlier run not asked for now
        if name not in graphs and isinstance(entry, dict) and entry.get("file") == int8_name(name):
            (info.folder / int8_name(name)).unlink(missing_ok=True)
    for name in cfg.graphs:
        g = graphs[name]
        print(f"{name}: {g['file']} sha256 {g['sha256'][:12]}, {g['weighted_layers'] - len(g['kept_fp32'])} of "
              f"{g['weighted_layers']} weighted layers int8")
    print(f"next: rtd check-backend --artifacts {cfg.artifacts} --backend openvino --precision int8 --photos HELD_OUT")
    return doc
