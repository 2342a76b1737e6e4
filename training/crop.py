"""`rtd fit-crop` (for street-framed photos): train the person-box regressor and export it into the artifacts.

Reads top to bottom in the order things happen (`fit_crop`):

1. **Data.** One or more folders written by `rtd data synth` (e.g. a street-framed and a LookBook-framed
   world: the query photos come in both framings), each with its `boxes.csv` (the synthesizer's person box
   of every photo, training/synth.py). Real photos have no boxes: this step needs synthetic (or otherwise
   box-annotated) data. Each photo is letterboxed to N px by the shared preprocessing (index/images.py) and
   kept as uint8.
2. **Validation.** A seeded `--val-fraction` of the products (with all their photos) is held out; the
   epoch with the best validation mean IoU is kept (test shops are never read). The IoU of the best constant
   box (the training boxes' mean: a "centre box") is printed beside it as the baseline to beat.
3. **Training.** models/cropper.py's `PersonCropper`, L1 + GIoU loss, AdamW with a cosine schedule, random
   horizontal flips (the box flipped with the photo).
4. **Export.** `crop.onnx` (`image` (B, 3, N, N) -> `box` (B, 4)), checked against PyTorch with onnxruntime
   (max abs error, batch vs one by one), then `crop.json` (input size, sha256, validation IoU, training
   data, parity), both written atomically into the artifacts' version folder, crop.json last. From then on
   the pipeline crops every query photo (index/crop.py); fit a head afterwards (`rtd fit-head`) and it
   learns on cropped photos as the queries will be.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rtdgan.index.configs import opt, to_json_dict
from rtdgan.index.errors import ImageError, UserError
from rtdgan.index.files import sha256_file, write_atomic
from rtdgan.index.images import decode_image, letterbox
from rtdgan.index.lookbook import LOOKBOOK_RE
from rtdgan.index.runtime.artifacts import portable_path, read_artifacts
from rtdgan.index.runtime.backends import CPU
from rtdgan.index.runtime.crop import CROP_FORMAT, CROP_JSON, CROP_ONNX, LOOKBOOK_FILL, read_crop
from rtdgan.index.runtime.onnx import OnnxModel
from rtdgan.models.cropper import CropperConfig, PersonCropper
from rtdgan.training.data import synthetic_world
from rtdgan.training.synth import BOX_COLUMNS, BOXES_CSV

OPSET = 18
MAX_PARITY_ABS_ERROR = 1e-4  # per box coordinate in [0, 1]
DECODE_THREADS = 4


@dataclass(frozen=True)
class FitCropConfig:
    """`rtd fit-crop`: which artifacts, which box-annotated photos, the training schedule."""

    artifacts: Path = opt(help="artifacts folder from `rtd export`; crop.onnx and crop.json are written into it")
    data: tuple[Path, ...] = opt(help="synthetic data folders (`rtd data synth`, each with its boxes.csv), "
                                 "comma-separated: e.g. a street-framed and a LookBook-framed world")
    size: int = opt(64, "input side N of the regressor (a multiple of 16)")
    width: int = opt(16, "channels of the first conv (doubled per stride)")
    epochs: int = opt(8, "training epochs (the best on validation is kept)")
    batch_size: int = opt(128, "photos per step")
    lr: float = opt(2e-3, "AdamW learning rate (cosine decay to 0)")
    weight_decay: float = opt(1e-4, "AdamW weight decay")
    giou_weight: float = opt(1.0, "weight of the GIoU loss beside the L1 loss")
    val_fraction: float = opt(0.1, "share of the products held out to choose the epoch")
    # Default: LookBook framing (the person 87.5 % of the side). On a validation street shop (seed 6200, 300 x 4,
    # 256 px photos, the mixed fused head) street R@10 was 0.475 / 0.499 / 0.577 / 0.637 / 0.668 / 0.688 / 0.699
    # / 0.685 at fill 0.65 / 0.75 / 0.875 / 0.95 / 1.0 / 1.1 / 1.25 / 1.5; but a crop tighter than the person
    # (> 1: head and feet cut) costs LookBook-framed photos (docs/training.md, "The person crop").
    fill: float = opt(LOOKBOOK_FILL, "the person box's longer side / the square crop's side at query time "
                      "(0.875: LookBook framing; > 1: tighter than the person)")
    seed: int = opt(0, "seed of the validation split, the initialisation, the batch order and the flips")
    threads: int | None = opt(None, "CPU threads for torch (default: its own)")

    def __post_init__(self) -> None:
        if not self.data:
            raise UserError("--data needs at least one folder written by `rtd data synth`")
        if self.size < 16 or self.size % 16:
            raise UserError(f"--size must be a multiple of 16 (>= 16), got {self.size}")
        if self.width < 1 or self.epochs < 1 or self.batch_size < 1:
            raise UserError("--width, --epochs and --batch-size must be >= 1")
        if self.lr <= 0 or self.weight_decay < 0 or self.giou_weight < 0:
            raise UserError("--lr must be > 0, --weight-decay and --giou-weight >= 0")
        if not 0.0 < self.fill <= 2.0:
            raise UserError(f"--fill must be in (0, 2], got {self.fill}")
        if not 0.0 < self.val_fraction < 1.0:
            raise UserError(f"--val-fraction must be between 0 and 1 (exclusive), got {self.val_fraction}")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads must be >= 1, got {self.threads}")


def say(text: str) -> None:
    print(f"rtd fit-crop: {text}", file=sys.stderr, flush=True)


# ---- 1. data ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BoxSet:
    """Letterboxed photos and their person boxes."""

    images: np.ndarray  # (n, N, N, 3) uint8
    boxes: np.ndarray  # (n, 4) float32: x0, y0, x1, y1 in [0, 1] of the photo
    groups: np.ndarray  # (n,) int64: the product each photo shows (folder and product id), for the split

    def __len__(self) -> int:
        return len(self.boxes)


def read_boxes(folder: Path) -> list[tuple[Path, np.ndarray]]:
    """(photo path, box) from a synthetic folder's boxes.csv; UserError when it has none or it is malformed."""
    path = Path(folder) / BOXES_CSV
    if not path.is_file():
        raise UserError(f"{folder} has no {BOXES_CSV}: the crop trains on photos with known person boxes, which "
                        f"`rtd data synth` records (re-run it); real photos without boxes cannot train it")
    rows = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != BOX_COLUMNS:
            raise UserError(f"{path}: expected columns {','.join(BOX_COLUMNS)}, got {reader.fieldnames}")
        for line, row in enumerate(reader, 2):
            try:
                box = np.array([float(row[c]) for c in BOX_COLUMNS[1:]], dtype=np.float32)
            except (TypeError, ValueError) as e:
                raise UserError(f"{path}:{line}: not a box ({e})") from e
            if not (np.all((box >= 0) & (box <= 1)) and box[0] <= box[2] and box[1] <= box[3]):
                raise UserError(f"{path}:{line}: a box needs 0 <= x0 <= x1 <= 1 and 0 <= y0 <= y1 <= 1, got {box}")
            rows.append((Path(folder) / row["photo"], box))
    return rows


