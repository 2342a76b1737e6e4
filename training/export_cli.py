"""`rtd export`: flags -> one frozen ExportConfig, printed, then `export_run` (training/export.py).

The flags are derived from ExportConfig (training/config.py, index/configs.py): each default is written
once, there, and `--help` shows it. No torch at module import time: `rtd serve` must not pull torch in;
torch and rtdgan.training.export are imported inside `run`.
"""

from __future__ import annotations

import argparse
import json

from rtdgan.index import configs
from rtdgan.training.config import ExportConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `rtd export` flags to `parser`."""
    configs.add_arguments(parser, ExportConfig)


def run(args: argparse.Namespace) -> int:
    """Flags -> ExportConfig; print it; export; print model.json's generator and embedder summary."""
    from rtdgan.training.export import export_run

    cfg = configs.job_config(ExportConfig, args, "export")
    doc = export_run(cfg)
    g, e = doc["generator"], doc["embedder"]
    print(json.dumps({"out": str(cfg.out), "architecture": g["architecture"], "stage": g["stage"],
                      "stages": g["stages"], "resolution": g["resolution"], "native_size": g["native_size"],
                      "embedder": e["backbone"], "dim": e["dim"], "embed_level": e["level"],
                      "export_parity": doc["metrics"]["export_parity"]}))
    return 0
