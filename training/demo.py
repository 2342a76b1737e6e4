"""The demo builder behind `rtd demo`: builds what the demo needs if it is absent (serving is the CLI's part).

The demo is a shop whose catalog the generator has never seen: its products are drawn with their own
seed, so every street photo in it is held out. The generator comes from committed weights
(models/pretrained/, under 15 MB) that `rtd demo --retrain` reproduces from the recipe in `DemoConfig`:
a separate synthetic training world of thousands of products, about 1.5 CPU hours of rough-to-detail
training. Without the weights file the demo trains that recipe itself.

Stages, each skipped when its output is already there (so a later run is ready in seconds):
  data      the shop: synthetic catalog + street photos + contact sheet    demo/data, demo/sheet.png
  model     committed weights, or train the recipe        demo/pretrained-run, or demo/run + demo/train-data
  export    generator.onnx + embedder.onnx (EfficientNet-Lite0, offline, embed level 2) + model.json   demo/artifacts
  index     every catalog product, exact FAISS                             demo/index
  check     held-out top-10 hit rate of /search's path, printed            demo/check.json
  samples   one street photo per product, for the page                     demo/samples
The build stages need the training extras (torch). Serving them (http://127.0.0.1:8000) is `rtd demo`'s
last step, in training/demo_cli.py: the one module of training/ that calls into service/ (the CLI is the
top layer; docs/architecture.md). Nothing here imports service/.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from index.configs import opt
from index.errors import UserError
from index.onnx import sha256_file

PRETRAINED = Path(__file__).resolve().parent.parent / "models" / "pretrained" / "rtdgan-demo-64.pt"
CHECK_K = 10


@dataclass(frozen=True)
class DemoConfig:
    """`rtd demo`: the fields with cli=True are its flags (index/configs.py derives them); the recipe is not."""

    root: Path = opt(Path("demo"), "folder for everything the demo builds")
    # The shop: a synthetic catalog with its own seed, so none of its products was trained on.
    products: int = opt(300, "products in the shop")
    photos_per_product: int = opt(4, cli=False)
    size: int = opt(64, cli=False)  # S: 64 px trains on a 2-core CPU
    framing: str = opt("lookbook", cli=False)  # one full-length person, centred, as in LookBook's photos (README "Choices")
    seed: int = opt(1000, "the shop's catalog seed")
    # The generator: committed weights, or (missing, or --retrain) trained from the recipe below.
    weights: Path | None = opt(PRETRAINED, cli=False)  # None: always train (the tests' tiny demos)
    retrain: bool = opt(False, "reproduce the committed demo generator: train its recipe (about 1.5 CPU hours) "
                        "and rewrite models/pretrained/rtdgan-demo-64.pt")
    train_products: int = opt(8000, cli=False)  # the training world: many products, so the generator generalises
    train_photos_per_product: int = opt(2, cli=False)
    train_seed: int = opt(0, cli=False)
    stages: int = opt(3, cli=False)  # N: 16 -> 32 -> 64 px (Sec. 3.3)
    width: int = opt(16, cli=False)
    epochs_fade: int = opt(2, cli=False)
    epochs_stab: int = opt(3, cli=False)
    epochs_extra: int = opt(12, cli=False)  # then more epochs at 64 px, where the garment's detail is learnt
    batch_sizes: tuple[int, ...] = opt((32, 32, 16), cli=False)
    lambda_con: float = opt(10.0, cli=False)  # Eq. 4; the paper uses 1 (README "Choices": content first on CPUs)
    lambda_lap: float = opt(10.0, cli=False)
    # The comparison scale (README "Choices"): queries and catalog are compared 2 Gaussian pyramid levels down
    # (16 px), the scale of the generator's first stage; chosen on a validation shop (seed 2000), not on this one.
    embed_level: int = opt(2, "compare images L Gaussian pyramid levels down (2: 16 px at 64 px; 0: full "
                           "resolution, the paper's protocol); a change re-exports the artifacts and rebuilds "
                           "the index", metavar="L")
    workers: int = opt(2, cli=False)
    host: str = opt("127.0.0.1", "address to serve on")
    port: int = opt(8000, "port to serve on")
    build_only: bool = opt(False, "build what is missing, then exit without serving")

    def __post_init__(self) -> None:
        for name in ("products", "photos_per_product", "train_products", "train_photos_per_product", "workers"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}")


RECIPE = ("size", "framing", "train_products", "train_photos_per_product", "train_seed", "stages", "width",
          "epochs_fade", "epochs_stab", "epochs_extra", "batch_sizes", "lambda_con", "lambda_lap")


def recipe(cfg: DemoConfig) -> dict:
    """What decides the generator's weights: the weights file is only used for this exact recipe."""
    return {name: list(v) if isinstance(v, tuple) else v for name, v in asdict(cfg).items() if name in RECIPE}


def say(text: str) -> None:
    print(f"rtd demo: {text}", file=sys.stderr, flush=True)


