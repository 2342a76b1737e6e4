"""The training loop: rtdGAN's rough-to-detail training (Algorithm 1) and the pix2pix and PLDT baselines.

`train(cfg)` reads top to bottom in the order things happen: processes and device, data, networks,
schedule, resume, then the loop (one optimiser step of G and one of D per iteration), with logging,
sample grids and checkpoints. The pieces live beside it: the config (config.py), what differs between
the models (registry.py), the networks and each model's G/D step (steps.py), the losses (losses.py), the
stage/alpha schedule (schedule.py) and checkpoint I/O (checkpoint.py); the Gaussian pyramid of the
targets is models/pyramid.py.

Run folder: config.json, stats.jsonl, tensorboard/ (events), samples/epoch_XXXX.png, checkpoints/last.pt and
stage_<i>.pt (what is reported while training: progress.py).
Under `torchrun` (RANK / WORLD_SIZE set) every process trains a shard of each batch in
DistributedDataParallel and only rank 0 writes files; batch sizes are global (split over processes).
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision.utils import make_grid

from rtdgan.index.configs import to_json_dict
from rtdgan.index.errors import UserError
from rtdgan.index.files import write_atomic
from rtdgan.index.images import to_image
from rtdgan.models.layers import log2_resolution, resize_to
from rtdgan.models.pyramid import stage_target
from rtdgan.training import registry
from rtdgan.training.checkpoint import (
    capture_rng,
    code_version,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from rtdgan.training.config import (
    TrainConfig as TrainConfig,  # defined there; many callers import it from here
)
from rtdgan.training.data import ProductRecord, load_records, load_split
from rtdgan.training.dataset import PairDataset
from rtdgan.training.progress import Progress
from rtdgan.training.schedule import Phase, Plan, describe, epoch_order, make_plan, schedule_at
from rtdgan.training.steps import (
    Nets,
    autocast,
    build_nets,
    resolve_memory_format,
    resolve_precision,
    torch_format,
)

SAMPLE_COUNT = 8  # photos in each sample grid
# Options that fix the schedule and the data order: a resumed run must use the checkpoint's values.
RESUME_MUST_MATCH = ("model", "stages", "resolution", "width", "epochs_fade", "epochs_stab", "batch_sizes",
                     "seed", "limit_items")
PRELOAD_MAX_BYTES = 1 << 30  # data sets up to 1 GiB of uint8 pixels are held in memory


def resolve_device(cfg: TrainConfig) -> TrainConfig:
    """The config with device and precision "auto" made concrete: cuda if available, else cpu; bf16 on cuda or a
    CPU with bf16 units, else fp32 (training/steps.py `resolve_precision`). config.json records what was used."""
    if cfg.device == "auto":
        cfg = replace(cfg, device="cuda" if torch.cuda.is_available() else "cpu")
    if cfg.precision == "auto" and cfg.device in ("cpu", "cuda"):
        cfg = replace(cfg, precision=resolve_precision("auto", torch.device(cfg.device)))
    if cfg.memory_format == "auto" and cfg.device in ("cpu", "cuda"):
        cfg = replace(cfg, memory_format=resolve_memory_format("auto", torch.device(cfg.device), cfg.model))
    return cfg


def validate(cfg: TrainConfig) -> None:
    """Raise UserError (one line) for options that cannot train."""
    spec = registry.get(cfg.model)  # UserError for an unknown model
    try:
        log2_resolution(cfg.resolution)
    except ValueError as e:
        raise UserError(str(e)) from e
    spec.check(cfg)
    checks = [
        (cfg.stages >= 1, "--stages must be >= 1"),
        (len(cfg.batch_sizes) >= 1 and min(cfg.batch_sizes) >= 1, "--batch-sizes must be positive integers"),
        (cfg.width >= 1, "--width must be >= 1"),
        (cfg.epochs_fade >= 0 and cfg.epochs_stab >= 0, "--epochs-fade and --epochs-stab must be >= 0"),
        (cfg.epochs_fade + cfg.epochs_stab >= 1, "--epochs-fade + --epochs-stab must be >= 1"),
        (cfg.epochs_extra >= 0, "--epochs-extra must be >= 0"),
        (cfg.lr > 0, "--lr must be positive"),
        (min(cfg.lambda_adv, cfg.lambda_con, cfg.lambda_lap, cfg.lambda_gp) >= 0, "loss weights must be >= 0"),
        (cfg.workers >= 0, "--workers must be >= 0"),
        (cfg.log_every >= 1 and cfg.checkpoint_every_steps >= 1, "--log-every and --checkpoint-every-steps must be >= 1"),
        (cfg.limit_items is None or cfg.limit_items >= 1, "--limit-items must be >= 1"),
        (cfg.stop_after_steps is None or cfg.stop_after_steps >= 1, "--stop-after-steps must be >= 1"),
        (cfg.device in ("auto", "cpu", "cuda"), f"--device must be auto, cpu or cuda, got {cfg.device!r}"),
        (cfg.precision in ("auto", "fp32", "bf16"), f"--precision must be auto, fp32 or bf16, got {cfg.precision!r}"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda, but no CUDA device is available (use --device cpu)")


def read_records(cfg: TrainConfig) -> tuple[list[ProductRecord], list[ProductRecord]]:
    """Training products, and the products whose photos fill the sample grids (the test split if any)."""
    if cfg.split is None:
        records = load_records(Path(cfg.data)).records
        return records, records
    split = load_split(Path(cfg.split))
    if not Path(cfg.data).exists():
        raise UserError(f"data not found: {cfg.data}")
    if split.data.resolve() != Path(cfg.data).resolve():
        raise UserError(f"{cfg.split} was made from {split.data}, not from --data {cfg.data}")
    if not split.train:
        raise UserError(f"{cfg.split}: the train split is empty")
    return split.train, split.test or split.train


def make_run_plan(cfg: TrainConfig, items: int, world: int = 1) -> Plan:
    """The schedule for this config on `items` training items split over `world` processes."""
    per_rank_items = math.ceil(items / world)
    if any(b % world for b in cfg.batch_sizes):
        raise UserError(f"--batch-sizes {cfg.batch_sizes} must be multiples of the {world} processes")
    per_rank = tuple(b // world for b in cfg.batch_sizes)
    if registry.get(cfg.model).staged:
        return make_plan(cfg.stages, cfg.epochs_fade, cfg.epochs_stab, per_rank, per_rank_items, cfg.epochs_extra)
    # Single-stage models (the baselines): one stage with the same epoch budget as the rtdGAN run, at the
    # batch size of rtdGAN's full-resolution stage, so the models see the data equally often.
    epochs = cfg.stages * (cfg.epochs_fade + cfg.epochs_stab) + cfg.epochs_extra
    return make_plan(1, 0, epochs, per_rank[-1:], per_rank_items)


SAMPLE_ROWS = ("photo", "output", "target")


@torch.no_grad()
def save_samples(path: Path, cfg: TrainConfig, nets: Nets, photo: Tensor, product: Tensor, phase: Phase) -> np.ndarray:
    """A labelled grid, rows photo | output | target, each image upsampled (nearest) to the photo's size, a
    title naming the epoch, stage and alpha; written to `path` and returned as (H, W, 3) uint8 (TensorBoard)."""
    G, staged = nets.generator, registry.get(cfg.model).staged
    G.eval()  # running statistics and no dropout: the network as it will be exported
    with autocast(photo.device, cfg.precision):
        fake = G(photo, stage=phase.stage, alpha=phase.alpha) if staged else G(photo)
    G.train()
    target = stage_target(product, phase.stage, cfg.stages) if staged else product
    size = photo.shape[-1]
    rows = [photo, fake.float(), resize_to(target, fake.shape[-1])]
    rows = [torch.nn.functional.interpolate(r, size=size, mode="nearest") for r in rows]  # (k, 3, S, S) each
    pad = 2
    grid = to_image(make_grid(torch.cat(rows), nrow=len(photo), padding=pad, pad_value=1.0).cpu().numpy())  # white
    font = ImageFont.load_default(size=max(10, min(16, size // 4)))
    left = int(font.getlength(max(SAMPLE_ROWS, key=len))) + 8
    top = (font.size if hasattr(font, "size") else 11) + 8  # a FreeType font; the bitmap one is 11 px
    sheet = Image.new("RGB", (left + grid.width, top + grid.height), "white")
    sheet.paste(grid, (left, top))
    d = ImageDraw.Draw(sheet)
    d.text((4, 4), f"epoch {phase.epoch}, stage {phase.stage}/{cfg.stages if staged else 1}, alpha {phase.alpha:.2f}",
           fill="black", font=font)
    for i, name in enumerate(SAMPLE_ROWS):
        d.text((4, top + pad + i * (size + pad) + size // 2), name, fill="black", font=font, anchor="lm")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return np.asarray(sheet)


class StopRequest(threading.Event):
    """Set by the first Ctrl-C or SIGTERM; `signum` says which."""

    signum: int | None = None


class Stopped(KeyboardInterrupt):
    """Training stopped early on a signal, after writing its checkpoint; `--resume` continues it. A
    KeyboardInterrupt, so that callers stop too instead of going on with a half-trained run, and the CLI
    exits 128 + signum (143 for SIGTERM): a scheduler that preempted the job must not see it succeed."""

    def __init__(self, signum: int, checkpoint: Path) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} after writing {checkpoint}; "
                         f"continue with --resume")
        self.signum = signum
        self.checkpoint = checkpoint

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextmanager
def stop_signals() -> Iterator[StopRequest]:
    """The first Ctrl-C or SIGTERM asks the loop to stop after this step (with a checkpoint); a second
    Ctrl-C interrupts at once."""
    requested = StopRequest()
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
        yield requested
        return

    def handler(signum: int, frame: Any) -> None:
        if requested.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        requested.signum = signum
        requested.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (the networks' initial weights come from torch's generator)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(cfg: TrainConfig) -> Path:
    """Train `cfg.model` into the run folder `cfg.out`; return the path of the last checkpoint."""
    cfg = resolve_device(cfg)
    validate(cfg)

    # ---- processes and device: torchrun sets RANK / WORLD_SIZE / LOCAL_RANK
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    distributed = world > 1
    device = torch.device(f"cuda:{local_rank}" if cfg.device == "cuda" else "cpu")
    own_group = distributed and not dist.is_initialized()
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    if own_group:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    is_main = rank == 0

    # ---- data: one item per photo, (photo, product) at the data resolution
    train_records, shown_records = read_records(cfg)
    n_images = sum(1 + len(r.photos) for r in train_records)
    # Small sets are decoded once and kept as uint8 (JPEG decoding otherwise costs as much as a step).
    side = registry.data_resolution(cfg)
    preload = n_images * 3 * side**2 <= PRELOAD_MAX_BYTES
    dataset = PairDataset(train_records, side, preload=preload)
    items = min(len(dataset), cfg.limit_items or len(dataset))
    plan = make_run_plan(cfg, items, world)
    shown = PairDataset(shown_records, side)
    shown_photo, shown_product = (torch.stack(t).to(device) for t in zip(
        *(shown[i] for i in range(min(SAMPLE_COUNT, len(shown)))), strict=True))  # (k, 3, S, S) each

    memory_format = resolve_memory_format(cfg.memory_format, device, cfg.model)  # "auto" left by a device like cuda:1

    # ---- run folder: config.json beside the checkpoints (only rank 0 writes files)
    out = Path(cfg.out)
    last_path = out / "checkpoints" / "last.pt"
    if not cfg.resume and last_path.exists():
        raise UserError(f"{out} already holds a checkpoint: pass --resume to continue it, or choose another --out")
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        # Reads back as it was written: `rtd train --config RUN/config.json` (flags given as well override it).
        write_atomic(out / "config.json", (json.dumps(to_json_dict(cfg), indent=1) + "\n").encode("utf-8"))
        print(f"rtd train: {cfg.model} on {items} items ({len(train_records)} products), {world} process(es), "
              f"{cfg.device} {resolve_precision(cfg.precision, device)} "
              f"{memory_format}", file=sys.stderr)
        for line in describe(plan, world):
            print(f"rtd train: {line}", file=sys.stderr)

    # ---- networks: the same initial weights on every rank, then per-rank noise (GP mixing, dropout)
    seed_everything(cfg.seed)
    nets = build_nets(cfg, device, distributed)
    fmt = torch_format(memory_format)  # the batches' too
    seed_everything(cfg.seed + rank)
    version = code_version()
    train_step = registry.get(cfg.model).step

    # ---- resume: weights, optimiser moments, RNG; the schedule and the data order follow from the step
    start_step = 0
    if cfg.resume:
        state = load_checkpoint(last_path)
        for key in RESUME_MUST_MATCH:
            saved = state["config"][key]
            saved = tuple(saved) if isinstance(saved, list) else saved
            if saved != getattr(cfg, key):
                raise UserError(f"--resume: {key} is {getattr(cfg, key)!r} but the checkpoint has {saved!r}")
        if state["items"] != items:
            raise UserError(f"--resume: the data has {items} items, the checkpoint was trained on {state['items']}")
        if state["step"] > plan.total_steps:  # --epochs-extra may grow on resume; the steps done must fit
            raise UserError(f"--resume: the checkpoint is at step {state['step']}, past this schedule's "
                            f"{plan.total_steps} steps (--epochs-extra {cfg.epochs_extra} is too small)")
        nets.generator.load_state_dict(state["models"]["generator"])
        nets.critic.load_state_dict(state["models"]["critic"])
        if nets.domain_critic is not None:
            nets.domain_critic.load_state_dict(state["models"]["domain_critic"])
        nets.opt_g.load_state_dict(state["optimizers"]["generator"])
        nets.opt_d.load_state_dict(state["optimizers"]["critic"])
        for opt in (nets.opt_g, nets.opt_d):  # --lr may change on resume; the schedule may not
            for group in opt.param_groups:
                group["lr"] = cfg.lr
        rngs = state["rng"]
        restore_rng(rngs[rank] if len(rngs) == world else rngs[0])
        start_step = state["step"]
        if is_main:
            print(f"rtd train: resumed at step {start_step} of {plan.total_steps}", file=sys.stderr)

    def checkpoint(step: int, phase: Phase) -> dict[str, Any]:
        """Everything needed to continue after `step` completed steps (gathers every rank's RNG)."""
        rngs = [capture_rng()]
        if distributed:
            rngs = [None] * world
            dist.all_gather_object(rngs, capture_rng())
        models = {"generator": nets.generator.state_dict(), "critic": nets.critic.state_dict()}
        if nets.domain_critic is not None:
            models["domain_critic"] = nets.domain_critic.state_dict()
        return {
            "config": asdict(cfg), "code_version": version, "model": cfg.model,
            "generator_config": asdict(nets.generator.cfg), "step": step, "stage": phase.stage,
            "alpha": phase.alpha, "epoch": phase.epoch, "items": items, "models": models,
            "optimizers": {"generator": nets.opt_g.state_dict(), "critic": nets.opt_d.state_dict()},
            "rng": rngs, "data_order": {"seed": cfg.seed, "epoch": phase.epoch, "batches_done": phase.step_in_epoch + 1},
        }

    # ---- the loop: one G step and one D step per iteration (Sec. 4.1: one critic step per G step)
    progress = Progress(out if is_main else None, plan.total_steps, start_step)
    sums: dict[str, Tensor] = {}
    count, seen, t_start = 0, 0, time.perf_counter()
    t_log = t_start
    batches: Iterator[list[Tensor]] | None = None
    try:
        with stop_signals() as stop_requested:
            for step in range(start_step, plan.total_steps):
                phase = schedule_at(step, plan)
                if batches is None or phase.step_in_epoch == 0:  # a new epoch, or resuming mid-epoch
                    order = epoch_order(items, cfg.seed, phase.epoch, rank, world)
                    batches = iter(DataLoader(dataset, batch_size=phase.batch_size,
                                              sampler=order[phase.step_in_epoch * phase.batch_size:],
                                              num_workers=cfg.workers, pin_memory=device.type == "cuda",
                                              generator=torch.Generator()))  # keeps the global RNG untouched
                photo, product = (t.to(device, non_blocking=True) for t in next(batches))  # (B, 3, S, S)
                photo, product = photo.contiguous(memory_format=fmt), product.contiguous(memory_format=fmt)

                terms = train_step(cfg, nets, photo, product, phase)

                done = step + 1
                count, seen = count + 1, seen + photo.shape[0] * world
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0) + v
                if done % cfg.log_every == 0 or phase.last_in_stage or done == cfg.stop_after_steps:
                    now = time.perf_counter()
                    if is_main:  # rank 0 logs its own shard's losses (.item() syncs the GPU)
                        losses = {k: round((v / count).item(), 6) for k, v in sums.items()}
                        progress.log({"step": done, "epoch": phase.epoch, "stage": phase.stage, "alpha": phase.alpha,
                                      "batch_size": phase.batch_size * world, **losses,
                                      "images_per_s": round(seen / max(now - t_log, 1e-9), 2),
                                      "wall_s": round(now - t_start, 3), "time": time.time()})
                    sums, count, seen, t_log = {}, 0, 0, now
                if is_main and phase.step_in_epoch == phase.steps_per_epoch - 1:
                    grid = save_samples(out / "samples" / f"epoch_{phase.epoch:04d}.png", cfg, nets, shown_photo,
                                        shown_product, phase)
                    progress.image("samples", grid, done)
                progress.update()

                stop = stop_requested.is_set() or (cfg.stop_after_steps is not None and done >= cfg.stop_after_steps)
                if distributed:  # every rank must stop at the same step, or DDP would wait forever
                    flag = torch.tensor([float(stop)], device=device)
                    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                    stop = bool(flag.item())
                if stop or phase.last_in_stage or done % cfg.checkpoint_every_steps == 0:
                    state = checkpoint(done, phase)
                    if is_main:
                        save_checkpoint(last_path, state)
                        if phase.last_in_stage:
                            save_checkpoint(out / "checkpoints" / f"stage_{phase.stage}.pt", state)
                if stop:
                    if is_main:
                        print(f"\nrtd train: stopped after step {done} of {plan.total_steps}; continue with --resume",
                              file=sys.stderr)
                    break
        if dist.is_initialized():
            # Every rank finishes (rank 0 writes the last checkpoint) before any tears the group down: a
            # rank exiting while a peer still talks to it makes gloo abort that peer.
            dist.barrier()
    finally:
        progress.close()
        if own_group:
            dist.destroy_process_group()
    if stop_requested.signum is not None:
        raise Stopped(stop_requested.signum, last_path)
    return last_path
