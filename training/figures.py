"""Figures 3 and 6 of the paper for the synthetic experiment (docs/results-synthetic.md), from committed weights.

Figure 3 (Sec. 5.2): per row a photo of the held-out shop and what each of the five models of the experiment
generates from it — (a) input, (b) rtdGAN N = 3, (c) rtdGAN N = 1, (d) pix2pix, (e) PLDT — and (f) the ground
truth product image. Figure 6 (Sec. 6): the N = 3 generator's image at each stage, [1/3], [2/3], [3/3].

The generators are the experiment's committed ones (bench/experiments/results_synthetic.py): rtdGAN N = 3 is the
demo generator models/pretrained/rtdgan-demo-64.pt, the others the finished runs carried in
docs/results-synthetic/carry/NAME.pt. The photos are products of the experiment's held-out shop (64 px,
LookBook framing, seed 6500; none was trained on), rendered again here product by product (the synthetic world
draws each product from its own seed, so product i is the same whether 1 or 1,000 are drawn), picked by `seed`.
Each photo is preprocessed as the pipeline does (index/images.py) and run through the generator in PyTorch.

Figure 6's caveat: the paper shows the model after each stage's training finished; only the finished N = 3
generator is committed, so [i/3] here is that final network's stage-i output (its first M - N + i decoder
blocks, 16, 32 and 64 px, shown enlarged without smoothing), not a checkpoint taken when stage i ended.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rtdgan.index.images import preprocess, to_image
from rtdgan.index.lookbook import LOOKBOOK_RE

# The synthetic experiment's held-out shop (bench/experiments/results_synthetic.py, Experiment).
SHOP_PRODUCTS, SHOP_PHOTOS, SHOP_SEED, SIZE = 1000, 2, 6500, 64
FIGURE3 = (("rtdgan-n3", "(b) rtdGAN N = 3"), ("rtdgan-n1", "(c) rtdGAN N = 1"), ("pix2pix", "(d) pix2pix"),
           ("pldt", "(e) PLDT"))


@dataclass(frozen=True)
class Sample:
    """One row: the product id, its photo and its product image (both S x S RGB)."""

    product_id: str
    photo: Image.Image
    product: Image.Image


def shop_samples(rows: int, seed: int, work: Path) -> list[Sample]:
    """`rows` products of the held-out shop (picked by `seed`), each with its first photo, rendered into `work`."""
    from rtdgan.training.synth import SynthConfig, write_product

    picked = sorted(np.random.default_rng(seed).choice(SHOP_PRODUCTS, size=rows, replace=False).tolist())
    cfg = SynthConfig(out=work, products=SHOP_PRODUCTS, photos_per_product=SHOP_PHOTOS, size=SIZE, seed=SHOP_SEED,
                      framing="lookbook")
    work.mkdir(parents=True, exist_ok=True)
    for index in picked:
        write_product(cfg, index)
    samples = []
    for index in picked:
        pid = f"{index:06d}"
        files = sorted(p for p in work.iterdir() if p.name.startswith(f"PID{pid}_"))
        product = next(p for p in files if LOOKBOOK_RE.match(p.name).group(2) == "1")  # type: ignore[union-attr]
        photo = next(p for p in files if LOOKBOOK_RE.match(p.name).group(2) == "0")  # type: ignore[union-attr]
        samples.append(Sample(pid, Image.open(photo).convert("RGB"), Image.open(product).convert("RGB")))
    return samples


def load_final(weights: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(the finished generator as `rtd export` exports it: S x S out, the whole network it wraps) of a weights file."""
    from rtdgan.training.demo_generator import weights_run
    from rtdgan.training.export import load_generator

    with tempfile.TemporaryDirectory() as run:
        gen = load_generator(weights_run(weights, Path(run)))
    inner = gen.module.generator  # the stage's network (rtdGAN: FixedStage over the whole generator)
    return gen.module, getattr(inner, "generator", inner)


@torch.no_grad()
def generate(module: torch.nn.Module, photos: list[Image.Image], **kwargs: object) -> list[Image.Image]:
    """Each photo, preprocessed as the pipeline does, through `module` (keyword arguments passed on)."""
    batch = torch.from_numpy(np.stack([preprocess(p, SIZE) for p in photos]))  # (B, 3, S, S) in [-1, 1]
    return [to_image(out.numpy()) for out in module(batch, **kwargs)]


def image_grid(columns: list[str], rows: list[list[Image.Image]], path: Path, cell: int = 128) -> Path:
    """A grid of images under column titles, each cell enlarged to `cell` px without smoothing; written as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dpi = 100
    fig = Figure(figsize=(len(columns) * (cell + 8) / dpi, (len(rows) * (cell + 8) + 40) / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), len(columns), squeeze=False)
    for r, images in enumerate(rows):
        for c, img in enumerate(images):
            ax = axes[r, c]
            ax.imshow(np.asarray(img.resize((cell, cell), Image.NEAREST)), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=9)
    fig.subplots_adjust(left=0.005, right=0.995, bottom=0.005, top=1 - 34 / (len(rows) * (cell + 8) + 40),
                        wspace=0.04, hspace=0.04)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": None})
    return path


def draw_figures(out: Path, weights: dict[str, Path], rows: int = 6, seed: int = 0) -> list[Path]:
    """Figure 3 (out/figure3.png) and Figure 6 (out/figure6.png) from the generators' weights files."""
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as work:
        samples = shop_samples(rows, seed, Path(work))
    photos = [s.photo for s in samples]
    outputs = {name: generate(load_final(weights[name])[0], photos) for name, _ in FIGURE3}
    grid3 = [[s.photo, *(outputs[name][i] for name, _ in FIGURE3), s.product] for i, s in enumerate(samples)]
    figure3 = image_grid(["(a) input", *(label for _, label in FIGURE3), "(f) ground truth"], grid3,
                         out / "figure3.png")
    _, n3 = load_final(weights["rtdgan-n3"])
    stages = int(n3.stages)
    by_stage = [generate(n3, photos, stage=i) for i in range(1, stages + 1)]  # 16, 32, 64 px
    grid6 = [[s.photo, *(by_stage[k][i] for k in range(stages)), s.product] for i, s in enumerate(samples)]
    sides = [by_stage[k][0].size[0] for k in range(stages)]
    figure6 = image_grid(["(a) input", *(f"({'bcdefg'[k]}) [{k + 1}/{stages}], {sides[k]} px" for k in range(stages)),
                          f"({'bcdefgh'[stages]}) ground truth"], grid6, out / "figure6.png")
    return [figure3, figure6]
