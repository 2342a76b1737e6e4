"""The demo builder behind `rtd demo`: builds what the demo needs if it is absent (serving is the CLI's part).

The demo is a shop whose catalog the generator has never seen: its products are drawn with their own
seed, so every street photo in it is held out. The generator comes from committed weights
(models/pretrained/, under 15 MB) that `rtd demo --retrain` reproduces from the recipe in `DemoConfig`:
a separate synthetic training world of thousands of products, about 1.5 CPU hours of rough-to-detail
training. Without the weights file the demo trains that recipe itself.

The query (issue #13): the demo compares at full resolution (embed level 0, the paper's protocol) through a
learned retrieval head, fused: the embedder features of the generated image and of the photo, mapped by the
head's query side, against the catalog mapped by its catalog side (models/head.py, training/head.py). The
head is committed too (models/pretrained/head-demo-64.pt: a RetrievalHead state dict and its config, 4 MB;
its card head-demo-64.json: sha256, the recipe, the validation recall, the sha256 of the generator weights
file and the embedder and level it was fitted for). The build exports it to ONNX into the artifacts
(`rtdgan.training.head.export_head`, parity-checked) only when its card matches the generator weights file in use
and the embedder and level and the person crop in use; otherwise it fits the head itself from the recipe (`head_*` fields of
`DemoConfig`, `HEAD_RECIPE`: its own training world of 10,000 LookBook-framed products (seed 3300) and 2,000
street-framed ones (seed 3400, photos at 256 px), 4 photos each, every photo cut by the person crop, then
`rtd fit-head`'s defaults; about 1.5 hours on 2 CPU cores, most of it the features). `rtd demo --retrain-head`
reproduces the committed head and rewrites its card (`--retrain` and `--retrain-crop` do too: a new generator or
crop needs a new head).

Street framing (issue #13): a person crop (index/crop.py, `rtd fit-crop`) cuts each query photo to its person
before the generator. It is committed too (models/pretrained/crop-demo-64.onnx, 2 MB, as `rtd fit-crop` wrote
it; its card crop-demo-64.json: sha256, the recipe, the crop.json it came with) and copied into the artifacts
when its card matches the recipe (`crop_*` fields, `CROP_RECIPE`: a street- and a LookBook-framed world of 2,000
products x 4 photos with the synthesizer's person boxes, then `rtd fit-crop`), else fitted (about 30 minutes);
`--retrain-crop` reproduces it, `--no-crop` serves without one. The check measures the shop's LookBook-framed
photos and street-framed photos of the same products (ROOT/street-data: the shop's seed, street framing, 256 px).
The head is used only at the embed level it was fitted at (`head_embed_level`, 0): at another
`--embed-level`, or with `--no-head`, the demo serves the frozen embedder (the paper's protocol) and says so.

Stages, each skipped when its output is already there (so a later run is ready in seconds):
  data      the shop: synthetic catalog + street photos + contact sheet    demo/data, demo/sheet.png
  model     committed weights, or train the recipe        demo/pretrained-run, or demo/run + demo/train-data
  export    generator.onnx + embedder.onnx (EfficientNet-Lite0, offline, embed level 0) + model.json   demo/artifacts
  crop      the committed person crop, or fit the recipe, into the artifacts   (demo/crop-world when fitted)
  head      the committed head, or fit the recipe, exported into the artifacts   (demo/head-world when fitted)
  index     every catalog product (through the head's catalog side), exact FAISS   demo/index
  check     held-out R@1 and R@10 of /search's path, with the head and without, LookBook- and street-framed
            photos, printed                                        demo/check.json (demo/street-data: street photos)
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
from typing import TYPE_CHECKING

import numpy as np

from rtdgan.index.configs import opt
from rtdgan.index.errors import UserError
from rtdgan.index.files import sha256_file

if TYPE_CHECKING:  # torch is imported only by the stages that need it
    from rtdgan.models.head import RetrievalHead
    from rtdgan.training.head import FittedHead

PRETRAINED = Path(__file__).resolve().parent.parent / "models" / "pretrained" / "rtdgan-demo-64.pt"
PRETRAINED_HEAD = PRETRAINED.with_name("head-demo-64.pt")
PRETRAINED_CROP = PRETRAINED.with_name("crop-demo-64.onnx")  # crop.onnx as `rtd fit-crop` wrote it; its card below
HEAD_WEIGHTS_FORMAT = 1
CHECK_K = 10
CHECK_KS = (1, 5, 10)
CHECK_FORMAT = 3  # check.json: recall rows with and without the head, LookBook and street photos (1: hit rates only;
# 2: LookBook photos only)


@dataclass(frozen=True)
class DemoConfig:
    """`rtd demo`: the fields with cli=True are its flags (index/configs.py derives them); the recipes are not."""

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
                        "and rewrite models/pretrained/rtdgan-demo-64.pt (and refit the head for it)")
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
    # The comparison scale (README "Choices"): full resolution with the learned head (issue #13). Without a head
    # the frozen features do best 2 levels down (16 px; chosen on a validation shop, seed 2000).
    embed_level: int = opt(0, "compare images L Gaussian pyramid levels down (0: full resolution, the paper's "
                           "protocol, where the retrieval head is fitted; 2: 16 px, where the frozen embedder does "
                           "best); another level than the head's serves without the head; a change re-exports the "
                           "artifacts and rebuilds the index", metavar="L")
    # Street framing (issue #13): the shop's products also photographed street-style (the person anywhere, 40-95 %
    # of the height) at street_size px, checked beside the LookBook-framed photos; the person crop cuts each
    # query photo to its person before the generator.
    street_size: int = opt(256, cli=False)  # the street photos' side: the crop cuts from it (index/crop.py)
    crop: bool = opt(True, "cut every query photo to its person first (the committed person crop, `rtd fit-crop`: "
                     "street-framed photos); --no-crop: the photo as it comes")
    crop_weights: Path | None = opt(PRETRAINED_CROP, cli=False)  # None: always fit (the tests' tiny demos)
    retrain_crop: bool = opt(False, "reproduce the committed person crop: its recipe's two synthetic worlds and "
                             "`rtd fit-crop` (about 30 CPU minutes); rewrites models/pretrained/crop-demo-64.onnx "
                             "and its card (and refits the head: it learns on cropped photos)")
    # The crop's recipe (CROP_RECIPE): a street-framed and a LookBook-framed world at `size` px with the
    # synthesizer's person boxes, then `rtd fit-crop` with these settings.
    crop_products: int = opt(2000, cli=False)
    crop_photos_per_product: int = opt(4, cli=False)
    crop_street_seed: int = opt(6100, cli=False)
    crop_lookbook_seed: int = opt(6101, cli=False)
    crop_input: int = opt(64, cli=False)
    crop_width: int = opt(16, cli=False)
    crop_epochs: int = opt(4, cli=False)
    crop_fill: float = opt(0.875, cli=False)  # LookBook framing (index/crop.py LOOKBOOK_FILL)
    crop_seed: int = opt(0, cli=False)
    # The retrieval head: committed weights when their card matches, else fitted from the recipe below.
    head: bool = opt(True, "serve with the fused retrieval head (generated image + photo; at its embed level "
                     "only); --no-head: the frozen embedder, the paper's protocol")
    head_weights: Path | None = opt(PRETRAINED_HEAD, cli=False)  # None: always fit (the tests' tiny demos)
    retrain_head: bool = opt(False, "reproduce the committed retrieval head: fit its recipe (its own training "
                             "world, cached features, `rtd fit-head`; about an hour of CPU) and rewrite "
                             "models/pretrained/head-demo-64.pt and its card")
    # The head's recipe, in one place (HEAD_RECIPE): its own training world (no product of the shop or of the
    # generator's world), split as `rtd data split` does (the test part is not used), then `rtd fit-head`'s
    # defaults (settings chosen on a validation part of the training products).
    head_products: int = opt(10000, cli=False)  # 5,000 gave R@1 0.56 on a validation shop, 10,000 0.63
    head_photos_per_product: int = opt(4, cli=False)
    head_seed: int = opt(3300, cli=False)
    head_framing: str = opt("lookbook", cli=False)
    # ... and street-framed photos of products of another world (photos at head_street_size px, product images at
    # `size`), so that the head learns the crop's cut-out people too (0: LookBook only). Both go through the crop.
    head_street_products: int = opt(2000, cli=False)
    head_street_seed: int = opt(3400, cli=False)
    head_street_size: int = opt(256, cli=False)
    head_test_fraction: float = opt(0.1, cli=False)
    head_split_seed: int = opt(0, cli=False)
    head_mode: str = opt("fused", cli=False)
    head_fit_seed: int = opt(0, cli=False)
    head_embed_level: int = opt(0, cli=False)  # the level the head is fitted at, and the only one it serves at
    head_world: Path | None = opt(None, cli=False)  # train-data/, split.json, head-cache/; None: ROOT/head-world
    workers: int = opt(2, cli=False)
    host: str = opt("127.0.0.1", "address to serve on")
    port: int = opt(8000, "port to serve on")
    build_only: bool = opt(False, "build what is missing, then exit without serving")

    def __post_init__(self) -> None:
        for name in ("products", "photos_per_product", "train_products", "train_photos_per_product", "workers",
                     "head_products", "head_photos_per_product", "crop_products", "crop_photos_per_product"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}")


RECIPE = ("size", "framing", "train_products", "train_photos_per_product", "train_seed", "stages", "width",
          "epochs_fade", "epochs_stab", "epochs_extra", "batch_sizes", "lambda_con", "lambda_lap")
HEAD_RECIPE = ("size", "head_products", "head_photos_per_product", "head_seed", "head_framing", "head_street_products",
               "head_street_seed", "head_street_size", "head_test_fraction", "head_split_seed", "head_mode",
               "head_fit_seed", "head_embed_level")
CROP_RECIPE = ("size", "crop_products", "crop_photos_per_product", "crop_street_seed", "crop_lookbook_seed", "crop_input",
               "crop_width", "crop_epochs", "crop_fill", "crop_seed")


def recipe(cfg: DemoConfig, names: tuple[str, ...] = RECIPE) -> dict:
    """What decides the generator's weights (or, with HEAD_RECIPE, the head's): a weights file is only used for
    this exact recipe."""
    return {name: list(v) if isinstance(v, tuple) else v for name, v in asdict(cfg).items() if name in names}


def say(text: str) -> None:
    print(f"rtd demo: {text}", file=sys.stderr, flush=True)


def remove(root: Path, *names: str) -> None:
    """Delete built stages (folders or files) under `root` so that the next steps build them again."""
    for name in names:
        path = root / name
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def _synth(out: Path, products: int, photos: int, cfg: DemoConfig, seed: int, framing: str | None = None,
           size: int | None = None) -> Path:
    """A synthetic world (`rtd data synth`) unless one of these settings is complete there already."""
    from rtdgan.training.synth import SynthConfig, synthesize

    want = {"products": products, "photos_per_product": photos, "size": size or cfg.size, "seed": seed,
            "framing": framing or cfg.framing}
    marker = out / "synth.json"
    have = json.loads(marker.read_text()) if marker.is_file() else {}
    if not (have.get("complete") and all(have.get(k) == v for k, v in want.items())):
        if have and not out.is_symlink():  # another world's files: none may stay behind
            shutil.rmtree(out)
        say(f"data: writing {products} products x {photos} {want['framing']}-framed photos at {want['size']} px "
            f"to {out}")
        synthesize(SynthConfig(out=out, workers=cfg.workers, **want))
    return out


def build_data(cfg: DemoConfig) -> Path:
    """The shop's synthetic catalog and a contact sheet."""
    from rtdgan.training.sheet import contact_sheet

    data = _synth(cfg.root / "data", cfg.products, cfg.photos_per_product, cfg, cfg.seed)
    if not (cfg.root / "sheet.png").is_file():
        contact_sheet(data, cfg.root / "sheet.png")
    return data


