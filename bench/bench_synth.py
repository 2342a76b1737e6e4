"""Benchmark `rtd data synth`: photo+product pairs per second per core (the target: >= 100 at 256 px).

One pair is one photo with its product; a product image is drawn once for its K photos, so pairs/s is
photos/s. Three runs side by side in one process: 256 px on one worker (the number the target is about),
256 px on --workers processes (the scaling ratio), and 64 px on one worker (the size ratio). "cpu" is the
CPU seconds the run used (this process and its workers), which is robust to a machine shared with others;
"wall" is the clock.

    .venv/bin/python bench/bench_synth.py [--products 150] [--photos 4] [--workers 2] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: bench.common

from bench.common import machine  # noqa: E402
from rtdgan.training.synth import SynthConfig, synthesize  # noqa: E402


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (worker processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run(cfg: SynthConfig) -> dict:
    """Synthesize once; pairs per second by the clock, per core by the clock, and per CPU second."""
    cpu, wall = cpu_seconds(), time.perf_counter()
    synthesize(cfg)
    cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
    pairs = cfg.products * cfg.photos_per_product
    cores = min(cfg.workers, os.cpu_count() or 1)
    return {"size": cfg.size, "workers": cfg.workers, "pairs": pairs, "wall_s": wall, "cpu_s": cpu,
            "pairs_per_s": pairs / wall, "pairs_per_s_per_core": pairs / wall / cores, "pairs_per_cpu_s": pairs / cpu}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--products", type=int, default=150)
    p.add_argument("--photos", type=int, default=4, help="photos per product")
    p.add_argument("--workers", type=int, default=2, help="processes for the scaling run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", action="store_true", help="also profile the 256 px one-worker run (top 20 by own time)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = SynthConfig(out=Path(tmp), products=args.products, photos_per_product=args.photos, size=256,
                           seed=args.seed)
        synthesize(SynthConfig(out=Path(tmp) / "warm", products=2, photos_per_product=1, size=64))  # imports, fonts
        runs = {
            "256px x1": run(replace(base, out=Path(tmp) / "a")),
            f"256px x{args.workers}": run(replace(base, out=Path(tmp) / "b", workers=args.workers)),
            "64px x1": run(replace(base, out=Path(tmp) / "c", size=64)),
        }
        print(f"bench_synth: {args.products} products x {args.photos} photos, seed {args.seed}, {machine()}")
        print(f"{'run':<12} {'pairs':>6} {'wall s':>7} {'cpu s':>7} {'pairs/s':>8} {'/core':>8} {'/cpu s':>8}")
        for name, r in runs.items():
            print(f"{name:<12} {r['pairs']:>6} {r['wall_s']:>7.2f} {r['cpu_s']:>7.2f} {r['pairs_per_s']:>8.1f} "
                  f"{r['pairs_per_s_per_core']:>8.1f} {r['pairs_per_cpu_s']:>8.1f}")
        one, many, small = runs["256px x1"], runs[f"256px x{args.workers}"], runs["64px x1"]
        print(f"ratio workers {args.workers} / 1 at 256 px (wall pairs/s): {many['pairs_per_s'] / one['pairs_per_s']:.2f}")
        print(f"ratio 64 px / 256 px on one worker (pairs per CPU s): {small['pairs_per_cpu_s'] / one['pairs_per_cpu_s']:.2f}")
        target = 100.0
        verdict = "meets" if one["pairs_per_cpu_s"] >= target else "MISSES"
        print(f"256 px, one core: {one['pairs_per_cpu_s']:.1f} pairs per CPU second: {verdict} the {target:.0f}/s target")
        if args.profile:
            prof = cProfile.Profile()
            prof.runcall(synthesize, replace(base, out=Path(tmp) / "d"))
            pstats.Stats(prof).sort_stats("tottime").print_stats(20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
