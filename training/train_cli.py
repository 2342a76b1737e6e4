"""`rtd train`: flags -> one frozen TrainConfig, printed, then `train(cfg)` (or the schedule, with --dry-run).

Nothing here imports torch at module import time: `service/cli.py` builds every subcommand's flags, and
`rtd serve` must not pull torch in. torch and training.train are imported inside `run`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

MODELS = ("rtdgan", "pix2pix", "pldt")


def _batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 60,40,20, got {text!r}") from e
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be positive integers, got {text!r}")
    return sizes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `rtd train` flags to `parser` (defaults are the paper's, Sec. 4.1)."""
    p = parser
    p.add_argument("--data", type=Path, required=True, help="LookBook folder or pairs manifest CSV")
    p.add_argument("--split", type=Path, default=None, help="split file from `rtd data split` (default: all of --data)")
    p.add_argument("--out", type=Path, required=True, help="run folder (config, stats, samples, checkpoints)")
    p.add_argument("--model", choices=MODELS, default="rtdgan")
    p.add_argument("--stages", type=int, default=3, help="rough-to-detail stages N (baselines: epoch budget only)")
    p.add_argument("--resolution", type=int, default=256, help="image side S (PLDT trains at min(S, 64))")
    p.add_argument("--width", type=int, default=64, help="channels of the first G and D layers")
    p.add_argument("--epochs-fade", type=int, default=40, help="t_fade: fade-in epochs per stage")
    p.add_argument("--epochs-stab", type=int, default=40, help="t_stab: stabilisation epochs per stage")
    p.add_argument("--epochs-extra", type=int, default=0,
                   help="more epochs at the full resolution after the schedule; may grow on --resume")
    p.add_argument("--batch-sizes", type=_batch_sizes, default=(60, 40, 20),
                   help="global batch size per stage, e.g. 60,40,20 (baselines use the last)")
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate of G and D")
    p.add_argument("--lambda-adv", type=float, default=1.0, help="Eq. 4 adversarial weight (rtdgan)")
    p.add_argument("--lambda-con", type=float, default=1.0, help="Eq. 4 content (L1) weight (rtdgan)")
    p.add_argument("--lambda-lap", type=float, default=1.0, help="Eq. 4 Laplacian weight (rtdgan)")
    p.add_argument("--lambda-gp", type=float, default=10.0, help="WGAN-GP gradient penalty weight (rtdgan)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="data loader processes")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: cuda if available")
    p.add_argument("--log-every", type=int, default=50, help="steps between stats.jsonl lines")
    p.add_argument("--checkpoint-every-steps", type=int, default=1000, help="also at each stage end and on stop")
    p.add_argument("--limit-items", type=int, default=None, help="train on the first n (photo, product) items")
    p.add_argument("--stop-after-steps", type=int, default=None, help="stop with a checkpoint after n steps")
    p.add_argument("--dry-run", action="store_true", help="print the config and the schedule, then exit")


def run(args: argparse.Namespace) -> int:
    """Flags -> TrainConfig; print it; with --dry-run print the schedule, else train. Returns an exit code."""
    import torch

    from training.schedule import describe
    from training.train import TrainConfig, make_run_plan, read_records, train, validate

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = TrainConfig(
        data=str(args.data), out=str(args.out), split=None if args.split is None else str(args.split),
        model=args.model, stages=args.stages, resolution=args.resolution, width=args.width,
        epochs_fade=args.epochs_fade, epochs_stab=args.epochs_stab,
        epochs_extra=args.epochs_extra, batch_sizes=tuple(args.batch_sizes),
        lr=args.lr, lambda_adv=args.lambda_adv, lambda_con=args.lambda_con, lambda_lap=args.lambda_lap,
        lambda_gp=args.lambda_gp, seed=args.seed, workers=args.workers, resume=args.resume, device=device,
        log_every=args.log_every, checkpoint_every_steps=args.checkpoint_every_steps,
        limit_items=args.limit_items, stop_after_steps=args.stop_after_steps,
    )
    validate(cfg)
    rank = int(os.environ.get("RANK", 0))
    if rank == 0:
        print(f"rtd train: config {json.dumps(cfg.__dict__)}", file=sys.stderr)
    if args.dry_run:
        records, _ = read_records(cfg)
        photos = sum(len(r.photos) for r in records)
        items = min(photos, cfg.limit_items or photos)
        world = int(os.environ.get("WORLD_SIZE", 1))
        plan = make_run_plan(cfg, items, world)
        print(json.dumps({"dry_run": True, "items": items, "products": len(records),
                          "total_steps": plan.total_steps, "schedule": describe(plan, world)}))
        return 0
    last = train(cfg)
    if rank == 0:
        print(json.dumps({"out": str(cfg.out), "checkpoint": str(last)}))
    return 0

