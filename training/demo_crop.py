"""The demo's person crop (index/runtime/crop.py, `rtd fit-crop`): it cuts each query photo to its person before the
generator, for street-framed photos (the person anywhere, 40-95 % of the height). The committed crop
(models/pretrained/crop-demo-64.onnx, as `rtd fit-crop` wrote it; its card keeps the crop.json it came with) is
copied into the artifacts when its card matches `CROP_RECIPE`, else the recipe is fitted (about 30 minutes);
`--retrain-crop` reproduces it, `--no-crop` serves without one."""

from __future__ import annotations

import json
from pathlib import Path

from rtdgan.training.demo_cards import card_problem, read_card, write_card
from rtdgan.training.demo_config import CROP_RECIPE, DemoConfig, recipe
from rtdgan.training.demo_stage import remove, say, strip_part, synth_world


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
    street = synth_world(world / "street", cfg.crop_products, cfg.crop_photos_per_product, cfg, cfg.crop_street_seed,
                         "street")
    lookbook = synth_world(world / "lookbook", cfg.crop_products, cfg.crop_photos_per_product, cfg, cfg.crop_lookbook_seed,
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
        if strip_part(artifacts, CROP_JSON, CROP_ONNX):
            remove(cfg.root, "check.json")
        say("crop: none (--no-crop): every photo goes to the generator whole")
        return
    art = read_artifacts(artifacts)
    problem = "--retrain-crop" if cfg.retrain_crop else card_problem(cfg.crop_weights, recipe(cfg, CROP_RECIPE))
    card = read_card(cfg.crop_weights) if problem is None and cfg.crop_weights else None
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
            card = write_card(cfg.crop_weights, {"recipe": recipe(cfg, CROP_RECIPE), "crop_json": doc},
                              "rtd demo --build-only --retrain-crop")
            source = {"committed_sha256": card["sha256"]}
            say(f"crop: {cfg.crop_weights} ({cfg.crop_weights.stat().st_size / 1e6:.1f} MB, validation IoU "
                f"{doc['validation']['iou']:.3f})")
    write_atomic(path, (json.dumps(doc | {"demo": source}, indent=1) + "\n").encode())
    read_crop(art)  # what was written reads back (crop.onnx matches crop.json's sha256)
