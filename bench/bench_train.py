"""Training throughput: images/s per rough-to-detail stage for rtdGAN, beside pix2pix at the full size.

Times the loop's real step functions (G update + D update, gradient penalty included) on random
batches in memory, so data loading and disk are left out. Defaults: 64 px, width 16, CPU.

    .venv/bin/python bench/bench_train.py [--resolution 64 --width 16 --batch 8 --steps 5 --device cpu]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from training.config import TrainConfig
from training.schedule import make_plan, schedule_at
from training.steps import build_nets, pix2pix_step, rtdgan_step


def images_per_s(step_fn, cfg: TrainConfig, nets, phase, batch: int, steps: int, device: torch.device) -> float:
    """Median-free simple timing: one warm-up step, then `steps` timed steps."""
    photo = torch.rand(batch, 3, cfg.resolution, cfg.resolution, device=device) * 2 - 1
    product = torch.rand_like(photo) * 2 - 1
    step_fn(cfg, nets, photo, product, phase)  # warm-up (allocations, cudnn autotune)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step_fn(cfg, nets, photo, product, phase)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    """Print images/s per stage (rtdGAN) and at full size (pix2pix), as a table and as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--stages", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)

    results: dict[str, dict[str, float]] = {"rtdgan": {}, "pix2pix": {}}
    cfg = TrainConfig(data="-", out="-", model="rtdgan", stages=args.stages, resolution=args.resolution,
                      width=args.width, batch_sizes=(args.batch,) * args.stages, device=args.device)
    nets = build_nets(cfg, device, distributed=False)
    plan = make_plan(args.stages, 1, 1, cfg.batch_sizes, items=args.batch)
    first = 0
    for sp in plan.stages:
        phase = schedule_at(first, plan)  # first step of the stage: fading in (alpha < 1) from stage 2 on
        size = args.resolution // 2 ** (args.stages - sp.stage)
        results["rtdgan"][f"stage {sp.stage} ({size} px)"] = images_per_s(
            rtdgan_step, cfg, nets, phase, args.batch, args.steps, device)
        first += sp.steps
    p2p = TrainConfig(data="-", out="-", model="pix2pix", resolution=args.resolution, width=args.width,
                      device=args.device)
    nets = build_nets(p2p, device, distributed=False)
    phase = schedule_at(0, make_plan(1, 0, 1, (args.batch,), items=args.batch))
    results["pix2pix"][f"{args.resolution} px"] = images_per_s(pix2pix_step, p2p, nets, phase, args.batch,
                                                              args.steps, device)

    print(f"images/s, {args.device}, {torch.get_num_threads()} threads, width {args.width}, batch {args.batch}")
    rows = list(results["rtdgan"].items())
    for i, (name, value) in enumerate(rows):
        right = f"pix2pix {args.resolution} px: {results['pix2pix'][f'{args.resolution} px']:8.1f}" if i == len(rows) - 1 else ""
        print(f"  rtdgan {name:>16}: {value:8.1f}    {right}")
    print(json.dumps({"device": args.device, "threads": torch.get_num_threads(), "width": args.width,
                      "batch": args.batch, **{k: {n: round(v, 1) for n, v in r.items()} for k, r in results.items()}}))


if __name__ == "__main__":
    main()
