"""The demo's retrieval head, fused: the embedder features of the generated image and of the photo, mapped by the
head's query side, against the catalog mapped by its catalog side (models/head.py, training/head.py). Through it
the demo compares at full resolution (embed level 0, the paper's protocol).

The committed head (models/pretrained/head-demo-64.pt: a RetrievalHead state dict and its config; its card: the
recipe, the validation recall, the sha256 of the generator weights file, the embedder, level and person crop it
was fitted for) is exported to ONNX into the artifacts (`rtdgan.training.head.export_head`, parity-checked) only
when its card matches what is in use; otherwise the build fits `HEAD_RECIPE` itself (about 1.5 hours on 2 CPU
cores, most of it the features). `rtd demo --retrain-head` reproduces the committed head and rewrites its card
(`--retrain` and `--retrain-crop` do too: a new generator or crop needs a new head). The head serves only at the
embed level it was fitted at (`head_embed_level`, 0): at another `--embed-level`, or with `--no-head`, the demo
serves the frozen embedder (the paper's protocol) and says so.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rtdgan.index.errors import UserError
from rtdgan.training.demo_cards import card_problem, read_card, write_card
from rtdgan.training.demo_config import HEAD_RECIPE, DemoConfig, recipe, serves_tuned
from rtdgan.training.demo_crop import crop_onnx_sha256
from rtdgan.training.demo_generator import generator_weights_sha256
from rtdgan.training.demo_stage import remove, say, strip_part, synth_world

if TYPE_CHECKING:  # torch is imported only by the stages that need it
    from rtdgan.models.head import RetrievalHead
    from rtdgan.training.head import FittedHead

HEAD_WEIGHTS_FORMAT = 1


def head_wanted(cfg: DemoConfig) -> bool:
    """The demo serves a head: asked for (`--head`, the default) and at the level the head is fitted at."""
    return cfg.head and cfg.embed_level == cfg.head_embed_level


def _head_card_problem(cfg: DemoConfig, generator_sha: str | None, model: dict, crop_sha: str | None = None) -> str | None:
    """Why the committed head cannot serve these artifacts (None: it can)."""
    weights = cfg.head_weights
    problem = card_problem(weights, recipe(cfg, HEAD_RECIPE))
    if problem is not None:
        return problem
    assert weights is not None
    card = read_card(weights)
    embedder = card.get("embedder", {})
    if generator_sha is None or card.get("generator_weights_sha256") != generator_sha:
        return f"{weights} was fitted for another generator (weights sha256 " \
               f"{str(card.get('generator_weights_sha256'))[:12]}, this demo's {str(generator_sha)[:12]})"
    ours = model["embedder"]
    if (embedder.get("backbone"), embedder.get("level")) != (ours["backbone"], ours.get("level", 0)) or \
            embedder.get("weights_sha256") not in (None, ours.get("weights_sha256")):
        return f"{weights} was fitted for another embedder ({embedder.get('backbone')} at level {embedder.get('level')})"
    if crop_sha is not None and card.get("crop_onnx_sha256") != crop_sha:  # without a crop any head serves
        return f"{weights} was fitted on photos cut by another person crop"
    return None


def head_training_set(cfg: DemoConfig) -> tuple[Path, Path]:
    """The head's training world (synthesized by the recipe unless there) and its split file: (data, split).

    WORLD/lookbook: head_products LookBook-framed products; with head_street_products, WORLD/street: street-framed
    photos of another seed's products at head_street_size px, whose product images come from WORLD/street-products
    (the same products at the catalog's size); joined by one pairs manifest, WORLD/train-data/pairs.csv (ids
    prefixed l / s), split as `rtd data split` does."""
    from rtdgan.training.data import write_pairs_manifest
    from rtdgan.training.split import SplitConfig, make_split

    world = cfg.head_world if cfg.head_world is not None else cfg.root / "head-world"
    data, split = world / "train-data", world / "split.json"
    if not (world / "lookbook" / "synth.json").is_file() or (cfg.head_street_products and not (
            world / "street" / "synth.json").is_file()):
        say(f"head: writing its training world to {world}: {cfg.head_products} {cfg.head_framing}-framed products"
            + (f" and {cfg.head_street_products} street-framed ones" if cfg.head_street_products else "")
            + f", {cfg.head_photos_per_product} photos each")
    worlds: list[tuple[str, Path, Path | None]] = [
        ("l", synth_world(world / "lookbook", cfg.head_products, cfg.head_photos_per_product, cfg, cfg.head_seed,
                          cfg.head_framing), None)]
    if cfg.head_street_products:
        worlds.append(("s", synth_world(world / "street", cfg.head_street_products, cfg.head_photos_per_product, cfg,
                                        cfg.head_street_seed, "street", cfg.head_street_size),
                       synth_world(world / "street-products", cfg.head_street_products, 1, cfg, cfg.head_street_seed,
                                   "street")))
    manifest = data / "pairs.csv"
    joined = {"worlds": [[prefix, str(folder), str(products)] for prefix, folder, products in worlds]}
    marker = data / "joined.json"
    if not (manifest.is_file() and marker.is_file() and json.loads(marker.read_text()) == joined):
        write_pairs_manifest(data, worlds)
        marker.write_text(json.dumps(joined) + "\n")
        split.unlink(missing_ok=True)
    doc = json.loads(split.read_text()) if split.is_file() else {}
    if (Path(doc.get("data", "")).resolve() != data.resolve() or doc.get("test_fraction") != cfg.head_test_fraction
            or doc.get("seed") != cfg.head_split_seed):
        make_split(SplitConfig(data=data, out=split, test_fraction=cfg.head_test_fraction, seed=cfg.head_split_seed,
                               workers=cfg.workers))
    return data, split


def fit_recipe_head(cfg: DemoConfig, artifacts: Path) -> FittedHead:
    """The recipe's head, fitted on features from `artifacts`' graphs (cached in the world's head-cache/)."""
    from rtdgan.training.head import FitHeadConfig, train_fitted_head

    data, split = head_training_set(cfg)
    say(f"head: fitting a {cfg.head_mode} retrieval head on {data} (features through {artifacts}, cached; on 2 "
        f"CPU cores about 45 minutes for the features of 10,000 products, then 15 for the fit)")
    return train_fitted_head(FitHeadConfig(artifacts=artifacts, data=data, split=split, mode=cfg.head_mode,  # type: ignore[arg-type]
                                           seed=cfg.head_fit_seed, cache=split.parent / "head-cache"))


_FIT_CONFIG_LOCAL = ("artifacts", "data", "split", "cache", "threads", "embed_batch")  # paths and speed, not the fit


def head_card(cfg: DemoConfig, fitted: FittedHead, generator_sha: str | None, model: dict,
              crop_sha: str | None = None) -> dict:
    """What describes a fitted head beyond its weights: the card written beside a saved head, and what
    head.json is rebuilt from."""
    doc = fitted.doc
    return {
        "recipe": recipe(cfg, HEAD_RECIPE),
        "generator_weights_sha256": generator_sha,
        "crop_onnx_sha256": crop_sha,  # the person crop its photos were cut by (None: whole photos)
        "embedder": {"backbone": model["embedder"]["backbone"], "level": model["embedder"].get("level", 0),
                     "weights_sha256": model["embedder"].get("weights_sha256")},
        "size": doc["trained_with"]["size"],
        "head": asdict(fitted.head.cfg),
        "parameters": sum(p.numel() for p in fitted.head.parameters()),
        "temperature": doc["temperature"],
        "chosen": doc["chosen"],
        "validation": doc["validation"],
        "training": {k: v for k, v in doc["training"].items() if k not in ("data", "split", "features_cache")},
        "fit": {k: v for k, v in doc["config"].items() if k not in _FIT_CONFIG_LOCAL},
        "fitted_on": {"generator_onnx_sha256": doc["trained_with"]["generator_sha256"],
                      "embedder_onnx_sha256": doc["trained_with"]["embedder_sha256"]},
        "fitted": doc["fitted"],
    }


def save_head(cfg: DemoConfig, head: RetrievalHead, card: dict) -> dict:
    """The head's state dict and config to cfg.head_weights, its card (with the file's sha256) beside it."""
    import torch

    from rtdgan.index.files import write_atomic
    from rtdgan.training.checkpoint import code_version

    assert cfg.head_weights is not None
    cfg.head_weights.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": HEAD_WEIGHTS_FORMAT, "config": asdict(head.cfg),
             "state_dict": {k: v.detach().clone().contiguous() for k, v in head.state_dict().items()}}
    write_atomic(cfg.head_weights, lambda f: torch.save(state, f))
    card = write_card(cfg.head_weights, card | {"code_version": code_version()}, "rtd demo --build-only --retrain-head")
    say(f"head: {cfg.head_weights} ({cfg.head_weights.stat().st_size / 1e6:.1f} MB, {card['parameters']} parameters; "
        f"validation R@1 {card['validation']['recall']['1']:.3f} R@10 {card['validation']['recall']['10']:.3f})")
    return card


