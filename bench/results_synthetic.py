"""Reproduce docs/results-synthetic.md end to end: the paper's Tables 1 and 2 on the synthetic set.

synthesize -> split -> train rtdGAN (N = 3, 2, 1), pix2pix and PLDT under one epoch budget -> export
(efficientnet_lite0 embedder: the DenseNet-121 weights cannot be downloaded here) -> `rtd eval` of all five
plus the photo baseline -> `rtd eval compare` -> docs/results-synthetic.md and its PNGs.

Every stage is skipped when its output exists, so an interrupted run continues where it stopped. The
generated part of the Markdown file sits between two markers and is replaced on every run; the text
around it (the discussion) is kept.

    .venv/bin/python bench/results_synthetic.py --root /tmp/rtd-results
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from training.evaluate import EvalConfig, compare_reports, evaluate  # noqa: E402
from training.export import ExportConfig, export_run  # noqa: E402
from training.split import SplitConfig, make_split  # noqa: E402
from training.synth import SynthConfig, synthesize  # noqa: E402
from training.train import TrainConfig, train  # noqa: E402

DOC = ROOT / "docs" / "results-synthetic.md"
BEGIN, END = "<!-- results:begin (written by bench/results_synthetic.py) -->", "<!-- results:end -->"
EMBEDDER = "efficientnet_lite0"


@dataclass(frozen=True)
class Experiment:
    """The whole experiment's knobs (the defaults are what docs/results-synthetic.md reports)."""

    root: Path
    products: int = 500
    photos: int = 4
    size: int = 64
    width: int = 8
    epochs: int = 18  # per model; a multiple of 6, so that N = 1, 2, 3 and the baselines share it exactly
    batch: int = 16
    test_fraction: float = 0.2  # the paper's 10 % would leave a 50-product gallery; 100 makes Recall@K finer
    threads: int = 1  # torch CPU threads: on a shared 2-core machine 2 threads ran 10x slower than 1
    ks: tuple[int, ...] = (1, 5, 10, 20, 60)
    seed: int = 0


