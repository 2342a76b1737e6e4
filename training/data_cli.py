"""`rtd data synth | split | sheet`: make, split and inspect paired data sets. No torch.

Each subcommand has `add_arguments_<name>(parser)` and `run_<name>(args) -> int`. The flags of synth and
split are derived from SynthConfig (training/synth.py) and SplitConfig (training/split.py) by
index/configs.py: each default is written once, in the dataclass, and `--help` shows it. Every command
prints its effective config as one JSON line on stderr; results go to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rtdgan.index import configs


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from e
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


# ---- rtd data synth ---------------------------------------------------------------------------------------

def add_arguments_synth(parser: argparse.ArgumentParser) -> None:
    """The `rtd data synth` flags: SynthConfig's fields."""
    from rtdgan.training.synth import SynthConfig

    configs.add_arguments(parser, SynthConfig)


def run_synth(args: argparse.Namespace) -> int:
    """Write the synthetic street-to-shop data set (LookBook layout + products.csv); print its report."""
    from rtdgan.training.synth import SynthConfig, synthesize

    cfg = configs.job_config(SynthConfig, args, "data synth")
    report = synthesize(cfg)
    print(json.dumps(report, default=str))
    return 0


# ---- rtd data split ---------------------------------------------------------------------------------------

def add_arguments_split(parser: argparse.ArgumentParser) -> None:
    """The `rtd data split` flags: SplitConfig's fields."""
    from rtdgan.training.split import SplitConfig

    configs.add_arguments(parser, SplitConfig)


def run_split(args: argparse.Namespace) -> int:
    """Split by product with the paper's near-duplicate cleaning; report skipped files on stderr."""
    from rtdgan.training.split import SplitConfig, make_split

    cfg = configs.job_config(SplitConfig, args, "data split")
    info = make_split(cfg)
    for line in info["skipped"]:
        print(f"rtd data split: skipped {line}", file=sys.stderr)
    print(json.dumps({"out": str(cfg.out), "counts": info["counts"], "dropped": len(info["dropped"]),
                      "skipped": len(info["skipped"])}))
    return 0


# ---- rtd data sheet ---------------------------------------------------------------------------------------

def add_arguments_sheet(parser: argparse.ArgumentParser) -> None:
    """The `rtd data sheet` flags (a one-off picture: no config class)."""
    parser.add_argument("data", type=Path, help="LookBook folder")
    parser.add_argument("--out", type=Path, required=True, help="image to write (.png or .jpg)")
    parser.add_argument("--products", type=positive_int, default=8, help="rows: the first N products (default: 8)")
    parser.add_argument("--photos", type=positive_int, default=4, help="photos per product (default: 4)")
    parser.add_argument("--size", type=positive_int, default=128, help="cell side in pixels (default: 128)")


def run_sheet(args: argparse.Namespace) -> int:
    """Draw the contact sheet (product image | photos, one product per row); print its path."""
    from rtdgan.training.sheet import contact_sheet

    configs.print_config("data sheet", {"data": args.data, "out": args.out, "products": args.products,
                                        "photos": args.photos, "size": args.size})
    out = contact_sheet(args.data, args.out, products=args.products, photos=args.photos, size=args.size)
    print(out)
    return 0
