"""`rtd fit-head`: a learned retrieval head on top of the frozen embedder, trained and exported.

Reads top to bottom in the order things happen (`fit_head`):

1. **Features.** Every training product's image, and every street photo and its generated image, go
   through the artifacts' own ONNX graphs (`rtdgan.index.pipeline.Pipeline`: the shared preprocessing,
   generator.onnx, embedder.onnx), so the head learns on exactly the features the service computes. They
   are cached in one .npz whose name and stored key are the sha256 of (format, generator sha256, embedder
   sha256, size, every image file's path, size and mtime): a rerun on the same artifacts and data skips
   this step; another generator, embedder, split or an edited image makes a new cache file. When the
   artifacts have a person crop (`rtd fit-crop`, index/crop.py) the photos are cropped by it as the queries
   will be (its sha256 joins the key, and head.json records it): fit the head after the crop.
2. **Validation.** A seeded `--val-fraction` of the training products (with their photos) is held out.
   Each setting of the small grid (temperature x width x hidden) is trained on the rest and scored on the
   held-out products at each of `--epochs` (gallery: the held-out products; queries: their photos); the
   setting and epoch count with the best validation Recall@10 (then Recall@1) win. Test data is never read.
3. **Training.** Symmetric InfoNCE: each query against the *whole* training catalog (all products are
   negatives at every step: a few thousand products fit), and each product of the batch against the
   batch's queries (a product may own several: the mass on all of them counts). AdamW, constant rate.
   With `--refit` (default) the chosen setting is trained again on all training products.
4. **Export.** `head_query.onnx` (`features` (B, F) -> `embedding` (B, E)) and `head_catalog.onnx`
   (`features` (B, D) -> `embedding` (B, E)), each checked against PyTorch with onnxruntime (max abs error,
   per-row cosine, batch vs one by one), then `head.json`, all written atomically into the artifacts
   folder, head.json last. `read_head` refuses a head whose generator (when its query uses the generated
   image) or embedder is not the artifacts' one.

The query features for mode "fused" are [generated ‖ photo] (2D numbers), in the order head.json's
`query.inputs` lists; "generated" and "photo" take one of them (D numbers).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from rtdgan.index.configs import opt, to_json_dict
from rtdgan.index.errors import UserError
from rtdgan.index.files import sha256_file, write_atomic
from rtdgan.index.images import preprocess_many
from rtdgan.index.runtime.artifacts import Artifacts, portable_path, read_artifacts
from rtdgan.index.runtime.backends import CPU
from rtdgan.index.runtime.crop import has_crop, prepare_photos, read_crop
from rtdgan.index.runtime.head import (
    CATALOG_ONNX,
    HEAD_FORMAT,
    HEAD_JSON,
    QUERY_ONNX,
    query_features,
    read_head,
)
from rtdgan.index.runtime.onnx import OnnxHead
from rtdgan.models.head import HeadConfig, RetrievalHead
from rtdgan.training.data import ProductRecord, load_split, synthetic_world
from rtdgan.training.metrics import recall_at_k, true_ranks

FEATURES_FORMAT = 1
OPSET = 18  # as the generator's and the embedder's graphs
KS = (1, 5, 10)
# onnxruntime vs PyTorch, per number of a unit vector: float32 reordering stays near 1e-7.
MAX_PARITY_ABS_ERROR = 1e-4
MIN_PARITY_COSINE = 0.9999  # per row, as training/export_embedder.py
DECODE_THREADS = 4  # PIL decodes with the GIL released

Mode = Literal["fused", "generated", "photo"]


@dataclass(frozen=True)
class FitHeadConfig:
    """`rtd fit-head`: which artifacts and training data, which query, the validation grid."""

    artifacts: Path = opt(help="artifacts folder from `rtd export`; head_query.onnx, head_catalog.onnx and "
                          "head.json are written into it")
    data: Path = opt(help="data folder the split was made from")
    split: Path = opt(help="split file from `rtd data split`: the head trains on its train part only")
    mode: Mode = opt("fused", "query side input: fused = [generated image | photo] features, or one of them")
    seed: int = opt(0, "seed of the validation split, the initialisation and the batch order")
    val_fraction: float = opt(0.15, "share of the training products held out to choose the settings")
    temperatures: tuple[float, ...] = opt((0.05, 0.1), "InfoNCE temperatures to try")
    widths: tuple[int, ...] = opt((256,), "shared-space dims E to try")
    hidden: tuple[int, ...] = opt((0,), "hidden widths to try: 0 = one Linear per side, H > 0 = Linear-GELU-Linear")
    epochs: tuple[int, ...] = opt((3, 6, 10), "epoch counts to score on validation (one run to the largest)")
    lr: float = opt(1e-3, "AdamW learning rate")
    weight_decay: float = opt(0.0, "AdamW (decoupled) weight decay")
    dropout: float = opt(0.0, "dropout on the input features while training")
    batch_size: int = opt(512, "query photos per step (negatives: the whole training catalog)")
    refit: bool = opt(True, "after choosing, train the chosen setting again on all training products")
    cache: Path | None = opt(None, "folder of the feature cache (default: head-cache/ beside the split file)")
    embed_batch: int = opt(64, "images per onnxruntime call while extracting features")
    threads: int | None = opt(None, "CPU threads for onnxruntime and torch (default: theirs)")
    check_backends: bool = opt(True, "once written, run the backend parity gate (`rtd check-backend`) on every "
                                     "backend this machine runs besides onnxruntime fp32 (the head changed the graphs)")
    # Fine-tuning (training/finetune.py): the embedder's last stages trained with the head.
    tune_blocks: int = opt(0, "0: the embedder stays frozen; N > 0: train its last N stages with the head (1 = the "
                           "1x1 feature conv, 2 = it and the last MBConv block, ...; EfficientNet-Lite only) and "
                           "publish the fine-tuned embedder and head as a new artifacts version", metavar="N")
    embed_input_size: int | None = opt(None, "with --tune-blocks: the side the fine-tuned embedder resizes its input "
                                       "to (a multiple of 32; default: the artifacts' embedder's)")
    tune_boundary: int | None = opt(None, "with --tune-blocks: cache the activations this many stages from the output "
                                    "(>= --tune-blocks; the stages between run frozen each epoch): one cache serves "
                                    "every --tune-blocks up to it (default: --tune-blocks)", metavar="M")
    tune_lr: float = opt(1e-4, "with --tune-blocks: AdamW learning rate of the embedder's trained stages")
    tune_head_lr: float = opt(1e-4, "with --tune-blocks: AdamW learning rate of the head while the stages train")
    tune_epochs: int = opt(10, "with --tune-blocks: most epochs of joint training (each: every product once)")
    tune_batch: int = opt(128, "with --tune-blocks: products per step (negatives: the whole training catalog)")
    tune_minutes: float | None = opt(None, "with --tune-blocks: stop joint training after the epoch that passes "
                                     "this many minutes")
    patience: int = opt(3, "with --tune-blocks: stop when validation Recall@1 has not improved for this many epochs")

    def __post_init__(self) -> None:
        if self.mode not in ("fused", "generated", "photo"):
            raise UserError(f"--mode must be fused, generated or photo, got {self.mode!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise UserError(f"--val-fraction must be between 0 and 1 (exclusive), got {self.val_fraction}")
        for name, values, low in (("temperatures", self.temperatures, 0.0), ("widths", self.widths, 0),
                                  ("epochs", self.epochs, 0)):
            if not values or min(values) <= low:
                raise UserError(f"--{name} needs positive values, got {','.join(map(str, values)) or 'none'}")
        if not self.hidden or min(self.hidden) < 0:
            raise UserError(f"--hidden needs values >= 0, got {','.join(map(str, self.hidden)) or 'none'}")
        if self.lr <= 0 or self.weight_decay < 0 or self.batch_size < 1 or self.embed_batch < 1:
            raise UserError("--lr must be > 0, --weight-decay >= 0, --batch-size and --embed-batch >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads must be >= 1, got {self.threads}")
        if self.tune_blocks < 0 or self.tune_epochs < 1 or self.tune_batch < 2 or self.patience < 1:
            raise UserError("--tune-blocks must be >= 0, --tune-epochs and --patience >= 1, --tune-batch >= 2")
        if self.tune_lr <= 0 or self.tune_head_lr <= 0 or (self.tune_minutes is not None and self.tune_minutes <= 0):
            raise UserError("--tune-lr and --tune-head-lr must be > 0, --tune-minutes > 0")
        if self.tune_boundary is not None and self.tune_boundary < self.tune_blocks:
            raise UserError(f"--tune-boundary must be >= --tune-blocks ({self.tune_blocks}), got {self.tune_boundary}")
        if self.embed_input_size is not None and not self.tune_blocks:
            raise UserError("--embed-input-size needs --tune-blocks (without it the artifacts' embedder serves "
                            "as exported: `rtd export --embed-input-size`)")


def say(text: str) -> None:
    print(f"rtd fit-head: {text}", file=sys.stderr, flush=True)


# ---- 1. features through the artifacts' own graphs, cached --------------------------------------------

@dataclass(frozen=True)
class Features:
    """Embedder features of a set of products and their photos (rows are unit vectors, float32)."""

    product_ids: np.ndarray  # (P,) str
    products: np.ndarray  # (P, D): the product (catalog) images
    owner: np.ndarray  # (Q,) int64: the row of `products` each photo belongs to
    photos: np.ndarray  # (Q, D): the street photos
    generated: np.ndarray  # (Q, D): the generator's images of those photos

    @property
    def dim(self) -> int:
        return int(self.products.shape[1])

    def query(self, inputs: Sequence[str]) -> np.ndarray:
        """(Q, len(inputs) * D): the named query features side by side, in that order (head.json's)."""
        return query_features(inputs, {"generated": self.generated, "photo": self.photos})

    def subset(self, rows: np.ndarray) -> Features:
        """The products at `rows` (indices into `products`) with their photos, renumbered."""
        rows = np.asarray(rows, dtype=np.int64)
        new = np.full(len(self.products), -1, np.int64)
        new[rows] = np.arange(len(rows))
        keep = new[self.owner] >= 0
        return Features(self.product_ids[rows], self.products[rows], new[self.owner[keep]], self.photos[keep],
                        self.generated[keep])


def features_key(artifacts: Artifacts, records: Sequence[ProductRecord], crop: bool = True,
                 encoder: dict | None = None) -> str:
    """sha256 of what the features depend on: both graphs, the size, the person crop if used, the encoder that
    replaces the embedder's graph (fine-tuning's trunk) if any, every image file (path, size, mtime)."""
    what = {"format": FEATURES_FORMAT, "generator": artifacts.model["generator"]["onnx_sha256"],
            "embedder": artifacts.embedder_sha256, "size": artifacts.size}
    if encoder is not None:  # it replaces the embedder's graph, which then plays no part in the features
        del what["embedder"]
        what["encoder"] = encoder
    if crop and has_crop(artifacts):  # only then: caches of artifacts without a crop keep their key
        what["crop"] = read_crop(artifacts).sha256
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode())
    for r in records:
        for path in (r.product_image, *r.photos):
            try:
                st = Path(path).stat()
                stamp = f"{st.st_size}\t{st.st_mtime_ns}"
            except OSError:
                stamp = "missing"
            digest.update(f"{r.product_id}\t{path}\t{stamp}\n".encode())
    return digest.hexdigest()


