"""The model registry (training/registry.py): every entry builds, steps and exports at a tiny size, and the
command line, the config and the reports all read their model names and labels from it."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from rtdgan.index.errors import UserError
from rtdgan.training import registry, train_cli
from rtdgan.training.config import TrainConfig
from rtdgan.training.schedule import make_plan, schedule_at
from rtdgan.training.steps import build_nets

ROOT = Path(__file__).resolve().parents[2]
TINY = TrainConfig(data="-", out="-", stages=2, resolution=32, width=4, batch_sizes=(2, 2), device="cpu")


@pytest.mark.parametrize("name", registry.MODEL_NAMES)
def test_every_entry_builds_steps_and_exports_at_a_tiny_size(name: str) -> None:
    spec = registry.get(name)
    cfg = replace(TINY, model=name)
    spec.check(cfg)
    torch.manual_seed(0)
    nets = build_nets(cfg, torch.device("cpu"), distributed=False)
    assert all(g["betas"] == spec.betas for g in nets.opt_g.param_groups + nets.opt_d.param_groups)
    size = registry.data_resolution(cfg)
    assert size == spec.native_size(cfg.resolution)
    photo, product = torch.rand(2, 3, size, size) * 2 - 1, torch.rand(2, 3, size, size) * 2 - 1
    phase = schedule_at(0, make_plan(spec.stages(cfg), 0, 1, cfg.batch_sizes[-spec.stages(cfg):], items=2))
    terms = spec.step(cfg, nets, photo, product, phase)
    assert "g_loss" in terms and "d_loss" in terms and all(torch.isfinite(v) for v in terms.values())

    # A checkpoint's generator_config rebuilds the same network; the export view outputs the native size.
    rebuilt = spec.generator_from_config(asdict(nets.generator.cfg))
    rebuilt.load_state_dict(nets.generator.state_dict())
    stages = spec.generator_stages(rebuilt)
    assert stages == spec.stages(cfg)
    module, native = spec.export_module(rebuilt.eval(), stages)
    with torch.no_grad():
        assert module(photo).shape == (2, 3, native, native)
    assert native == spec.native_size(cfg.resolution)


def test_names_match_the_cli_choices_and_the_config() -> None:
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    (action,) = [a for a in parser._actions if a.dest == "model"]
    assert tuple(action.choices) == registry.MODEL_NAMES == tuple(registry.MODELS)
    assert TrainConfig.__dataclass_fields__["model"].default in registry.MODEL_NAMES
    assert all(spec.name == name for name, spec in registry.MODELS.items())


def test_unknown_model_is_one_line() -> None:
    with pytest.raises(UserError, match="unknown model 'cyclegan'; choose one of rtdgan, pix2pix, pldt"):
        registry.get("cyclegan")


def test_report_labels() -> None:
    assert registry.report_label({"architecture": "rtdgan", "stages": 3, "stage": 3}) == "rtdGAN (N=3)"
    assert registry.report_label({"architecture": "rtdgan", "stages": 3, "stage": 1}) == "rtdGAN (N=3, stage 1)"
    assert registry.report_label({"architecture": "pix2pix", "stages": 1, "stage": 1}) == "pix2pix"
    assert registry.report_label({"architecture": "pldt"}) == "PLDT"
    assert registry.report_label({"architecture": "vae"}) == "vae"  # another code version's model, as written
    assert registry.is_staged("rtdgan") and not registry.is_staged("pix2pix") and not registry.is_staged(None)


def test_no_module_but_the_registry_branches_on_a_model_name() -> None:
    """`cfg.model == "pldt"` and the like belong in training/registry.py only."""
    pattern = re.compile(r"""(==|!=|\bin\b)\s*\(?\s*["'](rtdgan|pix2pix|pldt)["']|["'](rtdgan|pix2pix|pldt)["']\s*(==|!=)""")
    offenders = [f"{path.relative_to(ROOT)}:{n}" for folder in ("training", "models") for path in (ROOT / folder).glob("*.py")
                 if path.name != "registry.py"
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert offenders == []


def test_registry_and_configs_import_without_torch() -> None:
    code = ("import sys, rtdgan.training.registry, rtdgan.training.config, rtdgan.training.train_cli, rtdgan.training.export_cli, "
            "rtdgan.training.data_cli; assert 'torch' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
