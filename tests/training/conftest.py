"""Fixtures for tests/training: one torch thread (the CI machine is small and shared), tiny data sets."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import make_lookbook

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_torch_thread() -> None:
    """One thread in every test, whatever an earlier test left (training/demo_generator.py sets all cores): a short
    GAN run's outcome depends on the summation order, so a test must not see another test's setting."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_lookbook(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 products x 2 photos at 32 px in the LookBook layout (16 training items); read-only for tests."""
    return make_lookbook(tmp_path_factory.mktemp("tiny") / "lookbook", products=8, photos=2, size=32, seed=1)


@pytest.fixture(scope="session")
def train_parser() -> argparse.ArgumentParser:
    """The `rtd train` flags, as service/cli.py builds them."""
    from rtdgan.training import train_cli

    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    return parser


@pytest.fixture(scope="module")
def results():
    """bench/experiments/results_synthetic.py as a module (bench/ is not a package)."""
    root = Path(__file__).resolve().parents[2]
    path = root / "bench" / "experiments" / "results_synthetic.py"
    spec = importlib.util.spec_from_file_location("results_synthetic", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)