def extract_features(artifacts: Path, records: Sequence[ProductRecord], *, batch: int = 64,
                     threads: int | None = None, desc: str = "features", crop: bool = True,
                     encode: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[Features, list[str]]:
    """Product, photo and generated-image features of `records` through the artifacts' pipeline; the skips.

    The photos take the served query's path (`Pipeline.features` of a fused query: the person crop when the
    artifacts have one, unless `crop=False`, then generator and embedder); the product images are only embedded.
    The features are the embedder's, before any head (a head already in the artifacts is not used). With
    `encode`, it replaces the embedder: (B, 3, S, S) images -> (B, ...) arrays, kept in the dtype it returns (the
    fine-tuning's frozen trunk, training/finetune.py). An unreadable product image drops its product; an
    unreadable photo is skipped; both are reported."""
    from rtdgan.index.pipeline import Pipeline

    pipeline = Pipeline.open(artifacts, threads=threads, crop=crop, head=False)
    size = pipeline.size

    ids, products, owner, photos, generated, skipped = [], [], [], [], [], []
    total = sum(1 + len(r.photos) for r in records)
    with ThreadPoolExecutor(DECODE_THREADS) as pool, \
            tqdm(total=total, desc=desc, unit="image", dynamic_ncols=True, file=sys.stderr) as bar:
        for first in range(0, len(records), batch):
            chunk = records[first:first + batch]
            arrays = preprocess_many(pool, [r.product_image for r in chunk], size)
            good = [(r, a) for r, a in zip(chunk, arrays, strict=True) if isinstance(a, np.ndarray)]
            skipped += [f"product {r.product_id}: {a}" for r, a in zip(chunk, arrays, strict=True) if isinstance(a, str)]
            bar.update(len(chunk))
            if not good:
                continue
            base = len(ids)
            ids += [r.product_id for r, _ in good]
            images = np.stack([a for _, a in good])
            products.append(pipeline.embed(images) if encode is None else encode(images))  # (b, D)
            queue = [(base + i, p) for i, (r, _) in enumerate(good) for p in r.photos]
            bar.update(sum(len(r.photos) for r, a in zip(chunk, arrays, strict=True) if isinstance(a, str)))
            for start in range(0, len(queue), batch):
                part = queue[start:start + batch]
                pics = prepare_photos(pool, [p for _, p in part], size, pipeline.cropper is not None)
                skipped += [p for p in pics if isinstance(p, str)]
                kept = [(row, a) for (row, _), a in zip(part, pics, strict=True) if not isinstance(a, str)]
                bar.update(len(part))
                if not kept:
                    continue
                owner += [row for row, _ in kept]
                if encode is None:
                    found = pipeline.features(pipeline.batch([a for _, a in kept]), "fused")
                    photos.append(found.features["photo"])
                    generated.append(found.features["generated"])
                else:  # the served path up to the embedder: crop, generate
                    (seen, made), _ = pipeline.run(pipeline.generation_plan(pipeline.batch([a for _, a in kept])))
                    photos.append(encode(seen))
                    generated.append(encode(made))
    if not ids:
        raise UserError(f"none of the {len(records)} product images could be read")
    if not owner:
        raise UserError(f"none of the photos of the {len(records)} products could be read")
    dtype = np.float32 if encode is None else None  # an encoder's arrays keep its dtype (float16 activations)
    feats = Features(np.array(ids, dtype=str), np.asarray(np.concatenate(products), dtype=dtype),
                     np.array(owner, dtype=np.int64), np.asarray(np.concatenate(photos), dtype=dtype),
                     np.asarray(np.concatenate(generated), dtype=dtype))
    return feats, skipped


def cached_features(artifacts: Path, records: Sequence[ProductRecord], cache: Path, *, batch: int = 64,
                    threads: int | None = None, desc: str = "features", crop: bool = True,
                    encode: Callable[[np.ndarray], np.ndarray] | None = None,
                    encoder: dict | None = None) -> tuple[Features, Path, bool]:
    """`extract_features` through the cache folder: (features, the cache file, whether it was reused). With
    `encode`, `encoder` describes it (it joins the cache key)."""
    if (encode is None) != (encoder is None):
        raise ValueError("encode and encoder come together")
    info = read_artifacts(artifacts)
    key = features_key(info, records, crop, encoder)
    path = Path(cache) / f"features-{key[:16]}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["key"]) == key:
                    feats = Features(z["product_ids"], z["products"], z["owner"], z["photos"], z["generated"])
                    return feats, path, True
        except (OSError, ValueError, KeyError) as e:  # a damaged cache file: extract again
            say(f"cache {path} unreadable ({type(e).__name__}): extracting again")
    start = time.perf_counter()
    feats, skipped = extract_features(artifacts, records, batch=batch, threads=threads, desc=desc, crop=crop,
                                      encode=encode)
    for line in skipped[:10]:
        say(f"skipped {line}")
    if len(skipped) > 10:
        say(f"... and {len(skipped) - 10} more skipped")
    meta = {"format": FEATURES_FORMAT, "generator_sha256": info.model["generator"]["onnx_sha256"],
            "embedder_sha256": info.embedder_sha256, "products": len(feats.products), "photos": len(feats.owner),
            "skipped": skipped, "seconds": round(time.perf_counter() - start, 1)}
    buffer = io.BytesIO()
    np.savez(buffer, key=np.array(key), meta=np.array(json.dumps(meta)), product_ids=feats.product_ids,
             products=feats.products, owner=feats.owner, photos=feats.photos, generated=feats.generated)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buffer.getvalue())
    say(f"features: {len(feats.products)} products, {len(feats.owner)} photos in {meta['seconds']} s -> {path}")
    return feats, path, False


