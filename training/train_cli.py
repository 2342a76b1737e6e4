"""`rtd train`: flags -> one frozen TrainConfig, printed, then `train(cfg)` (or the schedule, with --dry-run).

The flags are derived from TrainConfig (training/config.py, index/configs.py): each default is written
once, there, and `--help` shows it; `--config RUN/config.json` reads a run's config back, and flags given
as well override it. `--model`'s choices are the registry's (training/registry.py).

Nothing here imports torch at module import time: `rtd serve` must not pull torch in. torch and
rtdgan.training.train are imported inside `run`.
"""

from __future__ import annotations

import argparse
import json
import os

from rtdgan.index import configs
from rtdgan.training.config import TrainConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `rtd train` flags to `parser` (defaults are the paper's, Sec. 4.1)."""
    configs.add_arguments(parser, TrainConfig)
    parser.add_argument("--dry-run", action="store_true", help="print the config and the schedule, then exit")


def run(args: argparse.Namespace) -> int:
    """Flags -> TrainConfig; print it; with --dry-run print the schedule, else train. Returns an exit code."""
    from rtdgan.training.schedule import describe
    from rtdgan.training.train import make_run_plan, read_records, resolve_device, train, validate

    cfg = resolve_device(configs.from_args(TrainConfig, args))
    validate(cfg)
    rank = int(os.environ.get("RANK", 0))
    if rank == 0:
        configs.print_config("train", cfg)
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
