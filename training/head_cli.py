"""`rtd fit-head`: flags -> one frozen FitHeadConfig (training/head.py, index/configs.py), printed, then `fit_head`.

The flags are derived from FitHeadConfig, so `--help` shows every default and `--config FILE` reads a config
back. training/head.py (torch) is imported inside the functions: only when this subcommand runs.
"""

from __future__ import annotations

import argparse
import json

from rtdgan.index import configs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `rtd fit-head` flags: one per FitHeadConfig field."""
    from rtdgan.training.head import FitHeadConfig

    configs.add_arguments(parser, FitHeadConfig)


def run(args: argparse.Namespace) -> int:
    """Flags -> FitHeadConfig; print it; fit, export; print head.json's summary as one JSON line."""
    from rtdgan.training.finetune import fit_tuned
    from rtdgan.training.head import FitHeadConfig, fit_head

    cfg = configs.job_config(FitHeadConfig, args, "fit-head")
    doc = fit_tuned(cfg) if cfg.tune_blocks else fit_head(cfg)
    print(json.dumps({"artifacts": str(cfg.artifacts), "mode": doc["mode"], "chosen": doc["chosen"],
                      "validation_recall": doc["validation"]["recall"],
                      "frozen_validation_recall": doc["validation"]["frozen_recall"],
                      "training_products": doc["training"]["products"],
                      "query_onnx_sha256": doc["query"]["onnx_sha256"],
                      "catalog_onnx_sha256": doc["catalog"]["onnx_sha256"]}))
    return 0
