"""`rtd export`: a run folder -> artifacts/ (generator.onnx, embedder.onnx, model.json), parity-checked.

Reads top to bottom in the order things happen (`export_run`): load the embedder (fails fast when the
DenseNet-121 weights cannot be had), rebuild the generator from the run's checkpoint in eval() mode, take
a batch of the run's real test photos through the shared preprocessing, export both graphs into a
temporary folder inside OUT, check onnxruntime against PyTorch there, write model.json, and only then
publish it (`publish_version`): rename it to the next version folder OUT/v-NNNNNN and replace the pointer
OUT/model.json atomically (index/artifacts.py reads it). OUT itself is never renamed or replaced, so it can be
a bind mount (docker-compose's `export` job); a reader sees the previous version or the new one, whole; the
current version and the ones before it are kept up to KEEP_VERSIONS. A failed check raises UserError and
leaves nothing behind (a crash leaves a `.tmp-PID` folder in OUT, removed by the next export).

Two traps of pix2pix exports are closed here: the network is exported in eval() mode (dropout off, batch
norm on its running statistics), and the check proves it, by comparing every image's output in a batch of
four with its output alone (batch statistics would make them differ).

Where the network's native output is smaller than S (an intermediate rtdGAN stage, Sec. 3.3; PLDT at
64 px, Yoo et al. 2016) the graph ends in a bilinear upsampling to S, so every generator.onnx honours the
same contract (docs/architecture.md, "The artifact contract"); model.json records the native size.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rtdgan.index.errors import ImageError, UserError
from rtdgan.index.files import fsync_path, sha256_file, write_atomic
from rtdgan.index.images import preprocess
from rtdgan.index.runtime.artifacts import MODEL_JSON, POINTER_KEY, VERSION_DIR, portable_path
from rtdgan.index.runtime.backends import CPU
from rtdgan.index.runtime.onnx import OnnxGenerator
from rtdgan.models.embedders import Embedder, EmbedderInfo, at_input_size, at_level
from rtdgan.training import registry
from rtdgan.training.checkpoint import code_version, load_checkpoint
from rtdgan.training.config import (
    ExportConfig as ExportConfig,  # defined there (torch-free, for the CLI's flags)
)
from rtdgan.training.config import TrainConfig
from rtdgan.training.data import ProductRecord, load_records, load_split, synthetic_world
from rtdgan.training.export_embedder import MIN_PARITY_COSINE, export_embedder
from rtdgan.training.weights import load_embedder

MODEL_JSON_FORMAT = 1
OPSET = 18  # the embedder's opset too (training/export_embedder.py)
# onnxruntime vs PyTorch, and batch of 4 vs batch of 1, per pixel on the [-1, 1] scale: float32 reordering
# stays near 1e-6; a leaked dropout or batch statistic moves pixels by 1e-2 and more.
MAX_PARITY_ABS_ERROR = 1e-3
PARITY_IMAGES = 4  # real test photos in the parity batch (batch 4 vs batch 1)
# Version folders kept in OUT: the current one and the ones before it, so that a reader that read the
# pointer just before a new export was published still finds its files (it would take two more exports
# during its load to break it).
KEEP_VERSIONS = 3
TMP_DIR = re.compile(r"^\.tmp-(\d+)$")  # OUT/.tmp-PID: an export being written (or a crashed one)
FLAT_FILES = ("generator.onnx", "embedder.onnx")  # the flat layout's files, superseded by the first version


@dataclass(frozen=True)
class RunGenerator:
    """A run's generator, ready to export: one input, output at the run's resolution S."""

    module: nn.Module  # photo (B, 3, S, S) -> product (B, 3, S, S) in [-1, 1], eval() mode
    config: TrainConfig
    stage: int  # exported stage (1 for the baselines)
    native_size: int  # side of the network's own output before the upsampling to S
    checkpoint: Path
    step: int  # optimiser steps the checkpoint's weights have seen
    epoch: int  # 0-based epoch the checkpoint was written in
    code_version: str  # of the code that trained it


class AtResolution(nn.Module):
    """A one-input generator whose output is bilinearly upsampled to S when it is natively smaller."""

    def __init__(self, generator: nn.Module, size: int) -> None:
        super().__init__()
        self.generator = generator
        self.size = size

    def forward(self, photo: Tensor) -> Tensor:
        """(B, 3, S, S) -> (B, 3, S, S) in [-1, 1] (bilinear weights are convex: the range holds)."""
        product = self.generator(photo)  # (B, 3, s, s)
        if product.shape[-1] == self.size:  # static while exporting: no Resize node when s == S
            return product
        return F.interpolate(product, size=(self.size, self.size), mode="bilinear", align_corners=False)


def _train_config(saved: dict) -> TrainConfig:
    """The checkpoint's TrainConfig (JSON lists back to tuples; keys of other code versions dropped)."""
    known = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in known})