def load_box_set(folders: tuple[Path, ...], size: int) -> tuple[BoxSet, list[str]]:
    """Every boxed photo of the folders, letterboxed to `size` (the shared preprocessing); and the skipped ones."""
    entries: list[tuple[Path, np.ndarray, str]] = []
    for i, folder in enumerate(folders):
        for photo, box in read_boxes(folder):
            m = LOOKBOOK_RE.match(photo.name)
            entries.append((photo, box, f"{i}/{m.group(1) if m else photo.name}"))

    def one(path: Path) -> np.ndarray | str:
        try:
            return np.asarray(letterbox(decode_image(path, reduce_to=3 * size), size), dtype=np.uint8)
        except ImageError as e:
            return f"{path.name}: {e.reason}"

    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        arrays = list(pool.map(one, [p for p, _, _ in entries]))
    keep = [i for i, a in enumerate(arrays) if isinstance(a, np.ndarray)]
    skipped = [a for a in arrays if isinstance(a, str)]
    if len(keep) < 4:
        raise UserError(f"need at least 4 readable boxed photos in {', '.join(map(str, folders))}, found {len(keep)}")
    names = sorted({entries[i][2] for i in keep})
    index = {name: j for j, name in enumerate(names)}
    return BoxSet(np.stack([arrays[i] for i in keep]), np.stack([entries[i][1] for i in keep]),  # type: ignore[misc]
                  np.array([index[entries[i][2]] for i in keep], dtype=np.int64)), skipped