# ---- 2. + 3. validation split, InfoNCE training, recall ----------------------------------------------

def validation_split(feats: Features, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows) of `feats.products`: a seeded shuffle by product."""
    n = len(feats.products)
    n_val = min(max(2, round(n * fraction)), n - 2)
    if n < 4:
        raise UserError(f"need at least 4 training products to hold some out for validation, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def recall(queries: np.ndarray, owner: np.ndarray, catalog: np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
    """Recall@K of (Q, E) query vectors against a (P, E) gallery; owner (Q,) is each query's true row."""
    ranks = true_ranks(np.asarray(queries, np.float32) @ np.asarray(catalog, np.float32).T, owner)
    return {str(k): round(v, 4) for k, v in recall_at_k(ranks, ks).items()}


def frozen_recall(feats: Features, inputs: Sequence[str]) -> dict[str, float]:
    """The untrained baseline: cosine of the raw features (a fused query sums its parts' cosines)."""
    catalog = np.concatenate([feats.products] * len(inputs), axis=1)
    return recall(feats.query(inputs), feats.owner, catalog)


def info_nce(queries: torch.Tensor, catalog: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE: (B, E) queries against the whole (P, E) catalog, and each of the batch's products
    against the batch's queries (all of that product's queries together are its positive). target (B,) indexes
    `catalog`."""
    logits = queries @ catalog.T / temperature  # (B, P)
    to_catalog = F.cross_entropy(logits, target)
    products, inverse = torch.unique(target, return_inverse=True)  # (U,), (B,)
    back = logits.T[products]  # (U, B): the same dot products, read the other way
    positive = inverse[None, :] == torch.arange(len(products))[:, None]  # (U, B)
    # -log of the probability mass on the product's own photos: 0 when they all outrank every other photo.
    to_queries = -torch.logsumexp(F.log_softmax(back, dim=1).masked_fill(~positive, float("-inf")), dim=1)
    return (to_catalog + to_queries.mean()) / 2


@dataclass(frozen=True)
class Setting:
    """One point of the grid."""

    temperature: float
    out_dim: int
    hidden: int


@torch.no_grad()
def embed_sides(head: RetrievalHead, queries: np.ndarray, catalog: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sides of a trained head over numpy features (eval mode)."""
    head.eval()
    q, c = head(torch.from_numpy(queries), torch.from_numpy(catalog))
    return q.numpy(), c.numpy()


