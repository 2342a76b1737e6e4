"""Reproduce docs/results-synthetic.md: the paper's Tables 1 and 2 at a scale where generation works.

The five models of Table 1 — rtdGAN with N = 3, 2 and 1 rough-to-detail stages (Table 2), pix2pix and
PLDT — trained on one LookBook-framed synthetic world at the scale where the demo's generator learns
(8,000 products x 2 photos at 64 px, width 16), under one budget: **every model sees the same number of
training images** (27 passes over the 16,000 photos; the wall time each took is reported beside it).
rtdGAN N = 3 is the committed demo generator (models/pretrained/rtdgan-demo-64.pt), which `rtd demo
--retrain` trained with exactly this world and budget; the others are trained here. Every model is then
exported with EfficientNet-Lite0 (the DenseNet-121 weights cannot be downloaded here) and evaluated by
`rtd eval` on a held-out shop (its own seed: none of its products was trained on), gallery = the whole shop,
every photo a query: RMSE, SSIM, Recall@K with bootstrap 95 % intervals, the paper's protocol (frozen
embedder, generated query, full resolution), with the photo itself as the baseline row; and with the
learned retrieval head (`rtd fit-head`), fitted for each model's generator on a world of its own (5,000 products, seed 8100):
the fused query (generated image + photo) beside a photo-only head, the row without generation.

A model costs 1.5-2.5 hours on 2 CPU cores, more than one sitting may have to spare, so the experiment
runs a model at a time (`--only`) and keeps what it needs to carry on:
- training resumes from ROOT/runs/NAME/checkpoints/last.pt (a checkpoint every 1,000 steps);
- a run stopped before it finished (SIGTERM or Ctrl-C: training writes its checkpoint first) is also packed into
  docs/results-synthetic/carry/NAME.pt (weights and optimiser moments in bf16, about 15 MB at width 16, with the
  wall time trained so far), to be committed: a later run on a fresh machine, whose ROOT is empty, resumes
  from it. Once the run is finished the file becomes its final generator alone (fp32, about 7 MB, with its
  timings), so a later run can export, evaluate and fit a head for the model without training it again.
  `--pack-carry` packs a run by hand (one stopped or finished by an older checkout);
- each finished model's evaluation (report.json, without its per-query lists) and sample grid are copied
  into docs/results-synthetic/ and committed: the tables and the Recall@K plots of Tables 1 and 3
  (docs/results-synthetic/recall*.png and .svg, matplotlib) are drawn from those files, so a model evaluated in
  one run stays in the tables of the next, whatever happened to ROOT.

    .venv/bin/python bench/experiments/results_synthetic.py --root /tmp/rtd-t12 --only rtdgan-n1   # train + eval one model
    .venv/bin/python bench/experiments/results_synthetic.py --root /tmp/rtd-t12 --doc-only           # redraw the doc

On a GPU the same script runs at the paper's sizes; another size, width or budget writes
docs/results-synthetic-128px-w16.md and docs/results-synthetic-128px-w16/ (never the CPU run's files), and needs
a ROOT of its own (the worlds are synthesized at that size; a ROOT holding another size's world is refused):

    .venv/bin/python bench/experiments/results_synthetic.py --root /tmp/rtd-128 --device cuda --size 128 --threads 16 --only rtdgan-n3

A carried file over 20 MB (width 64 at 256 px) is not written: such a run resumes only from its ROOT.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: bench.common

from bench.common import PRETRAINED, ROOT, say, synthesize_once  # noqa: E402

# The reported experiment's files (64 px, width 16, 27 passes); another size, width or budget gets siblings named
# after it (results_dir, doc_path), so a GPU run at 128 px never overwrites the CPU run's committed tables.
DOC = ROOT / "docs" / "results-synthetic.md"
RESULTS = ROOT / "docs" / "results-synthetic"  # committed: one JSON (and sample grid) per evaluated model
CARRY = RESULTS / "carry"  # committed: an unfinished run's bf16 checkpoint, then the finished run's generator
CARRY_LIMIT = 20 * 2**20  # a carried file must stay committable (the project's 20 MB cap on weights in git)
BEGIN, END = "<!-- results:begin (written by bench/experiments/results_synthetic.py) -->", "<!-- results:end -->"
EMBEDDER = "efficientnet_lite0"
MODELS = ("rtdgan-n3", "rtdgan-n2", "rtdgan-n1", "pix2pix", "pldt")
# Table 1 and 2 of the paper (LookBook, 256 px, DenseNet-121), for the ratios beside ours.
PAPER = {"rtdgan-n3": {"ssim": 0.597, "r60": 0.337}, "pix2pix": {"ssim": 0.557, "r60": 0.187},
         "pldt": {"ssim": 0.410, "r60": 0.179}}
PAPER_TABLE2 = {"ssim": 0.13, "r60": 0.23}  # N = 1 -> 3: SSIM +13 %, Recall@60 +23 % (Sec. 4.3)


@dataclass(frozen=True)
class Experiment:
    """The experiment's knobs; the defaults are what docs/results-synthetic.md reports."""

    root: Path
    train_products: int = 8000  # the demo's training world (training/demo_config.py DemoConfig): seed 0, LookBook
    train_photos: int = 2
    train_seed: int = 0
    shop_products: int = 1000  # the held-out shop: a gallery of 1,000 makes chance Recall@60 0.06
    shop_photos: int = 2
    shop_seed: int = 6500  # used for nothing else
    size: int = 64
    width: int = 16
    passes: int = 27  # images seen per model = passes x training photos (the demo recipe: 3 x 5 + 12)
    lambda_con: float = 10.0  # Eq. 4; 1 in the paper. At this budget rtdGAN learns only with 10 (README "Choices")
    lambda_lap: float = 10.0
    precision: str = "auto"
    device: str = "auto"  # `rtd train --device`: cuda when available (the paper-size runs)
    threads: int = 2
    ks: tuple[int, ...] = (1, 5, 10, 20, 60)
    bootstrap: int = 1000
    # The learned retrieval head, fitted for each model's generator (`rtd fit-head`, its default grid chosen
    # on the head world's own validation products) on a LookBook-framed world of its own: neither the generators'
    # training world (whose photos the generators have seen) nor the shop.
    head_products: int = 5000
    head_photos: int = 2
    head_seed: int = 8100  # used for nothing else