def _pick_checkpoint(run: Path, stage: int | None) -> tuple[Path, dict]:
    """last.pt, or for an explicit stage i the weights as stage i ended (stage_i.pt; Fig. 6's [i/N])."""
    folder = run / "checkpoints"
    last = folder / "last.pt"
    if not last.is_file():
        raise UserError(f"{run} is not a run folder with a checkpoint (no {last}); train one with `rtd train`")
    if stage is not None and (folder / f"stage_{stage}.pt").is_file():
        return folder / f"stage_{stage}.pt", load_checkpoint(folder / f"stage_{stage}.pt")
    return last, load_checkpoint(last)


def load_generator(run: Path, stage: int | None = None) -> RunGenerator:
    """Rebuild a run's generator from its checkpoint, in eval() mode, wrapped to output S x S."""
    run = Path(run)
    path, state = _pick_checkpoint(run, stage)
    cfg = _train_config(state["config"])
    gcfg = state["generator_config"]
    reached = int(state["stage"])
    spec = registry.get(cfg.model)
    generator = spec.generator_from_config(gcfg)
    stages = spec.generator_stages(generator)
    if not spec.staged and stage not in (None, 1):
        raise UserError(f"--stage {stage}: a {cfg.model} run has a single stage")
    wanted = reached if stage is None else stage
    if not 1 <= wanted <= stages:
        raise UserError(f"--stage {wanted}: the run has stages 1..{stages}")
    if wanted > reached or (wanted == reached and state["alpha"] < 1.0):
        where = f"stage {reached} at alpha {state['alpha']:.2f}" if wanted == reached else f"stage {reached}"
        raise UserError(f"{path} stopped in {where}: stage {wanted} is not trained yet; "
                        f"resume training or export an earlier --stage")
    if wanted < reached:  # stage_i.pt was missing: later stages retrained the shared blocks
        raise UserError(f"{run} has no checkpoints/stage_{wanted}.pt to export stage {wanted} from")
    # The stage's own network (rtdGAN: the stage-i network alone; PLDT: 64 px, inputs box-downsampled to it).
    inner, native = spec.export_module(generator, wanted)
    generator.load_state_dict(state["models"]["generator"], strict=True)
    if wanted < stages:
        print(f"rtd export: exporting stage {wanted} of {stages} "
              f"({native} px, upsampled to {cfg.resolution})", file=sys.stderr)
    module = AtResolution(inner, cfg.resolution).eval()  # dropout off, batch norm on running statistics
    return RunGenerator(module, cfg, wanted, native, path, int(state["step"]), int(state["epoch"]),
                        str(state.get("code_version", "unknown")))


def eval_records(cfg: TrainConfig) -> list[ProductRecord]:
    """The run's test split first, then its train split (a tiny test split may hold too few photos)."""
    if cfg.split is not None:
        split = load_split(Path(cfg.split))
        return split.test + split.train
    return load_records(Path(cfg.data)).records


def parity_sample(cfg: TrainConfig, count: int = PARITY_IMAGES, minimum: int | None = None) -> np.ndarray:
    """(count, 3, S, S): real test photos of the run through the shared preprocessing, one per product first;
    with `minimum`, as many as there are when that many (or more) are readable."""
    try:
        records = eval_records(cfg)
    except UserError as e:
        raise UserError(f"cannot read the run's data for the parity check: {e}") from e
    photos = [p for r in records for p in r.photos[:1]] + [p for r in records for p in r.photos[1:]]
    arrays = []
    for path in photos:
        try:
            arrays.append(preprocess(path, cfg.resolution))
        except ImageError:
            continue  # a corrupt test photo: take the next one
        if len(arrays) == count:
            return np.stack(arrays)
    if minimum is not None and len(arrays) >= minimum:
        return np.stack(arrays)
    raise UserError(f"need {count} readable test photos of {cfg.data} for the parity check, found {len(arrays)}")


