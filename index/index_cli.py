"""`rtd index ...` subcommands (wired into service/cli.py). No torch.

UserError propagates: the `rtd` entry point prints it as one line and exits non-zero.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from index.build import build_index
from index.catalog import DEFAULT_EF_SEARCH, DEFAULT_NPROBE, KINDS

SHOW_SKIPPED = 10  # skipped images listed one per line; the rest are counted


def add_arguments_build(parser: argparse.ArgumentParser) -> None:
    """Flags of `rtd index build`."""
    parser.add_argument("--artifacts", type=Path, required=True, help="folder with embedder.onnx and model.json")
    parser.add_argument("--catalog", type=Path, required=True,
                        help="LookBook folder, catalog CSV (product_id,image[,title,category]) or folder of images")
    parser.add_argument("--out", type=Path, required=True, help="index folder to write (replaced atomically)")
    parser.add_argument("--kind", choices=KINDS, default="flat",
                        help="flat: exact search (default); hnsw / ivf: approximate, recall@10 is measured")
    parser.add_argument("--batch-size", type=int, default=32, help="images per embedder call")
    parser.add_argument("--size", type=int, default=None,
                        help="image size S when the artifacts have no model.json (otherwise it must agree)")
    parser.add_argument("--nprobe", type=int, default=DEFAULT_NPROBE, help="ivf: inverted lists scanned per query")
    parser.add_argument("--ef-search", type=int, default=DEFAULT_EF_SEARCH, help="hnsw: search breadth per query")


def run_build(args: argparse.Namespace) -> int:
    """Run `rtd index build`: print the config, build, print a summary; returns the exit code."""
    config = {"artifacts": str(args.artifacts), "catalog": str(args.catalog), "out": str(args.out),
              "kind": args.kind, "batch_size": args.batch_size, "size": args.size,
              "nprobe": args.nprobe, "ef_search": args.ef_search}
    print("index build config: " + json.dumps(config))
    summary = build_index(args.artifacts, args.catalog, args.out, kind=args.kind, batch_size=args.batch_size,
                          size=args.size, nprobe=args.nprobe, ef_search=args.ef_search)
    skipped = summary["skipped"]
    for line in skipped[:SHOW_SKIPPED]:
        print(f"skipped: {line}")
    if len(skipped) > SHOW_SKIPPED:
        print(f"skipped: ... and {len(skipped) - SHOW_SKIPPED} more")
    print(f"indexed {summary['count']} products ({summary['kind']}, dim {summary['dim']}, "
          f"embedder {summary['embedder']['name']}) into {summary['out']} in {summary['seconds']} s; "
          f"{len(skipped)} skipped")
    if summary["recall"] is not None:
        r = summary["recall"]
        print(f"recall@{r['k']} against exact search: {r['recall']:.3f} ({r['queries']} queries)")
    return 0