def models(e: Experiment) -> dict[str, dict]:
    """TrainConfig fields per model; every one makes `passes` passes over the training photos.

    rtdGAN N = 3 is the demo recipe (5 epochs per stage, stage 3 twelve more); N = 2 keeps its first stage
    (32 px) and puts the rest at 64 px; N = 1 trains at 64 px only. pix2pix and PLDT train one stage of
    stages x (fade + stab) epochs plus the extra ones (training/schedule.py), at batch 16 like rtdGAN's last stage.
    """
    first = 5  # epochs of each rtdGAN stage before the last one's extra epochs (the demo's 2 fade-in + 3)
    runs = {
        "rtdgan-n3": dict(model="rtdgan", stages=3, epochs_fade=2, epochs_stab=3, epochs_extra=e.passes - 3 * first,
                          batch_sizes=(32, 32, 16)),
        "rtdgan-n2": dict(model="rtdgan", stages=2, epochs_fade=2, epochs_stab=3, epochs_extra=e.passes - 2 * first,
                          batch_sizes=(32, 16)),
        "rtdgan-n1": dict(model="rtdgan", stages=1, epochs_fade=0, epochs_stab=first, epochs_extra=e.passes - first,
                          batch_sizes=(16,)),
    }
    for name in ("pix2pix", "pldt"):
        runs[name] = dict(model=name, stages=3, epochs_fade=2, epochs_stab=3, epochs_extra=e.passes - 3 * first,
                          batch_sizes=(16, 16, 16))
    for fields in runs.values():
        fields |= dict(lambda_con=e.lambda_con, lambda_lap=e.lambda_lap)
    return runs


def tag(e: Experiment) -> str:
    """'' for the reported experiment; else its size, width and budget ("-128px-w16", "-256px-w64-p9")."""
    if (e.size, e.width, e.passes) == (Experiment.size, Experiment.width, Experiment.passes):
        return ""
    return f"-{e.size}px-w{e.width}" + (f"-p{e.passes}" if e.passes != Experiment.passes else "")


def results_dir(e: Experiment) -> Path:
    """Where the experiment's per-model files, plots and sample grids are committed."""
    return RESULTS.with_name(RESULTS.name + tag(e)) if tag(e) else RESULTS


def carry_dir(e: Experiment) -> Path:
    return results_dir(e) / "carry" if tag(e) else CARRY


def doc_path(e: Experiment) -> Path:
    return DOC.with_name(f"{DOC.stem}{tag(e)}.md") if tag(e) else DOC


def synth(out: Path, products: int, photos: int, seed: int, size: int, workers: int) -> Path:
    """A LookBook-framed synthetic set, unless it exists complete (`workers` processes draw it); another world
    there is refused (UserError)."""
    from rtdgan.training.synth import SynthConfig

    if synthesize_once(SynthConfig(out=out, products=products, photos_per_product=photos, size=size, seed=seed,
                                   workers=workers, framing="lookbook"), hint="give each size its own --root"):
        say(f"synthesized {products} x {photos} photos, seed {seed}, into {out}")
    return out


