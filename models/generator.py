"""The rtdGAN progressive generator G = {G_E, G_D} (Sec. 3.1, Fig. 2, Sec. 4.1).

The encoder G_E has M = log2(S) stride-2 blocks and never grows: the photo always enters at full
resolution S and leaves as a 1x1 bottleneck, as in pix2pix's U-Net-256 (Sec. 3.1, "we freeze the encoder
structure"). The decoder G_D has M blocks; block k (1-based) outputs 2^k pixels. At stage i of N only the
first M - N + i decoder blocks run (Fig. 2a), so stage i outputs S / 2^(N - i) pixels, and the newest
block is faded in by alpha (Fig. 2b).

Layout for S = 256, N = 3, width 64 (M = 8):

    photo 256 -> e1 128 -> e2 64 -> e3 32 -> e4 16 -> e5 8 -> e6 4 -> e7 2 -> e8 1   (encoder, fixed)
    e8 -> d1 2 -> d2 4 -> d3 8 -> d4 16 -> d5 32 -> d6 64 | -> d7 128 | -> d8 256       (decoder)
                                                stage 1 ^   stage 2 ^   stage 3 ^

Decoder block k concatenates the encoder features at its output resolution 2^k (e_{M-k}); the last block,
at full resolution, concatenates the photo itself (the encoder's level 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rtdgan.models.layers import PixelNorm, encoder_widths, init_normal, log2_resolution

# The coarsest stage must output at least this many pixels: below 8 px a Gaussian pyramid level holds
# almost no structure, and the shared critic (models/critic.py) needs 8 px for a non-empty patch map.
MIN_STAGE_SIZE = 8


@dataclass(frozen=True)
class GeneratorConfig:
    resolution: int = 256  # S: input photo and final output size, a power of two >= 16
    stages: int = 3  # N: rough-to-detail stages (Sec. 3.3); N = 1 is the single-stage ablation (Table 2)
    width: int = 64  # channels of the first encoder block (pix2pix ngf)
    max_width: int | None = None  # channel cap of the deeper blocks; None: 8 * width, pix2pix's 8 * ngf


def max_stages(resolution: int) -> int:
    """Largest N for resolution S: the coarsest output S / 2^(N-1) must be >= 8 px, so N = log2(S) - 2."""
    return log2_resolution(resolution) - log2_resolution(MIN_STAGE_SIZE, minimum=MIN_STAGE_SIZE) + 1


class EncoderBlock(nn.Sequential):
    """g_e^j: a stride-2 4x4 convolution, (pixel) norm, LeakyReLU 0.2 (Sec. 3.1; pix2pix's down block)."""

    def __init__(self, in_ch: int, out_ch: int, norm: bool) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size=4, stride=2, padding=1),
            PixelNorm() if norm else nn.Identity(),
            nn.LeakyReLU(0.2),
        )


class DecoderBlock(nn.Module):
    """g_d^k (Fig. 2b): out = Skip(h) + alpha * Detail(h, e), both at twice h's resolution."""

    def __init__(self, in_ch: int, skip_ch: int, hidden_ch: int, out_ch: int) -> None:
        super().__init__()
        # Skip: 2x upsample + 1x1 convolution, the channel reduction before the addition (Sec. 4.1).
        self.skip = nn.Conv2d(in_ch, out_ch, kernel_size=1)
        # Detail: the modified residual branch, fed with the U-Net skip connection (Sec. 3.1).
        self.detail = nn.Sequential(
            nn.Conv2d(in_ch + skip_ch, hidden_ch, kernel_size=3, padding=1),
            PixelNorm(),
            nn.LeakyReLU(0.2),
            nn.Conv2d(hidden_ch, out_ch, kernel_size=3, padding=1),
        )

    def forward(self, h: Tensor, e: Tensor, alpha: float = 1.0) -> Tensor:
        """h (B, C_in, H, W), e (B, C_e, 2H, 2W) -> (B, C_out, 2H, 2W)."""
        up = F.interpolate(h, scale_factor=2.0, mode="nearest")  # (B, C_in, 2H, 2W)
        skip = self.skip(up)  # (B, C_out, 2H, 2W)
        detail = self.detail(torch.cat([up, e], dim=1))  # (B, C_out, 2H, 2W)
        if alpha == 1.0:  # a python float: no extra multiply in the traced / exported graph
            return skip + detail
        return skip + alpha * detail


class ToRGB(nn.Sequential):
    """LeakyReLU 0.2, 1x1 convolution, tanh (Sec. 4.1): turns a non-final stage's features into an image."""

    def __init__(self, in_ch: int) -> None:
        super().__init__(nn.LeakyReLU(0.2), nn.Conv2d(in_ch, 3, kernel_size=1), nn.Tanh())


