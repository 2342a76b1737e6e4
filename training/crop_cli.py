"""`rtd fit-crop`: flags -> one frozen FitCropConfig (training/crop.py, index/configs.py), printed, then `fit_crop`.

The flags are derived from FitCropConfig, so `--help` shows every default and `--config FILE` reads a config
back. training/crop.py (torch) is imported inside the functions: only when this subcommand runs.
"""

from __future__ import annotations

import argparse
import json

from rtdgan.index import configs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `rtd fit-crop` flags: one per FitCropConfig field."""
    from rtdgan.training.crop import FitCropConfig

    configs.add_arguments(parser, FitCropConfig)


def run(args: argparse.Namespace) -> int:
    """Flags -> FitCropConfig; print it; train, export; print crop.json's summary as one JSON line."""
    from rtdgan.training.crop import FitCropConfig, fit_crop

    cfg = configs.job_config(FitCropConfig, args, "fit-crop")
    doc = fit_crop(cfg)
    print(json.dumps({"artifacts": str(cfg.artifacts), "input_size": doc["input_size"],
                      "validation_iou": doc["validation"]["iou"],
                      "centre_box_iou": doc["validation"]["centre_box_iou"],
                      "best_epoch": doc["validation"]["best_epoch"], "training_photos": doc["training"]["photos"],
                      "onnx_sha256": doc["onnx_sha256"]}))
    return 0