def load_head(path: Path) -> RetrievalHead:
    """A head saved by `save_head`, in eval mode."""
    import torch

    from rtdgan.models.head import HeadConfig, RetrievalHead

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        head = RetrievalHead(HeadConfig(**state["config"]))
        head.load_state_dict(state["state_dict"])
    except Exception as e:  # noqa: BLE001 - any failure means "not a usable head file"
        raise UserError(f"{path}: not a head saved by `rtd demo` ({type(e).__name__}: {e})") from e
    return head.eval()


def parity_samples(artifacts: Path, data: Path, inputs: tuple[str, ...], n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Query and catalog features of a few shop products through the artifacts' graphs, for the export's parity
    check: ((n, F), (n, D)). The query side's are the served query's (`Pipeline.features`: the person crop
    when the artifacts have one, then generator and embedder), before any head."""
    from rtdgan.index.pipeline import Pipeline
    from rtdgan.index.runtime.head import query_features
    from rtdgan.training.data import load_records

    pipeline = Pipeline.open(artifacts, head=False)
    records = [r for r in load_records(data).records if r.photos][:n]
    query = "fused" if len(inputs) > 1 else inputs[0]  # the query kind whose images give these features
    found = pipeline.features(pipeline.batch([pipeline.prepare(r.photos[0]) for r in records]), query)
    products = np.stack([pipeline.preprocess(r.product_image) for r in records])
    return query_features(inputs, found.features), pipeline.embed(products)


def export_demo_head(artifacts: Path, data: Path, head: RetrievalHead, card: dict, generator_sha: str | None,
                     source: dict) -> dict:
    """head_query.onnx, head_catalog.onnx and head.json into the artifacts' current version folder
    (`rtdgan.training.head.export_head`: both sides parity-checked), trained_with = these artifacts."""
    from rtdgan.index.runtime.artifacts import read_artifacts
    from rtdgan.index.runtime.head import HEAD_FORMAT, read_head
    from rtdgan.training.head import export_head

    art = read_artifacts(artifacts)
    cfg = head.cfg
    doc = {
        "format_version": HEAD_FORMAT,
        "mode": cfg.mode,
        "query": {"input": "features", "output": "embedding", "inputs": list(cfg.query_inputs), "dim": cfg.query_dim},
        "catalog": {"input": "features", "output": "embedding", "inputs": ["product"], "dim": cfg.dim},
        "embedding_dim": cfg.out_dim,
        "hidden": cfg.hidden,
        "temperature": card["temperature"],
        # The features it was fitted on are these artifacts' (the same generator weights, embedder and level).
        "trained_with": {"generator_sha256": art.model["generator"]["onnx_sha256"],
                         "embedder_sha256": art.embedder_sha256, "embedder": art.embedder_name,
                         "embed_level": art.model["embedder"].get("level", 0), "size": art.size,
                         "generator_weights_sha256": generator_sha},
        "training": card["training"] | {"recipe": card["recipe"], "fitted_on": card["fitted_on"]},
        "chosen": card["chosen"],
        "validation": card["validation"],
        "config": card["fit"],
        "fitted": card["fitted"],
        "demo": source,
    }
    query_sample, catalog_sample = parity_samples(artifacts, data, cfg.query_inputs)
    doc = export_head(head, art.folder, query_sample, catalog_sample, doc)
    read_head(art)  # what was written reads back, for these artifacts
    return doc


def build_head(cfg: DemoConfig, artifacts: Path, data: Path) -> None:
    """The retrieval head in the artifacts: the committed one when its card matches, else fitted from the recipe;
    none at another embed level or with --no-head. A change of head rebuilds the index and the check."""
    from rtdgan.index.runtime.artifacts import read_artifacts
    from rtdgan.index.runtime.head import CATALOG_ONNX, HEAD_JSON, QUERY_ONNX

    if not head_wanted(cfg):
        why = "--no-head" if not cfg.head else (f"the head is fitted at embed level {cfg.head_embed_level}, this demo "
                                                f"compares at {cfg.embed_level}")
        if strip_part(artifacts, HEAD_JSON, QUERY_ONNX, CATALOG_ONNX):
            remove(cfg.root, "index", "check.json")
        say(f"head: none ({why}): the frozen embedder's features, the paper's protocol")
        return
    art = read_artifacts(artifacts)
    if "tuned" in art.model["embedder"] and serves_tuned(cfg):  # the fine-tuned version brings its own head
        return
    generator_sha = generator_weights_sha256(cfg)
    crop_sha = crop_onnx_sha256(artifacts)
    retrain = cfg.retrain_head or cfg.retrain or cfg.retrain_crop
    problem = "--retrain-head" if retrain else _head_card_problem(cfg, generator_sha, art.model, crop_sha)
    assert cfg.head_weights is not None or problem is not None
    # What head.json's "demo" records of where the head came from: a later run keeps a head of the same source.
    source = ({"committed_sha256": read_card(cfg.head_weights)["sha256"]}
              if problem is None and cfg.head_weights is not None else
              {"fitted": recipe(cfg, HEAD_RECIPE), "generator_weights_sha256": generator_sha}) | {"crop": crop_sha}
    head_json = art.folder / HEAD_JSON
    if not retrain and head_json.is_file() and json.loads(head_json.read_text()).get("demo") == source:
        return  # this head is there already
    remove(cfg.root, "index", "check.json")  # made without this head
    if problem is None:
        assert cfg.head_weights is not None
        say(f"head: the committed fused head {cfg.head_weights} (`rtd demo --retrain-head` reproduces it), "
            f"exported to ONNX")
        card = read_card(cfg.head_weights)
        head = load_head(cfg.head_weights)
    else:
        if problem != "absent":
            say(f"head: {problem}: fitting the recipe's head instead")
        fitted = fit_recipe_head(cfg, artifacts)
        head, card = fitted.head, head_card(cfg, fitted, generator_sha, art.model, crop_sha)
        if retrain and cfg.head_weights is not None:
            card = save_head(cfg, head, card)
            source = {"committed_sha256": card["sha256"], "crop": crop_sha}
    export_demo_head(artifacts, data, head, card, generator_sha, source)
