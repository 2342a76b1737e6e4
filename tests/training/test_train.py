"""`rtd train` end to end on tiny data: run folders, resume, baselines, overfitting, and every option."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import rtdgan.training.train as train_module
from rtdgan.index import configs
from rtdgan.index.errors import UserError
from rtdgan.models.generator import GeneratorConfig, ProgressiveGenerator
from rtdgan.training import train_cli
from rtdgan.training.checkpoint import load_checkpoint
from rtdgan.training.data import load_records, write_split
from rtdgan.training.dataset import PairDataset
from rtdgan.training.steps import resolve_memory_format, resolve_precision
from rtdgan.training.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[2]

# 8 products x 2 photos = 16 items; batch 8 -> 2 steps per epoch.
TINY = ["--stages", "3", "--resolution", "32", "--width", "8", "--epochs-fade", "1", "--epochs-stab", "1",
        "--batch-sizes", "8,8,8", "--log-every", "1", "--device", "cpu"]


def parse(parser: argparse.ArgumentParser, data: Path, out: Path, *extra: str) -> argparse.Namespace:
    return parser.parse_args(["--data", str(data), "--out", str(out), *TINY, *extra])


def stats(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]


def weights(path: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(path)["models"]
    return {f"{net}.{k}": v for net, sd in state.items() for k, v in sd.items()}


def tiny_cfg(data: Path, out: Path, **changes: object) -> TrainConfig:
    base = TrainConfig(data=str(data), out=str(out), stages=2, resolution=32, width=4, epochs_fade=1, epochs_stab=1,
                       batch_sizes=(8, 8), log_every=1, limit_items=8)
    return replace(base, **changes)


def test_rtdgan_three_stages_write_a_complete_run_folder(tiny_lookbook: Path, train_parser, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert train_cli.run(parse(train_parser, tiny_lookbook, run)) == 0

    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "rtdgan" and config["stages"] == 3 and config["batch_sizes"] == [8, 8, 8]
    lines = stats(run)
    assert [line["step"] for line in lines] == list(range(1, 13))  # 3 stages x 2 epochs x 2 steps
    assert {line["stage"] for line in lines} == {1, 2, 3}
    stage2 = [line["alpha"] for line in lines if line["stage"] == 2]
    assert stage2 == [0.5, 1.0, 1.0, 1.0]  # fade-in epoch (2 steps), then stabilisation
    for key in ("g_adv", "g_con", "g_lap", "g_loss", "d_wasserstein", "d_gp", "d_loss", "images_per_s", "wall_s",
                "batch_size", "epoch"):
        assert key in lines[0], key
    assert sorted(p.name for p in (run / "samples").iterdir()) == [f"epoch_{e:04d}.png" for e in range(6)]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.pt", "stage_1.pt", "stage_2.pt", "stage_3.pt"]
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert (last["step"], last["stage"], last["alpha"], last["items"]) == (12, 3, 1.0, 16)
    assert last["generator_config"] == {"resolution": 32, "stages": 3, "width": 8, "max_width": None}
    assert load_checkpoint(run / "checkpoints" / "stage_1.pt")["step"] == 4
    # The saved generator loads and produces the final 32 px image.
    G = ProgressiveGenerator(GeneratorConfig(**last["generator_config"]))
    G.load_state_dict(last["models"]["generator"])
    assert G(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("model", ["pix2pix", "pldt"])
def test_baselines_run_with_the_same_command(model: str, tiny_lookbook: Path, train_parser, tmp_path: Path) -> None:
    run = tmp_path / model
    assert train_cli.run(parse(train_parser, tiny_lookbook, run, "--model", model)) == 0
    lines = stats(run)
    # One stage with the rtdGAN run's epoch budget: 3 x (1 + 1) epochs x 2 steps.
    assert [line["step"] for line in lines] == list(range(1, 13)) and {line["stage"] for line in lines} == {1}
    assert all(line["d_loss"] > 0 and line["g_loss"] > 0 for line in lines)
    assert len(list((run / "samples").iterdir())) == 6
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["model"] == model and last["step"] == 12
    assert ("domain_critic" in last["models"]) == (model == "pldt")
    if model == "pldt":  # trains at min(S, 64): the converter's resolution
        assert last["generator_config"]["resolution"] == 32


@pytest.mark.slow
def test_resume_mid_fade_in_equals_an_uninterrupted_run(tiny_lookbook: Path, train_parser, tmp_path: Path) -> None:
    # Batches 8, 4, 4: stage 2 has 4 steps per epoch, so step 6 is mid fade-in and mid-epoch.
    flags = ("--batch-sizes", "8,4,4")
    full, part = tmp_path / "full", tmp_path / "part"
    train_cli.run(parse(train_parser, tiny_lookbook, full, *flags))
    train_cli.run(parse(train_parser, tiny_lookbook, part, *flags, "--stop-after-steps", "6"))
    stopped = load_checkpoint(part / "checkpoints" / "last.pt")
    assert (stopped["step"], stopped["stage"], stopped["alpha"]) == (6, 2, 0.5)
    assert not (part / "checkpoints" / "stage_2.pt").exists()

    train_cli.run(parse(train_parser, tiny_lookbook, part, *flags, "--resume"))
    resumed = [line for line in stats(part) if line["step"] > 6]
    assert (resumed[0]["step"], resumed[0]["stage"], resumed[0]["alpha"]) == (7, 2, 0.75)
    a, b = weights(full / "checkpoints" / "last.pt"), weights(part / "checkpoints" / "last.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    # Every logged loss after the resume matches the uninterrupted run's, step for step.
    for x, y in zip(resumed, [line for line in stats(full) if line["step"] > 6], strict=True):
        assert x["g_loss"] == pytest.approx(y["g_loss"], rel=1e-4, abs=1e-6)
        assert x["d_loss"] == pytest.approx(y["d_loss"], rel=1e-4, abs=1e-6)


def test_resume_guards(tiny_lookbook: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(tiny_lookbook, tmp_path / "run", stop_after_steps=1)
    with pytest.raises(UserError, match="no checkpoint"):
        train(replace(cfg, resume=True))
    train(cfg)
    with pytest.raises(UserError, match="already holds a checkpoint"):
        train(cfg)
    with pytest.raises(UserError, match="width"):
        train(replace(cfg, resume=True, width=8))
    with pytest.raises(UserError, match="items"):
        train(replace(cfg, resume=True, limit_items=None))


def test_sigterm_writes_a_checkpoint_and_stops(tiny_lookbook: Path, tmp_path: Path, monkeypatch) -> None:
    real_save_samples = train_module.save_samples

    def save_then_terminate(*args, **kwargs):
        grid = real_save_samples(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # as `kill` or a cluster scheduler would
        return grid

    monkeypatch.setattr(train_module, "save_samples", save_then_terminate)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(train_module.Stopped) as stopped:  # not a normal return: callers must not go on
        train(tiny_cfg(tiny_lookbook, tmp_path / "run"))
    assert load_checkpoint(stopped.value.checkpoint)["step"] == 1  # after the first epoch (8 items, batch 8)
    assert stopped.value.exit_code == 143 and "--resume" in str(stopped.value)
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is removed again


@pytest.mark.slow
def test_cli_exits_143_on_sigterm_so_a_scheduler_sees_the_job_did_not_finish(tiny_lookbook: Path,
                                                                            tmp_path: Path) -> None:
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "rtdgan.service.cli", "train", "--data", str(tiny_lookbook), "--out", str(run),
           "--stages", "1", "--resolution", "32", "--width", "4", "--epochs-fade", "1", "--epochs-stab", "500",
           "--batch-sizes", "4", "--device", "cpu", "--log-every", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "stats.jsonl").is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)  # training has started
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM" in err and "--resume" in err and "Traceback" not in err
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] >= 1


@pytest.mark.slow
def test_overfits_four_pairs(tiny_lookbook: Path, train_parser, tmp_path: Path) -> None:
    run = tmp_path / "overfit"
    args = train_parser.parse_args(["--data", str(tiny_lookbook), "--out", str(run), "--stages", "1",
                                    "--resolution", "32", "--width", "8", "--epochs-fade", "30", "--epochs-stab", "30",
                                    "--batch-sizes", "4", "--limit-items", "4", "--lr", "1e-3", "--log-every", "20",
                                    "--device", "cpu"])
    train_cli.run(args)
    dataset = PairDataset(load_records(tiny_lookbook).records, 32)
    photo, product = (torch.stack(t) for t in zip(*(dataset[i] for i in range(4)), strict=True))
    errors = []
    for path in (None, run / "checkpoints" / "last.pt"):
        torch.manual_seed(0)  # the run's initial weights (seeded with --seed 0)
        G = ProgressiveGenerator(GeneratorConfig(resolution=32, stages=1, width=8))
        if path is not None:
            G.load_state_dict(load_checkpoint(path)["models"]["generator"])
        with torch.no_grad():
            errors.append((G(photo) - product).abs().mean().item())
    assert errors[1] < 0.5 * errors[0], errors


def test_loss_weights_are_wired(tiny_lookbook: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(tiny_lookbook, tmp_path / "w", lambda_adv=2.0, lambda_con=3.0, lambda_lap=0.5, lambda_gp=5.0,
                   stop_after_steps=1)
    train(cfg)
    (line,) = stats(tmp_path / "w")
    assert line["g_loss"] == pytest.approx(2 * line["g_adv"] + 3 * line["g_con"] + 0.5 * line["g_lap"], rel=1e-4, abs=1e-5)
    assert line["d_loss"] == pytest.approx(line["d_wasserstein"] + 5 * line["d_gp"], rel=1e-4, abs=1e-5)
    # lambda_lap = 0 vs 1 changes the generator loss (and nothing before it: same first-step terms).
    train(replace(cfg, out=str(tmp_path / "w0"), lambda_lap=0.0))
    (zero,) = stats(tmp_path / "w0")
    assert zero["g_lap"] == pytest.approx(line["g_lap"]) and zero["g_loss"] < line["g_loss"]


def test_lr_seed_and_workers_are_wired(tiny_lookbook: Path, tmp_path: Path) -> None:
    def first_step(name: str, **changes: object) -> dict[str, torch.Tensor]:
        return weights(train(tiny_cfg(tiny_lookbook, tmp_path / name, stop_after_steps=1, **changes)))

    def init(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return {f"generator.{k}": v for k, v in ProgressiveGenerator(GeneratorConfig(32, 2, 4)).state_dict().items()}

    base = first_step("base")
    key = "generator.encoder.1.0.weight"
    # Adam's first step with beta1 = 0 moves each weight by about lr (sign of its gradient).
    for lr, name in ((2e-4, "base"), (1e-2, "big")):
        moved = (first_step(name, lr=lr) if name != "base" else base)[key] - init(0)[key]
        assert moved.abs().max().item() == pytest.approx(lr, rel=0.05)
    assert load_checkpoint(tmp_path / "big" / "checkpoints" / "last.pt")["optimizers"]["generator"]["param_groups"][0]["lr"] == 1e-2
    other_seed = first_step("seed1", seed=1)
    assert not torch.allclose(base[key], other_seed[key])
    workers = first_step("workers", workers=2)  # the data order depends on (seed, epoch) only
    assert all(torch.allclose(base[k], workers[k]) for k in base)


def test_batch_sizes_limit_items_epochs_and_logging_are_wired(tiny_lookbook: Path, tmp_path: Path, monkeypatch) -> None:
    saved: list[tuple[str, int]] = []
    real_save = train_module.save_checkpoint
    monkeypatch.setattr(train_module, "save_checkpoint",
                        lambda path, state: (saved.append((path.name, state["step"])), real_save(path, state)))
    cfg = tiny_cfg(tiny_lookbook, tmp_path / "run", batch_sizes=(4, 2), limit_items=6, epochs_fade=1, epochs_stab=2,
                   log_every=4, checkpoint_every_steps=5)
    train(cfg)
    # stage 1: ceil(6 / 4) = 2 steps x 3 epochs; stage 2: ceil(6 / 2) = 3 steps x 3 epochs -> 15 steps.
    lines = stats(tmp_path / "run")
    assert [(line["step"], line["batch_size"]) for line in lines] == [(4, 4), (6, 4), (8, 2), (12, 2), (15, 2)]
    assert ("last.pt", 5) in saved and ("last.pt", 10) in saved and ("stage_1.pt", 6) in saved
    assert ("stage_2.pt", 15) in saved and load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["items"] == 6
    assert [(line["stage"], line["alpha"]) for line in lines][2] == (2, 2 / 3)  # fade over 1 epoch = 3 steps


def test_split_trains_on_the_train_products_and_shows_the_test_ones(tiny_lookbook: Path, tmp_path: Path) -> None:
    records = load_records(tiny_lookbook).records
    split = tmp_path / "split.json"
    write_split(split, {"data": str(tiny_lookbook)}, records[:3], records[3:5])
    cfg = tiny_cfg(tiny_lookbook, tmp_path / "run", split=str(split), limit_items=None, stop_after_steps=1)
    assert load_checkpoint(train(cfg))["items"] == 6  # 3 train products x 2 photos
    with pytest.raises(UserError, match="was made from"):
        train(replace(cfg, data=str(tmp_path), out=str(tmp_path / "other")))


def test_a_finished_run_continues_with_more_extra_epochs(tiny_lookbook: Path, tmp_path: Path) -> None:
    # 8 items at batch 8: one step per epoch; 2 stages of 1 + 1 epochs, then 2 extra epochs at 32 px.
    planned = train(tiny_cfg(tiny_lookbook, tmp_path / "planned", epochs_extra=2))
    assert load_checkpoint(planned)["step"] == 6
    grown = tiny_cfg(tiny_lookbook, tmp_path / "grown")
    train(grown)
    assert load_checkpoint(Path(grown.out) / "checkpoints" / "last.pt")["step"] == 4
    train(replace(grown, resume=True, epochs_extra=2))
    resumed = load_checkpoint(Path(grown.out) / "checkpoints" / "stage_2.pt")
    assert (resumed["step"], resumed["stage"]) == (6, 2)  # the last stage's checkpoint is the longer run's end
    a, b = weights(planned), weights(Path(grown.out) / "checkpoints" / "last.pt")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    with pytest.raises(UserError, match="epochs-extra 1 is too small"):
        train(replace(grown, resume=True, epochs_extra=1))


def test_bad_input_is_a_user_error(tiny_lookbook: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(tiny_lookbook, tmp_path / "run")
    bad = [
        replace(cfg, data=str(tmp_path / "missing")),
        replace(cfg, data=str(tmp_path)),  # a folder without the LookBook layout
        replace(cfg, model="cyclegan"),  # type: ignore[arg-type]
        replace(cfg, stages=4),  # 32 px allows 3 stages (8 px at the coarsest)
        replace(cfg, resolution=48),
        replace(cfg, batch_sizes=(8,)),
        replace(cfg, epochs_fade=0, epochs_stab=0),
        replace(cfg, lr=0.0),
        replace(cfg, epochs_extra=-1),
        replace(cfg, model="pix2pix", resolution=16, stages=1, batch_sizes=(8,)),
    ]
    if not torch.cuda.is_available():
        bad.append(replace(cfg, device="cuda"))
    for c in bad:
        with pytest.raises(UserError):
            train(c)
    assert not (tmp_path / "run").exists()


def test_dry_run_prints_the_schedule_and_writes_nothing(tiny_lookbook: Path, train_parser, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert train_cli.run(parse(train_parser, tiny_lookbook, run, "--dry-run")) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["items"] == 16 and report["total_steps"] == 12 and len(report["schedule"]) == 4
    assert not run.exists()


def test_cli_module_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, rtdgan.training.train_cli; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2]).returncode == 0


def test_config_json_reads_back_with_config_and_flags_override_it(tiny_lookbook: Path, train_parser, tmp_path: Path,
                                                                   capsys) -> None:
    cfg = tiny_cfg(tiny_lookbook, tmp_path / "run", stop_after_steps=1)
    train(cfg)
    saved = tmp_path / "run" / "config.json"
    again = train_parser.parse_args(["--config", str(saved)])
    # "auto" is saved as resolved: cpu, bf16 or fp32 as this CPU has bf16 units or not, and rtdGAN's memory format
    resolved = replace(cfg, device="cpu", precision=resolve_precision("auto", torch.device("cpu")),
                       memory_format=resolve_memory_format("auto", torch.device("cpu"), cfg.model))
    assert configs.from_args(TrainConfig, again) == resolved
    over = train_parser.parse_args(["--config", str(saved), "--lr", "0.5", "--resume", "--batch-sizes", "4,4"])
    assert configs.from_args(TrainConfig, over) == replace(resolved, lr=0.5, resume=True, batch_sizes=(4, 4))
    # The CLI resumes the run from its own config.json and prints the effective config as one JSON line.
    assert train_cli.run(train_parser.parse_args(["--config", str(saved), "--resume", "--stop-after-steps", "2"])) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("rtd train: config {")]
    assert len(err) == 1 and json.loads(err[0].split("config ", 1)[1])["stop_after_steps"] == 2
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 2


def test_help_shows_every_default(train_parser) -> None:
    text = " ".join(train_parser.format_help().split())
    for default in ("default: rtdgan", "default: 60,40,20", "default: 0.0002", "default: auto", "default: 1000"):
        assert default in text, default
