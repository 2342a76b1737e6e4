"""`rtd check-backend`: measure inference backends against onnxruntime fp32 and record the parity gate. No torch.

Flags are derived from `rtdgan.index.parity.CheckConfig` (index/configs.py). Prints the effective config (stderr) and
a table (stdout); each backend's record goes into the artifacts' version folder (index/parity.py). Exit status
0 when every backend checked passes, 1 when one fails (its record says why, and the service refuses it).
"""

from __future__ import annotations

import argparse

from rtdgan.index import configs
from rtdgan.index.parity import CheckConfig, run_check


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `rtd check-backend`, one per field of CheckConfig (plus --config FILE)."""
    configs.add_arguments(parser, CheckConfig)


def run(args: argparse.Namespace) -> int:
    cfg = configs.job_config(CheckConfig, args, "check-backend")
    docs = run_check(cfg)
    return 0 if all(d["passed"] for d in docs) else 1