def train_head(train: Features, head_cfg: HeadConfig, setting: Setting, epochs: Sequence[int], *, lr: float,
               weight_decay: float, batch_size: int, seed: int, val: Features | None = None,
               report: Callable[[int, float, dict | None], None] | None = None,
               ) -> tuple[RetrievalHead, dict[int, tuple[dict | None, dict]]]:
    """Train to max(epochs); at each epoch in `epochs` score `val` (if given) and keep a copy of the weights.

    Returns the head (last epoch) and {epoch: (validation recall or None, state_dict)}."""
    torch.manual_seed(seed)
    head = RetrievalHead(head_cfg)
    inputs = head_cfg.query_inputs
    queries = torch.from_numpy(train.query(inputs))  # (Q, F)
    catalog = torch.from_numpy(np.ascontiguousarray(train.products))  # (P, D)
    owner = torch.from_numpy(train.owner)  # (Q,)
    val_q = val.query(inputs) if val is not None else None
    optimiser = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    order = torch.Generator().manual_seed(seed)
    keep, wanted = {}, set(epochs)
    for epoch in range(1, max(epochs) + 1):
        head.train()
        total, steps = 0.0, 0
        for idx in torch.randperm(len(queries), generator=order).split(batch_size):
            q, c = head(queries[idx], catalog)
            loss = info_nce(q, c, owner[idx], setting.temperature)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total, steps = total + loss.item(), steps + 1
        if epoch in wanted:
            scores = None
            if val is not None:
                assert val_q is not None
                scores = recall(*_val_vectors(head, val_q, val), ks=KS)
            keep[epoch] = (scores, copy.deepcopy(head.state_dict()))
            if report is not None:
                report(epoch, total / max(steps, 1), scores)
    return head, keep