def remove(root: Path, *names: str) -> None:
    """Delete built stages (folders or files) under `root` so that the next steps build them again."""
    for name in names:
        path = root / name
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def _synth(out: Path, products: int, photos: int, cfg: DemoConfig, seed: int) -> Path:
    from training.synth import SynthConfig, synthesize

    marker = out / "synth.json"
    if not (marker.is_file() and json.loads(marker.read_text()).get("complete")):
        say(f"data: writing {products} products x {photos} photos at {cfg.size} px to {out}")
        synthesize(SynthConfig(out=out, products=products, photos_per_product=photos, size=cfg.size, seed=seed,
                               workers=cfg.workers, framing=cfg.framing))
    return out


def build_data(cfg: DemoConfig) -> Path:
    """The shop's synthetic catalog and a contact sheet."""
    from training.sheet import contact_sheet

    data = _synth(cfg.root / "data", cfg.products, cfg.photos_per_product, cfg, cfg.seed)
    if not (cfg.root / "sheet.png").is_file():
        contact_sheet(data, cfg.root / "sheet.png")
    return data


def card_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def usable_weights(cfg: DemoConfig) -> bool:
    """The weights file exists, its card matches the file and was made by this config's recipe."""
    if cfg.weights is None or cfg.retrain or not cfg.weights.is_file() or not card_path(cfg.weights).is_file():
        return False
    card = json.loads(card_path(cfg.weights).read_text())
    if card.get("sha256") != sha256_file(cfg.weights):
        say(f"{cfg.weights} does not match its card (sha256): training instead")
        return False
    if card.get("recipe") != recipe(cfg):
        say(f"{cfg.weights} was trained with another recipe: training instead")
        return False
    return True


def train_recipe(cfg: DemoConfig, run: Path) -> None:
    """The training world and the rough-to-detail training of the recipe (resumes an interrupted run)."""
    import torch

    from training.checkpoint import load_checkpoint
    from training.train import TrainConfig, train

    world = _synth(cfg.root / "train-data", cfg.train_products, cfg.train_photos_per_product, cfg, cfg.train_seed)
    last, final = run / "checkpoints" / "last.pt", run / "checkpoints" / f"stage_{cfg.stages}.pt"
    # Finished: the last stage ended with this recipe's extra epochs (a smaller value is continued).
    if final.is_file() and load_checkpoint(final)["config"].get("epochs_extra", 0) == cfg.epochs_extra:
        return
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    say(f"train: rtdGAN on {cfg.train_products} products, {cfg.stages} stages to {cfg.size} px, width "
        f"{cfg.width}, {cfg.epochs_fade}+{cfg.epochs_stab} epochs per stage and {cfg.epochs_extra} more at {cfg.size} px "
        f"(CPU: about 1.5 hours on 2 cores; Ctrl-C resumes next time)")
    train(TrainConfig(data=str(world), out=str(run), model="rtdgan", stages=cfg.stages, resolution=cfg.size,
                      width=cfg.width, epochs_fade=cfg.epochs_fade, epochs_stab=cfg.epochs_stab,
                      epochs_extra=cfg.epochs_extra, batch_sizes=cfg.batch_sizes, lambda_con=cfg.lambda_con,
                      lambda_lap=cfg.lambda_lap,
                      seed=cfg.train_seed, resume=last.is_file(), device="cpu"))


def save_weights(cfg: DemoConfig, run: Path) -> None:
    """The run's final generator alone (no critic, no optimiser state), plus its card, to cfg.weights."""
    import torch

    from training.checkpoint import load_checkpoint, save_checkpoint

    assert cfg.weights is not None
    state = load_checkpoint(run / "checkpoints" / f"stage_{cfg.stages}.pt")
    slim = {k: state[k] for k in ("config", "generator_config", "stage", "alpha", "step", "epoch", "code_version")}
    slim["models"] = {"generator": {k: v.clone() for k, v in state["models"]["generator"].items()}}
    save_checkpoint(cfg.weights, slim)
    params = sum(v.numel() for v in slim["models"]["generator"].values() if torch.is_floating_point(v))
    card = {"sha256": sha256_file(cfg.weights), "recipe": recipe(cfg), "steps": int(state["step"]),
            "code_version": state.get("code_version"), "parameters": params,
            "reproduce": "rtd demo --build-only --retrain"}
    card_path(cfg.weights).write_text(json.dumps(card, indent=1) + "\n")
    say(f"weights: {cfg.weights} ({cfg.weights.stat().st_size / 1e6:.1f} MB, {params} parameters)")