def pretrained_matches(e: Experiment) -> str | None:
    """Why the committed demo generator is not rtdGAN N = 3 of this experiment (None: it is)."""
    from rtdgan.index.files import sha256_file

    card_file = PRETRAINED.with_suffix(".json")
    if not card_file.is_file():
        return f"{card_file} is missing"
    card = json.loads(card_file.read_text())
    if card["sha256"] != sha256_file(PRETRAINED):
        return f"{PRETRAINED} does not match its card"
    r, want = card["recipe"], models(e)["rtdgan-n3"]
    mine = {"size": e.size, "framing": "lookbook", "train_products": e.train_products,
            "train_photos_per_product": e.train_photos, "train_seed": e.train_seed, "stages": 3, "width": e.width,
            "epochs_fade": want["epochs_fade"], "epochs_stab": want["epochs_stab"],
            "epochs_extra": want["epochs_extra"], "batch_sizes": list(want["batch_sizes"]),
            "lambda_con": e.lambda_con, "lambda_lap": e.lambda_lap}
    diff = {k: (r.get(k), v) for k, v in mine.items() if r.get(k) != v}
    return f"recipe differs: {diff}" if diff else None


def train_model(e: Experiment, name: str, world: Path, timings: dict) -> Path:
    """The model's run folder: the committed weights for N = 3 when they match, else trained (resuming)."""
    from rtdgan.training.checkpoint import load_checkpoint
    from rtdgan.training.demo_generator import weights_run
    from rtdgan.training.train import TrainConfig, train

    run = e.root / "runs" / name
    if name == "rtdgan-n3" and (problem := pretrained_matches(e)) is None:
        if not (run / "checkpoints" / "last.pt").is_file():
            weights_run(PRETRAINED, run)
        timings.setdefault(name, {})["source"] = f"committed weights {PRETRAINED.relative_to(ROOT)}"
        return run
    if name == "rtdgan-n3":
        say(f"training rtdgan-n3 itself: {problem}")
    fields = models(e)[name]
    last = run / "checkpoints" / "last.pt"
    if not last.is_file() and (carry_dir(e) / f"{name}.pt").is_file():
        unpack_carry(e, name, timings)
    if not finished(e, name):
        say(f"training {name} ({'resuming' if last.is_file() else 'from scratch'})")
        t = time.perf_counter()
        try:
            train(TrainConfig(data=str(world), out=str(run), resolution=e.size, width=e.width, seed=0,
                              device=e.device, log_every=100, resume=last.is_file(), **fields, **precision(e)))
        except BaseException as stop:  # an interrupted run still counts the time it trained
            record_train_time(e, name, timings, t)
            if isinstance(stop, KeyboardInterrupt) and last.is_file():  # rtdgan.training.train.Stopped or Ctrl-C
                pack_carry(e, name, timings)  # carry what was trained
            raise
        record_train_time(e, name, timings, t)
    carried = carry_dir(e) / f"{name}.pt"
    if not (carried.is_file() and load_checkpoint(carried)["carry"]["finished"]):
        pack_carry(e, name, timings)  # the finished generator replaces the resumable checkpoint
    return run


def final_checkpoint(e: Experiment, name: str) -> Path:
    """The checkpoint a finished run writes when its last stage ends (extra epochs included)."""
    fields = models(e)[name]
    return e.root / "runs" / name / "checkpoints" / f"stage_{fields['stages'] if fields['model'] == 'rtdgan' else 1}.pt"


def finished(e: Experiment, name: str) -> bool:
    """Whether the model's run is complete: its final checkpoint carries this experiment's schedule."""
    from rtdgan.training.checkpoint import load_checkpoint

    final = final_checkpoint(e, name)
    return final.is_file() and load_checkpoint(final)["config"].get("epochs_extra") == models(e)[name]["epochs_extra"]


def record_train_time(e: Experiment, name: str, timings: dict, since: float) -> None:
    """Add the wall time trained since `since` (perf_counter) to the model's train_s, and say on what."""
    entry = timings.setdefault(name, {})
    entry["train_s"] = entry.get("train_s", 0.0) + time.perf_counter() - since
    entry["device"] = machine(e)
    save_timings(e, timings)


def machine(e: Experiment) -> str:
    """What trained: the CUDA device's name, or the CPU and its torch threads."""
    import torch

    if e.device != "cpu" and torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name()})"
    return f"cpu ({e.threads} threads)"