def check_generator(onnx_path: Path, expected: np.ndarray, sample: np.ndarray) -> dict[str, float]:
    """onnxruntime vs PyTorch on the batch, and batch vs one-by-one; UserError past MAX_PARITY_ABS_ERROR."""
    session = OnnxGenerator(onnx_path, providers=[CPU])
    batched = session(sample)  # (B, 3, S, S)
    alone = np.concatenate([session(sample[i:i + 1]) for i in range(len(sample))])  # (B, 3, S, S)
    if batched.shape != expected.shape:
        raise UserError(f"generator.onnx outputs {batched.shape}, PyTorch {expected.shape}: export refused")
    parity = float(np.abs(batched - expected).max())
    batch = float(np.abs(batched - alone).max())
    # `not x <= t` is also true for NaN: a network with NaN weights is refused, not waved through.
    if not parity <= MAX_PARITY_ABS_ERROR:
        raise UserError(f"generator parity failed: onnxruntime differs from PyTorch by {parity:.3g} "
                        f"(limit {MAX_PARITY_ABS_ERROR}); nothing written")
    if not batch <= MAX_PARITY_ABS_ERROR:
        raise UserError(f"generator parity failed: an image's output depends on the rest of its batch "
                        f"(batch {len(sample)} vs batch 1 differ by {batch:.3g}; dropout or batch statistics "
                        f"leaked into inference); nothing written")
    return {"generator_max_abs_error": parity, "generator_batch_max_abs_error": batch}


def export_generator(module: nn.Module, out_path: Path, size: int, sample: np.ndarray) -> dict[str, float]:
    """Write generator.onnx (`photo` [B,3,S,S] -> `product` [B,3,S,S], dynamic batch), checked; the figures."""
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    if sample.ndim != 4 or sample.shape[1:] != (3, size, size) or len(sample) < 2:
        raise ValueError(f"sample must be a (B >= 2, 3, {size}, {size}) batch, got {sample.shape}")
    module = module.eval().cpu()
    x = torch.from_numpy(sample)  # (B, 3, S, S)
    with torch.no_grad():
        expected = module(x).numpy()  # (B, 3, S, S)
        # optimize=False: onnxscript's optimizer folds PixelNorm's `mean + 1e-8` into `mean` (it treats the
        # tiny constant as an additive zero), which moved outputs by 3e-3 on a trained tiny run and turns an
        # all-zero feature vector into NaN. onnxruntime applies its own graph optimisations at load time.
        torch.onnx.export(
            module, (x,), str(out_path), input_names=["photo"], output_names=["product"],
            dynamic_shapes={"photo": {0: torch.export.Dim("batch", min=1)}},
            opset_version=OPSET, dynamo=True, external_data=False, verbose=False, optimize=False,
        )
    return check_generator(Path(out_path), expected, sample)


def _prepare_out(out: Path) -> None:
    """Refuse to write into a folder that is not an artifacts folder (one with model.json) or empty."""
    if out.exists() and (not out.is_dir() or (any(p for p in out.iterdir() if not TMP_DIR.match(p.name))
                                               and not (out / MODEL_JSON).is_file())):
        raise UserError(f"--out {out} exists and is not an artifacts folder (no model.json); choose another")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_tmp(out: Path) -> None:
    """Temporary folders of exports that died (their process is gone)."""
    for p in out.iterdir():
        m = TMP_DIR.match(p.name)
        if m and p.is_dir() and (int(m.group(1)) == os.getpid() or not _pid_alive(int(m.group(1)))):
            shutil.rmtree(p, ignore_errors=True)


