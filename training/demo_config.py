"""`DemoConfig`: `rtd demo`'s flags, and the recipes of the demo's committed weights.

The demo is a shop whose catalog the generator has never seen: its products are drawn with their own seed, so
every street photo in it is held out. Three pieces of it come committed (models/pretrained/), each with a card
beside it (training/demo_cards.py), each reproduced from its recipe here by a `--retrain*` flag:

- the generator (rtdgan-demo-64.pt, under 15 MB; `RECIPE`): a separate synthetic training world of thousands of
  products, about 1.5 CPU hours of rough-to-detail training (training/demo_generator.py);
- the person crop (crop-demo-64.onnx, 2 MB, as `rtd fit-crop` wrote it; `CROP_RECIPE`): a street- and a
  LookBook-framed world of 2,000 products x 4 photos with the synthesizer's person boxes, then `rtd fit-crop`
  (training/demo_crop.py);
- the fused retrieval head (head-demo-64.pt, 4 MB; `HEAD_RECIPE`): its own training world of 10,000
  LookBook-framed products (seed 3300) and 2,000 street-framed ones (seed 3400, photos at 256 px), 4 photos each,
  every photo cut by the person crop, then `rtd fit-head`'s defaults (training/demo_head.py).

A weights file is used only for the exact recipe its card records; otherwise the build trains or fits the recipe
itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from rtdgan.index.configs import opt
from rtdgan.index.errors import UserError

PRETRAINED = Path(__file__).resolve().parent.parent / "models" / "pretrained" / "rtdgan-demo-64.pt"
PRETRAINED_HEAD = PRETRAINED.with_name("head-demo-64.pt")
PRETRAINED_TUNED = PRETRAINED.with_name("tuned-demo-64.pt")
PRETRAINED_CROP = PRETRAINED.with_name("crop-demo-64.onnx")  # crop.onnx as `rtd fit-crop` wrote it; its card beside it


@dataclass(frozen=True)
class DemoConfig:
    """`rtd demo`: the fields with cli=True are its flags (index/configs.py derives them); the recipes are not."""

    root: Path = opt(Path("demo"), "folder for everything the demo builds")
    # The shop: a synthetic catalog with its own seed, so none of its products was trained on.
    products: int = opt(300, "products in the shop")
    photos_per_product: int = opt(4, cli=False)
    size: int = opt(64, cli=False)  # S: 64 px trains on a 2-core CPU
    framing: str = opt("lookbook", cli=False)  # one full-length person, centred, as in LookBook's photos (docs/design-choices.md)
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
    lambda_con: float = opt(10.0, cli=False)  # Eq. 4; the paper uses 1 (docs/design-choices.md: content first on CPUs)
    lambda_lap: float = opt(10.0, cli=False)
    # The comparison scale (docs/design-choices.md): full resolution with the learned head. Without a head
    # the frozen features do best 2 levels down (16 px; chosen on a validation shop, seed 2000).
    embed_level: int = opt(0, "compare images L Gaussian pyramid levels down (0: full resolution, the paper's "
                           "protocol, where the retrieval head is fitted; 2: 16 px, where the frozen embedder does "
                           "best); another level than the head's serves without the head; a change re-exports the "
                           "artifacts and rebuilds the index", metavar="L")
    # Street framing: the shop's products also photographed street-style (the person anywhere, 40-95 %
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
    # The fine-tuned embedder (training/finetune.py): committed weights when their card matches, else fitted from
    # TUNE_RECIPE (the head's world and split, then `rtd fit-head --tune-blocks`; settings chosen on its validation
    # part, docs/training.md "Fine-tuning the embedder").
    tune: bool = opt(True, "serve the fine-tuned embedder and its head (EfficientNet-Lite0's last stages trained with "
                     "the fused head; committed, `--retrain-tune` reproduces them); --no-tune: the fused head on the "
                     "frozen ImageNet embedder")
    tune_weights: Path | None = opt(PRETRAINED_TUNED, cli=False)  # None: always fit (the tests' tiny demos)
    retrain_tune: bool = opt(False, "reproduce the committed fine-tuned embedder and head: fit their recipe (the "
                             "head's training world, cached activations, `rtd fit-head --tune-blocks`; about an hour "
                             "of CPU) and rewrite models/pretrained/tuned-demo-64.pt and its card")
    tune_blocks: int = opt(3, cli=False)  # the 1x1 feature conv and the last two MBConv blocks
    tune_input_size: int = opt(224, cli=False)
    tune_lr: float = opt(1e-4, cli=False)
    tune_head_lr: float = opt(1e-4, cli=False)
    tune_epochs: int = opt(10, cli=False)
    tune_batch: int = opt(128, cli=False)
    tune_refit: bool = opt(False, cli=False)  # the validation products stay out: the early stopping's epoch is kept
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
TUNE_RECIPE = HEAD_RECIPE + ("tune_blocks", "tune_input_size", "tune_lr", "tune_head_lr", "tune_epochs", "tune_batch",
                             "tune_refit")
CROP_RECIPE = ("size", "crop_products", "crop_photos_per_product", "crop_street_seed", "crop_lookbook_seed", "crop_input",
               "crop_width", "crop_epochs", "crop_fill", "crop_seed")


def serves_tuned(cfg: DemoConfig) -> bool:
    """The demo serves a fine-tuned embedder: asked for (`--tune`, `--retrain-tune`) and the head is served (at
    its embed level, training/demo_head.py)."""
    return (cfg.tune or cfg.retrain_tune) and cfg.head and cfg.embed_level == cfg.head_embed_level


def recipe(cfg: DemoConfig, names: tuple[str, ...] = RECIPE) -> dict:
    """What decides the generator's weights (or, with HEAD_RECIPE, the head's): a weights file is only used for
    this exact recipe."""
    return {name: list(v) if isinstance(v, tuple) else v for name, v in asdict(cfg).items() if name in names}
