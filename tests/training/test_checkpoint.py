"""Checkpoint I/O: atomic writes, safe loading, RNG round trips, and resume == uninterrupted training."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from rtdgan.index.errors import UserError
from rtdgan.models.critic import ConditionalPatchCritic, CriticConfig
from rtdgan.models.generator import GeneratorConfig, ProgressiveGenerator
from rtdgan.training.checkpoint import (
    capture_rng,
    code_version,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from rtdgan.training.losses import critic_loss


def draws() -> tuple[float, float, list[float]]:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_rng_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    np.random.randn()  # leave a cached gaussian in numpy's state
    save_checkpoint(tmp_path / "c.pt", {"rng": capture_rng()})
    expected = draws()
    draws()  # move every generator on
    restore_rng(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert draws() == expected


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "ck" / "last.pt"
    save_checkpoint(path, {"step": 1, "w": torch.ones(3)})
    assert load_checkpoint(path)["step"] == 1

    class Unpicklable:
        def __reduce__(self):  # noqa: ANN204 - torch.save fails half way through
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        save_checkpoint(path, {"step": 2, "bad": Unpicklable()})
    assert load_checkpoint(path)["step"] == 1  # the old checkpoint is intact
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_load_rejects_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"step": 3}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not an rtdgan checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_code_version_is_a_string() -> None:
    assert isinstance(code_version(), str) and code_version()


def _make() -> tuple[ProgressiveGenerator, ConditionalPatchCritic, torch.optim.Adam, torch.optim.Adam]:
    torch.manual_seed(0)
    G = ProgressiveGenerator(GeneratorConfig(resolution=16, stages=2, width=4))
    D = ConditionalPatchCritic(CriticConfig(width=4))
    return G, D, torch.optim.Adam(G.parameters(), 1e-3, betas=(0.0, 0.99)), torch.optim.Adam(D.parameters(), 1e-3, betas=(0.0, 0.99))


def _steps(G, D, opt_g, opt_d, data, start: int, stop: int) -> None:
    for step in range(start, stop):
        photo, product = data[step]
        alpha = (step + 1) / 4  # mid-fade: alpha matters
        fake = G(photo, stage=2, alpha=min(alpha, 1.0))
        opt_g.zero_grad()
        ((fake - product).abs().mean() - D(photo, fake).mean()).backward()
        opt_g.step()
        loss, _ = critic_loss(D, photo, product, fake, 10.0)  # draws GP mixing weights from torch's RNG
        opt_d.zero_grad()
        loss.backward()
        opt_d.step()


def test_save_load_continue_equals_uninterrupted(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(5)
    data = [(torch.rand(2, 3, 16, 16, generator=g) * 2 - 1, torch.rand(2, 3, 16, 16, generator=g) * 2 - 1) for _ in range(6)]

    G, D, opt_g, opt_d = _make()
    torch.manual_seed(7)
    _steps(G, D, opt_g, opt_d, data, 0, 6)
    reference = {k: v.clone() for k, v in G.state_dict().items()}

    G, D, opt_g, opt_d = _make()
    torch.manual_seed(7)
    _steps(G, D, opt_g, opt_d, data, 0, 3)
    save_checkpoint(tmp_path / "last.pt", {
        "models": {"generator": G.state_dict(), "critic": D.state_dict()},
        "optimizers": {"generator": opt_g.state_dict(), "critic": opt_d.state_dict()},
        "rng": capture_rng(), "step": 3,
    })
    torch.manual_seed(123)  # anything in between must not matter
    G, D, opt_g, opt_d = _make()
    state = load_checkpoint(tmp_path / "last.pt")
    G.load_state_dict(state["models"]["generator"])
    D.load_state_dict(state["models"]["critic"])
    opt_g.load_state_dict(state["optimizers"]["generator"])
    opt_d.load_state_dict(state["optimizers"]["critic"])
    restore_rng(state["rng"])
    _steps(G, D, opt_g, opt_d, data, state["step"], 6)
    for k, v in G.state_dict().items():
        assert torch.allclose(v, reference[k], atol=1e-6), k
