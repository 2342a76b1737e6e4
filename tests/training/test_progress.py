"""What a run reports while training (training/progress.py): TensorBoard events and plain progress lines."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from rtdgan.training.train import TrainConfig, train


def test_a_tiny_run_writes_tensorboard_events_and_progress_lines(tiny_lookbook: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    # 8 items, batch 8: one step per epoch; 2 stages x (1 fade-in + 1 stabilisation epoch) = 4 steps.
    train(TrainConfig(data=str(tiny_lookbook), out=str(run), stages=2, resolution=32, width=4, epochs_fade=1,
                      epochs_stab=1, batch_sizes=(8, 8), log_every=2, limit_items=8, device="cpu"))

    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0}).Reload()
    tags = acc.Tags()
    for tag in ("loss/g_adv", "loss/g_con", "loss/g_lap", "loss/g_loss", "loss/d_wasserstein", "loss/d_gp",
                "loss/d_loss", "schedule/alpha", "schedule/stage", "schedule/epoch", "speed/images_per_s"):
        assert tag in tags["scalars"], (tag, tags["scalars"])
    # --log-every 2 and each stage's last step: steps 2 (stage 1 ends) and 4.
    assert [e.step for e in acc.Scalars("schedule/stage")] == [2, 4]
    assert [e.value for e in acc.Scalars("schedule/stage")] == [1.0, 2.0]
    assert [e.value for e in acc.Scalars("schedule/alpha")] == [1.0, 1.0]
    # A labelled grid per epoch, the same image as samples/epoch_XXXX.png.
    assert [e.step for e in acc.Images("samples")] == [1, 2, 3, 4]
    last = acc.Images("samples")[-1]
    assert (last.width, last.height) == Image.open(run / "samples" / "epoch_0003.png").size

    # stderr is not a terminal here (captured): no bar, one plain line per stats line instead.
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("rtd train: step ")]
    assert [line.split()[3] for line in lines] == ["2/4", "4/4"]
    assert "stage 2 alpha 1.00 |" in lines[1] and "g_lap" in lines[1] and "img/s" in lines[1]