def split_by_group(data: BoxSet, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows): a seeded share of the products, with all their photos, held out."""
    groups = np.unique(data.groups)
    if len(groups) < 2:
        raise UserError("need photos of at least 2 products to hold some out for validation")
    n_val = min(max(1, round(len(groups) * fraction)), len(groups) - 1)
    held = np.random.default_rng(seed).permutation(groups)[:n_val]
    val = np.isin(data.groups, held)
    return np.flatnonzero(~val), np.flatnonzero(val)


# ---- 2. + 3. loss, IoU, training ---------------------------------------------------------------------

def to_tensor(images: np.ndarray) -> Tensor:
    """(n, N, N, 3) uint8 -> (n, 3, N, N) float32 in [-1, 1], as rtdgan.index.images.to_array."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def box_iou(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    """(IoU, GIoU) of matching rows of two (n, 4) box sets (x0, y0, x1, y1)."""
    a, b = torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lo, hi = torch.maximum(a[:, :2], b[:, :2]), torch.minimum(a[:, 2:], b[:, 2:])
    inter = (hi - lo).clamp(min=0).prod(dim=1)
    union = area_a + area_b - inter
    iou = inter / union.clamp(min=1e-9)
    hull = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).clamp(min=0).prod(dim=1)
    return iou, iou - (hull - union) / hull.clamp(min=1e-9)


def box_loss(pred: Tensor, target: Tensor, giou_weight: float) -> Tensor:
    """Mean L1 of the coordinates + giou_weight x (1 - GIoU)."""
    _, giou = box_iou(pred, target)
    return (pred - target).abs().mean() + giou_weight * (1.0 - giou).mean()


@torch.no_grad()
def predict(model: PersonCropper, images: np.ndarray, batch: int = 512) -> np.ndarray:
    """(n, 4) boxes for (n, N, N, 3) uint8 photos (eval mode)."""
    model.eval()
    return np.concatenate([model(to_tensor(images[i:i + batch])).numpy() for i in range(0, len(images), batch)])


def mean_iou(pred: np.ndarray, target: np.ndarray) -> float:
    return round(float(box_iou(pred, target)[0].mean()), 4)


def centre_box_iou(train_boxes: np.ndarray, target: np.ndarray) -> float:
    """The baseline: one constant box (the training boxes' mean) for every photo."""
    return mean_iou(np.broadcast_to(train_boxes.mean(axis=0), target.shape), target)


def train_cropper(train: BoxSet, val: BoxSet, cfg: FitCropConfig) -> tuple[PersonCropper, dict]:
    """Train for cfg.epochs; returns the model at the epoch with the best validation IoU, and the history."""
    torch.manual_seed(cfg.seed)
    model = PersonCropper(CropperConfig(size=cfg.size, width=cfg.width))
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = -(-len(train) // cfg.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=cfg.epochs * steps_per_epoch)
    order = torch.Generator().manual_seed(cfg.seed)
    boxes = torch.from_numpy(train.boxes)
    best: tuple[float, int, dict] | None = None
    history = []
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        total = 0.0
        for idx in torch.randperm(len(train), generator=order).split(cfg.batch_size):
            x, y = to_tensor(train.images[idx.numpy()]), boxes[idx].clone()
            flip = torch.rand(len(idx), generator=order) < 0.5  # mirror the photo and its box
            x[flip] = x[flip].flip(-1)
            y[flip] = torch.stack([1 - y[flip, 2], y[flip, 1], 1 - y[flip, 0], y[flip, 3]], dim=1)
            loss = box_loss(model(x), y, cfg.giou_weight)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(idx)
        iou = mean_iou(predict(model, val.images), val.boxes)
        history.append({"epoch": epoch, "loss": round(total / len(train), 4), "validation_iou": iou})
        say(f"epoch {epoch}/{cfg.epochs}: loss {total / len(train):.4f}, validation IoU {iou:.4f} "
            f"({time.perf_counter() - t0:.0f} s)")
        if best is None or iou > best[0]:
            best = (iou, epoch, copy.deepcopy(model.state_dict()))
    assert best is not None
    model.load_state_dict(best[2])
    model.eval()
    return model, {"best_epoch": best[1], "iou": best[0], "history": history}


# ---- 4. export, checked -------------------------------------------------------------------------------

def export_cropper(model: PersonCropper, sample: np.ndarray) -> tuple[bytes, dict[str, float]]:
    """crop.onnx as bytes (`image` (B, 3, N, N) -> `box` (B, 4), dynamic batch), checked with onnxruntime."""
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    if sample.ndim != 4 or len(sample) < 2:
        raise ValueError(f"sample must be a (B >= 2, 3, N, N) batch, got {sample.shape}")
    model = copy.deepcopy(model).eval().cpu()
    x = torch.from_numpy(sample)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / CROP_ONNX
        with torch.no_grad(), contextlib.redirect_stdout(sys.stderr):  # the exporter's progress: not on stdout
            expected = model(x).numpy()
            torch.onnx.export(model, (x,), str(path), input_names=["image"], output_names=["box"],
                              dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1)}},
                              opset_version=OPSET, dynamo=True, external_data=False, verbose=False)
        session = OnnxModel(path, providers=[CPU])
        got = session(sample)
        alone = np.concatenate([session(sample[i:i + 1]) for i in range(min(len(sample), 8))])
        data = path.read_bytes()
    if got.shape != expected.shape:
        raise UserError(f"crop ONNX outputs {got.shape}, PyTorch {expected.shape}: export refused")
    abs_error = float(np.abs(got - expected).max())
    batch_error = float(np.abs(got[:len(alone)] - alone).max())
    if not (abs_error <= MAX_PARITY_ABS_ERROR and batch_error <= MAX_PARITY_ABS_ERROR):  # NaN fails too
        raise UserError(f"crop parity failed: max |onnx - torch| {abs_error:.3g}, batch vs alone {batch_error:.3g} "
                        f"(limit {MAX_PARITY_ABS_ERROR}); nothing written")
    return data, {"max_abs_error": abs_error, "batch_max_abs_error": batch_error, "rows": len(sample),
                  "max_abs_error_allowed": MAX_PARITY_ABS_ERROR}