def _val_vectors(head: RetrievalHead, val_q: np.ndarray, val: Features) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    q, c = embed_sides(head, val_q, val.products)
    return q, val.owner, c


def _better(a: dict, b: dict | None) -> bool:
    """Validation Recall@10, then Recall@1, strictly higher (the first setting wins ties)."""
    return b is None or (a["10"], a["1"]) > (b["10"], b["1"])


# ---- 4. export, checked -------------------------------------------------------------------------------

def export_side(module: torch.nn.Module, sample: np.ndarray) -> tuple[bytes, dict[str, float]]:
    """One side as ONNX bytes (`features` -> `embedding`, dynamic batch), checked with onnxruntime."""
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    if sample.ndim != 2 or len(sample) < 2:
        raise ValueError(f"sample must be a (B >= 2, F) batch, got {sample.shape}")
    module = copy.deepcopy(module).eval().cpu()
    x = torch.from_numpy(sample)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "side.onnx"
        # The exporter reports its progress on stdout, which stays for results: it goes to stderr instead.
        with torch.no_grad(), contextlib.redirect_stdout(sys.stderr):
            expected = module(x).numpy()  # (B, E)
            torch.onnx.export(module, (x,), str(path), input_names=["features"], output_names=["embedding"],
                              dynamic_shapes={"features": {0: torch.export.Dim("batch", min=1)}},
                              opset_version=OPSET, dynamo=True, external_data=False, verbose=False, optimize=False)
        session = OnnxHead(path, providers=[CPU])
        got = session(sample)
        alone = np.concatenate([session(sample[i:i + 1]) for i in range(min(len(sample), 8))])
        data = path.read_bytes()
    if got.shape != expected.shape:
        raise UserError(f"head ONNX outputs {got.shape}, PyTorch {expected.shape}: export refused")
    abs_error = float(np.abs(got - expected).max())
    batch_error = float(np.abs(got[:len(alone)] - alone).max())
    cosine = float(((got * expected).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))).min())
    # `not x <= t` is also true for NaN: NaN weights are refused, not waved through.
    if not (abs_error <= MAX_PARITY_ABS_ERROR and batch_error <= MAX_PARITY_ABS_ERROR and cosine > MIN_PARITY_COSINE):
        raise UserError(f"head parity failed: max |onnx - torch| {abs_error:.3g}, batch vs alone {batch_error:.3g} "
                        f"(limit {MAX_PARITY_ABS_ERROR}), min cosine {cosine:.6f} (limit {MIN_PARITY_COSINE}); "
                        f"nothing written")
    return data, {"max_abs_error": abs_error, "batch_max_abs_error": batch_error, "min_cosine": cosine,
                  "rows": len(sample)}


