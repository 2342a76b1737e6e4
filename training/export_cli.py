"""`rtd export`: flags -> one frozen ExportConfig, printed, then `export_run` (training/export.py).

No torch at module import time: `service/cli.py` builds every subcommand's flags, and `rtd serve` must not
pull torch in. torch and training.export are imported inside `run`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EMBEDDERS = ("densenet121", "efficientnet_lite0")  # models/embedders.py's EMBEDDERS (that module imports torch)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `rtd export` flags to `parser`."""
    parser.add_argument("--run", type=Path, required=True, help="run folder written by `rtd train`")
    parser.add_argument("--out", type=Path, required=True,
                        help="artifacts folder to write: generator.onnx, embedder.onnx, model.json (replaced whole)")
    parser.add_argument("--embedder", choices=EMBEDDERS, default="densenet121",
                        help="retrieval backbone: densenet121 (the paper's, Sec. 5) or efficientnet_lite0 (offline)")
    parser.add_argument("--embedder-weights", type=Path, default=None,
                        help="local state_dict for the backbone instead of its default weights source")
    parser.add_argument("--embed-level", type=int, default=0, metavar="L",
                        help="compare images L levels down the Gaussian pyramid (each halves the side) instead of "
                             "at full resolution (0, the paper's); README 'The comparison scale'")
    parser.add_argument("--stage", type=int, default=None,
                        help="rtdGAN stage to export (default: the stage the run reached); earlier stages are "
                             "upsampled (bilinear) to the full resolution")
    parser.add_argument("--parity-data", type=Path, default=None,
                        help="photos for the parity check (LookBook folder or pairs manifest) when the run's own "
                             "data is not on this machine")


def run(args: argparse.Namespace) -> int:
    """Flags -> ExportConfig; print it; export; print model.json's generator and embedder summary."""
    from training.export import ExportConfig, config_dict, export_run

    cfg = ExportConfig(run=args.run, out=args.out, embedder=args.embedder, embedder_weights=args.embedder_weights,
                       embed_level=args.embed_level, stage=args.stage, parity_data=args.parity_data)
    print(f"rtd export: config {json.dumps(config_dict(cfg))}", file=sys.stderr)
    doc = export_run(cfg)
    g, e = doc["generator"], doc["embedder"]
    print(json.dumps({"out": str(cfg.out), "architecture": g["architecture"], "stage": g["stage"],
                      "stages": g["stages"], "resolution": g["resolution"], "native_size": g["native_size"],
                      "embedder": e["backbone"], "dim": e["dim"], "embed_level": e["level"],
                      "export_parity": doc["metrics"]["export_parity"]}))
    return 0
