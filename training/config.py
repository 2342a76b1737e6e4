"""The configs of `rtd train` and `rtd export`: frozen dataclasses, the one source of their flags. No torch.

Each default and help text is written once, here (`rtdgan.index.configs.opt`); training/train_cli.py and
training/export_cli.py derive their flags from these classes, so `--help` shows every default. What
`rtd train` saves as RUN/config.json reads back with `rtd train --config RUN/config.json`.

training/steps.py, training/train.py and the model registry (training/registry.py) import this module, never
the other way round; the command-line modules import it without pulling torch in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rtdgan.index.configs import opt

# The model families, --model's choices (index/configs.py reads them off the Literal): rtdGAN and the paper's
# two baselines (Sec. 5). training/registry.py holds one ModelSpec for each and checks it has exactly these.
ModelName = Literal["rtdgan", "pix2pix", "pldt"]
Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16"]
MemoryFormat = Literal["auto", "channels_last", "contiguous"]

# Retrieval embedders with ImageNet weights (training/weights.py loads them, models/embedders.py builds them).
EMBEDDERS = ("densenet121", "efficientnet_lite0")
DEFAULT_EMBEDDER = "densenet121"  # the paper's (Sec. 5); needs its ImageNet weights file or a download
EmbedderName = Literal[EMBEDDERS]  # type: ignore[valid-type]


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; printed at start and saved as RUN/config.json."""

    data: str = opt(help="LookBook folder or pairs manifest CSV")
    out: str = opt(help="run folder (config, stats, samples, checkpoints)")
    split: str | None = opt(None, "split file from `rtd data split`; None: train on every product of --data")
    model: ModelName = opt("rtdgan", "the model family: rtdGAN or a baseline (training/registry.py)")
    stages: int = opt(3, "rough-to-detail stages N (Sec. 4.1: 3 at 256 px); baselines train one stage of "
                         "N x (fade + stab) epochs")
    resolution: int = opt(256, "image side S (PLDT trains at min(S, 64))")
    width: int = opt(64, "channels of the first G and D layers")
    epochs_fade: int = opt(40, "t_fade: fade-in epochs per stage (Sec. 4.1)")
    epochs_stab: int = opt(40, "t_stab: stabilisation epochs per stage (Sec. 4.1)")
    epochs_extra: int = opt(0, "more epochs at the full resolution after the schedule; may grow on --resume")
    batch_sizes: tuple[int, ...] = opt((60, 40, 20), "global batch size per stage (Sec. 4.1); baselines use the last")
    lr: float = opt(2e-4, "Adam learning rate of G and D (Sec. 4.1)")
    lambda_adv: float = opt(1.0, "Eq. 4 adversarial weight (rtdgan; Sec. 4.1: all 1)")
    lambda_con: float = opt(1.0, "Eq. 4 content (L1) weight (rtdgan)")
    lambda_lap: float = opt(1.0, "Eq. 4 Laplacian weight (rtdgan)")
    lambda_gp: float = opt(10.0, "WGAN-GP gradient penalty weight (rtdgan; Sec. 4.1)")
    seed: int = opt(0, "seeds the initial weights and the data order")
    workers: int = opt(0, "data loader processes")
    resume: bool = opt(False, "continue from OUT/checkpoints/last.pt")
    device: Device = opt("auto", "auto: cuda if available")
    memory_format: MemoryFormat = opt("auto", "networks and batches in channels_last (NHWC) or contiguous (NCHW) "
                                              "memory; auto: channels_last on cuda, and on CPU for rtdgan (1.3-1.5x "
                                              "at 64 px here, bench/bench_train.py), contiguous for the other models "
                                              "on CPU (no faster); config.json records the one used")
    precision: Precision = opt("auto", "forward passes in bf16 autocast (losses, DoG and gradient penalty stay fp32) "
                                       "or fp32; auto: bf16 on cuda or on a CPU with AMX/AVX512-BF16 units, else "
                                       "fp32 (config.json records the one used); bf16 without such units is emulated, ~20x slower")
    log_every: int = opt(50, "steps between stats.jsonl lines")
    checkpoint_every_steps: int = opt(1000, "steps between checkpoints; also at each stage end and on stop")
    limit_items: int | None = opt(None, "train on the first n (photo, product) items only")
    stop_after_steps: int | None = opt(None, "stop (with a checkpoint) once this many steps are done")


@dataclass(frozen=True)
class ExportConfig:
    """`rtd export`: which run, where to, which embedder, which stage."""

    run: Path = opt(help="run folder written by `rtd train`")
    out: Path = opt(help="artifacts folder to write: generator.onnx, embedder.onnx, model.json (replaced whole)")
    embedder: EmbedderName = opt(DEFAULT_EMBEDDER, "retrieval backbone: densenet121 (the paper's, Sec. 5) or "
                                                   "efficientnet_lite0 (offline)")
    embedder_weights: Path | None = opt(None, "local state_dict for the backbone instead of its default weights source")
    embed_level: int = opt(0, "compare images L levels down the Gaussian pyramid (each halves the side) instead of "
                              "at full resolution (0, the paper's); docs/design-choices.md 'The comparison scale'", metavar="L")
    embed_input_size: int | None = opt(None, "side the embedder resizes its input to before the backbone (None: the "
                                             "backbone's ImageNet 224; smaller is faster on CPU: docs/design-choices.md "
                                             "'The embedder's input size')", metavar="PX")
    stage: int | None = opt(None, "rtdGAN stage to export (None: the stage the run reached); earlier stages are "
                                  "upsampled (bilinear) to the full resolution")
    parity_data: Path | None = opt(None, "photos for the parity check (LookBook folder or pairs manifest) when the "
                                         "run's own data is not on this machine; None: the run's")
    check_backends: bool = opt(True, "once exported, run the backend parity gate (`rtd check-backend`) on every "
                                     "backend this machine runs besides onnxruntime fp32, so they serve at once")
