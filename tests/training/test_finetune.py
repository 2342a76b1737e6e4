"""Fine-tuning the embedder with the head (training/finetune.py): the split is the embedder, cached activations
give the full forward's gradients, tuning beats the head alone on what it trains on, a run resumes, and the
export is a new artifacts version whose ONNX embedder matches PyTorch and refuses an index of the frozen one.
EfficientNet-Lite0's real weights (the weights package), at a 32-64 px input so that it runs in seconds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rtdgan.index.build import build_index
from rtdgan.index.errors import UserError
from rtdgan.index.pipeline import Pipeline
from rtdgan.index.runtime.artifacts import read_artifacts
from rtdgan.index.runtime.onnx import OnnxEmbedder
from rtdgan.models.embedders import at_input_size, split_embedder, tail_state, tunable_blocks
from rtdgan.models.head import HeadConfig, RetrievalHead
from rtdgan.training import finetune as T
from rtdgan.training import head_cli
from rtdgan.training.data import load_records, write_split
from rtdgan.training.head import Features, info_nce
from rtdgan.training.weights import load_embedder
from tests.helpers import make_lookbook
from tests.training.test_head import make_artifacts, tiny_config


@pytest.fixture(scope="module")
def lite() -> tuple:
    net, info = load_embedder("efficientnet_lite0")
    return at_input_size(net, info, 32)


def images(n: int, seed: int = 0, size: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize(("tune", "boundary"), [(1, None), (3, None), (2, 4)])
def test_the_trunk_and_the_tail_are_the_embedder(lite: tuple, tune: int, boundary: int | None) -> None:
    net, _ = lite
    trunk, tail = split_embedder(net, tune, boundary)
    x = images(3)
    with torch.no_grad():
        torch.testing.assert_close(tail(trunk(x)), net(x), rtol=0, atol=1e-6)
    trained = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith("features.net.") for n in trained)
    assert any("_conv_head" in n for n in trained)
    assert {n.split(".")[3] for n in trained if "_blocks." in n} == {str(i) for i in range(17 - tune, 16)}
    assert set(tail_state(net, tune)) >= trained  # the committed tail holds every trained weight
    with pytest.raises(UserError, match="tune-blocks"):
        split_embedder(net, tunable_blocks(net) + 1)


def test_cached_activations_give_the_gradients_of_the_full_forward(lite: tuple) -> None:
    net, _ = lite
    trunk, tail = split_embedder(net, 2)
    tail.eval()
    torch.manual_seed(0)
    head = RetrievalHead(HeadConfig(mode="fused", dim=1280, out_dim=8))
    products, photos, generated = images(4, 1), images(4, 2), images(4, 3)
    rows = torch.tensor([0, 2, 3, 5])
    bank = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)

    def grads(loss: torch.Tensor) -> list[torch.Tensor]:
        params = [p for p in tail.parameters() if p.requires_grad]
        return list(torch.autograd.grad(loss, params))

    # The full forward: the embedder on the images, the trunk part frozen.
    query = head.query(torch.cat([net(generated), net(photos)], dim=1))
    full = grads(info_nce(query, bank.index_copy(0, rows, head.catalog(net(products))), rows, 0.1))
    with torch.no_grad():
        cached = {"products": trunk(products), "photo": trunk(photos), "generated": trunk(generated)}
    loss, _ = T.step_loss(tail, head, bank, rows, cached["products"], cached, 0.1)
    for a, b in zip(grads(loss), full, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # The float16 cache moves them by its rounding only.
    half = {k: v.half().float() for k, v in cached.items()}
    loss16, _ = T.step_loss(tail, head, bank, rows, half["products"], half, 0.1)
    for a, b in zip(grads(loss16), full, strict=True):
        assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.99


def noisy_world(products: int = 16, photos: int = 2, seed: int = 0) -> Features:
    """Boundary activations of the last two stages at a 32 px input, (192, 1, 1), of random images: the photos and
    generated images are their product's image under strong noise, so the frozen features confuse products."""
    net, info = load_embedder("efficientnet_lite0")
    trunk, _ = split_embedder(at_input_size(net, info, 32)[0], 2)
    base = images(products, seed)
    owner = np.repeat(np.arange(products), photos)
    noisy = lambda k: (base[owner] + 0.8 * images(len(owner), seed + k)).clamp(-1, 1)  # noqa: E731
    with torch.no_grad():
        acts = [trunk(x).numpy() for x in (base, noisy(1), noisy(2))]
    return Features(np.array([f"p{i}" for i in range(products)]), acts[0], owner, acts[1], acts[2])


def settings(**kw: object) -> T.TuneSettings:
    values = dict(temperature=0.1, epochs=6, lr_head=3e-3, lr_tail=1e-3, weight_decay=0.0, batch_size=8,
                  patience=6, seed=0) | kw
    return T.TuneSettings(**values)  # type: ignore[arg-type]


def test_fine_tuning_beats_the_head_alone_on_what_it_trains_on(lite: tuple) -> None:
    net, _ = lite
    _, tail = split_embedder(net, 2)
    world = noisy_world()
    torch.manual_seed(0)
    head = RetrievalHead(HeadConfig(mode="fused", dim=1280, out_dim=16))
    history, best = T.train_tuned(world, tail, head, settings(), val=world)
    assert history[0]["epoch"] == 0  # the head alone on the frozen tail: the one to beat
    assert best > 0
    assert history[best]["recall"]["1"] > history[0]["recall"]["1"]
    # The modules hold the best epoch's weights.
    assert T.validation_recall(tail, head, world) == history[best]["recall"]