def pack_carry(e: Experiment, name: str, timings: dict) -> Path | None:
    """The model's run as carry_dir(e)/NAME.pt, with its timings: an unfinished run's last.pt with its floats in bf16
    (resumable), a finished one's final generator alone in fp32 (what `rtd export` reads)."""
    import torch

    from rtdgan.training.checkpoint import cast_floats, load_checkpoint, save_checkpoint

    done = finished(e, name)
    if done:
        state = load_checkpoint(final_checkpoint(e, name))
        packed = {k: v for k, v in state.items() if k not in ("models", "optimizers", "rng")}
        packed["models"] = {"generator": state["models"]["generator"]}
    else:
        state = load_checkpoint(e.root / "runs" / name / "checkpoints" / "last.pt")
        packed = cast_floats(state, torch.float32, torch.bfloat16)
    packed["carry"] = {"timings": timings.get(name, {}), "finished": done}
    target = carry_dir(e) / f"{name}.pt"
    draft = target.with_name(f".{target.name}.draft")  # the previous carry stays until this one is known to fit
    save_checkpoint(draft, {k: v for k, v in packed.items() if k != "format"})
    size = draft.stat().st_size
    if size > CARRY_LIMIT:
        draft.unlink()
        say(f"{name}: not carried ({size / 2**20:.0f} MB is over the {CARRY_LIMIT // 2**20} MB a commit may hold at "
            f"width {e.width}); the run stays in {e.root / 'runs' / name}: resume it there with the same --root")
        return None
    draft.replace(target)
    say(f"packed {name} ({'finished' if done else 'unfinished'}, step {state['step']}) into {target} "
        f"({size / 2**20:.1f} MB): commit it to go on from there on another machine")
    return target


def unpack_carry(e: Experiment, name: str, timings: dict) -> None:
    """carry_dir(e)/NAME.pt back into ROOT/runs/NAME/checkpoints (fp32; a finished run's also as its final stage's
    checkpoint), its wall time into timings."""
    import torch

    from rtdgan.training.checkpoint import cast_floats, load_checkpoint, save_checkpoint

    source = carry_dir(e) / f"{name}.pt"
    state = load_checkpoint(source)
    carried = state.pop("carry")
    state = {k: v for k, v in cast_floats(state, torch.bfloat16, torch.float32).items() if k != "format"}
    targets = [e.root / "runs" / name / "checkpoints" / "last.pt"]
    if carried["finished"]:
        targets.append(final_checkpoint(e, name))
    for target in targets:
        save_checkpoint(target, state)
    if "train_s" not in timings.get(name, {}):
        timings[name] = timings.get(name, {}) | carried["timings"]
        save_timings(e, timings)
    say(f"{name}: the carried {'finished' if carried['finished'] else 'unfinished'} run {source} "
        f"(step {state['step']})")


def precision(e: Experiment) -> dict:
    """TrainConfig's precision field when this checkout has one (`rtd train --precision`)."""
    from dataclasses import fields

    from rtdgan.training.train import TrainConfig

    return {"precision": e.precision} if any(f.name == "precision" for f in fields(TrainConfig)) else {}


def save_timings(e: Experiment, timings: dict) -> None:
    e.root.mkdir(parents=True, exist_ok=True)
    (e.root / "timings.json").write_text(json.dumps(timings, indent=1) + "\n")


def shop_split(e: Experiment, shop: Path) -> Path:
    """A split of the shop whose test part is (nearly) all of it: `rtd eval` evaluates a split's test part."""
    from rtdgan.training.split import SplitConfig, make_split

    split = e.root / "shop-split.json"
    if not split.is_file():
        make_split(SplitConfig(data=shop, out=split, test_fraction=0.999, seed=0))
    return split


def evaluate_model(e: Experiment, name: str, run: Path, shop: Path, split: Path, timings: dict) -> dict:
    """Export and `rtd eval` one model; the slim report is committed under docs/results-synthetic/."""
    from rtdgan.training.eval_protocol import EvalConfig
    from rtdgan.training.evaluate import evaluate
    from rtdgan.training.export import ExportConfig, export_run

    artifacts, report_dir = e.root / "artifacts" / name, e.root / "reports" / name
    if not (artifacts / "model.json").is_file():
        export_run(ExportConfig(run=run, out=artifacts, embedder=EMBEDDER, embed_level=0, parity_data=shop))
    if not (report_dir / "report.json").is_file():
        t = time.perf_counter()
        evaluate(EvalConfig(artifacts=artifacts, data=shop, split=split, out=report_dir, ks=e.ks, query="all",
                            bootstrap=e.bootstrap))
        timings.setdefault(name, {})["eval_s"] = time.perf_counter() - t
        save_timings(e, timings)
    report = json.loads((report_dir / "report.json").read_text())
    from rtdgan.training.checkpoint import load_checkpoint

    state = load_checkpoint(run / "checkpoints" / "last.pt")
    world = e.train_products * e.train_photos
    slim = {"name": name, "experiment": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(e).items()},
            "train": models(e)[name] | {"steps": int(state["step"]), "images_seen": e.passes * world,
                                        "precision": state.get("config", {}).get("precision", "fp32"),
                                        **timings.get(name, {})},
            "test_set": {k: v for k, v in report["test_set"].items() if k != "skipped"},
            "ks": report["ks"], "bootstrap": report["bootstrap"], "model": report["model"],
            "results": [{k: r[k] for k in ("method", "query", "label", "rmse", "ssim", "recall", "recall_ci",
                                           "median_rank")} for r in report["results"]]}
    results = results_dir(e)
    results.mkdir(parents=True, exist_ok=True)
    previous = results / f"{name}.json"
    if previous.is_file() and "head" in (kept := json.loads(previous.read_text())):
        slim["head"] = kept["head"]  # evaluate_head's part, added after this
    previous.write_text(json.dumps(slim, indent=1) + "\n")
    shutil.copyfile(report_dir / "samples.png", results / f"samples-{name}.png")
    return slim


