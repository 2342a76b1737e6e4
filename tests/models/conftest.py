"""Fixtures for the network tests: one CPU thread (the test machine is shared) and a fixed seed."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread_seeded() -> Iterator[None]:
    """Run every models test on one thread with torch seeded, restoring the thread count afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def photos() -> Callable[[int, int], torch.Tensor]:
    """Factory of random (B, 3, size, size) batches in [-1, 1]: photos(batch, size)."""

    def make(batch: int, size: int) -> torch.Tensor:
        return torch.rand(batch, 3, size, size) * 2 - 1

    return make
