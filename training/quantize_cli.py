"""`rtd quantize`: int8 graphs of the embedder (and the generator) beside the fp32 ones, calibrated on a data
folder (training/quantize.py). Flags are derived from `rtdgan.index.runtime.quantize.QuantizeConfig` (index/configs.py); the
effective config goes to stderr, what was written to stdout. Serving them needs a passing
`rtd check-backend --backend openvino --precision int8`.
"""

from __future__ import annotations

import argparse

from rtdgan.index import configs
from rtdgan.training.quantize import QuantizeConfig, quantize


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `rtd quantize`, one per field of QuantizeConfig (plus --config FILE)."""
    configs.add_arguments(parser, QuantizeConfig)


def run(args: argparse.Namespace) -> int:
    quantize(configs.job_config(QuantizeConfig, args, "quantize"))
    return 0
