"""The demo's generator: the committed weights (models/pretrained/rtdgan-demo-64.pt, the generator alone) when their
card matches `RECIPE`, else the recipe trained on its own synthetic world (`--retrain` also rewrites the committed
file and its card), exported with the embedder (EfficientNet-Lite0) into the demo's artifacts."""

from __future__ import annotations

import os
from pathlib import Path

from rtdgan.index.files import sha256_file
from rtdgan.training.demo_cards import card_problem, write_card
from rtdgan.training.demo_config import DemoConfig, recipe, serves_tuned
from rtdgan.training.demo_stage import remove, say, synth_world


def _weights_problem(cfg: DemoConfig) -> str | None:
    """Why the committed generator weights are not used (None: they are)."""
    return "absent" if cfg.retrain else card_problem(cfg.weights, recipe(cfg), "trained")


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


def training_world(cfg: DemoConfig) -> dict:
    """The recipe of the generator's synthetic training world, as `rtd data synth`'s synth.json records one."""
    return {"products": cfg.train_products, "photos_per_product": cfg.train_photos_per_product, "size": cfg.size,
            "seed": cfg.train_seed, "framing": cfg.framing}


def train_recipe(cfg: DemoConfig, run: Path) -> None:
    """The training world and the rough-to-detail training of the recipe (resumes an interrupted run)."""
    import torch

    from rtdgan.training.checkpoint import load_checkpoint
    from rtdgan.training.train import TrainConfig, train

    world = synth_world(cfg.root / "train-data", cfg.train_products, cfg.train_photos_per_product, cfg, cfg.train_seed)
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
    write_card(cfg.weights, {"recipe": recipe(cfg), "data": training_world(cfg), "steps": int(state["step"]),
                             "code_version": state.get("code_version"), "parameters": params},
               "rtd demo --build-only --retrain")
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
        tuned = "tuned" in model["embedder"]
        if level == cfg.embed_level and (not tuned or serves_tuned(cfg)):
            return artifacts
        why = f"compares at embed level {level}, this demo at {cfg.embed_level}" if level != cfg.embed_level else \
            "serves a fine-tuned embedder, this demo the frozen one (--no-tune, or no head)"
        say(f"export: {artifacts} {why}: exporting again")
        remove(cfg.root, "index", "check.json")  # both were made with the old embedder
    world = None  # a trained run's world is its train-data folder here (its synth.json)
    if usable_weights(cfg):
        assert cfg.weights is not None
        say(f"model: the committed generator {cfg.weights} (`rtd demo --retrain` reproduces it)")
        run = weights_run(cfg.weights, cfg.root / "pretrained-run")
        world = training_world(cfg)  # its training world is not here: model.json records its recipe
    else:
        run = cfg.root / "run"
        train_recipe(cfg, run)
        if cfg.retrain and cfg.weights is not None:
            save_weights(cfg, run)
    say(f"export: generator.onnx + embedder.onnx (efficientnet_lite0: its ImageNet weights ship with pip; "
        f"embed level {cfg.embed_level})")
    export_run(ExportConfig(run=run, out=artifacts, embedder="efficientnet_lite0", embed_level=cfg.embed_level,
                            parity_data=data, check_backends=False),  # the head and crop change the graphs next
               world=world)
    return artifacts
