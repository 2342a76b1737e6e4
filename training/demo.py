"""The demo builder behind `rtd demo`: builds what the demo needs if it is absent (serving is the CLI's part).

The demo is a shop whose catalog the generator has never seen; its config and the recipes of its committed weights
are training/demo_config.py. Stages, each skipped when its output is already there (so a later run is ready in
seconds):
  data      the shop: synthetic catalog + street photos + contact sheet    demo/data, demo/sheet.png
  model     committed weights, or train the recipe        demo/pretrained-run, or demo/run + demo/train-data
  export    generator.onnx + embedder.onnx (EfficientNet-Lite0, offline, embed level 0) + model.json   demo/artifacts
  crop      the committed person crop, or fit the recipe, into the artifacts   (demo/crop-world when fitted)
  head      the committed head, or fit the recipe, exported into the artifacts   (demo/head-world when fitted)
  tune      the committed fine-tuned embedder and head, or fit the recipe, as the artifacts' next version
  index     every catalog product (through the head's catalog side), exact FAISS   demo/index
  check     held-out R@1 and R@10 of /search's path, with the head and without, LookBook- and street-framed
            photos, printed                                        demo/check.json (demo/street-data: street photos)
  samples   one street photo per product, for the page                     demo/samples
Model and export are training/demo_generator.py, the crop training/demo_crop.py, the head training/demo_head.py,
the fine-tuned embedder training/demo_tune.py, the check training/demo_check.py; the cards of the committed weights are training/demo_cards.py, and what every
stage shares (its console line, synthetic worlds) training/demo_stage.py. The build stages need the training
extras (torch). Serving them (http://127.0.0.1:8000) is `rtd demo`'s last step, in training/demo_cli.py: the one
module of training/ that calls into service/ (the CLI is the top layer; docs/architecture.md). Nothing here imports
service/.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from rtdgan.index.errors import UserError
from rtdgan.training.demo_cards import record_check
from rtdgan.training.demo_check import check
from rtdgan.training.demo_config import DemoConfig
from rtdgan.training.demo_crop import build_crop
from rtdgan.training.demo_generator import build_model
from rtdgan.training.demo_head import build_head, head_wanted
from rtdgan.training.demo_stage import remove, say, synth_world
from rtdgan.training.demo_tune import build_tuned, tune_wanted


def build_data(cfg: DemoConfig) -> Path:
    """The shop's synthetic catalog and a contact sheet."""
    from rtdgan.training.sheet import contact_sheet

    data = synth_world(cfg.root / "data", cfg.products, cfg.photos_per_product, cfg, cfg.seed)
    if not (cfg.root / "sheet.png").is_file():
        contact_sheet(data, cfg.root / "sheet.png")
    return data


def build_index(cfg: DemoConfig, artifacts: Path, data: Path) -> Path:
    """Every catalog product in an exact FAISS index: the shop's whole catalog (through the head's catalog side
    when the artifacts have a head)."""
    from rtdgan.index.build import build_index as build

    index = cfg.root / "index"
    if not (index / "index.json").is_file():
        say("index: embedding the catalog")
        build(artifacts, data, index)
    return index


def held_out_samples(cfg: DemoConfig, data: Path) -> Path:
    """One street photo per product in one folder: the page offers them, and none was trained on."""
    from rtdgan.training.data import load_records

    samples = cfg.root / "samples"
    if not samples.is_dir():
        tmp = cfg.root / ".samples.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for record in load_records(data).records:
            for photo in record.photos[:1]:
                shutil.copy(photo, tmp / photo.name)
        tmp.rename(samples)
    return samples


@dataclass(frozen=True)
class Built:
    """What the service needs to serve the demo."""

    artifacts: Path
    index: Path
    samples: Path


def build_demo(cfg: DemoConfig) -> Built:
    """Build the missing stages (each skipped when already there) and print the check."""
    from rtdgan.index.images import check_embed_level

    check_embed_level(cfg.embed_level, cfg.size)  # a bad --embed-level stops before anything is built
    if cfg.retrain_head and not head_wanted(cfg):
        raise UserError(f"--retrain-head fits the head at embed level {cfg.head_embed_level}, its recipe's: drop "
                        f"--embed-level {cfg.embed_level}" if cfg.head else "--retrain-head and --no-head: choose one")
    if cfg.retrain_crop and not cfg.crop:
        raise UserError("--retrain-crop and --no-crop: choose one")
    if cfg.retrain_tune and not tune_wanted(cfg):
        raise UserError("--retrain-tune fine-tunes the embedder with the fused head: drop --no-head and --embed-level")
    cfg.root.mkdir(parents=True, exist_ok=True)
    if cfg.retrain:  # everything downstream of the generator is rebuilt (an interrupted run/ resumes)
        remove(cfg.root, "artifacts", "index", "check.json")
    data = build_data(cfg)
    artifacts = build_model(cfg, data)
    build_crop(cfg, artifacts)
    build_head(cfg, artifacts, data)
    build_tuned(cfg, artifacts, data)
    index = build_index(cfg, artifacts, data)
    check(cfg, artifacts, index, data)
    samples = held_out_samples(cfg, data)
    (cfg.root / "demo.json").write_text(json.dumps(asdict(cfg), default=str, indent=1) + "\n")
    if cfg.retrain and cfg.weights is not None:
        record_check(cfg.weights, cfg.root / "check.json")
    if (cfg.retrain_head or cfg.retrain or cfg.retrain_crop) and head_wanted(cfg) and cfg.head_weights is not None:
        record_check(cfg.head_weights, cfg.root / "check.json")
    if (cfg.retrain_tune or cfg.retrain or cfg.retrain_crop) and tune_wanted(cfg) and cfg.tune_weights is not None:
        record_check(cfg.tune_weights, cfg.root / "check.json")
    say(f"built: {artifacts}, {index}, {samples}")
    return Built(artifacts, index, samples)


def run_demo(cfg: DemoConfig) -> int:
    """Build the missing stages; 0. (`rtd demo` then serves them unless --build-only: training/demo_cli.py.)"""
    build_demo(cfg)
    return 0