def head_world(e: Experiment) -> tuple[Path, Path]:
    """The retrieval head's training world and its split (nearly all of it in the train part)."""
    from rtdgan.training.split import SplitConfig, make_split

    data = synth(e.root / "head-data", e.head_products, e.head_photos, e.head_seed, e.size, e.threads)
    split = e.root / "head-split.json"
    if not split.is_file():
        make_split(SplitConfig(data=data, out=split, test_fraction=0.01, seed=0))
    return data, split


def evaluate_head(e: Experiment, name: str, mode: str, shop: Path, split: Path, timings: dict) -> dict:
    """Fit the learned retrieval head (`rtd fit-head --mode MODE`) for this model's exported generator on the head
    world, then `rtd eval --query head` on the shop; returns the slim record (also committed, see below).

    The fused head's record goes into the model's file in docs/results-synthetic/; the photo-only head, which no
    generator feeds, into photo-head.json (fitted once, with whichever model's artifacts come first)."""
    from rtdgan.index.runtime.artifacts import read_artifacts
    from rtdgan.index.runtime.head import has_head
    from rtdgan.training.eval_protocol import EvalConfig
    from rtdgan.training.evaluate import evaluate
    from rtdgan.training.head import FitHeadConfig, fit_head

    source, artifacts = e.root / "artifacts" / name, e.root / "artifacts-head" / f"{name}-{mode}"
    report_dir = e.root / "reports" / f"{name}-head-{mode}"
    if not (artifacts.is_dir() and has_head(read_artifacts(artifacts))):
        data, head_split = head_world(e)
        shutil.rmtree(artifacts, ignore_errors=True)
        shutil.copytree(source, artifacts)
        say(f"fitting the {mode} retrieval head for {name}")
        t = time.perf_counter()
        fit_head(FitHeadConfig(artifacts=artifacts, data=data, split=head_split, mode=mode, threads=e.threads,
                               cache=e.root / "head-cache", check_backends=False))
        timings.setdefault(name, {})[f"head_{mode}_s"] = time.perf_counter() - t
        save_timings(e, timings)
        shutil.rmtree(report_dir, ignore_errors=True)
    if not (report_dir / "report.json").is_file():
        evaluate(EvalConfig(artifacts=artifacts, data=shop, split=split, out=report_dir, ks=e.ks, query="head",
                            bootstrap=e.bootstrap))
    report = json.loads((report_dir / "report.json").read_text())
    doc = json.loads((read_artifacts(artifacts).folder / "head.json").read_text())
    r = next(r for r in report["results"] if r["method"] == "head")
    slim = {"mode": mode, "fitted_with": name,
            "world": {"products": e.head_products, "photos_per_product": e.head_photos, "seed": e.head_seed,
                      "framing": "lookbook", "train_products": doc["training"]["products"]},
            "chosen": doc["chosen"], "validation_recall": doc["validation"]["recall"],
            "fit_s": timings.get(name, {}).get(f"head_{mode}_s"),
            "result": {k: r[k] for k in ("method", "query", "label", "recall", "recall_ci", "median_rank")}}
    target = results_dir(e) / (f"{name}.json" if mode == "fused" else f"{mode}-head.json")
    if mode == "fused":
        record = json.loads(target.read_text())  # evaluate_model wrote it
        record["head"] = slim
        target.write_text(json.dumps(record, indent=1) + "\n")
    else:
        target.write_text(json.dumps(slim, indent=1) + "\n")
    return slim


def load_results(e: Experiment) -> dict[str, dict]:
    results = results_dir(e)
    return {name: json.loads((results / f"{name}.json").read_text()) for name in MODELS
            if (results / f"{name}.json").is_file()}


def photo_head(e: Experiment) -> dict | None:
    """The photo-only head's committed record (evaluate_head), if fitted."""
    path = results_dir(e) / "photo-head.json"
    return json.loads(path.read_text()) if path.is_file() else None


def row(results: dict, query: str) -> dict | None:
    return next((r for r in results["results"] if r["query"] == query), None)


def cell(r: dict, k: int) -> str:
    v, (lo, hi) = r["recall"][str(k)], r["recall_ci"][str(k)]
    return f"{v:.3f} [{lo:.2f}, {hi:.2f}]"