def card_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def _weights_problem(cfg: DemoConfig) -> str | None:
    """Why the committed generator weights are not used (None: they are)."""
    if cfg.weights is None or cfg.retrain or not cfg.weights.is_file() or not card_path(cfg.weights).is_file():
        return "absent"
    card = json.loads(card_path(cfg.weights).read_text())
    if card.get("sha256") != sha256_file(cfg.weights):
        return f"{cfg.weights} does not match its card (sha256)"
    if card.get("recipe") != recipe(cfg):
        return f"{cfg.weights} was trained with another recipe"
    return None


def usable_weights(cfg: DemoConfig) -> bool:
    """The weights file exists, its card matches the file and was made by this config's recipe."""
    problem = _weights_problem(cfg)
    if problem not in (None, "absent"):
        say(f"{problem}: training instead")
    return problem is None


def generator_weights_sha256(cfg: DemoConfig) -> str | None:
    """sha256 of the generator weights file the demo's generator is (the committed one, or the one `--retrain`
    just wrote); None when the demo trained a generator of its own."""
    if cfg.weights is not None and cfg.weights.is_file() and (cfg.retrain or _weights_problem(cfg) is None):
        return sha256_file(cfg.weights)
    return None


def train_recipe(cfg: DemoConfig, run: Path) -> None:
    """The training world and the rough-to-detail training of the recipe (resumes an interrupted run)."""
    import torch

    from rtdgan.training.checkpoint import load_checkpoint
    from rtdgan.training.train import TrainConfig, train

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

    from rtdgan.training.checkpoint import load_checkpoint, save_checkpoint

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


