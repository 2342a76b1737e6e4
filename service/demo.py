"""`rtd demo`: the main job. Builds what the demo needs if it is absent, then serves the demo page.

Stages, each skipped when its output is already there (so a later run is ready in seconds):
  data      synthetic catalog + split + contact sheet       demo/data, demo/split.json, demo/sheet.png
  train     a small rtdGAN, a few CPU minutes (resumable)     demo/run
  export    generator.onnx + embedder.onnx (EfficientNet-Lite0, offline) + model.json   demo/artifacts
  index     every catalog product, exact FAISS               demo/index
  samples   the held-out (test split) photos, for the page   demo/samples
  serve     http://127.0.0.1:8000
The build stages need the training extras (torch); serving does not.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class DemoConfig:
    root: Path = Path("demo")
    products: int = 300
    photos_per_product: int = 4
    size: int = 64  # S: 64 px trains in minutes on a 2-core CPU
    stages: int = 3  # N: 16 -> 32 -> 64 px (Sec. 3.3)
    width: int = 16
    epochs_fade: int = 2
    epochs_stab: int = 3
    batch_sizes: tuple[int, ...] = (32, 32, 16)
    seed: int = 0
    workers: int = 2
    host: str = "127.0.0.1"
    port: int = 8000
    serve: bool = True  # False: build only (`rtd demo --build-only`)


def say(text: str) -> None:
    print(f"rtd demo: {text}", file=sys.stderr, flush=True)


def build_data(cfg: DemoConfig) -> tuple[Path, Path]:
    """The synthetic catalog, its split and a contact sheet."""
    from training.sheet import contact_sheet
    from training.split import SplitConfig, make_split
    from training.synth import SynthConfig, synthesize

    data, split = cfg.root / "data", cfg.root / "split.json"
    if not (data / "synth.json").is_file() or not json.loads((data / "synth.json").read_text()).get("complete"):
        say(f"data: writing {cfg.products} products x {cfg.photos_per_product} photos at {cfg.size} px to {data}")
        synthesize(SynthConfig(out=data, products=cfg.products, photos_per_product=cfg.photos_per_product,
                               size=cfg.size, seed=cfg.seed, workers=cfg.workers))
        split.unlink(missing_ok=True)
    if not split.is_file():
        info = make_split(SplitConfig(data=data, out=split, seed=cfg.seed, workers=cfg.workers))
        say(f"data: split {info['counts']}")
    if not (cfg.root / "sheet.png").is_file():
        contact_sheet(data, cfg.root / "sheet.png")
    return data, split


def build_model(cfg: DemoConfig, data: Path, split: Path) -> Path:
    """Train the demo's rtdGAN (resuming an interrupted run), then export it to ONNX artifacts."""
    import torch

    from training.export import ExportConfig, export_run
    from training.train import TrainConfig, train

    run, artifacts = cfg.root / "run", cfg.root / "artifacts"
    if (artifacts / "model.json").is_file():
        return artifacts
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    last = run / "checkpoints" / "last.pt"
    done = last.is_file() and (run / "checkpoints" / f"stage_{cfg.stages}.pt").is_file()
    if not done:
        say(f"train: rtdGAN, {cfg.stages} stages to {cfg.size} px, width {cfg.width}, "
            f"{cfg.epochs_fade}+{cfg.epochs_stab} epochs per stage (a few CPU minutes; Ctrl-C resumes next time)")
        train(TrainConfig(data=str(data), out=str(run), split=str(split), model="rtdgan", stages=cfg.stages,
                          resolution=cfg.size, width=cfg.width, epochs_fade=cfg.epochs_fade,
                          epochs_stab=cfg.epochs_stab, batch_sizes=cfg.batch_sizes, seed=cfg.seed,
                          resume=last.is_file(), device="cpu"))
    say("export: generator.onnx + embedder.onnx (efficientnet_lite0: its ImageNet weights ship with pip)")
    export_run(ExportConfig(run=run, out=artifacts, embedder="efficientnet_lite0"))
    return artifacts


def build_index(cfg: DemoConfig, artifacts: Path, data: Path) -> Path:
    """Every catalog product (train and test) in an exact FAISS index: a shop's whole catalog."""
    from index.build import build_index as build

    index = cfg.root / "index"
    if not (index / "index.json").is_file():
        say("index: embedding the catalog")
        build(artifacts, data, index)
    return index


def held_out_samples(cfg: DemoConfig, split: Path) -> Path:
    """Copy the test split's photos into one folder: the page offers them, and none was trained on."""
    from training.data import load_split

    samples = cfg.root / "samples"
    if not samples.is_dir():
        tmp = cfg.root / ".samples.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for record in load_split(split).test:
            for photo in record.photos[:1]:  # one photo per held-out product
                shutil.copy(photo, tmp / photo.name)
        tmp.rename(samples)
    return samples


def run_demo(cfg: DemoConfig) -> int:
    """Build the missing stages, then serve until stopped."""
    cfg.root.mkdir(parents=True, exist_ok=True)
    data, split = build_data(cfg)
    artifacts = build_model(cfg, data, split)
    index = build_index(cfg, artifacts, data)
    samples = held_out_samples(cfg, split)
    (cfg.root / "demo.json").write_text(json.dumps(asdict(cfg), default=str, indent=1) + "\n")
    if not cfg.serve:
        say(f"built: {artifacts}, {index}, {samples}")
        return 0
    from service.serve_cli import serve
    from service.settings import Settings

    say(f"serving on http://{cfg.host}:{cfg.port}  (Ctrl-C stops)")
    serve(Settings(artifacts=artifacts, index=index, demo_samples=samples), cfg.host, cfg.port)
    return 0