def test_an_interrupted_run_resumes_from_its_checkpoint(lite: tuple, tmp_path: Path) -> None:
    world = noisy_world()

    def run(epochs: int, key: str) -> list[dict]:
        net, _ = load_embedder("efficientnet_lite0")
        net, _ = at_input_size(net, _, 32)
        _, tail = split_embedder(net, 2)
        torch.manual_seed(0)
        head = RetrievalHead(HeadConfig(mode="photo", dim=1280, out_dim=8))
        return T.train_tuned(world, tail, head, settings(epochs=epochs), val=world,
                             checkpoint=tmp_path / "tune.pt", key=key)[0]

    first = run(2, "a")
    assert [h["epoch"] for h in first] == [0, 1, 2]
    resumed = run(3, "a")
    assert [h["epoch"] for h in resumed] == [0, 1, 2, 3] and resumed[:3] == first
    assert [h["epoch"] for h in run(1, "b")] == [0, 1]  # another run's checkpoint is not resumed


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(artifacts, data, split.json): the tiny world of tests/training/test_head.py with an EfficientNet-Lite0
    model.json (the artifacts' own embedder graph is the tiny one: fine-tuning replaces it)."""
    data = make_lookbook(tmp_path / "data", products=12, photos=2, size=32, seed=3)
    write_split(tmp_path / "split.json", {"data": str(data), "seed": 0}, load_records(data).records, [])
    artifacts = make_artifacts(tmp_path / "artifacts")
    _, info = load_embedder("efficientnet_lite0")
    model = json.loads((artifacts / "model.json").read_text())
    model["embedder"] |= {"backbone": "efficientnet_lite0", "dim": 1280, "input_size": 224,
                          "weights_sha256": info.weights_sha256}
    (artifacts / "model.json").write_text(json.dumps(model))
    return artifacts, data, tmp_path / "split.json"


@pytest.mark.slow  # ONNX exports of the embedder, the trunk and both head sides: about 15 s
def test_fit_head_publishes_a_fine_tuned_version_that_refuses_the_frozen_index(tiny: tuple[Path, Path, Path],
                                                                            tmp_path: Path) -> None:
    artifacts, data, split = tiny
    frozen = read_artifacts(artifacts)
    build_index(artifacts, data, tmp_path / "index")  # embedded by the frozen embedder
    cfg = tiny_config(artifacts, data, split, tune_blocks=2, embed_input_size=32, tune_epochs=2, tune_batch=4,
                      check_backends=False)
    doc = T.fit_tuned(cfg)

    art = read_artifacts(artifacts)
    assert art.folder.name == "v-000001" and art.embedder_sha256 != frozen.embedder_sha256
    tuned = art.model["embedder"]["tuned"]
    assert tuned["blocks"] == 2 and tuned["frozen_onnx_sha256"] == frozen.embedder_sha256
    assert tuned["base_weights_sha256"] == art.model["embedder"]["weights_sha256"]
    assert art.model["embedder"]["input_size"] == 32 and tuned["history"][0]["epoch"] == 0
    assert doc["trained_with"]["embedder_sha256"] == art.embedder_sha256 and doc["tuned"]["blocks"] == 2
    assert doc["parity"]["query"]["max_abs_error"] < 1e-4
    assert (art.folder / "generator.onnx").read_bytes() == (artifacts / "v-000001" / "generator.onnx").read_bytes()

    # The exported graph is the PyTorch embedder with the trained tail (the weights package + tail_state).
    net, info = load_embedder("efficientnet_lite0")
    net, _ = at_input_size(net, info, 32)
    tail_keys = set(tail_state(net, 2))
    assert len(tail_keys) > 10
    sample = images(3, size=16)
    onnx_out = OnnxEmbedder(art.folder / "embedder.onnx", providers=["CPUExecutionProvider"])(sample.numpy())
    with torch.no_grad():
        base_out = net(sample).numpy()
    assert np.abs(onnx_out - base_out).max() > 1e-3  # the tail moved

    with pytest.raises(UserError, match="embedder"):  # the index of the frozen embedder
        Pipeline.open(artifacts, tmp_path / "index")
    build_index(artifacts, data, tmp_path / "index2")
    pipeline = Pipeline.open(artifacts, tmp_path / "index2")
    assert pipeline.head is not None


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    head_cli.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize(("flags", "message"), [
    (["--embed-input-size", "64"], "needs --tune-blocks"),
    (["--tune-blocks", "3", "--tune-boundary", "2"], "tune-boundary must be >= --tune-blocks"),
    (["--tune-blocks", "-1"], "tune-blocks must be >= 0"),
])
def test_bad_tuning_flags_are_one_line(tiny: tuple[Path, Path, Path], flags: list[str], message: str) -> None:
    artifacts, data, split = tiny
    with pytest.raises(UserError, match=message):
        head_cli.run(parse(["--artifacts", str(artifacts), "--data", str(data), "--split", str(split), *flags]))