def fit_crop(cfg: FitCropConfig) -> dict:
    """Boxed photos -> validation split -> training (best epoch) -> crop.onnx + crop.json in the artifacts."""
    start = time.perf_counter()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    art = read_artifacts(cfg.artifacts)  # before the long steps: a bad folder fails at once
    data, skipped = load_box_set(cfg.data, cfg.size)
    for line in skipped[:10]:
        say(f"skipped {line}")
    train_rows, val_rows = split_by_group(data, cfg.val_fraction, cfg.seed)
    train = BoxSet(data.images[train_rows], data.boxes[train_rows], data.groups[train_rows])
    val = BoxSet(data.images[val_rows], data.boxes[val_rows], data.groups[val_rows])
    baseline = centre_box_iou(train.boxes, val.boxes)
    say(f"{len(train)} training photos, {len(val)} validation photos ({len(np.unique(val.groups))} products) at "
        f"{cfg.size} px, read in {time.perf_counter() - start:.0f} s; a constant centre box scores IoU {baseline:.4f}")
    model, fit = train_cropper(train, val, cfg)
    say(f"best epoch {fit['best_epoch']}: validation IoU {fit['iou']:.4f} (centre box {baseline:.4f})")
    data_bytes, parity = export_cropper(model, to_tensor(val.images[:16]).numpy())
    folder = art.folder
    write_atomic(folder / CROP_ONNX, data_bytes)
    doc = {
        "format_version": CROP_FORMAT,
        "input": "image", "output": "box", "input_size": cfg.size,
        "box": "x0, y0, x1, y1 in [0, 1] of the photo letterboxed to input_size (index/images.py letterbox)",
        "onnx": CROP_ONNX, "onnx_sha256": sha256_file(folder / CROP_ONNX), "fill": cfg.fill,
        "model": {"architecture": "PersonCropper (models/cropper.py)", "width": cfg.width,
                  "parameters": sum(p.numel() for p in model.parameters())},
        "training": {"data": [portable_path(d, cfg.artifacts) for d in cfg.data],
                     "worlds": [synthetic_world(d) for d in cfg.data], "photos": len(train),
                     "skipped": len(skipped), "seed": cfg.seed},
        "validation": {"fraction": cfg.val_fraction, "photos": len(val), "iou": fit["iou"],
                       "centre_box_iou": baseline, "best_epoch": fit["best_epoch"], "history": fit["history"]},
        "parity": parity,
        "config": to_json_dict(cfg) | {"artifacts": ".", "data": [portable_path(d, cfg.artifacts) for d in cfg.data]},
        "fitted": {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "seconds": round(time.perf_counter() - start, 1)},
    }
    write_atomic(folder / CROP_JSON, (json.dumps(doc, indent=1) + "\n").encode("utf-8"))
    read_crop(art)  # what was written reads back
    say(f"wrote {CROP_ONNX}, {CROP_JSON} to {folder} in {time.perf_counter() - start:.0f} s "
        f"(parity: max |onnx - torch| {parity['max_abs_error']:.1e})")
    return doc