def versions(out: Path) -> list[Path]:
    """OUT's version folders, oldest first."""
    found = [(int(m.group(1)), p) for p in Path(out).iterdir() if (m := VERSION_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def _fsync_tree(folder: Path) -> None:
    for p in folder.iterdir():
        if p.is_file():
            fsync_path(p)
    fsync_path(folder)


def publish_version(tmp: Path, out: Path, doc: dict, keep: int = KEEP_VERSIONS) -> Path:
    """Make the finished folder `tmp` (inside OUT) the current version: rename it to OUT/v-NNNNNN, then
    replace the pointer OUT/model.json atomically (the commit), then drop old versions past `keep`.
    Nothing renames or replaces OUT itself. Returns the version folder."""
    _fsync_tree(tmp)
    existing = versions(out)
    number = int(VERSION_DIR.match(existing[-1].name).group(1)) + 1 if existing else 1  # type: ignore[union-attr]
    while True:  # another export may take a number at the same moment: the rename fails, take the next
        version = out / f"v-{number:06d}"
        try:
            os.rename(tmp, version)  # onto an existing non-empty folder: ENOTEMPTY / EEXIST
            break
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise
            number += 1
    fsync_path(out)
    pointer = doc | {POINTER_KEY: version.name}  # a copy of the version's model.json: tools that only read it work
    write_atomic(out / MODEL_JSON, (json.dumps(pointer, indent=1) + "\n").encode("utf-8"))
    _prune(out, version, keep)
    return version


def _prune(out: Path, current: Path, keep: int) -> None:
    """Old versions past `keep` (never the current one), and the flat layout's files it replaced."""
    older = [p for p in versions(out) if p != current]
    for p in older[:max(0, len(older) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    for name in FLAT_FILES:
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()


def model_json(gen: RunGenerator, generator_onnx: Path, embedder_fragment: dict, metrics: dict, out: Path,
               parity_photos: str | Path | None = None, world: dict | None = None) -> dict:
    """model.json as the artifact contract (docs/architecture.md) lays it out. Where things came from is recorded
    so that it means something on another machine: paths relative to OUT when they lie beside it (else None,
    never an absolute path of this one), and the recipe of a synthetic training world (`world`, or the data
    folder's synth.json). `parity_photos`: the photos the export measured parity on, where `rtd check-backend`
    finds its photos without --photos."""
    cfg = gen.config
    return {
        "format_version": MODEL_JSON_FORMAT,
        "generator": {
            "architecture": cfg.model,
            "stages": registry.get(cfg.model).stages(cfg),
            "stage": gen.stage,
            "resolution": cfg.resolution,
            "native_size": gen.native_size,  # < resolution: the graph upsamples (bilinear) to resolution
            "upsampling": None if gen.native_size == cfg.resolution else "bilinear",
            "width": cfg.width,
            "training_steps": gen.step,
            "training_epochs": gen.epoch + 1,
            "data": portable_path(cfg.data, out),
            "data_world": world or synthetic_world(cfg.data),
            "split": portable_path(cfg.split, out),
            "code_version": gen.code_version,
            "run": portable_path(gen.checkpoint.parent.parent, out),  # RUN/checkpoints/NAME.pt
            "checkpoint": gen.checkpoint.relative_to(gen.checkpoint.parent.parent).as_posix(),  # in the run
            "input": "photo", "output": "product",
            "onnx_sha256": sha256_file(generator_onnx),
        },
        "embedder": embedder_fragment,
        "preprocessing": {"size": cfg.resolution, "letterbox": "white", "range": [-1.0, 1.0],
                          "function": "rtdgan.index.images.preprocess"},
        "metrics": metrics,
        "parity_photos": portable_path(parity_photos, out),
        "exported": {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "code_version": code_version(),
                     "opset": OPSET},
    }


def export_run(cfg: ExportConfig, embedder: tuple[Embedder, EmbedderInfo] | None = None,
               world: dict | None = None) -> dict:
    """Export `cfg.run` into `cfg.out`; returns model.json. `embedder` overrides cfg.embedder (tests); `world`:
    the recipe of the synthetic world the generator was trained on when its data folder is not here (the
    demo's committed weights: their card's recipe)."""
    start = time.perf_counter()
    out = Path(cfg.out)
    _prepare_out(out)
    net, info = embedder or load_embedder(cfg.embedder, cfg.embedder_weights)  # UserError without weights
    gen = load_generator(Path(cfg.run), cfg.stage)
    size = gen.config.resolution
    net, info = at_level(net, info, cfg.embed_level, size)  # UserError when too coarse for S
    if cfg.embed_input_size is not None:
        net, info = at_input_size(net, info, cfg.embed_input_size)  # UserError for a size the backbones cannot take
    photos = gen.config if cfg.parity_data is None else replace(gen.config, data=str(cfg.parity_data), split=None)
    sample = parity_sample(photos)  # (4, 3, S, S) real test photos

    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(out)
    tmp = out / f".tmp-{os.getpid()}"  # inside OUT: the rename into place never leaves OUT's filesystem
    tmp.mkdir()
    try:
        metrics = export_generator(gen.module, tmp / "generator.onnx", size, sample)
        with torch.no_grad():
            products = gen.module(torch.from_numpy(sample)).numpy()  # (4, 3, S, S): what gets embedded
        # The embedder sees both kinds of input it meets: real photos and generated product images.
        fragment = export_embedder(net, info, tmp / "embedder.onnx", size, np.concatenate([sample, products]))
        metrics |= {"embedder_min_cosine_required": MIN_PARITY_COSINE, "parity_images": len(sample)}
        doc = model_json(gen, tmp / "generator.onnx", fragment, {"export_parity": metrics}, out, photos.data, world)
        (tmp / MODEL_JSON).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        version = publish_version(tmp, out, doc)
    except RuntimeError as e:  # export_embedder's parity failure, or the exporter itself
        raise UserError(f"export refused: {e}; nothing written") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if created:  # a failed first export leaves no empty OUT behind
            with contextlib.suppress(OSError):
                out.rmdir()
    print(f"rtd export: {cfg.out} written in {time.perf_counter() - start:.1f} s as {version.name} "
          f"(max |onnx - torch| {metrics['generator_max_abs_error']:.2e})", file=sys.stderr)
    if cfg.check_backends:  # the parity gate at export, on the run's held-out photos
        from rtdgan.index.parity import GATE_PHOTOS, gate_after_write

        gate_after_write(out, parity_sample(photos, GATE_PHOTOS, minimum=len(sample)), str(photos.data), "rtd export")
    return doc

