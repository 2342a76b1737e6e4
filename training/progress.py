"""What a training run reports while it trains: stats.jsonl, TensorBoard events, and a progress display.

`Progress` is the loop's one reporting object (rank 0 writes, the other ranks pass `out=None`):
  stats.jsonl            one JSON line per `log` (every --log-every steps and at each stage end);
  RUN/tensorboard/       TensorBoard event files (`tensorboard --logdir RUN`): the loss terms under loss/,
                         alpha, stage and epoch under schedule/, images/s under speed/, and the labelled
                         sample grids under samples; needs the `tensorboard` package (the `train` extra), without
                         which the run says so once and trains on without events;
  the display            a tqdm bar on a terminal; where stderr is not one (a docker log, nohup, a CI job),
                         one plain line per `log` instead, so that a long run is not silent.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

TENSORBOARD_DIR = "tensorboard"
# Keys of a stats line that are not loss terms: each has its own TensorBoard tag (or none).
SCALAR_TAGS = {"alpha": "schedule/alpha", "stage": "schedule/stage", "epoch": "schedule/epoch",
               "batch_size": "schedule/batch_size", "images_per_s": "speed/images_per_s"}
NOT_SCALARS = {"step", "wall_s", "time"}
SHOWN_LOSSES = ("g_loss", "d_loss")  # on the bar; the plain line shows every term


def tensorboard_writer(folder: Path, purge_step: int | None) -> Any | None:
    """A SummaryWriter into `folder`, or None (one line on stderr) when the tensorboard package is missing.

    `purge_step`: on a resumed run, TensorBoard hides what an earlier process logged at or after this step
    (a run stopped between two checkpoints logged steps that the resumed one trains again)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # torch is here (training); the tensorboard package may not be
        print(f"rtd train: no TensorBoard events ({e}); the `train` extra installs tensorboard", file=sys.stderr)
        return None
    return SummaryWriter(str(folder), purge_step=purge_step, flush_secs=30)


def progress_line(line: dict[str, Any], total: int) -> str:
    """'rtd train: step 50/1200 stage 2 alpha 0.50 | g_adv 0.12 ... | 31.4 img/s, 0:01:05': one stats line."""
    losses = " ".join(f"{k} {v:.4g}" for k, v in line.items() if k not in SCALAR_TAGS and k not in NOT_SCALARS)
    elapsed = time.strftime("%H:%M:%S", time.gmtime(line.get("wall_s", 0)))
    return (f"rtd train: step {line['step']}/{total} stage {line['stage']} alpha {line['alpha']:.2f} | {losses} | "
            f"{line['images_per_s']:.1f} img/s, {elapsed}")


class Progress:
    """stats.jsonl, TensorBoard events and the bar (or plain lines) of one run; `out=None`: report nothing."""

    def __init__(self, out: Path | None, total: int, start: int) -> None:
        self.total = total
        # disable=None: tqdm shows the bar only when its stream (stderr) is a terminal.
        self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True,
                        disable=None if out is not None else True)
        self.plain = out is not None and self.bar.disable  # no bar to look at: print lines instead
        self.writer = tensorboard_writer(out / TENSORBOARD_DIR, start or None) if out is not None else None
        # Last (importing tensorboard takes seconds): stats.jsonl appears as the loop starts, and a supervisor
        # that waits for it to signal the run finds the Ctrl-C / SIGTERM handler in place.
        self.stats = (out / "stats.jsonl").open("a", encoding="utf-8") if out is not None else None

    def log(self, line: dict[str, Any]) -> None:
        """One stats line (step, stage, alpha, loss terms, images/s, ...) to every place that reports."""
        if self.stats is None:
            return
        self.stats.write(json.dumps(line) + "\n")
        self.stats.flush()
        step = line["step"]
        if self.writer is not None:
            for key, value in line.items():
                if key not in NOT_SCALARS:
                    self.writer.add_scalar(SCALAR_TAGS.get(key, f"loss/{key}"), value, step)
        if self.plain:
            print(progress_line(line, self.total), file=sys.stderr, flush=True)
        else:
            self.bar.set_postfix(stage=line["stage"], alpha=f"{line['alpha']:.2f}", img_s=line["images_per_s"],
                                 **{k: f"{line[k]:.3f}" for k in SHOWN_LOSSES if k in line})

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """A (H, W, 3) uint8 image, such as a labelled sample grid, as TensorBoard image `tag` at `step`."""
        if self.writer is not None:
            self.writer.add_image(tag, image, step, dataformats="HWC")

    def update(self) -> None:
        """One more step done (the bar)."""
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
        if self.stats is not None:
            self.stats.close()
        if self.writer is not None:
            self.writer.close()