def export_head(head: RetrievalHead, folder: Path, query_sample: np.ndarray, catalog_sample: np.ndarray,
                doc: dict) -> dict:
    """Both sides checked, then head_query.onnx, head_catalog.onnx and (last) head.json, each atomically."""
    query_bytes, query_parity = export_side(head.query, query_sample)
    catalog_bytes, catalog_parity = export_side(head.catalog, catalog_sample)
    folder = Path(folder)
    write_atomic(folder / QUERY_ONNX, query_bytes)
    write_atomic(folder / CATALOG_ONNX, catalog_bytes)
    doc = copy.deepcopy(doc)
    doc["query"] |= {"onnx": QUERY_ONNX, "onnx_sha256": sha256_file(folder / QUERY_ONNX)}
    doc["catalog"] |= {"onnx": CATALOG_ONNX, "onnx_sha256": sha256_file(folder / CATALOG_ONNX)}
    doc["parity"] = {"query": query_parity, "catalog": catalog_parity, "max_abs_error_allowed": MAX_PARITY_ABS_ERROR,
                     "min_cosine_required": MIN_PARITY_COSINE}
    write_atomic(folder / HEAD_JSON, (json.dumps(doc, indent=1) + "\n").encode("utf-8"))
    return doc


# ---- the job -----------------------------------------------------------------------------------------

def training_records(cfg: FitHeadConfig) -> list[ProductRecord]:
    """The split's train part (UserError when the split is of another data folder or empty)."""
    split = load_split(cfg.split)
    if split.data.resolve() != Path(cfg.data).resolve():
        raise UserError(f"{cfg.split} was made from {split.data}, not from --data {cfg.data}")
    if len(split.train) < 4:
        raise UserError(f"{cfg.split}: the train split has {len(split.train)} products; the head needs at least 4")
    return split.train


@dataclass(frozen=True)
class FittedHead:
    """A trained head before export: the module, head.json's content so far (no ONNX sha256 or parity yet) and
    feature samples for the parity check."""

    head: RetrievalHead
    doc: dict
    query_sample: np.ndarray  # (B, F)
    catalog_sample: np.ndarray  # (B, D)