def tables(done: dict[str, dict], ks: tuple[int, ...]) -> str:
    """Table 1 (every model, the paper's protocol, plus the photo baseline and chance) and Table 2 (N)."""
    head = "| model | RMSE | SSIM | " + " | ".join(f"R@{k} [95 % CI]" for k in ks) + " | training steps | wall time |"
    lines = ["**Table 1** — the paper's protocol: frozen embedder, generated image as the query, full resolution.",
             "", head, "|" + "---|" * (len(ks) + 5)]
    for name in MODELS:
        if name not in done:
            lines.append(f"| {name} | not yet run | | " + " | ".join("" for _ in ks) + " | | |")
            continue
        r, t = row(done[name], "generated"), done[name]["train"]
        wall = f"{t['train_s'] / 60:.0f} min" if "train_s" in t else t.get("source", "")
        lines.append(f"| {name} | {r['rmse']:.4f} | {r['ssim']:.4f} | " + " | ".join(cell(r, k) for k in ks)
                     + f" | {t['steps']} | {wall} |")
    any_done = next(iter(done.values()), None)
    if any_done is not None:
        photo = row(any_done, "photo")
        if photo is not None:
            lines.append("| the photo itself (no generator) | | | " + " | ".join(cell(photo, k) for k in ks) + " | | |")
        chance = any_done["test_set"]["chance_recall"]
        lines.append("| chance (K / gallery) | | | " + " | ".join(f"{chance[str(k)]:.3f}" for k in ks) + " | | |")
    lines += ["", "**Table 2** — rough-to-detail stages N (change against N = 1; the paper: SSIM +13 %, "
              "Recall@60 +23 % from N = 1 to 3).", "",
              "| N | SSIM | R@60 | SSIM vs N = 1 | R@60 vs N = 1 |", "|---|---|---|---|---|"]
    base = done.get("rtdgan-n1")
    for n in (1, 2, 3):
        name = f"rtdgan-n{n}"
        if name not in done:
            lines.append(f"| {n} | not yet run | | | |")
            continue
        r = row(done[name], "generated")
        b = row(base, "generated") if base is not None else None
        rel = (f"{100 * (r['ssim'] / b['ssim'] - 1):+.1f} % | {100 * (r['recall']['60'] / b['recall']['60'] - 1):+.1f} %"
               if b is not None and "60" in r["recall"] else "— | —")
        lines.append(f"| {n} | {r['ssim']:.4f} | {cell(r, 60) if '60' in r['recall'] else ''} | {rel} |")
    return "\n".join(lines)


def head_table(e: Experiment, done: dict[str, dict]) -> str:
    """Table 3: each model's fused query through a head fitted for its generator, beside the photo-only head."""
    ks, photo = e.ks, photo_head(e)
    lines = ["**Table 3** — with the learned retrieval head (`rtd fit-head`): the generated image's and the photo's "
             "features fused, a head fitted for each model's generator; the photo-only head is the row without "
             "generation.", "",
             "| query | " + " | ".join(f"R@{k} [95 % CI]" for k in ks) + " | R@10 vs photo-only head |",
             "|" + "---|" * (len(ks) + 2)]
    for name in MODELS:
        h = done.get(name, {}).get("head")
        if h is None:
            lines.append(f"| {name}, fused head | not yet run |" + " |" * len(ks))
            continue
        r = h["result"]
        gain = f"{r['recall']['10'] - photo['result']['recall']['10']:+.3f}" if photo is not None else ""
        lines.append(f"| {name}, fused head | " + " | ".join(cell(r, k) for k in ks) + f" | {gain} |")
    if photo is not None:
        lines.append("| photo-only head (no generator) | " + " | ".join(cell(photo["result"], k) for k in ks) + " | |")
    world = (photo or next((d["head"] for d in done.values() if "head" in d), None) or {}).get("world")
    if world:
        lines += ["", f"Heads fitted on their own world: {world['products']} products x {world['photos_per_product']} "
                      f"LookBook-framed photos, seed {world['seed']} ({world['train_products']} in the split's train "
                      "part), `rtd fit-head`'s default grid chosen on its validation products."]
    return "\n".join(lines)


def recall_figures(e: Experiment, done: dict[str, dict]) -> str:
    """Recall@K plots (training/plots.py: PNG + SVG under docs/results-synthetic/) of Table 1 (each model's
    generated query, the photo, chance) and of Table 3 (each model's fused head, the photo-only head, chance);
    returns their Markdown."""
    from rtdgan.training.eval_report import chance_curve
    from rtdgan.training.plots import recall_plot, report_curve

    if not done:
        return ""
    results = results_dir(e)
    first = next(iter(done.values()))
    products = first["test_set"]["products"]
    colour = {n: f"C{i}" for i, n in enumerate(MODELS)}  # a model keeps its colour in both plots
    table1 = [replace(report_curve(row(done[n], "generated")), label=n, colour=colour[n]) for n in MODELS if n in done]
    if (photo := row(first, "photo")) is not None:
        table1.append(replace(report_curve(photo), label="the photo itself (no generator)"))
    recall_plot([*table1, chance_curve(first)], results / "recall.png",
                f"Table 1: the generated image as the query, frozen {EMBEDDER}; gallery {products} products")
    md = [f"Recall@K with 95 % intervals, Table 1 (SVG beside it: `{results.name}/recall.svg`):", "",
          f"![Recall@K, Table 1]({results.name}/recall.png)"]
    heads = [replace(report_curve(done[n]["head"]["result"]), label=f"{n}, fused head", colour=colour[n])
             for n in MODELS if "head" in done.get(n, {})]
    if (photo_only := photo_head(e)) is not None:
        heads.append(replace(report_curve(photo_only["result"]), label="photo-only head (no generator)", kind="baseline"))
    if heads:
        recall_plot([*heads, chance_curve(first)], results / "recall-head.png",
                    f"Table 3: the learned retrieval head; gallery {products} products")
        md += ["", f"Table 3 (`{results.name}/recall-head.svg`):", "",
               f"![Recall@K, Table 3]({results.name}/recall-head.png)"]
    return "\n".join(md)