def weights_run(weights: Path, run: Path) -> Path:
    """A run folder holding a slim weights file (`save_weights`' output) as `rtd export` reads a run: its
    checkpoint as last.pt and as the final stage's. Returns `run`."""
    from rtdgan.training.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(weights)
    stages = int(state["config"]["stages"])
    for name in ("last.pt", f"stage_{stages}.pt"):
        save_checkpoint(run / "checkpoints" / name, {k: v for k, v in state.items() if k != "format"})
    return run


def build_model(cfg: DemoConfig, data: Path) -> Path:
    """The generator (committed weights or the trained recipe), exported with the embedder to ONNX."""
    from rtdgan.index.runtime.artifacts import read_model_json
    from rtdgan.training.export import ExportConfig, export_run

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
        say(f"model: the committed generator {cfg.weights} (`rtd demo --retrain` reproduces it)")
        run = weights_run(cfg.weights, cfg.root / "pretrained-run")
    else:
        run = cfg.root / "run"
        train_recipe(cfg, run)
        if cfg.retrain and cfg.weights is not None:
            save_weights(cfg, run)
    say(f"export: generator.onnx + embedder.onnx (efficientnet_lite0: its ImageNet weights ship with pip; "
        f"embed level {cfg.embed_level})")
    export_run(ExportConfig(run=run, out=artifacts, embedder="efficientnet_lite0", embed_level=cfg.embed_level,
                            parity_data=data, check_backends=False))  # the head and crop change the graphs next
    return artifacts