class ProgressiveGenerator(nn.Module):
    """rtdGAN generator: photo (B, 3, S, S) -> product image at the stage's size, in [-1, 1]."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        M = log2_resolution(cfg.resolution)
        limit = max_stages(cfg.resolution)
        if not 1 <= cfg.stages <= limit:
            raise ValueError(
                f"stages must be between 1 and {limit} at resolution {cfg.resolution} "
                f"(the coarsest stage outputs resolution / 2^(stages-1) px, at least {MIN_STAGE_SIZE}); "
                f"got {cfg.stages}"
            )
        self.cfg = cfg
        self.resolution, self.stages, self.depth = cfg.resolution, cfg.stages, M
        enc = encoder_widths(M, cfg.width, cfg.max_width or 8 * cfg.width)  # enc[j-1] = channels of e_j, e_M is 1x1

        # Encoder: no norm on the first block (pix2pix's outermost down block works on raw pixels).
        self.encoder = nn.ModuleList(
            EncoderBlock(3 if j == 0 else enc[j - 1], enc[j], norm=j > 0) for j in range(M)
        )

        # Decoder block k mirrors e_{M-k} (same resolution 2^k and channels); the last block (k = M) runs
        # at the photo's resolution, concatenates the photo (3 channels) and emits RGB itself (Sec. 4.1),
        # with a hidden width of `width` like pix2pix's outermost up block.
        blocks = []
        for k in range(1, M + 1):
            in_ch = enc[M - k]  # k = 1: the bottleneck e_M; else block k-1's output, mirroring e_{M-k+1}
            last = k == M
            skip_ch = 3 if last else enc[M - k - 1]
            out_ch = 3 if last else enc[M - k - 1]
            hidden = cfg.width if last else out_ch
            blocks.append(DecoderBlock(in_ch, skip_ch, hidden, out_ch))
        self.decoder = nn.ModuleList(blocks)

        # ToRGB for every stage but the last: to_rgb[i-1] reads decoder block M - N + i (Sec. 4.1).
        self.to_rgb = nn.ModuleList(ToRGB(enc[self.stages - i - 1]) for i in range(1, self.stages))
        init_normal(self)

    def output_size(self, stage: int) -> int:
        """Side of the image generated at `stage` (1-based): S / 2^(N - stage)."""
        self._check_stage(stage)
        return self.resolution // 2 ** (self.stages - stage)

    def active_blocks(self, stage: int) -> int:
        """Number of decoder blocks that run at `stage`: M - N + stage (Sec. 3.3, Preparation)."""
        self._check_stage(stage)
        return self.depth - self.stages + stage

    def forward(self, photo: Tensor, stage: int | None = None, alpha: float = 1.0) -> Tensor:
        """(B, 3, S, S) photo in [-1, 1] -> (B, 3, s, s) image in [-1, 1], s = output_size(stage)."""
        stage = self.stages if stage is None else stage
        active = self.active_blocks(stage)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        # Shapes are constants while tracing (torch.jit / ONNX export); checking them there only warns.
        if not torch.jit.is_tracing() and tuple(photo.shape[1:]) != (3, self.resolution, self.resolution):
            raise ValueError(
                f"photo must be (B, 3, {self.resolution}, {self.resolution}), got {tuple(photo.shape)}"
            )

        # The whole encoder always runs on the full-size photo (Sec. 3.1): feats[j] is e_j's output.
        feats = [photo]  # feats[0]: (B, 3, S, S)
        x = photo
        for block in self.encoder:
            x = block(x)  # (B, C_j, S / 2^j, S / 2^j)
            feats.append(x)

        h = feats[-1]  # (B, C_M, 1, 1) bottleneck
        for k in range(1, active + 1):
            # Only the newest block is faded in (Fig. 2b); the others are fully on. h: (B, C, 2^k, 2^k)
            h = self.decoder[k - 1](h, feats[self.depth - k], alpha if k == active else 1.0)

        if stage == self.stages:
            return torch.tanh(h)  # (B, 3, S, S): the last block already has 3 channels
        return self.to_rgb[stage - 1](h)  # (B, 3, s, s)

    def at_stage(self, stage: int | None = None) -> FixedStage:
        """This generator frozen at `stage` (None = N) with alpha = 1: a one-input module to trace or export."""
        return FixedStage(self, self.stages if stage is None else stage)

    def _check_stage(self, stage: int) -> None:
        if not isinstance(stage, int) or not 1 <= stage <= self.stages:
            raise ValueError(f"stage must be an int in 1..{self.stages}, got {stage!r}")


class FixedStage(nn.Module):
    """G_i for a fixed stage i with alpha = 1: photo -> image, for torch.jit.trace and torch.onnx.export."""

    def __init__(self, generator: ProgressiveGenerator, stage: int) -> None:
        super().__init__()
        generator.output_size(stage)  # validates the stage now rather than at trace time
        self.generator = generator
        self.stage = stage

    def forward(self, photo: Tensor) -> Tensor:
        """(B, 3, S, S) -> (B, 3, s, s) in [-1, 1]."""
        return self.generator(photo, self.stage, 1.0)
