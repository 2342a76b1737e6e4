"""The fused query's latency: can the generator's own encoder stand in for the photo's embedding?

The fused query embeds two images (the generated one and the photo) where the frozen protocol embeds one:
+50 % on /search at the demo's size (docs/benchmarks.md). The generator's encoder reads the photo anyway, so
its activations cost nothing extra. This probe pools them (mean and standard deviation over space of each of
the encoder's levels, standardised on the training rows) and trains the head's query side on [generated ‖
encoder] instead of [generated ‖ photo], with the committed demo head's settings (temperature 0.1, E = 256,
linear, 10 epochs, AdamW 1e-3, batch 512), on the features of bench/experiments/head_probe.py's 10,000-product world
(`--root`, its cached features through the committed demo generator and EfficientNet-Lite0 at level 0). It
is scored on that world's validation part (15 % of the training products, seed 0, gallery = those products):
nothing is chosen on a test shop.

    .venv/bin/python bench/experiments/head_probe.py --root /tmp/rtd-head10k --train-products 10000 --train-seed 3300 \\
        --shop-seed 5200 --modes fused          # the world and its cached features, once
    .venv/bin/python bench/experiments/encoder_probe.py --root /tmp/rtd-head10k
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: bench.common

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import say  # noqa: E402
from rtdgan.index.images import preprocess_many  # noqa: E402
from rtdgan.models.head import Projection  # noqa: E402
from rtdgan.training.export import load_generator  # noqa: E402
from rtdgan.training.head import (  # noqa: E402
    FitHeadConfig,
    cached_features,
    info_nce,
    recall,
    training_records,
    validation_split,
)


@torch.no_grad()
def encoder_features(run: Path, photos: list[Path], size: int) -> np.ndarray:
    """(Q, sum of 2 x channels): mean and std over space of every encoder level of the run's generator."""
    module = load_generator(run).module
    while not hasattr(module, "encoder"):
        module = next(module.children())
    out = []
    with ThreadPoolExecutor(2) as pool:
        for start in range(0, len(photos), 256):
            x = torch.from_numpy(np.stack(preprocess_many(pool, photos[start:start + 256], size)))
            levels = []
            for block in module.encoder:
                x = block(x)
                sd = x.std((2, 3)) if x.shape[-1] > 1 else torch.zeros(x.shape[:2])
                levels.append(torch.cat([x.mean((2, 3)), sd], 1))
            out.append(torch.cat(levels, 1).numpy())
    return np.concatenate(out).astype(np.float32)


def fit(train_q: np.ndarray, products: np.ndarray, owner: np.ndarray, val_q: np.ndarray, val_products: np.ndarray,
        val_owner: np.ndarray, epochs: int = 10) -> dict[str, float]:
    """The head's two sides (linear, E = 256) trained with InfoNCE; validation recall after `epochs`."""
    torch.manual_seed(0)
    query, catalog = Projection(train_q.shape[1], 256), Projection(products.shape[1], 256)
    opt = torch.optim.AdamW([*query.parameters(), *catalog.parameters()], lr=1e-3, weight_decay=0.0)
    q, c, o = (torch.from_numpy(np.ascontiguousarray(a)) for a in (train_q, products, owner))
    order = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        query.train(), catalog.train()
        for idx in torch.randperm(len(q), generator=order).split(512):
            loss = info_nce(query(q[idx]), catalog(c), o[idx], 0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
    query.eval(), catalog.eval()
    with torch.no_grad():
        return recall(query(torch.from_numpy(np.ascontiguousarray(val_q))).numpy(), val_owner,
                      catalog(torch.from_numpy(val_products)).numpy())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path("/tmp/rtd-head10k"), help="head_probe.py's root")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    root = a.root
    cfg = FitHeadConfig(artifacts=root / "artifacts", data=root / "train-data", split=root / "split.json")
    records = training_records(cfg)
    feats, _, _ = cached_features(cfg.artifacts, records, root / "head-cache")
    photos = [p for r in records for p in r.photos]
    if len(photos) != len(feats.owner):
        raise SystemExit(f"the cached features skipped photos ({len(feats.owner)} of {len(photos)}): rerun head_probe")
    t = time.perf_counter()
    enc = encoder_features(root / "pretrained-run", photos, 64)
    say(f"encoder features {enc.shape} in {time.perf_counter() - t:.0f} s")
    train_rows, val_rows = validation_split(feats, 0.15, 0)
    train, val = feats.subset(train_rows), feats.subset(val_rows)
    in_train, in_val = np.isin(feats.owner, train_rows), np.isin(feats.owner, val_rows)
    mu, sd = enc[in_train].mean(0), enc[in_train].std(0) + 1e-6
    scale = np.sqrt(enc.shape[1])
    enc_train, enc_val = (enc[in_train] - mu) / sd / scale, (enc[in_val] - mu) / sd / scale
    rows = {"generated": (train.generated, val.generated),
            "generated + encoder (no extra embedding)": (np.hstack([train.generated, enc_train]),
                                                         np.hstack([val.generated, enc_val])),
            "generated + photo (the fused head)": (np.hstack([train.generated, train.photos]),
                                                   np.hstack([val.generated, val.photos]))}
    results = {}
    for name, (tq, vq) in rows.items():
        results[name] = fit(tq, train.products, train.owner, vq, val.products, val.owner)
        say(f"{name}: R@1 {results[name]['1']:.3f} R@10 {results[name]['10']:.3f}")
    print(f"\nvalidation: {len(val.products)} products, {len(val.owner)} photos (gallery = those products)\n")
    print("| query side input | R@1 | R@5 | R@10 |\n|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['1']:.3f} | {r['5']:.3f} | {r['10']:.3f} |")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
