"""bench/experiments/results_synthetic.py carries a run across machines: packed in bf16 when stopped, resumed from the packed
file on a machine whose experiment folder is empty, and replaced by the final generator once the run ends."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from rtdgan.training.checkpoint import cast_floats, load_checkpoint


def tensors(state) -> list[torch.Tensor]:
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        return [t for v in state.values() for t in tensors(v)]
    if isinstance(state, (list, tuple)):
        return [t for v in state for t in tensors(v)]
    return []


def test_cast_floats_keeps_counters_and_bytes() -> None:
    state = {"w": torch.randn(4, 3), "step": torch.tensor(27000.0), "rng": torch.arange(5, dtype=torch.uint8),
             "n": 3, "nested": [torch.ones(2)]}
    half = cast_floats(state, torch.float32, torch.bfloat16)
    assert half["w"].dtype == torch.bfloat16 and half["nested"][0].dtype == torch.bfloat16
    assert half["step"].dtype == torch.float32 and half["step"].item() == 27000.0  # bf16 would round it
    assert half["rng"].dtype == torch.uint8 and half["n"] == 3
    back = cast_floats(half, torch.bfloat16, torch.float32)
    assert back["w"].dtype == torch.float32 and torch.allclose(back["w"], state["w"], rtol=1e-2, atol=1e-6)


def test_a_stopped_run_is_packed_then_resumed_on_an_empty_root(results, tiny_lookbook: Path, tmp_path: Path,
                                                                monkeypatch, capsys) -> None:
    import rtdgan.training.train as train_module

    monkeypatch.setattr(results, "RESULTS", tmp_path / "committed" / "results-synthetic")
    # N = 1 on the tiny world: one stage of 5 + 6 epochs, one step each (16 photos, batch 16) -> 11 steps.
    e = results.Experiment(root=tmp_path / "machine-1", train_products=8, train_photos=2, size=32, width=4, passes=11,
                           precision="fp32", threads=1)
    real_train = train_module.train

    def preempted(cfg):  # the scheduler's SIGTERM after step 4: training writes last.pt, then raises
        real_train(replace(cfg, stop_after_steps=4))
        raise train_module.Stopped(15, Path(cfg.out) / "checkpoints" / "last.pt")

    monkeypatch.setattr(train_module, "train", preempted)
    with pytest.raises(KeyboardInterrupt):
        results.train_model(e, "rtdgan-n1", tiny_lookbook, {})
    packed_path = results.carry_dir(e) / "rtdgan-n1.pt"
    assert packed_path.parent == tmp_path / "committed" / "results-synthetic-32px-w4-p11" / "carry"  # its own size's
    fp32 = e.root / "runs" / "rtdgan-n1" / "checkpoints" / "last.pt"
    packed = load_checkpoint(packed_path)
    assert packed["step"] == 4 and packed["carry"]["timings"]["train_s"] > 0
    floats = [t for t in tensors(packed["models"]) if t.is_floating_point()]
    assert floats and all(t.dtype == torch.bfloat16 for t in floats)
    assert packed_path.stat().st_size < 0.7 * fp32.stat().st_size

    # Another machine: nothing under its root but the data; the committed carry file is all it has.
    monkeypatch.setattr(train_module, "train", real_train)
    e2 = replace(e, root=tmp_path / "machine-2")
    shutil.rmtree(e.root)
    capsys.readouterr()
    run = results.train_model(e2, "rtdgan-n1", tiny_lookbook, timings := {})
    assert "rtdgan-n1: the carried unfinished run" in capsys.readouterr().err
    done = load_checkpoint(run / "checkpoints" / "last.pt")
    assert done["step"] == 11 and results.finished(e2, "rtdgan-n1")
    assert all(t.dtype == torch.float32 for t in tensors(done["models"]) if t.is_floating_point())
    assert timings["rtdgan-n1"]["train_s"] > packed["carry"]["timings"]["train_s"]  # both machines' time
    final = load_checkpoint(packed_path)  # finished: the carry is now the final generator, in fp32
    assert final["carry"]["finished"] and final["step"] == 11 and set(final["models"]) == {"generator"}
    assert all(t.dtype == torch.float32 for t in tensors(final["models"]) if t.is_floating_point())


def test_pack_carry_flag_refuses_a_missing_run(results, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["results_synthetic.py", "--root", str(tmp_path), "--only", "pix2pix",
                                      "--pack-carry"])
    assert results.main() == 1
    assert "no run under" in capsys.readouterr().err


def test_a_finished_run_is_carried_as_its_generator_and_not_trained_again(results, tiny_lookbook: Path,
                                                                           tmp_path: Path, monkeypatch) -> None:
    import rtdgan.training.train as train_module

    monkeypatch.setattr(results, "RESULTS", tmp_path / "results-synthetic")
    e = results.Experiment(root=tmp_path / "machine-1", train_products=8, train_photos=2, size=32, width=4, passes=15,
                           precision="fp32", threads=1)
    results.train_model(e, "pix2pix", tiny_lookbook, {})  # finished: packs its generator
    packed = load_checkpoint(results.carry_dir(e) / "pix2pix.pt")
    assert packed["carry"]["finished"] and set(packed["models"]) == {"generator"} and "optimizers" not in packed
    final = load_checkpoint(results.final_checkpoint(e, "pix2pix"))

    def no_training(cfg):
        raise AssertionError("a carried finished run must not be trained again")

    monkeypatch.setattr(train_module, "train", no_training)
    e2 = replace(e, root=tmp_path / "machine-2")
    run = results.train_model(e2, "pix2pix", tiny_lookbook, {})
    assert results.finished(e2, "pix2pix")
    carried = load_checkpoint(run / "checkpoints" / "last.pt")["models"]["generator"]
    for k, v in final["models"]["generator"].items():  # fp32, exactly the trained weights
        assert torch.equal(carried[k], v), k

    # A carry over the size a commit may hold (width 64 at 256 px) is not written; the committed one stays.
    before = (results.carry_dir(e) / "pix2pix.pt").read_bytes()
    monkeypatch.setattr(results, "CARRY_LIMIT", 1024)
    assert results.pack_carry(e2, "pix2pix", {}) is None
    assert (results.carry_dir(e) / "pix2pix.pt").read_bytes() == before
    assert [p.name for p in results.carry_dir(e).iterdir()] == ["pix2pix.pt"]  # no draft left behind


@pytest.mark.parametrize("argv, message", [
    (["--size", "100"], "--size must be a power of two >= 32"),
    (["--passes", "9"], "--passes must be >= 15"),
    (["--width", "0"], "--width and --threads must be >= 1"),
    (["--only", "pix2pix,cyclegan"], "unknown model(s) cyclegan"),
    pytest.param(["--device", "cuda"], "no CUDA device is available",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_bad_flags_are_one_line(results, tmp_path: Path, monkeypatch, capsys, argv, message) -> None:
    monkeypatch.setattr(sys, "argv", ["results_synthetic.py", "--root", str(tmp_path / "root"), *argv])
    with pytest.raises(SystemExit) as stop:
        results.main()
    err = capsys.readouterr().err
    assert stop.value.code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "root").exists()  # nothing synthesized or trained


def test_another_sizes_root_is_refused_before_anything_runs(results, tmp_path: Path, monkeypatch, capsys) -> None:
    """A 128 px run pointed at the 64 px run's ROOT would train on the wrong images: one line, exit 1."""
    world = tmp_path / "root" / "train-data"
    world.mkdir(parents=True)
    (world / "synth.json").write_text(json.dumps({"products": 8000, "photos_per_product": 2, "size": 64, "seed": 0,
                                                  "framing": "lookbook", "complete": True}))
    monkeypatch.setattr(results, "RESULTS", tmp_path / "docs" / "results-synthetic")
    monkeypatch.setattr(sys, "argv", ["results_synthetic.py", "--root", str(tmp_path / "root"), "--size", "128",
                                      "--no-doc"])
    assert results.main() == 1
    err = capsys.readouterr().err
    assert "holds another world ({'size': 64}" in err and "give each size its own --root" in err
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["train-data"]  # no runs, no shop
