"""Training throughput: images/s per rough-to-detail stage for rtdGAN and pix2pix, per numeric variant.

Times the loop's real step functions (G update + D update, gradient penalty included) on random batches
in memory, so data loading and disk are left out. Each variant is measured side by side in one run, and
printed as images/s and as the ratio to the first variant (fp32):
  fp32             what `--precision fp32` trains with (and the default on a CPU without bf16 units);
  bf16             `--precision bf16`: the forward passes under bf16 autocast (training/steps.py);
  fp32+cl, bf16+cl the networks and batches in channels_last memory format (`--memory-format auto`'s choice
                   on CUDA, and for rtdGAN on CPU: measured here; the other variants run contiguous);
  fp32+compile     the generator under torch.compile (inductor; the critic's gradient penalty needs a double
                   backward, which compiled graphs do not support, so the critic stays eager).
Defaults: 64 px, widths 16 and 64, CPU. The median step time is used: the machine may be shared.

    .venv/bin/python bench/bench_train.py [--resolution 64 --widths 16,64 --batch 8 --steps 5 --threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: bench.common

import torch  # noqa: E402

from bench.common import machine  # noqa: E402
from rtdgan.training.config import TrainConfig  # noqa: E402
from rtdgan.training.schedule import make_plan, schedule_at  # noqa: E402
from rtdgan.training.steps import build_nets, cpu_has_bf16, pix2pix_step, rtdgan_step  # noqa: E402

VARIANTS = {  # name: (precision, channels_last, compile)
    "fp32": ("fp32", False, False),
    "bf16": ("bf16", False, False),
    "fp32+cl": ("fp32", True, False),
    "bf16+cl": ("bf16", True, False),
    "fp32+compile": ("fp32", False, True),
}


def prepare(cfg: TrainConfig, device: torch.device, channels_last: bool, compile_g: bool):
    """The nets of `cfg` (seeded, so every variant starts from the same weights) in the variant's form."""
    torch.manual_seed(0)
    cfg = replace(cfg, memory_format="channels_last" if channels_last else "contiguous")
    nets = build_nets(cfg, device, distributed=False)
    if compile_g:
        nets.generator_train = torch.compile(nets.generator)
    return nets


def images_per_s(step_fn, cfg: TrainConfig, nets, phase, size: int, batch: int, steps: int, warmup: int,
                 channels_last: bool, device: torch.device) -> float:
    """`warmup` untimed steps (allocations, autotuning, compilation), then batch / median step time."""
    photo = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    product = torch.rand_like(photo) * 2 - 1
    if channels_last:
        photo, product = (t.contiguous(memory_format=torch.channels_last) for t in (photo, product))
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step_fn(cfg, nets, photo, product, phase)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def bench_width(args: argparse.Namespace, width: int, variants: list[str], device: torch.device) -> dict:
    """{row: {variant: images/s or None (failed)}} for rtdGAN's stages and pix2pix at one width."""
    results: dict[str, dict[str, float | None]] = {}
    base = TrainConfig(data="-", out="-", model="rtdgan", stages=args.stages, resolution=args.resolution, width=width,
                       batch_sizes=(args.batch,) * args.stages, device=args.device)
    p2p = TrainConfig(data="-", out="-", model="pix2pix", resolution=args.resolution, width=width, device=args.device)
    plan = make_plan(args.stages, 1, 1, base.batch_sizes, items=args.batch)
    for variant in variants:
        precision, channels_last, compile_g = VARIANTS[variant]
        warmup = 2 if compile_g else 1
        try:
            cfg = replace(base, precision=precision)
            nets = prepare(cfg, device, channels_last, compile_g)
            first = 0
            for sp in plan.stages:
                phase = schedule_at(first, plan)  # first step of the stage: fading in (alpha < 1) from stage 2 on
                size = args.resolution // 2 ** (args.stages - sp.stage)
                results.setdefault(f"rtdgan stage {sp.stage} ({size} px)", {})[variant] = images_per_s(
                    rtdgan_step, cfg, nets, phase, args.resolution, args.batch, args.steps, warmup, channels_last,
                    device)
                first += sp.steps
            cfg = replace(p2p, precision=precision)
            nets = prepare(cfg, device, channels_last, compile_g)
            phase = schedule_at(0, make_plan(1, 0, 1, (args.batch,), items=args.batch))
            results.setdefault(f"pix2pix ({args.resolution} px)", {})[variant] = images_per_s(
                pix2pix_step, cfg, nets, phase, args.resolution, args.batch, args.steps, warmup, channels_last, device)
        except Exception as e:  # noqa: BLE001 - a variant that does not run here (torch.compile without a compiler)
            print(f"  {variant}: failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
            for row in results.values():
                row.setdefault(variant, None)
        print(f"  width {width}: {variant} done", flush=True)
    return results


def main() -> None:
    """Print images/s per row and variant, the ratio to the first variant, and the whole as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--widths", default="16,64", help="comma-separated generator/critic widths")
    parser.add_argument("--stages", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per row (after the warm-up)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    units = "cuda" if device.type == "cuda" else ("bf16 units (AMX/AVX512-BF16)" if cpu_has_bf16() else
                                                  "no bf16 units: bf16 is emulated")
    print(f"images/s, {args.device} ({units}), {torch.get_num_threads()} threads, batch {args.batch}, "
          f"median of {args.steps} steps, torch {torch.__version__}; {machine()}")
    out = {"device": args.device, "machine": machine(), "bf16_units": units, "threads": torch.get_num_threads(), "batch": args.batch,
           "resolution": args.resolution, "widths": {}}
    for width in (int(w) for w in args.widths.split(",")):
        results = bench_width(args, width, variants, device)
        ref = variants[0]
        print(f"width {width}:")
        print(f"  {'':>24}" + "".join(f"{v:>22}" for v in variants))
        for row, values in results.items():
            cells = []
            for v in variants:
                value, base = values.get(v), values.get(ref)
                cells.append("failed" if value is None else
                             f"{value:8.1f} ({value / base:4.2f}x)" if base else f"{value:8.1f}")
            print(f"  {row:>24}" + "".join(f"{c:>22}" for c in cells))
        out["widths"][width] = {row: {v: None if x is None else round(x, 1) for v, x in values.items()}
                                for row, values in results.items()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
