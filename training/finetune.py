"""`rtd fit-head --tune-blocks N`: the embedder's last stages trained together with the retrieval head.

The frozen embedder (ImageNet EfficientNet-Lite) was never made to tell one striped T-shirt from another, and a
linear head on its pooled features can only re-weigh them. Fine-tuning trains the last N stages of the
backbone (counted from the output: 1 = the 1x1 feature conv, 2 = it and the last MBConv block, ...) with the head,
by the same contrastive loss (training/head.py `info_nce`), so the features themselves learn the catalog's
distinctions. It reads top to bottom in the order things happen (`fit_tuned`):

1. **The frozen trunk's activations, cached.** The backbone is split at the tail's boundary
   (models/embedders.py `split_embedder`). Every training image goes once through the served path up to the
   embedder (the person crop and the generator, through the artifacts' own graphs) and then through the frozen
   trunk in PyTorch; the activation at the boundary is cached (float16, one .npz in the head cache, keyed like
   the features plus the trunk: backbone, weights, input size, boundary). An epoch then costs only the tail.
2. **The head first, on the frozen tail** (`rtd fit-head`'s grid on validation, training/head.py): its
   temperature, width, hidden layer and epochs are chosen as without fine-tuning, on the pooled features of the
   untrained tail (= the frozen embedder's features at this input size). It is trained on the training part only.
3. **Tail and head together.** An epoch draws every training product once with one of its photos. The loss is
   `info_nce` against the *whole* training catalog: a bank of every product's catalog-side vector, refreshed at
   each epoch's start and updated with each batch's fresh vectors (a cross-batch memory), so the hard negatives
   (same category, same colour) are in every softmax; the batch's own products carry the gradient. BatchNorm
   keeps its ImageNet statistics (the tail runs in eval mode; its affine weights train), the tail's learning
   rate is low (`--tune-lr`), and training stops early when validation Recall@1 has not improved for
   `--patience` epochs or past `--tune-minutes`; the best epoch's weights are kept. Each epoch prints its loss
   and validation recall, and writes a checkpoint: an interrupted run resumes from it.
4. **Refit** (`--refit`, the default): steps 2 and 3 again on all training products, for the chosen epochs.
5. **Export, a new artifacts version.** The fine-tuned embedder goes to embedder.onnx (parity-checked,
   training/export_embedder.py), the head to head_query.onnx / head_catalog.onnx (parity-checked), model.json's
   embedder records the tuning (blocks, the ImageNet weights it started from, the frozen graph's sha256, the
   validation recall); generator, crop and the rest are copied; the folder is published as the next version
   (training/export.py `publish_version`), the frozen embedder's version kept beside it. An index built with
   the frozen embedder is refused on the new version (its embedder sha256 differs) until rebuilt.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from rtdgan.index.errors import UserError
from rtdgan.index.files import write_atomic
from rtdgan.index.images import preprocess_many
from rtdgan.index.runtime.artifacts import MODEL_JSON, Artifacts, read_artifacts
from rtdgan.index.runtime.head import CATALOG_ONNX, HEAD_JSON, QUERY_ONNX, read_head
from rtdgan.models.embedders import (
    Embedder,
    EmbedderInfo,
    LiteTail,
    LiteTrunk,
    at_input_size,
    at_level,
    split_embedder,
    tail_state,
)
from rtdgan.models.head import RetrievalHead
from rtdgan.training.data import ProductRecord
from rtdgan.training.head import (
    DECODE_THREADS,
    KS,
    Features,
    FitHeadConfig,
    FittedHead,
    Setting,
    cached_features,
    embed_sides,
    export_head,
    gate_written,
    info_nce,
    recall,
    say,
    train_fitted_head,
    train_head,
    training_records,
    validation_split,
)

TUNE_FORMAT = 1
CACHE_DTYPE = np.float16  # the boundary activations: half the memory, ~1e-3 relative rounding
POOL_BATCH = 256  # activations per no-grad tail call


# ---- the embedder and its split ------------------------------------------------------------------------

def base_embedder(art: Artifacts, input_size: int | None = None) -> tuple[Embedder, EmbedderInfo]:
    """The artifacts' embedder in PyTorch from its ImageNet weights (the weights package: nothing downloaded),
    at the artifacts' level and input size (or `input_size`); UserError when the weights differ from model.json's."""
    from rtdgan.training.weights import load_embedder

    model = art.model["embedder"]
    net, info = load_embedder(str(model["backbone"]), allow_download=False)
    if model.get("weights_sha256") not in (None, info.weights_sha256):
        raise UserError(f"the artifacts' embedder was exported from other {info.name} weights (sha256 "
                        f"{str(model['weights_sha256'])[:12]}, these {info.weights_sha256[:12]}): fine-tuning "
                        f"starts from the installed ImageNet weights")
    net, info = at_level(net, info, int(model.get("level", 0)), art.size)
    size = input_size or int(model.get("input_size", info.input_size))
    if size != info.input_size:
        net, info = at_input_size(net, info, size)
    return net, info


MIN_TRUNK_COSINE = 0.9999  # onnxruntime vs PyTorch, per row of the flattened activation


def trunk_encoder(trunk: LiteTrunk, size: int, dtype: type = CACHE_DTYPE, batch: int = 64,
                  threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """(B, 3, S, S) images in [-1, 1] -> the trunk's (B, C, h, w) activations, as `dtype`. The trunk runs in
    onnxruntime (exported here, checked against PyTorch): several times faster than eager PyTorch on a CPU."""
    import tempfile

    from rtdgan.index.runtime.backends import CPU, make_session
    from rtdgan.training.export_embedder import OPSET

    trunk.eval()
    x = torch.zeros(2, 3, size, size).uniform_(-1, 1, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad(), contextlib.redirect_stdout(sys.stderr):
        path = Path(tmp) / "trunk.onnx"
        expected = trunk(x).flatten(1).numpy()
        torch.onnx.export(trunk, (x,), str(path), input_names=["image"], output_names=["activation"],
                          dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1)}}, opset_version=OPSET,
                          dynamo=True, external_data=False, verbose=False)
        session = make_session(path, [CPU], threads)  # loaded: the file may go
    got = session.run(None, {"image": x.numpy()})[0].reshape(len(x), -1)
    cosine = (got * expected).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
    if not cosine.min() > MIN_TRUNK_COSINE:
        raise UserError(f"the trunk's ONNX graph disagrees with PyTorch (min cosine {cosine.min():.6f})")

    def encode(images: np.ndarray) -> np.ndarray:
        parts = [session.run(None, {"image": np.ascontiguousarray(images[i:i + batch], dtype=np.float32)})[0]
                 for i in range(0, len(images), batch)]
        return np.concatenate(parts).astype(dtype)
    return encode


def trained_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def tunable_stages(cfg: FitHeadConfig) -> int:
    """The cache boundary in stages from the output."""
    return cfg.tune_boundary or cfg.tune_blocks


def trunk_description(info: EmbedderInfo, trunk: LiteTrunk, dtype: type = CACHE_DTYPE) -> dict:
    """What the cached activations depend on besides the images and the generator (joins the cache key)."""
    return {"format": TUNE_FORMAT, "backbone": info.name, "weights_sha256": info.weights_sha256,
            "input_size": info.input_size, "level": info.level, "trunk_blocks": trunk.blocks,
            "dtype": np.dtype(dtype).name}


@torch.no_grad()
def pooled(tail: LiteTail, activations: np.ndarray, batch: int = POOL_BATCH) -> np.ndarray:
    """(N, C, h, w) activations -> the tail's (N, D) unit vectors, float32 (eval mode, no gradient)."""
    tail.eval()
    parts = [tail(torch.from_numpy(np.asarray(activations[i:i + batch], dtype=np.float32))).numpy()
             for i in range(0, len(activations), batch)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def pooled_features(tail: LiteTail, acts: Features) -> Features:
    """The same products and photos as embedder features through `tail`."""
    return Features(acts.product_ids, pooled(tail, acts.products), acts.owner, pooled(tail, acts.photos),
                    pooled(tail, acts.generated))


# ---- training ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TuneSettings:
    """Step 3's settings (`rtd fit-head`'s --tune-* flags)."""

    temperature: float
    epochs: int
    lr_head: float
    lr_tail: float
    weight_decay: float
    batch_size: int
    patience: int
    seed: int
    minutes: float | None = None


def photos_by_product(owner: np.ndarray, products: int) -> list[np.ndarray]:
    """Per product row, the rows of its photos."""
    order = np.argsort(owner, kind="stable")
    return np.split(order, np.cumsum(np.bincount(owner, minlength=products))[:-1])


def query_vectors(tail: LiteTail, head: RetrievalHead, acts: dict[str, torch.Tensor]) -> torch.Tensor:
    """The head's query side over the tail's features of each query input, concatenated in head.json's order."""
    return head.query(torch.cat([tail(acts[name]) for name in head.cfg.query_inputs], dim=1))


def step_loss(tail: LiteTail, head: RetrievalHead, bank: torch.Tensor, rows: torch.Tensor, products: torch.Tensor,
              queries: dict[str, torch.Tensor], temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One step's loss: the batch's queries against the whole catalog `bank` (P, E), whose rows `rows` are
    replaced by the batch products' fresh vectors (which carry the gradient); and those fresh vectors."""
    fresh = head.catalog(tail(products))  # (B, E)
    catalog = bank.index_copy(0, rows, fresh)  # (P, E)
    return info_nce(query_vectors(tail, head, queries), catalog, rows, temperature), fresh


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(array, dtype=np.float32))


@torch.no_grad()
def catalog_bank(tail: LiteTail, head: RetrievalHead, acts: Features) -> torch.Tensor:
    head.eval()
    return head.catalog(torch.from_numpy(pooled(tail, acts.products)))


def validation_recall(tail: LiteTail, head: RetrievalHead, val: Features) -> dict[str, float]:
    feats = pooled_features(tail, val)
    q, c = embed_sides(head, feats.query(head.cfg.query_inputs), feats.products)
    return recall(q, val.owner, c, KS)


def _better(a: dict, b: dict | None) -> bool:
    """Validation Recall@1 (what a shopper sees first), then Recall@10, strictly higher."""
    return b is None or (a["1"], a["10"]) > (b["1"], b["10"])


def train_tuned(train: Features, tail: LiteTail, head: RetrievalHead, s: TuneSettings, *, val: Features | None = None,
                checkpoint: Path | None = None, key: str = "") -> tuple[list[dict], int]:
    """Train `tail` and `head` in place on `train`'s activations for up to s.epochs epochs. With `val`: each
    epoch's validation recall, early stopping (s.patience), and the best epoch's weights restored at the end.
    `checkpoint` (a file) is written after every epoch and resumed from when its `key` matches.
    Returns (per-epoch history, the epoch whose weights the modules hold)."""
    torch.manual_seed(s.seed)
    rng = np.random.default_rng(s.seed)
    tail.eval()  # BatchNorm keeps its ImageNet statistics; no drop connect
    params = [{"params": list(head.parameters()), "lr": s.lr_head},
              {"params": [p for p in tail.parameters() if p.requires_grad], "lr": s.lr_tail}]
    optimiser = torch.optim.AdamW(params, weight_decay=s.weight_decay)
    by_product = photos_by_product(train.owner, len(train.products))
    has_photo = np.array([len(r) > 0 for r in by_product])
    history: list[dict] = []
    best: tuple[dict, int, dict] | None = None  # (recall, epoch, state)
    first = 1
    if checkpoint is not None and checkpoint.is_file():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if saved.get("key") == key:
            tail.load_state_dict(saved["tail"])
            head.load_state_dict(saved["head"])
            optimiser.load_state_dict(saved["optimiser"])
            rng.bit_generator.state = saved["rng"]
            torch.set_rng_state(saved["torch_rng"])
            history, best, first = saved["history"], saved["best"], saved["epoch"] + 1
            say(f"tune: resumed from {checkpoint} after epoch {saved['epoch']}")
    if val is not None and first == 1:  # epoch 0: the head alone on the frozen tail, the one to beat
        history.append({"epoch": 0, "recall": validation_recall(tail, head, val)})
        best = (history[0]["recall"], 0, {"tail": copy.deepcopy(tail.state_dict()),
                                          "head": copy.deepcopy(head.state_dict())})
    start = time.perf_counter()
    for epoch in range(first, s.epochs + 1):
        if best is not None and epoch - best[1] > s.patience:
            break
        t0 = time.perf_counter()
        bank = catalog_bank(tail, head, train)  # (P, E): the whole catalog, this epoch's start
        head.train()
        total, steps = 0.0, 0
        order = rng.permutation(np.flatnonzero(has_photo))
        for first_row in range(0, len(order), s.batch_size):
            rows = np.sort(order[first_row:first_row + s.batch_size])
            picks = np.array([rng.choice(by_product[r]) for r in rows])
            queries = {"photo": _tensor(train.photos[picks]), "generated": _tensor(train.generated[picks])}
            rows_t = torch.from_numpy(rows)
            loss, fresh = step_loss(tail, head, bank, rows_t, _tensor(train.products[rows]), queries, s.temperature)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            bank[rows_t] = fresh.detach()  # the memory follows the batch's fresh vectors
            total, steps = total + loss.item(), steps + 1
        row: dict = {"epoch": epoch, "loss": round(total / max(steps, 1), 4),
                     "seconds": round(time.perf_counter() - t0, 1)}
        if val is not None:
            row["recall"] = validation_recall(tail, head, val)
            if best is None or _better(row["recall"], best[0]):
                best = (row["recall"], epoch, {"tail": copy.deepcopy(tail.state_dict()),
                                               "head": copy.deepcopy(head.state_dict())})
        history.append(row)
        say(f"tune epoch {epoch}/{s.epochs}: loss {row['loss']:.3f}"
            + (f", validation R@1 {row['recall']['1']:.3f} R@10 {row['recall']['10']:.3f}" if val is not None else "")
            + f" ({row['seconds']:.0f} s)")
        if checkpoint is not None:
            state = {"key": key, "epoch": epoch, "tail": tail.state_dict(), "head": head.state_dict(),
                     "optimiser": optimiser.state_dict(), "rng": rng.bit_generator.state,
                     "torch_rng": torch.get_rng_state(), "history": history, "best": best}
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(checkpoint, lambda f, state=state: torch.save(state, f))
        if s.minutes is not None and time.perf_counter() - start > 60 * s.minutes:
            say(f"tune: stopping after epoch {epoch}: the {s.minutes:g}-minute budget is spent")
            break
    if best is None:
        return history, history[-1]["epoch"] if history else 0
    tail.load_state_dict(best[2]["tail"])
    head.load_state_dict(best[2]["head"])
    return history, best[1]


# ---- the job -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TunedFit:
    """A fine-tuned embedder and head before export."""

    embedder: Embedder  # holds the trained tail
    info: EmbedderInfo
    blocks: int
    fitted: FittedHead  # the head and head.json's content (trained_with's embedder set at export)
    tuned: dict  # model.json's embedder["tuned"]
    sample_images: np.ndarray  # (B, 3, S, S): the embedder's parity check


def tune_settings(cfg: FitHeadConfig, temperature: float, epochs: int | None = None) -> TuneSettings:
    return TuneSettings(temperature=temperature, epochs=epochs or cfg.tune_epochs, lr_head=cfg.tune_head_lr,
                        lr_tail=cfg.tune_lr, weight_decay=cfg.weight_decay, batch_size=cfg.tune_batch,
                        patience=cfg.patience, seed=cfg.seed, minutes=cfg.tune_minutes)


def sample_images(records: list[ProductRecord], size: int, n: int = 4) -> np.ndarray:
    """A few product images and photos as the embedder takes them: its export's parity check."""
    paths = [r.product_image for r in records[:n]] + [r.photos[0] for r in records[:n] if r.photos]
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        arrays = [a for a in preprocess_many(pool, paths, size) if isinstance(a, np.ndarray)]
    if not arrays:
        raise UserError("none of the sample images for the embedder's parity check could be read")
    return np.stack(arrays)


def train_tuned_fit(cfg: FitHeadConfig) -> TunedFit:
    """Steps 1-4: activations (cached) -> the head on the frozen tail -> tail and head together -> refit."""
    start = time.perf_counter()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    art = read_artifacts(cfg.artifacts)
    records = training_records(cfg)
    embedder, info = base_embedder(art, cfg.embed_input_size)
    trunk, tail = split_embedder(embedder, cfg.tune_blocks, cfg.tune_boundary)
    cache = Path(cfg.cache) if cfg.cache is not None else Path(cfg.split).resolve().parent / "head-cache"
    described = trunk_description(info, trunk)
    acts, cache_file, reused = cached_features(cfg.artifacts, records, cache, batch=cfg.embed_batch,
                                               threads=cfg.threads, desc="fit-head activations",
                                               encode=trunk_encoder(trunk, art.size, threads=cfg.threads),
                                               encoder=described)
    say(f"activations {'reused from' if reused else 'cached in'} {cache_file} ({len(acts.products)} products, "
        f"{len(acts.owner)} photos, {tuple(acts.products.shape[1:])} each at the boundary of the last "
        f"{cfg.tune_blocks} stages; {time.perf_counter() - start:.0f} s)")

    # 2. the head on the frozen tail, chosen on validation, trained on the training part only
    initial = {k: v.clone() for k, v in tail.state_dict().items()}
    frozen = pooled_features(tail, acts)
    stage1 = train_fitted_head(replace(cfg, refit=False), (frozen, cache_file, True))
    train_rows, val_rows = validation_split(acts, cfg.val_fraction, cfg.seed)
    train, val = acts.subset(train_rows), acts.subset(val_rows)
    head = stage1.head
    temperature = float(stage1.doc["temperature"])
    key = json.dumps({"cache": cache_file.name, "tune": described, "blocks": cfg.tune_blocks,
                      "settings": tune_settings(cfg, temperature).__dict__ | {"minutes": None},
                      "head": stage1.doc["chosen"], "val": cfg.val_fraction}, sort_keys=True, default=str)
    say(f"tune: the last {cfg.tune_blocks} stages ({trained_parameters(tail)} parameters) and the "
        f"head on {len(train.products)} products, validation on {len(val.products)}; head-only validation R@1 "
        f"{stage1.doc['validation']['recall']['1']:.3f} R@10 {stage1.doc['validation']['recall']['10']:.3f}")

    # 3. tail and head together, early-stopped on validation
    history, best_epoch = train_tuned(train, tail, head, tune_settings(cfg, temperature), val=val,
                                      checkpoint=cache / f"tune-{cache_file.stem}.pt", key=key)
    best = next(h["recall"] for h in history if h["epoch"] == best_epoch)
    say(f"tune: best epoch {best_epoch}, validation R@1 {best['1']:.3f} R@10 {best['10']:.3f}")

    # 4. refit on all training products: the head from the frozen tail again, then the chosen epochs
    if cfg.refit:
        tail.load_state_dict(initial)
        chosen = stage1.doc["chosen"]
        head, _ = train_head(frozen, head.cfg, Setting(temperature, chosen["out_dim"], chosen["hidden"]),
                             (chosen["epochs"],), lr=cfg.lr, weight_decay=cfg.weight_decay,
                             batch_size=cfg.batch_size, seed=cfg.seed)
        say(f"tune: refit on all {len(acts.products)} training products for {best_epoch} epochs")
        train_tuned(acts, tail, head, replace(tune_settings(cfg, temperature, best_epoch), patience=best_epoch),
                    checkpoint=cache / f"tune-{cache_file.stem}-refit.pt", key=key + f"refit{best_epoch}")
    head.eval()

    tuned_feats = pooled_features(tail, val)
    inputs = head.cfg.query_inputs
    doc = copy.deepcopy(stage1.doc)
    doc["validation"] |= {"recall": best, "head_only_recall": stage1.doc["validation"]["recall"]}
    tuned = {"format": TUNE_FORMAT, "blocks": cfg.tune_blocks,
             "parameters": trained_parameters(tail), "boundary": tunable_stages(cfg),
             "base_weights_sha256": info.weights_sha256, "frozen_onnx_sha256": art.embedder_sha256,
             "input_size": info.input_size, "lr": cfg.tune_lr, "head_lr": cfg.tune_head_lr,
             "batch_size": cfg.tune_batch, "epochs": best_epoch, "history": history, "refit": cfg.refit,
             "validation_recall": best, "head_only_validation_recall": stage1.doc["validation"]["recall"]}
    doc["tuned"] = tuned
    doc["fitted"]["seconds"] = round(time.perf_counter() - start, 1)
    rows = np.arange(min(64, len(val.owner)))
    fitted = FittedHead(head, doc, tuned_feats.query(inputs)[rows], tuned_feats.products[:64])
    return TunedFit(embedder, info, cfg.tune_blocks, fitted, tuned, sample_images(records, art.size))


def publish_tuned(artifacts: Path, fit: TunedFit) -> tuple[Path, dict]:
    """Step 5: a new artifacts version holding the fine-tuned embedder and its head; (version folder, head.json)."""
    from rtdgan.training.export import publish_version, remove_stale_tmp
    from rtdgan.training.export_embedder import export_embedder

    out = Path(artifacts)
    art = read_artifacts(out)
    remove_stale_tmp(out)
    tmp = out / f".tmp-{os.getpid()}"  # inside OUT: published by a rename
    tmp.mkdir()
    try:
        replaced = (MODEL_JSON, "embedder.onnx", HEAD_JSON, QUERY_ONNX, CATALOG_ONNX)
        for f in art.folder.iterdir():  # the generator, the person crop, anything else of this version
            if f.is_file() and f.name not in replaced:
                shutil.copy2(f, tmp / f.name)
        with contextlib.redirect_stdout(sys.stderr):  # the exporter's progress
            fragment = export_embedder(fit.embedder, fit.info, tmp / "embedder.onnx", art.size, fit.sample_images)
        model = copy.deepcopy(art.model)
        model["embedder"] = fragment | {"tuned": fit.tuned}
        doc = copy.deepcopy(fit.fitted.doc)
        doc["trained_with"]["embedder_sha256"] = fragment["onnx_sha256"]
        head_doc = export_head(fit.fitted.head, tmp, fit.fitted.query_sample, fit.fitted.catalog_sample, doc)
        (tmp / MODEL_JSON).write_text(json.dumps(model, indent=1) + "\n", encoding="utf-8")
        version = publish_version(tmp, out, model)
    except RuntimeError as e:  # export_embedder's parity failure, or the exporter itself
        raise UserError(f"fine-tuned export refused: {e}; nothing written") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    read_head(read_artifacts(out))  # what was written reads back
    return version, head_doc


def fit_tuned(cfg: FitHeadConfig) -> dict:
    """`rtd fit-head --tune-blocks N`: train, then publish a new artifacts version; returns head.json."""
    start = time.perf_counter()
    fit = train_tuned_fit(cfg)
    version, doc = publish_tuned(cfg.artifacts, fit)
    parity = max(doc["parity"]["query"]["max_abs_error"], doc["parity"]["catalog"]["max_abs_error"])
    say(f"wrote the fine-tuned embedder and head as {version} in {time.perf_counter() - start:.0f} s (head parity: "
        f"max |onnx - torch| {parity:.1e})")
    gate_written(cfg)
    return doc


def tuned_weights(fit: TunedFit) -> dict:
    """All a fine-tuned embedder adds to its ImageNet weights, with the head: what the demo commits."""
    return {"format": TUNE_FORMAT, "blocks": fit.blocks, "input_size": fit.info.input_size,
            "base_weights_sha256": fit.info.weights_sha256, "tail": tail_state(fit.embedder, fit.blocks)}