# ---- the person crop ---------------------------------------------------------------------------------

def _crop_card_problem(cfg: DemoConfig) -> str | None:
    """Why the committed crop is not used (None: it is)."""
    weights = cfg.crop_weights
    if weights is None or not weights.is_file() or not card_path(weights).is_file():
        return "absent"
    card = json.loads(card_path(weights).read_text())
    if card.get("sha256") != sha256_file(weights):
        return f"{weights} does not match its card (sha256)"
    if card.get("recipe") != recipe(cfg, CROP_RECIPE):
        return f"{weights} was fitted with another recipe"
    return None


def _strip_crop(artifacts: Path) -> bool:
    """Remove a person crop from the artifacts' current version folder (crop.json first); whether there was one."""
    from rtdgan.index.runtime.artifacts import read_artifacts
    from rtdgan.index.runtime.crop import CROP_JSON, CROP_ONNX

    folder = read_artifacts(artifacts).folder
    had = (folder / CROP_JSON).is_file()
    for name in (CROP_JSON, CROP_ONNX):
        (folder / name).unlink(missing_ok=True)
    return had


def crop_onnx_sha256(artifacts: Path) -> str | None:
    """sha256 of the artifacts' crop.onnx (None: no crop): what a head fitted on cropped photos records."""
    from rtdgan.index.runtime.artifacts import read_artifacts
    from rtdgan.index.runtime.crop import has_crop, read_crop

    art = read_artifacts(artifacts)
    return read_crop(art).doc["onnx_sha256"] if has_crop(art) else None