def setup_notes(e: Experiment, done: dict[str, dict]) -> tuple[str, str, str]:
    """The Setup list's machine-dependent sentences: the budget's, rtdGAN N = 3's origin, the hardware's."""
    devices = sorted({d["train"]["device"] for d in done.values() if "device" in d["train"]})
    where = "on " + " and ".join(devices) if tag(e) and devices else "on this 2-core CPU"  # the reported run's
    s = e.size
    if done.get("rtdgan-n3", {}).get("train", {}).get("source", "").startswith("committed weights"):
        n3 = ("rtdGAN N = 3 is the committed demo generator, trained by `rtd demo --retrain` with exactly this world "
              f"and\n  budget (5 epochs per stage at {s // 4}, {s // 2}, {s} px, then {e.passes - 15} more at {s} px; "
              "batch 32, 32, 16).")
    else:
        n3 = (f"rtdGAN N = 3 trains 5 epochs per stage at {s // 4}, {s // 2}, {s} px, then {e.passes - 15} more at "
              f"{s} px (batch 32, 32, 16),\n  the demo generator's recipe at this size.")
    if tag(e):
        hardware = (f"Width {e.width}, precision `{e.precision}` (bf16 where the device has it), memory layout as "
                    "`rtd train\n  --memory-format auto` picks.")
    else:
        hardware = (f"Width {e.width}, precision `{e.precision}` (fp32 on this CPU: it has no bf16 units); memory "
                    "layout as\n  `rtd train --memory-format auto` picks (channels_last for rtdGAN from "
                    "N = 1's step 18,037 on;\n  the same arithmetic, 1.3-1.5x faster here; the wall times are on a "
                    "2-core machine shared with other work).")
    return where, n3, hardware


def write_doc(e: Experiment, command: str) -> None:
    """Replace the generated block of the experiment's doc (doc_path) from its committed per-model results."""
    done = load_results(e)
    results, doc = results_dir(e), doc_path(e)
    world = e.train_products * e.train_photos
    shop = next(iter(done.values()))["test_set"] if done else None
    where, n3, hardware = setup_notes(e, done)
    grids = "\n\n".join(f"{name}:\n\n![samples, {name}]({results.name}/samples-{name}.png)"
                         for name in MODELS if (results / f"samples-{name}.png").is_file())
    block = f"""{BEGIN}
## Setup: where generation works

- Training world: `rtdgan.training.synth`, {e.train_products} products x {e.train_photos} LookBook-framed photos at
  {e.size} px, seed {e.train_seed} (the demo's training world); every model trains on all of it.
- Budget: every model sees the same number of training images, {e.passes} passes over the {world} photos
  ({e.passes * world:,} images); the steps and the wall time each took {where} are in Table 1.
  {n3}
- Paper settings (Sec. 4.1) kept: Adam lr 2e-4, WGAN-GP weight 10, critic and losses as in Sec. 3. One
  departure, for every rtdGAN alike: content and Laplacian weights 10 instead of 1 (at 1, this budget learns
  only the mean garment); pix2pix keeps its own L1 weight 100 (Isola et al.), PLDT its own losses.
  {hardware}
- Evaluation: `rtd eval --query all` on the exported ONNX files over a held-out shop (seed {e.shop_seed},
  {shop['products'] if shop else e.shop_products} products as the gallery, {shop['queries'] if shop else '?'}
  photos as queries); Recall@K with **{EMBEDDER}** embeddings (the paper used DenseNet-121, whose weights cannot
  be downloaded here); 95 % intervals from {e.bootstrap} bootstrap resamples of the products.

{tables(done, e.ks)}

{head_table(e, done)}

{recall_figures(e, done)}

Sample grids (photo | generated | ground truth | top retrieved, the true product framed):

{grids}

Reproduce: `{command}`, one model at a time (`--only NAME`), then `--doc-only`.
{END}"""
    title = "# Results on the synthetic set" + (f", {e.size} px, width {e.width}" if tag(e) else "")
    text = doc.read_text() if doc.is_file() else f"{title}\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    doc.write_text(head + block + rest.split(END, 1)[1], encoding="utf-8")
    say(f"wrote {doc}")


