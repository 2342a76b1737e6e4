"""Inference backends side by side in one run: model-only latency and throughput, and parity.

Every backend/precision this machine runs (index/backends.py) on the same .onnx files: onnxruntime fp32 (the
reference), OpenVINO fp32, OpenVINO bf16 (only on a CPU with bf16 units), OpenVINO int8 (the `<graph>.int8.onnx`
files `rtd quantize` wrote into the artifacts; a graph without one is "not measured"), onnxruntime TensorRT
fp16 (only with a GPU). With int8 graphs, one more row runs them on onnxruntime ("onnxruntime-int8 graph", not a
backend the service offers: it shows why). A row this machine cannot run is printed as "not measured" with the
reason. Models:

  - demo size: the generator and embedder of an artifacts folder (`--artifacts`, e.g. the demo's, 64 px, width
    16, EfficientNet-Lite0 at 224), on real photos when `--photos` is given, else uniform noise;
  - paper size: the 256 px, width 64 rtdGAN (N = 3, random weights) exported with `rtd export`'s code
    (bench/common.py `export_random_generator`, as bench/bench_generator.py times it).

Per model and backend: median latency at batch 1, throughput at `--batch` (8; calls alternate between backends, so
load from other processes hits all alike), and against onnxruntime fp32 the max and mean absolute difference
(generator, on [-1, 1]) or the min cosine (embedder). Speed claims are these printed ratios, nothing else.

    .venv/bin/python bench/bench_backends.py --artifacts ARTIFACTS [--photos DIR] [--threads 2] [--repeats 15] [--batch 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: bench.common

import numpy as np  # noqa: E402

from bench.common import export_random_generator, machine, median_ms  # noqa: E402
from rtdgan.index.errors import UserError  # noqa: E402
from rtdgan.index.parity import load_images  # noqa: E402
from rtdgan.index.runtime.artifacts import read_artifacts  # noqa: E402
from rtdgan.index.runtime.backends import KINDS, Backend, make_backend  # noqa: E402
from rtdgan.index.runtime.onnx import OnnxModel  # noqa: E402

WANTED = (("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"),
          ("onnxruntime", "fp16"))
ORT_INT8 = "onnxruntime-int8 graph"
assert all(name in KINDS for name, _ in WANTED)


def backends(threads: int) -> tuple[list[Backend], list[tuple[str, str]]]:
    """The backends this machine runs, and (key, why not) for the others."""
    found, missing = [], []
    for name, precision in WANTED:
        try:
            found.append(make_backend(name, precision, threads=threads, providers=["CPUExecutionProvider"]
                                      if precision == "fp32" and name == "onnxruntime" else None))
        except UserError as e:
            missing.append((f"{name}-{precision}", str(e).split(";")[0].split(": ", 1)[-1][:90]))
    return found, missing


def median_seconds(models: dict[str, OnnxModel], batch: np.ndarray, repeats: int) -> dict[str, float]:
    """Median seconds per call of each model on `batch`, the models taking turns."""
    ms = median_ms({key: (lambda m=model: m(batch)) for key, model in models.items()}, repeats)
    return {key: v / 1000 for key, v in ms.items()}


def load_models(path: Path, chosen: list[Backend]) -> tuple[dict[str, OnnxModel], list[tuple[str, str]]]:
    """The graph on each backend, and (key, why not) where it cannot load (int8: not quantized). With an int8
    sibling, also that graph on onnxruntime (ORT_INT8)."""
    from rtdgan.index.runtime.quantize import int8_graph

    models, missing = {}, []
    for b in chosen:
        try:
            if b.precision == "int8" and int8_graph(path) is None:
                raise UserError(f"{path.name} has no int8 graph (it would run fp32)")
            models[b.key] = OnnxModel(path, backend=b)
        except UserError as e:
            missing.append((b.key, str(e).split(": run")[0][-90:]))
    if "openvino-int8" in models:
        models[ORT_INT8] = OnnxModel(int8_graph(path), backend=chosen[0])  # type: ignore[arg-type]
    return models, missing


def bench_model(label: str, path: Path, chosen: list[Backend], inputs: np.ndarray, repeats: int,
                kind: str, batch: int = 8) -> list[str]:
    """Table rows for one graph on every backend."""
    models, missing = load_models(path, chosen)
    b1 = median_seconds(models, inputs[:1], repeats)
    b8 = median_seconds(models, inputs[:batch], max(3, repeats // 2))
    ref_key = chosen[0].key
    ref = models[ref_key](inputs)
    rows = []
    for key, model in models.items():
        out = model(inputs)
        if kind == "generator":
            diff = np.abs(out - ref)
            parity = f"max {diff.max():.2g}, mean {diff.mean():.2g}" if key != ref_key else "reference"
        else:
            cos = np.sum(out * ref, axis=1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
            parity = f"min cosine {cos.min():.5f}" if key != ref_key else "reference"
        rows.append(f"| {label} | {key} | {b1[key] * 1e3:.1f} | {b1[ref_key] / b1[key]:.2f}x | {batch / b8[key]:.1f} | "
                    f"{b8[ref_key] / b8[key]:.2f}x | {parity} |")
    return rows + [f"| {label} | {key} | not measured | | not measured | | {why} |" for key, why in missing]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, help="demo-size artifacts (generator.onnx, embedder.onnx)")
    parser.add_argument("--photos", type=Path, help="real photos for the demo-size rows (a folder)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per graph, every backend")
    parser.add_argument("--repeats", type=int, default=15, help="timed batch-1 calls per backend (batch 8: half)")
    parser.add_argument("--batch", type=int, default=8, help="batch of the throughput column")
    parser.add_argument("--no-paper", action="store_true", help="skip the 256 px paper-size generator")
    args = parser.parse_args()
    chosen, missing = backends(args.threads)
    engines = {}
    for module in ("onnxruntime", "openvino"):
        try:
            engines[module] = __import__(module).__version__
        except ImportError:
            engines[module] = "not installed"
    print(f"{args.threads} threads, {args.repeats} repeats, {machine()}; "
          f"{', '.join(f'{k} {v}' for k, v in engines.items())}", flush=True)
    rows = [f"| model | backend | batch 1 ms | speed-up b1 | batch {args.batch} img/s | speed-up b{args.batch} | "
            "vs onnxruntime fp32 |",
            "|---|---|---|---|---|---|---|"]
    rng = np.random.default_rng(0)
    if args.artifacts is not None:
        info = read_artifacts(args.artifacts)
        s = info.size
        if args.photos is not None:
            photos = load_images(args.photos, s, 8, "photos", spread=True)
            photos = np.concatenate([photos] * (8 // len(photos) + 1))[:8]
        else:
            photos = rng.uniform(-1, 1, (8, 3, s, s)).astype(np.float32)
        for name in ("generator", "embedder"):
            label = f"generator {s} px (demo)" if name == "generator" else \
                f"embedder {info.model['embedder'].get('backbone')} (demo)"
            new = bench_model(label, info.folder / f"{name}.onnx", chosen, photos, args.repeats, name, args.batch)
            rows += new
            print("\n".join(new), flush=True)
    if not args.no_paper:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "g256.onnx"
            export_random_generator(256, 64, path)  # torch: only for building the paper-size graph
            photos = rng.uniform(-1, 1, (8, 3, 256, 256)).astype(np.float32)
            new = bench_model("generator 256 px w64 (paper)", path, chosen, photos, max(5, args.repeats // 2),
                              "generator", args.batch)
            rows += new
            print("\n".join(new), flush=True)
    for key, why in missing:
        rows.append(f"| all | {key} | not measured | | not measured | | {why} |")
    print("\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
