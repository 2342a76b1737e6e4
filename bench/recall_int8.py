"""Recall@K on a held-out LookBook shop through the fused head, per backend (the int8 check): the
catalog (CLEAN1 images) embedded through the head's catalog side, every street photo (CLEAN0) queried through
generator + embedder + head's query side, exactly as index/parity.py's measure does, on the same artifacts.

    .venv/bin/python bench/recall_int8.py --artifacts ARTIFACTS --shop SHOP [--backends onnxruntime-fp32,openvino-int8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, as for every script under bench/

import numpy as np  # noqa: E402

from rtdgan.index.images import preprocess  # noqa: E402
from rtdgan.index.lookbook import LOOKBOOK_RE  # noqa: E402
from rtdgan.index.parity import outputs  # noqa: E402
from rtdgan.index.pipeline import Pipeline  # noqa: E402
from rtdgan.index.runtime.artifacts import read_artifacts  # noqa: E402
from rtdgan.index.runtime.backends import make_backend  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, required=True)
    parser.add_argument("--shop", type=Path, required=True, help="a LookBook folder held out from training")
    parser.add_argument("--backends", default="onnxruntime-fp32,openvino-int8")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    size = read_artifacts(args.artifacts).size
    files = sorted(p for p in args.shop.iterdir() if LOOKBOOK_RE.match(p.name))
    products = [p for p in files if LOOKBOOK_RE.match(p.name).group(2) == "1"]
    photos = [p for p in files if LOOKBOOK_RE.match(p.name).group(2) == "0"]
    catalog_ids = np.array([LOOKBOOK_RE.match(p.name).group(1) for p in products])
    query_ids = np.array([LOOKBOOK_RE.match(p.name).group(1) for p in photos])
    gallery = np.stack([preprocess(p, size) for p in products])
    queries = np.stack([preprocess(p, size) for p in photos])
    print(f"{len(products)} products, {len(photos)} photos", flush=True)
    for key in args.backends.split(","):
        name, precision = key.rsplit("-", 1)
        start = time.perf_counter()
        out = outputs(Pipeline.open(args.artifacts, backend=make_backend(name, precision, threads=args.threads)),
                      queries, gallery)
        ranked = catalog_ids[np.argsort(-(out["query"] @ out["gallery"].T), axis=1)[:, :10]]
        recall = {k: float(np.mean([q in r[:k] for q, r in zip(query_ids, ranked, strict=True)])) for k in (1, 5, 10)}
        print(f"| {key} | " + " | ".join(f"{recall[k]:.4f}" for k in (1, 5, 10)) +
              f" | {time.perf_counter() - start:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