def fit_recipe_crop(cfg: DemoConfig, artifacts: Path) -> dict:
    """`rtd fit-crop` on the recipe's two boxed worlds (street- and LookBook-framed), into the artifacts."""
    from rtdgan.training.crop import FitCropConfig, fit_crop

    world = cfg.root / "crop-world"
    street = _synth(world / "street", cfg.crop_products, cfg.crop_photos_per_product, cfg, cfg.crop_street_seed,
                    "street")
    lookbook = _synth(world / "lookbook", cfg.crop_products, cfg.crop_photos_per_product, cfg, cfg.crop_lookbook_seed,
                      "lookbook")
    say(f"crop: fitting the person crop on {street} and {lookbook} (about 30 minutes on 2 CPU cores)")
    return fit_crop(FitCropConfig(artifacts=artifacts, data=(street, lookbook), size=cfg.crop_input,
                                  width=cfg.crop_width, epochs=cfg.crop_epochs, fill=cfg.crop_fill, seed=cfg.crop_seed))


def build_crop(cfg: DemoConfig, artifacts: Path) -> None:
    """The person crop in the artifacts (crop.onnx + crop.json, index/crop.py): the committed one when its card
    matches the recipe, else fitted from it; none with --no-crop. A change of crop redoes the check (and the
    head, whose card records the crop it was fitted with)."""
    from rtdgan.index.files import write_atomic
    from rtdgan.index.runtime.artifacts import read_artifacts
    from rtdgan.index.runtime.crop import CROP_JSON, CROP_ONNX, read_crop

    if not cfg.crop:
        if _strip_crop(artifacts):
            remove(cfg.root, "check.json")
        say("crop: none (--no-crop): every photo goes to the generator whole")
        return
    art = read_artifacts(artifacts)
    problem = "--retrain-crop" if cfg.retrain_crop else _crop_card_problem(cfg)
    card = json.loads(card_path(cfg.crop_weights).read_text()) if problem is None and cfg.crop_weights else None
    source = {"committed_sha256": card["sha256"]} if card is not None else {"fitted": recipe(cfg, CROP_RECIPE)}
    path = art.folder / CROP_JSON
    if not cfg.retrain_crop and path.is_file() and json.loads(path.read_text()).get("demo") == source:
        return  # this crop is there already
    remove(cfg.root, "check.json")
    if card is not None:
        assert cfg.crop_weights is not None
        say(f"crop: the committed person crop {cfg.crop_weights} (`rtd demo --retrain-crop` reproduces it)")
        write_atomic(art.folder / CROP_ONNX, cfg.crop_weights.read_bytes())
        doc = card["crop_json"]
    else:
        if problem != "absent":
            say(f"crop: {problem}: fitting the recipe's crop instead")
        doc = fit_recipe_crop(cfg, artifacts)
        if cfg.retrain_crop and cfg.crop_weights is not None:
            write_atomic(cfg.crop_weights, (art.folder / CROP_ONNX).read_bytes())
            card = {"sha256": sha256_file(cfg.crop_weights), "recipe": recipe(cfg, CROP_RECIPE), "crop_json": doc,
                    "reproduce": "rtd demo --build-only --retrain-crop"}
            write_atomic(card_path(cfg.crop_weights), (json.dumps(card, indent=1) + "\n").encode())
            source = {"committed_sha256": card["sha256"]}
            say(f"crop: {cfg.crop_weights} ({cfg.crop_weights.stat().st_size / 1e6:.1f} MB, validation IoU "
                f"{doc['validation']['iou']:.3f})")
    write_atomic(path, (json.dumps(doc | {"demo": source}, indent=1) + "\n").encode())
    read_crop(art)  # what was written reads back (crop.onnx matches crop.json's sha256)


# ---- the retrieval head ------------------------------------------------------------------------------

def head_wanted(cfg: DemoConfig) -> bool:
    """The demo serves a head: asked for (`--head`, the default) and at the level the head is fitted at."""
    return cfg.head and cfg.embed_level == cfg.head_embed_level