def build_model(cfg: DemoConfig, data: Path) -> Path:
    """The generator (committed weights or the trained recipe), exported with the embedder to ONNX."""
    from index.artifacts import read_model_json
    from training.checkpoint import load_checkpoint, save_checkpoint
    from training.export import ExportConfig, export_run

    artifacts = cfg.root / "artifacts"
    model = read_model_json(artifacts)
    if model is not None:
        level = model["embedder"].get("level", 0)
        if level == cfg.embed_level:
            return artifacts
        say(f"export: {artifacts} compares at embed level {level}, this demo at {cfg.embed_level}: exporting again")
        remove(cfg.root, "index", "check.json")  # both were made with the old embedder
    if usable_weights(cfg):
        assert cfg.weights is not None
        run = cfg.root / "pretrained-run"  # a run folder holding the weights, as `rtd export` reads them
        say(f"model: the committed generator {cfg.weights} (`rtd demo --retrain` reproduces it)")
        state = load_checkpoint(cfg.weights)
        for name in ("last.pt", f"stage_{cfg.stages}.pt"):
            save_checkpoint(run / "checkpoints" / name, {k: v for k, v in state.items() if k != "format"})
    else:
        run = cfg.root / "run"
        train_recipe(cfg, run)
        if cfg.retrain and cfg.weights is not None:
            save_weights(cfg, run)
    say(f"export: generator.onnx + embedder.onnx (efficientnet_lite0: its ImageNet weights ship with pip; "
        f"embed level {cfg.embed_level})")
    export_run(ExportConfig(run=run, out=artifacts, embedder="efficientnet_lite0", embed_level=cfg.embed_level,
                            parity_data=data))
    return artifacts


def build_index(cfg: DemoConfig, artifacts: Path, data: Path) -> Path:
    """Every catalog product in an exact FAISS index: the shop's whole catalog."""
    from index.build import build_index as build

    index = cfg.root / "index"
    if not (index / "index.json").is_file():
        say("index: embedding the catalog")
        build(artifacts, data, index)
    return index


def hit_rate(artifacts: Path, index: Path, data: Path, k: int = CHECK_K, batch: int = 32) -> dict:
    """Share of the shop's street photos whose product /search ranks in the top k, through the service's own
    pipeline (index/pipeline.py: ONNX generator -> ONNX embedder -> FAISS); also with the photo as the query."""
    from index.pipeline import FROZEN_KINDS, Pipeline
    from training.data import load_records

    pipeline = Pipeline.open(artifacts, index)
    queries = [(photo, r.product_id) for r in load_records(data).records for photo in r.photos]
    hits = dict.fromkeys(FROZEN_KINDS, 0)
    for start in range(0, len(queries), batch):
        chunk = queries[start:start + batch]
        photos = np.stack([pipeline.preprocess(path) for path, _ in chunk])  # (B, 3, S, S)
        for kind in FROZEN_KINDS:
            for (_, truth), found in zip(chunk, pipeline.query(photos, k, query=kind).hits, strict=True):
                hits[kind] += truth in {hit.product_id for hit in found}
    n, catalog = len(queries), len(pipeline.catalog)
    level = pipeline.artifacts.model["embedder"].get("level", 0)
    return {"k": k, "queries": n, "catalog": catalog, "hit_rate": hits["generated"] / n,
            "photo_query_hit_rate": hits["photo"] / n, "chance": min(1.0, k / catalog), "embed_level": level}


def check(cfg: DemoConfig, artifacts: Path, index: Path, data: Path) -> dict:
    """Measure (once) and print how often the demo's /search finds the product of a held-out photo."""
    path = cfg.root / "check.json"
    if path.is_file():
        result = json.loads(path.read_text())
    else:
        start = time.perf_counter()
        result = hit_rate(artifacts, index, data) | {"seconds": 0.0}
        result["seconds"] = round(time.perf_counter() - start, 1)
        path.write_text(json.dumps(result, indent=1) + "\n")
    say(f"check: the true product is in /search's top {result['k']} for {result['hit_rate']:.0%} of "
        f"{result['queries']} held-out street photos (photo as the query: {result['photo_query_hit_rate']:.0%}; "
        f"chance {result['chance']:.1%})")
    return result


def held_out_samples(cfg: DemoConfig, data: Path) -> Path:
    """One street photo per product in one folder: the page offers them, and none was trained on."""
    from training.data import load_records

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
    from index.images import check_embed_level

    check_embed_level(cfg.embed_level, cfg.size)  # a bad --embed-level stops before anything is built
    cfg.root.mkdir(parents=True, exist_ok=True)
    if cfg.retrain:  # everything downstream of the generator is rebuilt (an interrupted run/ resumes)
        remove(cfg.root, "artifacts", "index", "check.json")
    data = build_data(cfg)
    artifacts = build_model(cfg, data)
    index = build_index(cfg, artifacts, data)
    check(cfg, artifacts, index, data)
    samples = held_out_samples(cfg, data)
    (cfg.root / "demo.json").write_text(json.dumps(asdict(cfg), default=str, indent=1) + "\n")
    if cfg.retrain and cfg.weights is not None:  # the card also records what the check measured
        card = json.loads(card_path(cfg.weights).read_text())
        card["check"] = json.loads((cfg.root / "check.json").read_text())
        card_path(cfg.weights).write_text(json.dumps(card, indent=1) + "\n")
    say(f"built: {artifacts}, {index}, {samples}")
    return Built(artifacts, index, samples)


def run_demo(cfg: DemoConfig) -> int:
    """Build the missing stages; 0. (`rtd demo` then serves them unless --build-only: training/demo_cli.py.)"""
    build_demo(cfg)
    return 0

