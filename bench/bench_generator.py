"""Generator speed: onnxruntime vs PyTorch eager on this CPU, measured side by side in one run.

For the demo's size (64 px, width 16) and the paper's (256 px, width 64), both rtdGAN with N = 3 and
random weights (speed does not depend on them): latency at batch 1 and throughput at batch 8, with the
same number of CPU threads for both engines. Runs alternate (torch, onnxruntime, torch, ...) so that load
from other processes hits both alike; medians are reported.

    .venv/bin/python bench/bench_generator.py [--threads 2] [--repeats 20]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: bench.common

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import PAPER_STAGES, export_random_generator, machine, median_ms  # noqa: E402
from rtdgan.index.runtime.backends import CPU  # noqa: E402
from rtdgan.index.runtime.onnx import OnnxGenerator  # noqa: E402

CASES = ((64, 16), (256, 64))  # (S, width): the demo's and the paper's generator


def bench_case(size: int, width: int, threads: int, repeats: int, folder: Path) -> dict:
    """Median seconds per call for both engines at batch 1 and batch 8."""
    net = export_random_generator(size, width, folder / f"g{size}.onnx")
    rng = np.random.default_rng(0)
    session = OnnxGenerator(folder / f"g{size}.onnx", providers=[CPU], threads=threads)

    def eager(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(batch)).numpy()

    row = {"size": size, "width": width, "params_m": sum(p.numel() for p in net.parameters()) / 1e6}
    for batch_size in (1, 8):
        batch = rng.uniform(-1, 1, (batch_size, 3, size, size)).astype(np.float32)
        ms = median_ms({"torch": lambda b=batch: eager(b), "onnxruntime": lambda b=batch: session(b)}, repeats)
        row[batch_size] = {k: v / 1000 for k, v in ms.items()}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for both engines")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per engine and batch size")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.repeats} repeats, rtdGAN N = {PAPER_STAGES}, "
          f"{machine()} (other processes slow torch's OpenMP most)")
    print("| S | width | params | torch b1 ms | ort b1 ms | ort speed-up b1 | torch b8 img/s | ort b8 img/s "
          "| ort speed-up b8 |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for size, width in CASES:
            r = bench_case(size, width, args.threads, args.repeats, Path(tmp))
            b1, b8 = r[1], r[8]
            print(f"| {size} | {width} | {r['params_m']:.1f} M | {b1['torch'] * 1e3:.1f} | "
                  f"{b1['onnxruntime'] * 1e3:.1f} | {b1['torch'] / b1['onnxruntime']:.2f}x | {8 / b8['torch']:.1f} | "
                  f"{8 / b8['onnxruntime']:.1f} | {b8['torch'] / b8['onnxruntime']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