def _head_card_problem(cfg: DemoConfig, generator_sha: str | None, model: dict, crop_sha: str | None = None) -> str | None:
    """Why the committed head cannot serve these artifacts (None: it can)."""
    weights = cfg.head_weights
    if weights is None or not weights.is_file() or not card_path(weights).is_file():
        return "absent"
    card = json.loads(card_path(weights).read_text())
    embedder = card.get("embedder", {})
    if card.get("sha256") != sha256_file(weights):
        return f"{weights} does not match its card (sha256)"
    if card.get("recipe") != recipe(cfg, HEAD_RECIPE):
        return f"{weights} was fitted with another recipe"
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
        ("l", _synth(world / "lookbook", cfg.head_products, cfg.head_photos_per_product, cfg, cfg.head_seed,
                     cfg.head_framing), None)]
    if cfg.head_street_products:
        worlds.append(("s", _synth(world / "street", cfg.head_street_products, cfg.head_photos_per_product, cfg,
                                   cfg.head_street_seed, "street", cfg.head_street_size),
                       _synth(world / "street-products", cfg.head_street_products, 1, cfg, cfg.head_street_seed,
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
    card = {"sha256": sha256_file(cfg.head_weights)} | card | {
        "code_version": code_version(), "reproduce": "rtd demo --build-only --retrain-head"}
    write_atomic(card_path(cfg.head_weights), (json.dumps(card, indent=1) + "\n").encode())
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


def _strip_head(artifacts: Path) -> bool:
    """Remove a head from the artifacts' current version folder (head.json first); whether there was one."""
    from rtdgan.index.runtime.artifacts import read_artifacts
    from rtdgan.index.runtime.head import CATALOG_ONNX, HEAD_JSON, QUERY_ONNX

    folder = read_artifacts(artifacts).folder
    had = (folder / HEAD_JSON).is_file()
    for name in (HEAD_JSON, QUERY_ONNX, CATALOG_ONNX):
        (folder / name).unlink(missing_ok=True)
    return had


def build_head(cfg: DemoConfig, artifacts: Path, data: Path) -> None:
    """The retrieval head in the artifacts: the committed one when its card matches, else fitted from the recipe;
    none at another embed level or with --no-head. A change of head rebuilds the index and the check."""
    from rtdgan.index.runtime.artifacts import read_artifacts
    from rtdgan.index.runtime.head import HEAD_JSON

    if not head_wanted(cfg):
        why = "--no-head" if not cfg.head else (f"the head is fitted at embed level {cfg.head_embed_level}, this demo "
                                                f"compares at {cfg.embed_level}")
        if _strip_head(artifacts):
            remove(cfg.root, "index", "check.json")
        say(f"head: none ({why}): the frozen embedder's features, the paper's protocol")
        return
    art = read_artifacts(artifacts)
    generator_sha = generator_weights_sha256(cfg)
    crop_sha = crop_onnx_sha256(artifacts)
    retrain = cfg.retrain_head or cfg.retrain or cfg.retrain_crop
    problem = "--retrain-head" if retrain else _head_card_problem(cfg, generator_sha, art.model, crop_sha)
    assert cfg.head_weights is not None or problem is not None
    # What head.json's "demo" records of where the head came from: a later run keeps a head of the same source.
    source = ({"committed_sha256": json.loads(card_path(cfg.head_weights).read_text())["sha256"]}
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
        card = json.loads(card_path(cfg.head_weights).read_text())
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


# ---- the index and the check -------------------------------------------------------------------------

def build_index(cfg: DemoConfig, artifacts: Path, data: Path) -> Path:
    """Every catalog product in an exact FAISS index: the shop's whole catalog (through the head's catalog side
    when the artifacts have a head)."""
    from rtdgan.index.build import build_index as build

    index = cfg.root / "index"
    if not (index / "index.json").is_file():
        say("index: embedding the catalog")
        build(artifacts, data, index)
    return index


def _recall(ranks: list[int], queries: int) -> dict[str, float]:
    """{"1": R@1, ...} from the true product's 0-based rank per query (-1: not in the top CHECK_K)."""
    return {str(k): round(sum(0 <= r < k for r in ranks) / queries, 4) for k in CHECK_KS}


def measure(artifacts: Path, index: Path, data: Path, batch: int = 32, queries_from: Path | None = None) -> dict:
    """R@1/5/10 of the shop's held-out street photos, every photo a query and the whole shop the gallery
    (`queries_from`: photos of the same products in another data folder, e.g. street-framed ones):

    - the served query: `/search`'s own path (index/pipeline.py: ONNX generator -> ONNX embedder [-> the head's
      query side] -> the demo's FAISS index), the default query (with a head: its mode, fused);
    - without the head (the paper's protocol): the generated image, and the photo itself, against an in-memory
      catalog embedded by a pipeline opened with `head=False`. Their features are the embedder's outputs the
      served query already computed (`QueryResult.features`), so each image is embedded once."""
    from rtdgan.index.pipeline import FROZEN_KINDS, Pipeline
    from rtdgan.training.data import load_records
    from rtdgan.training.evaluate import gallery_catalog

    served = Pipeline.open(artifacts, index)
    frozen = Pipeline.open(artifacts, head=False, generator=False)
    records = load_records(data).records
    queries = [(photo, r.product_id) for r in load_records(queries_from or data).records for photo in r.photos]
    served_name = f"head {served.default_query}" if served.head is not None else f"frozen {served.default_query}"
    if served.head is None:  # the served index is the frozen embedder's space already
        frozen.catalog = served.catalog
    else:
        vectors = np.concatenate([frozen.embed_catalog(np.stack([frozen.preprocess(r.product_image) for r in
                                                                 records[i:i + batch]]))
                                  for i in range(0, len(records), batch)])
        frozen.catalog = gallery_catalog(frozen, records, vectors)  # as `rtd eval` builds its gallery
    ranks: dict[str, list[int]] = {served_name: []} | {f"frozen {kind}": [] for kind in FROZEN_KINDS}

    def rank(truth: str, found: list) -> int:
        return next((i for i, hit in enumerate(found) if hit.product_id == truth), -1)

    for start in range(0, len(queries), batch):
        chunk = queries[start:start + batch]
        # As /search takes them: (B, 3, S, S), or with a person crop the decoded photos the crop stage cuts.
        photos = served.batch([served.prepare(path) for path, _ in chunk])
        result = served.query(photos, CHECK_K)  # the served query; its embedder features come back with it
        features = result.features
        for kind in FROZEN_KINDS:  # an input the served query does not use: the same path's features for it
            if kind not in features:
                features[kind] = served.features(photos, kind).features[kind]
        truths = [truth for _, truth in chunk]
        ranks[served_name] += [rank(t, found) for t, found in zip(truths, result.hits, strict=True)]
        for kind in FROZEN_KINDS:
            if f"frozen {kind}" != served_name:  # without a head the served query is one of them, counted above
                hits = frozen.search(features[kind], CHECK_K)
                ranks[f"frozen {kind}"] += [rank(t, found) for t, found in zip(truths, hits, strict=True)]

    n, catalog = len(queries), len(served.catalog)  # type: ignore[arg-type]
    assert all(len(r) == n for r in ranks.values()), {name: len(r) for name, r in ranks.items()}
    recall = {name: _recall(r, n) for name, r in ranks.items()}
    return {"format": CHECK_FORMAT, "k": CHECK_K, "queries": n, "catalog": catalog,
            "embed_level": served.artifacts.model["embedder"].get("level", 0),
            "head": served.head.describe() if served.head is not None else None,
            "crop": served.cropper.info.describe() if served.cropper is not None else None,
            "served": served_name, "recall": recall,
            # The served query's top-10 hit rate (/search's path), and the photo itself as the query (frozen).
            "hit_rate": recall[served_name][str(CHECK_K)],
            "photo_query_hit_rate": recall["frozen photo"][str(CHECK_K)],
            "chance": min(1.0, CHECK_K / catalog), "chance_recall": {str(k): min(1.0, k / catalog) for k in CHECK_KS}}


def street_photos(cfg: DemoConfig) -> Path:
    """The shop's products photographed street-style (the person anywhere, 40-95 % of the height) at street_size px:
    the same seed draws the same products, so the demo's index is their gallery."""
    return _synth(cfg.root / "street-data", cfg.products, cfg.photos_per_product, cfg, cfg.seed, "street",
                  cfg.street_size)


def check(cfg: DemoConfig, artifacts: Path, index: Path, data: Path) -> dict:
    """Measure (once) and print how often the demo's /search finds the product of a held-out photo: the shop's
    LookBook-framed photos (check.json's top level) and street-framed photos of the same products ("street")."""
    path = cfg.root / "check.json"
    result = json.loads(path.read_text()) if path.is_file() else {}
    if result.get("format") != CHECK_FORMAT:
        street = street_photos(cfg)
        start = time.perf_counter()
        result = measure(artifacts, index, data) | {"seconds": 0.0}
        result["street"] = measure(artifacts, index, data, queries_from=street) | {
            "photos": {"framing": "street", "size": cfg.street_size}}
        result["seconds"] = round(time.perf_counter() - start, 1)
        path.write_text(json.dumps(result, indent=1) + "\n")
    crop = "through the person crop" if result.get("crop") else "no person crop"
    for name, rows in (("LookBook-framed", result), ("street-framed", result.get("street"))):
        if rows is None:
            continue
        say(f"check: {rows['queries']} held-out {name} photos of {rows['catalog']} products ({crop}), the whole "
            f"shop the gallery, embed level {rows['embed_level']}: the true product's rank")
        say(f"  {'query':<36} {'R@1':>6} {'R@10':>6}")
        for query, r in rows["recall"].items():
            label = f"{query} (served by /search)" if query == rows["served"] else query
            say(f"  {label:<36} {r['1']:>6.3f} {r['10']:>6.3f}")
        say(f"  {'chance':<36} {rows['chance_recall']['1']:>6.3f} {rows['chance_recall']['10']:>6.3f}")
    return result


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


def _record_check(weights: Path, root: Path) -> None:
    """A card also records what the demo's check measured with the weights it describes."""
    card = json.loads(card_path(weights).read_text())
    card["check"] = json.loads((root / "check.json").read_text())
    card_path(weights).write_text(json.dumps(card, indent=1) + "\n")


def build_demo(cfg: DemoConfig) -> Built:
    """Build the missing stages (each skipped when already there) and print the check."""
    from rtdgan.index.images import check_embed_level

    check_embed_level(cfg.embed_level, cfg.size)  # a bad --embed-level stops before anything is built
    if cfg.retrain_head and not head_wanted(cfg):
        raise UserError(f"--retrain-head fits the head at embed level {cfg.head_embed_level}, its recipe's: drop "
                        f"--embed-level {cfg.embed_level}" if cfg.head else "--retrain-head and --no-head: choose one")
    if cfg.retrain_crop and not cfg.crop:
        raise UserError("--retrain-crop and --no-crop: choose one")
    cfg.root.mkdir(parents=True, exist_ok=True)
    if cfg.retrain:  # everything downstream of the generator is rebuilt (an interrupted run/ resumes)
        remove(cfg.root, "artifacts", "index", "check.json")
    data = build_data(cfg)
    artifacts = build_model(cfg, data)
    build_crop(cfg, artifacts)
    build_head(cfg, artifacts, data)
    index = build_index(cfg, artifacts, data)
    check(cfg, artifacts, index, data)
    samples = held_out_samples(cfg, data)
    (cfg.root / "demo.json").write_text(json.dumps(asdict(cfg), default=str, indent=1) + "\n")
    if cfg.retrain and cfg.weights is not None:
        _record_check(cfg.weights, cfg.root)
    if (cfg.retrain_head or cfg.retrain or cfg.retrain_crop) and head_wanted(cfg) and cfg.head_weights is not None:
        _record_check(cfg.head_weights, cfg.root)
    say(f"built: {artifacts}, {index}, {samples}")
    return Built(artifacts, index, samples)


def run_demo(cfg: DemoConfig) -> int:
    """Build the missing stages; 0. (`rtd demo` then serves them unless --build-only: training/demo_cli.py.)"""
    build_demo(cfg)
    return 0