def fit_head(cfg: FitHeadConfig) -> dict:
    """Features (cached) -> grid on validation -> refit -> export into cfg.artifacts; returns head.json. (With
    --tune-blocks the job is training/finetune.py's `fit_tuned`.)"""
    if cfg.tune_blocks:
        raise ValueError("fit_head trains the head on the frozen embedder; --tune-blocks is fit_tuned's")
    start = time.perf_counter()
    fitted = train_fitted_head(cfg)
    art = read_artifacts(cfg.artifacts)
    doc = export_head(fitted.head, art.folder, fitted.query_sample, fitted.catalog_sample, fitted.doc)
    read_head(art)  # what was written reads back
    parity = max(doc["parity"]["query"]["max_abs_error"], doc["parity"]["catalog"]["max_abs_error"])
    say(f"wrote {QUERY_ONNX}, {CATALOG_ONNX}, {HEAD_JSON} to {art.folder} in {time.perf_counter() - start:.0f} s "
        f"(parity: max |onnx - torch| {parity:.1e})")
    gate_written(cfg)
    return doc


def gate_written(cfg: FitHeadConfig) -> None:
    """With cfg.check_backends: the backend parity gate on the graphs just written (the records measured before
    them are stale now, index/parity.py), on a few of the training photos."""
    if not cfg.check_backends:
        return
    from rtdgan.index.parity import GATE_PHOTOS, gate_after_write

    art = read_artifacts(cfg.artifacts)
    records = training_records(cfg)
    paths = [r.photos[0] for r in records[:: max(1, len(records) // GATE_PHOTOS)] if r.photos][:GATE_PHOTOS]
    crop = has_crop(art)  # the gate measures the served path: decoded photos for the crop stage when there is one
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        photos = [a for a in prepare_photos(pool, paths, art.size, crop) if not isinstance(a, str)]
    if photos:  # the features were read from these files: a corrupt one here is rare
        gate_after_write(cfg.artifacts, photos if crop else np.stack(photos), str(cfg.data), "rtd fit-head",
                         threads=cfg.threads)


def train_fitted_head(cfg: FitHeadConfig, found: tuple[Features, Path, bool] | None = None) -> FittedHead:
    """`fit_head` up to the export: features (cached) -> grid on validation -> refit; nothing written but the cache.
    `found`: (features, their cache file, reused) computed by the caller (fine-tuning's frozen tail)."""
    start = time.perf_counter()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    art = read_artifacts(cfg.artifacts)  # before the long steps: a bad folder fails at once
    records = training_records(cfg)
    cache = Path(cfg.cache) if cfg.cache is not None else Path(cfg.split).resolve().parent / "head-cache"
    feats, cache_file, reused = found or cached_features(cfg.artifacts, records, cache, batch=cfg.embed_batch,
                                                         threads=cfg.threads, desc="fit-head features")
    t_features = time.perf_counter() - start
    say(f"features {'reused from' if reused else 'cached in'} {cache_file} ({len(feats.products)} products, "
        f"{len(feats.owner)} photos, D={feats.dim}; {t_features:.1f} s)")

    train_rows, val_rows = validation_split(feats, cfg.val_fraction, cfg.seed)
    train, val = feats.subset(train_rows), feats.subset(val_rows)
    if len(val.owner) == 0:
        raise UserError("the validation products have no readable photo; use a larger --val-fraction")
    inputs = HeadConfig(mode=cfg.mode, dim=feats.dim).query_inputs
    frozen = {name: frozen_recall(val, (name,)) for name in ("generated", "photo")}
    say(f"validation: {len(val.products)} products, {len(val.owner)} photos (training on {len(train.products)}); "
        f"frozen features: generated R@1 {frozen['generated']['1']:.3f} R@10 {frozen['generated']['10']:.3f}, "
        f"photo R@1 {frozen['photo']['1']:.3f} R@10 {frozen['photo']['10']:.3f}")

    grid = [Setting(t, w, h) for h in cfg.hidden for w in cfg.widths for t in cfg.temperatures]
    epochs = tuple(sorted(set(cfg.epochs)))
    results: list[dict] = []
    best: dict | None = None
    t_grid = time.perf_counter()
    for i, setting in enumerate(grid, 1):
        t0 = time.perf_counter()
        head_cfg = HeadConfig(mode=cfg.mode, dim=feats.dim, out_dim=setting.out_dim, hidden=setting.hidden,
                              dropout=cfg.dropout)

        def report(epoch: int, loss: float, scores: dict | None, setting: Setting = setting, t0: float = t0,
                   i: int = i) -> None:
            assert scores is not None
            say(f"[{i}/{len(grid)}] temperature {setting.temperature:g}, width {setting.out_dim}, hidden "
                f"{setting.hidden}, epoch {epoch}: loss {loss:.3f}, validation R@1 {scores['1']:.3f} "
                f"R@10 {scores['10']:.3f} ({time.perf_counter() - t0:.0f} s)")

        _, kept = train_head(train, head_cfg, setting, epochs, lr=cfg.lr, weight_decay=cfg.weight_decay,
                             batch_size=cfg.batch_size, seed=cfg.seed, val=val, report=report)
        for epoch, (scores, _) in kept.items():
            assert scores is not None
            row = asdict(setting) | {"epochs": epoch, "recall": scores}
            results.append(row)
            if _better(scores, best["recall"] if best else None):
                best = row
    assert best is not None
    chosen = Setting(best["temperature"], best["out_dim"], best["hidden"])
    say(f"chosen: temperature {chosen.temperature:g}, width {chosen.out_dim}, hidden {chosen.hidden}, "
        f"{best['epochs']} epochs (validation R@1 {best['recall']['1']:.3f} R@10 {best['recall']['10']:.3f}; "
        f"grid {time.perf_counter() - t_grid:.0f} s)")

    head_cfg = HeadConfig(mode=cfg.mode, dim=feats.dim, out_dim=chosen.out_dim, hidden=chosen.hidden,
                          dropout=cfg.dropout)
    final_data = feats if cfg.refit else train
    t_fit = time.perf_counter()
    head, kept = train_head(final_data, head_cfg, chosen, (best["epochs"],), lr=cfg.lr,
                            weight_decay=cfg.weight_decay, batch_size=cfg.batch_size, seed=cfg.seed)
    say(f"{'refit on all' if cfg.refit else 'final fit on the'} {len(final_data.products)} training products: "
        f"{time.perf_counter() - t_fit:.0f} s")

    sample_rows = np.arange(min(64, len(val.owner)))
    doc = {
        "format_version": HEAD_FORMAT,
        "mode": cfg.mode,
        "query": {"input": "features", "output": "embedding", "inputs": list(inputs), "dim": head_cfg.query_dim},
        "catalog": {"input": "features", "output": "embedding", "inputs": ["product"], "dim": head_cfg.dim},
        "embedding_dim": head_cfg.out_dim,
        "hidden": head_cfg.hidden,
        "temperature": chosen.temperature,
        "trained_with": {
            "generator_sha256": art.model["generator"]["onnx_sha256"],
            "embedder_sha256": art.embedder_sha256,
            "embedder": art.embedder_name,
            "embed_level": art.model["embedder"].get("level", 0),
            "size": art.size,
            "crop": read_crop(art).describe() if has_crop(art) else None,  # the photos were cropped by it
        },
        "training": {
            "data": portable_path(cfg.data, cfg.artifacts), "world": synthetic_world(cfg.data),
            "split": portable_path(cfg.split, cfg.artifacts),
            "products": len(final_data.products), "photos": len(final_data.owner),
            "split_train_products": len(records), "features_cache": portable_path(cache_file, cfg.artifacts),
            "refit": cfg.refit, "seed": cfg.seed,
        },
        "chosen": asdict(chosen) | {"epochs": best["epochs"], "lr": cfg.lr, "weight_decay": cfg.weight_decay,
                                    "dropout": cfg.dropout, "batch_size": cfg.batch_size},
        "validation": {
            "fraction": cfg.val_fraction, "products": len(val.products), "queries": len(val.owner),
            "recall": best["recall"], "frozen_recall": frozen, "grid": results,
            "note": "gallery: the validation products; recall of the head trained without them",
        },
        "config": to_json_dict(cfg) | {key: portable_path(getattr(cfg, key), cfg.artifacts)
                                       for key in ("artifacts", "data", "split", "cache")},
        "fitted": {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "seconds": round(time.perf_counter() - start, 1)},
    }
    # Exported into the current version folder: a later `rtd export` starts without a head trained for this one.
    return FittedHead(head, doc, val.query(inputs)[sample_rows], val.products[:64])

