"""`rtd index build` (its `rtd index search` sibling is index/search_cli.py). No torch.

Flags are derived from `rtdgan.index.build.BuildConfig` (index/configs.py): every default is written once, in the
dataclass, and `--help` shows it. The effective config is one JSON line on stderr; results go to stdout.
UserError propagates: the `rtd` entry point prints it as one line and exits non-zero.
"""

from __future__ import annotations

import argparse

from rtdgan.index import configs
from rtdgan.index.build import BuildConfig, build_index
from rtdgan.index.runtime.backends import from_env

SHOW_SKIPPED = 10  # skipped images listed one per line; the rest are counted


def add_arguments_build(parser: argparse.ArgumentParser) -> None:
    """Flags of `rtd index build`, one per field of BuildConfig (plus --config FILE)."""
    configs.add_arguments(parser, BuildConfig)


def run_build(args: argparse.Namespace) -> int:
    """Run `rtd index build`: print the config (stderr), build, print a summary (stdout); the exit code."""
    cfg = configs.job_config(BuildConfig, args, "index build")
    summary = build_index(cfg.artifacts, cfg.catalog, cfg.out, kind=cfg.kind, batch_size=cfg.batch_size,
                          size=cfg.size, factory=cfg.factory, nprobe=cfg.nprobe, ef_search=cfg.ef_search,
                          backend=from_env(cfg.backend, cfg.precision))
    skipped = summary["skipped"]
    for line in skipped[:SHOW_SKIPPED]:
        print(f"skipped: {line}")
    if len(skipped) > SHOW_SKIPPED:
        print(f"skipped: ... and {len(skipped) - SHOW_SKIPPED} more")
    print(f"indexed {summary['count']} products ({summary['factory']}, dim {summary['dim']}, "
          f"embedder {summary['embedder']['name']} on {summary['backend']['backend']} "
          f"{summary['backend']['precision']}) into {summary['out']} in {summary['seconds']} s; "
          f"{len(skipped)} skipped")
    if summary["recall"] is not None:
        r = summary["recall"]
        print(f"recall@{r['k']} against exact search: {r['recall']:.3f} ({r['queries']} queries)")
    return 0