def models(e: Experiment) -> dict[str, dict]:
    """TrainConfig fields per model: every model sees the data `epochs` times (Algorithm 1's budget)."""
    runs = {}
    for n in (3, 2, 1):
        fade = 1 if n > 1 else 0  # stage 1 has nothing to fade in (training/schedule.py)
        runs[f"rtdgan-n{n}"] = dict(model="rtdgan", stages=n, epochs_fade=fade, epochs_stab=e.epochs // n - fade,
                                    batch_sizes=(e.batch,) * n)
    for name in ("pix2pix", "pldt"):  # baselines train stages x (fade + stab) epochs in one stage
        runs[name] = dict(model=name, stages=3, epochs_fade=1, epochs_stab=e.epochs // 3 - 1, batch_sizes=(e.batch,) * 3)
    return runs


def say(text: str) -> None:
    print(f"results: {text}", file=sys.stderr, flush=True)


def run(e: Experiment) -> dict:
    """Every stage, skipping what exists; returns the timings."""
    data, split = e.root / "data", e.root / "split.json"
    timings_path = e.root / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    if not (data / "products.csv").is_file():
        t = time.perf_counter()
        synthesize(SynthConfig(out=data, products=e.products, photos_per_product=e.photos, size=e.size, seed=e.seed,
                               workers=2))
        timings["synth_s"] = time.perf_counter() - t
    if not split.is_file():
        info = make_split(SplitConfig(data=data, out=split, test_fraction=e.test_fraction, seed=e.seed))
        say(f"split {info['counts']}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for name, fields in models(e).items():
        run_dir = e.root / "runs" / name
        if not (run_dir / "checkpoints" / "last.pt").is_file():
            shutil.rmtree(run_dir, ignore_errors=True)
            say(f"training {name}")
            t = time.perf_counter()
            train(TrainConfig(data=str(data), split=str(split), out=str(run_dir), resolution=e.size, width=e.width,
                              seed=e.seed, device=device, log_every=20, **fields))
            timings[f"train_{name}_s"] = time.perf_counter() - t
            timings_path.write_text(json.dumps(timings, indent=1))
        artifacts = e.root / "artifacts" / name
        if not (artifacts / "model.json").is_file():
            t = time.perf_counter()
            export_run(ExportConfig(run=run_dir, out=artifacts, embedder=EMBEDDER))
            timings[f"export_{name}_s"] = time.perf_counter() - t
        report = e.root / "reports" / name
        if not (report / "report.json").is_file():
            t = time.perf_counter()
            evaluate(EvalConfig(artifacts=artifacts, data=data, split=split, out=report, ks=e.ks))
            timings[f"eval_{name}_s"] = time.perf_counter() - t
            timings_path.write_text(json.dumps(timings, indent=1))
    compare_reports([e.root / "reports" / name for name in models(e)], e.root / "compare")
    return timings


def write_doc(e: Experiment, timings: dict, command: str) -> None:
    """Replace the generated block of docs/results-synthetic.md (and copy its PNGs into docs/)."""
    shutil.copyfile(e.root / "compare" / "recall.png", DOC.parent / "results-synthetic-recall.png")
    for n in (3, 1):
        shutil.copyfile(e.root / "reports" / f"rtdgan-n{n}" / "samples.png", DOC.parent / f"results-synthetic-samples-n{n}.png")
    split = json.loads((e.root / "split.json").read_text())
    report = json.loads((e.root / "reports" / "rtdgan-n3" / "report.json").read_text())
    train_s = {k[6:-2]: v for k, v in timings.items() if k.startswith("train_")}
    table = (e.root / "compare" / "compare.md").read_text().split("\n", 2)[2].rsplit("Reports:", 1)[0]
    budget = "\n".join(f"| {name} | {f['stages'] if f['model'] == 'rtdgan' else 1} | "
                       f"{f['stages'] * (f['epochs_fade'] + f['epochs_stab'])} | {train_s.get(name, float('nan')) / 60:.1f} |"
                       for name, f in models(e).items())
    c = split["counts"]
    block = f"""{BEGIN}
## Setup

- Data: `training.synth`, {e.products} products x {e.photos} photos at {e.size} px, seed {e.seed}; split
  (test fraction {e.test_fraction}, pHash cleaning as in Sec. 4): train {c['train']['products']} products /
  {c['train']['photos']} photos, test {c['test']['products']} products / {c['test']['photos']} photos.
- Models: width {e.width}, batch {e.batch} at every stage, Adam as in Sec. 4.1 (lr 2e-4), loss weights 1.
  Every model sees the training photos {e.epochs} times: rtdGAN N = 3 trains 3 stages x (1 fade-in +
  {e.epochs // 3 - 1} stabilisation epochs), N = 2 trains 2 x (1 + {e.epochs // 2 - 1}), N = 1 trains 1 x {e.epochs}
  (stage 1 has nothing to fade in); pix2pix and PLDT train {e.epochs} epochs.
- Evaluation: `rtd eval` on the exported ONNX files, {report['test_set']['products']} test products as the
  gallery, {report['test_set']['queries']} test photos as queries; Recall@K with **{EMBEDDER}** embeddings
  (the paper used DenseNet-121, whose weights cannot be downloaded here).
- Machine: a 2-core CPU shared with other jobs, {e.threads} torch thread(s), torch {torch.__version__}.

| run | stages | epochs | training wall time (min) |
|---|---|---|---|
{budget}

{table.strip()}

![Recall@K](results-synthetic-recall.png)

The first test photos: photo | generated | ground truth | top-5 retrieved (the true product framed green).
rtdGAN N = 3, then N = 1:

![samples, rtdGAN N = 3](results-synthetic-samples-n3.png)

![samples, rtdGAN N = 1](results-synthetic-samples-n1.png)

Reproduce: `{command}` (about {sum(timings.values()) / 60:.0f} minutes of training, export and evaluation here).
{END}"""
    text = DOC.read_text() if DOC.is_file() else "# Results on the synthetic set\n\n" + BEGIN + "\n" + END + "\n"
    head, rest = text.split(BEGIN, 1)
    DOC.write_text(head + block + rest.split(END, 1)[1], encoding="utf-8")
    say(f"wrote {DOC}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="folder for data, runs, artifacts and reports")
    parser.add_argument("--products", type=int, default=Experiment.products)
    parser.add_argument("--photos", type=int, default=Experiment.photos)
    parser.add_argument("--size", type=int, default=Experiment.size)
    parser.add_argument("--width", type=int, default=Experiment.width)
    parser.add_argument("--epochs", type=int, default=Experiment.epochs, help="per model, a multiple of 6")
    parser.add_argument("--test-fraction", type=float, default=Experiment.test_fraction)
    parser.add_argument("--threads", type=int, default=Experiment.threads, help="torch CPU threads")
    parser.add_argument("--no-doc", action="store_true", help="do not touch docs/")
    args = parser.parse_args()
    if args.epochs % 6:
        parser.error("--epochs must be a multiple of 6 (N = 1, 2, 3 and the baselines share the budget)")
    e = Experiment(root=args.root, products=args.products, photos=args.photos, size=args.size, width=args.width,
                   epochs=args.epochs, test_fraction=args.test_fraction, threads=args.threads)
    torch.set_num_threads(e.threads)
    say(f"config {e}")
    timings = run(e)
    if not args.no_doc:
        write_doc(e, timings, ".venv/bin/python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