def run_models(e: Experiment, names: list[str], evaluate: bool, heads: bool) -> None:
    """Train (or resume, or unpack) each model, then evaluate it and fit its heads, writing its committed files."""
    import torch

    e.root.mkdir(parents=True, exist_ok=True)
    timings_path = e.root / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    world = synth(e.root / "train-data", e.train_products, e.train_photos, e.train_seed, e.size, e.threads)
    shop = synth(e.root / "shop", e.shop_products, e.shop_photos, e.shop_seed, e.size, e.threads)
    split = shop_split(e, shop)
    torch.set_num_threads(e.threads)
    for name in names:
        run = train_model(e, name, world, timings)
        if evaluate:
            evaluate_model(e, name, run, shop, split, timings)
            if heads:
                evaluate_head(e, name, "fused", shop, split, timings)
                if not (results_dir(e) / "photo-head.json").is_file():
                    evaluate_head(e, name, "photo", shop, split, timings)


def experiment(a: argparse.Namespace) -> Experiment:
    """The Experiment of the command line; UserError (one line) for values no run could use."""
    from rtdgan.index.errors import UserError
    from rtdgan.models.layers import log2_resolution

    try:  # rtdGAN N = 3 starts at a quarter of the size
        log2_resolution(a.size, minimum=32, what="--size")
    except ValueError as err:
        raise UserError(str(err)) from None
    if a.width < 1 or a.threads < 1:
        raise UserError(f"--width and --threads must be >= 1, got {a.width} and {a.threads}")
    if a.passes < 15:
        raise UserError(f"--passes must be >= 15 (rtdGAN N = 3 spends 5 per stage before its extra ones), got {a.passes}")
    if a.device == "cuda" and not a.doc_only:
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda, but no CUDA device is available (use --device cpu or auto)")
    return Experiment(root=a.root, threads=a.threads, precision=a.precision, device=a.device, size=a.size,
                      width=a.width, passes=a.passes)


def main() -> int:
    from rtdgan.index.errors import UserError
    from rtdgan.service.cli import OneLineParser

    p = OneLineParser(prog="results_synthetic.py", description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, required=True, help="folder for data, runs, artifacts and reports")
    p.add_argument("--only", default=",".join(MODELS), help=f"models to train and evaluate, of {','.join(MODELS)}")
    p.add_argument("--train-only", action="store_true", help="train, do not evaluate")
    p.add_argument("--doc-only", action="store_true", help="only redraw the doc from the committed per-model files")
    p.add_argument("--no-doc", action="store_true", help="do not redraw the doc (the per-model files in "
                                                           "docs/results-synthetic*/ are still written)")
    p.add_argument("--no-head", action="store_true", help="skip fitting and evaluating the learned retrieval heads "
                                                            "for the models")
    p.add_argument("--pack-carry", action="store_true", help="only pack each --only model's run into "
                                                               "docs/results-synthetic*/carry/ (unfinished: resumable, "
                                                               "bf16; finished: its generator)")
    p.add_argument("--threads", type=int, default=Experiment.threads, help="torch and onnxruntime CPU threads; as many processes draw the worlds")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=Experiment.precision)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=Experiment.device,
                   help="where training runs (evaluation takes onnxruntime's CUDA provider when it has one)")
    p.add_argument("--size", type=int, default=Experiment.size,
                   help="image side of every world and model: 64 is the reported CPU run; 128 or 256 on a GPU "
                        "(their files go to docs/results-synthetic-SIZEpx-wWIDTH*)")
    p.add_argument("--width", type=int, default=Experiment.width, help="networks' base width (the paper's: 64)")
    p.add_argument("--passes", type=int, default=Experiment.passes,
                   help="the budget: passes over the training photos, the same for every model")
    a = p.parse_args()
    names = [n for n in a.only.split(",") if n]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    try:
        e = experiment(a)
    except UserError as err:
        p.error(str(err))
    command = ".venv/bin/python bench/experiments/results_synthetic.py --root ROOT" + "".join(
        f" --{flag} {value}" for flag, value in (("size", e.size), ("width", e.width), ("passes", e.passes),
                                                 ("device", e.device))
        if value != getattr(Experiment, flag))
    if a.pack_carry:
        timings_path = e.root / "timings.json"
        timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
        for name in names:
            if not (e.root / "runs" / name / "checkpoints" / "last.pt").is_file():
                say(f"{name}: no run under {e.root / 'runs'}")
                return 1
            pack_carry(e, name, timings)
        return 0
    if not a.doc_only:
        try:
            run_models(e, names, evaluate=not a.train_only, heads=not a.no_head)
        except UserError as err:  # e.g. a --root that holds another size's world
            say(f"error: {err}")
            return 1
    if not a.no_doc:
        write_doc(e, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
