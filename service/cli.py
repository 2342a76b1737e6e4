"""`rtd`: the one command line. Flags become a config, the config is printed, the job runs.

Subcommands import torch lazily (inside the job), so `rtd serve` never pulls torch in.
Bad input (a flag, a file, a folder) is one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from index.errors import UserError

EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr (no usage block) and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def print_config(command: str, config: object) -> None:
    """Print the effective config of a job as one JSON object on stderr (stdout stays for results)."""
    if dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)  # type: ignore[arg-type]
    text = json.dumps(config, default=str, sort_keys=False)
    print(f"rtd {command}: config {text}", file=sys.stderr)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


# ---- data ------------------------------------------------------------------------------------------

def cmd_data_synth(args: argparse.Namespace) -> int:
    from training.synth import SynthConfig, synthesize

    cfg = SynthConfig(out=args.out, products=args.products, photos_per_product=args.photos_per_product,
                      size=args.size, seed=args.seed, workers=args.workers, framing=args.framing)
    print_config("data synth", cfg)
    report = synthesize(cfg)
    print(json.dumps(report, default=str))
    return 0


def cmd_data_split(args: argparse.Namespace) -> int:
    from training.split import SplitConfig, make_split

    cfg = SplitConfig(data=args.data, out=args.out, test_fraction=args.test_fraction, seed=args.seed,
                      phash_threshold=args.phash_threshold, workers=args.workers)
    print_config("data split", cfg)
    info = make_split(cfg)
    for line in info["skipped"]:
        print(f"rtd data split: skipped {line}", file=sys.stderr)
    print(json.dumps({"out": str(cfg.out), "counts": info["counts"], "dropped": len(info["dropped"]),
                      "skipped": len(info["skipped"])}))
    return 0


def cmd_data_sheet(args: argparse.Namespace) -> int:
    from training.sheet import contact_sheet

    print_config("data sheet", vars(args) | {"func": None})
    out = contact_sheet(args.data, args.out, products=args.products, photos=args.photos, size=args.size)
    print(out)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from service.demo import DemoConfig, run_demo

    level = {} if args.embed_level is None else {"embed_level": args.embed_level}
    cfg = DemoConfig(root=args.root, products=args.products, seed=args.seed, host=args.host, port=args.port,
                     serve=not args.build_only, retrain=args.retrain, **level)
    print_config("demo", cfg)
    return run_demo(cfg)


# ---- the parser ------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="rtd", description="rtdgan: clothing product search with rtdGAN "
                           "(street photo -> product image -> embedding -> catalog).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    data = sub.add_parser("data", help="make, split and inspect paired data sets")
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=OneLineParser)

    p = data_sub.add_parser("synth", help="write the synthetic street-to-shop data set (LookBook layout)")
    p.add_argument("--out", type=Path, required=True, help="folder to write")
    p.add_argument("--products", type=positive_int, default=50)
    p.add_argument("--photos-per-product", type=positive_int, default=4)
    p.add_argument("--size", type=positive_int, default=128, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=positive_int, default=1, help="processes (output is identical for any value)")
    p.add_argument("--framing", choices=["street", "lookbook"], default="street",
                   help="street: a person 40-95%% of the height anywhere in the photo; lookbook: 80-95%%, centred")
    p.set_defaults(func=cmd_data_synth)

    p = data_sub.add_parser("split", help="seeded train/test split by product, with near-duplicate cleaning")
    p.add_argument("--data", type=Path, required=True, help="LookBook folder or pairs manifest CSV")
    p.add_argument("--out", type=Path, required=True, help="split file to write (JSON)")
    p.add_argument("--test-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--phash-threshold", type=int, default=6, help="Hamming bits (of 64) that count as a duplicate")
    p.add_argument("--workers", type=positive_int, default=1)
    p.set_defaults(func=cmd_data_split)

    p = data_sub.add_parser("sheet", help="draw a contact sheet of a data set (product | photos per row)")
    p.add_argument("data", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--products", type=positive_int, default=8)
    p.add_argument("--photos", type=positive_int, default=4)
    p.add_argument("--size", type=positive_int, default=128)
    p.set_defaults(func=cmd_data_sheet)

    # Each command's flags live beside its code; none of these modules imports torch at import time.
    # Imported here rather than at the top: they load FAISS, which must come after main() sets its policy.
    from index import index_cli, search_cli
    from service import serve_cli
    from training import eval_cli, export_cli, train_cli

    p = sub.add_parser("train", help="train rtdGAN or a baseline (pix2pix, PLDT)")
    train_cli.add_arguments(p)
    p.set_defaults(func=train_cli.run)

    p = sub.add_parser("eval", help="RMSE, SSIM and Recall@K of exported artifacts (`rtd eval compare` merges reports)")
    eval_cli.add_arguments(p)
    p.set_defaults(func=eval_cli.run)

    p = sub.add_parser("export", help="export a run to ONNX artifacts (generator, embedder, model.json)")
    export_cli.add_arguments(p)
    p.set_defaults(func=export_cli.run)

    idx = sub.add_parser("index", help="build and query the catalog index")
    idx_sub = idx.add_subparsers(dest="index_command", required=True, parser_class=OneLineParser)
    p = idx_sub.add_parser("build", help="embed a catalog into a FAISS + SQLite index folder")
    index_cli.add_arguments_build(p)
    p.set_defaults(func=index_cli.run_build)
    p = idx_sub.add_parser("search", help="top-K products for a photo (generate, embed, search), as JSON")
    search_cli.add_arguments(p)
    p.set_defaults(func=search_cli.run)

    p = sub.add_parser("serve", help="run the HTTP service (FastAPI + onnxruntime + FAISS)")
    serve_cli.add_arguments(p)
    p.set_defaults(func=serve_cli.run)
    p = sub.add_parser("demo", help="build the demo (data, model, artifacts, index) if absent and serve it")
    p.add_argument("--root", type=Path, default=Path("demo"), help="folder for everything the demo builds")
    p.add_argument("--products", type=positive_int, default=300)
    p.add_argument("--seed", type=int, default=1000, help="the shop's catalog seed")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--build-only", action="store_true", help="build what is missing, then exit without serving")
    p.add_argument("--embed-level", type=int, default=None, metavar="L",
                   help="compare images L Gaussian pyramid levels down (default: DemoConfig's 2, i.e. 16 px; 0: full "
                        "resolution, the paper's protocol); a change re-exports the artifacts and rebuilds the index")
    p.add_argument("--retrain", action="store_true", help="reproduce the committed demo generator: train its "
                   "recipe (about 1.5 CPU hours) and rewrite models/pretrained/rtdgan-demo-64.pt")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rtd` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["serve"], ["demo"]):
        # FAISS's idle OpenMP threads spin by default, which costs a server throughput (see
        # service/serve_cli.py); the policy is read when FAISS loads, and building the parser loads it.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"rtd {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as e:  # Ctrl-C; or training.train.Stopped: a signal, after its checkpoint
        print(f"rtd {args.command}: {e or 'interrupted'}", file=sys.stderr)
        return getattr(e, "exit_code", 130)
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in ("torch", "torchvision", "onnx", "skimage"):
            print(f"rtd {args.command}: error: needs {e.name}; install the training extras: "
                  f"pip install 'rtdgan[train]'", file=sys.stderr)
            return EXIT_USAGE
        raise
    except Exception as e:  # noqa: BLE001 - an internal error: one line unless debugging
        if os.environ.get("RTD_DEBUG"):
            raise
        print(f"rtd {args.command}: internal error: {type(e).__name__}: {e} (RTD_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
