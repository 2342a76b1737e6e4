"""A study folder and `rtd study create`: the photos, each method's generated image, and study.json.

Sec. 5.3: "we randomly select 70 model images that are associated with different product images in the test
split. For each model image, three clothing images are generated" by the compared methods. Here the methods are
two or more artifacts folders (`rtd export`); each image is generated once, through the artifacts' own pipeline
(index/pipeline.py, `generation_plan`: the person crop when the artifacts have one, then the generator), at the
generator's resolution S, and shown at that size (the paper: "evaluated at its original size without any
resizing").

The folder:

    STUDY/study.json          the manifest: methods (name, artifacts, generator and embedder sha256), seed, tasks,
                              items (product, photo file, one image id per method)
    STUDY/images/<id>.png     photos and generated images, every one under a random id: nothing a rater's page
                              receives (a URL, a file name, an order) tells which method made an image
    STUDY/truth/<item>.png    each item's true product image: never served (simulated raters, a reader's check)
    STUDY/responses.sqlite    the raters' rankings (`rtd study serve`, store.py)

No torch: only index/.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from rtdgan.index import configs
from rtdgan.index.configs import opt
from rtdgan.index.errors import UserError
from rtdgan.index.files import is_image_file, sha256_file, write_atomic
from rtdgan.index.images import decode_image, to_image
from rtdgan.index.lookbook import LOOKBOOK_RE
from rtdgan.index.runtime.artifacts import read_artifacts

FORMAT = 1
MANIFEST = "study.json"
IMAGES, TRUTH, RESPONSES = "images", "truth", "responses.sqlite"
# The two tasks of Sec. 5.3, with the paper's instructions.
TASKS = {"realism": "Rank the result images in the order that they look like real clothing images.",
         "similarity": "Rank the result images in the order that they reflect details from the input model image."}
ID_RE = re.compile(r"^[0-9a-f]{20}$")  # an image or item id: 10 random bytes, hex
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,39}$")


def new_id() -> str:
    """A random id for an image or an item (from `secrets`, not the study's seed: unguessable, order-free)."""
    return secrets.token_hex(10)


@dataclass(frozen=True)
class Item:
    """One photo of the study: its id, product, photo image id and one generated image id per method."""

    id: str
    product_id: str
    photo_name: str  # the source photo's file name (kept in the manifest, never served)
    photo: str  # image id
    images: dict[str, str]  # method name -> image id


@dataclass(frozen=True)
class Study:
    """A study folder's manifest, read and checked."""

    folder: Path
    doc: dict
    methods: tuple[str, ...]
    tasks: tuple[str, ...]
    items: tuple[Item, ...]

    @property
    def images(self) -> dict[str, Path]:
        """Every servable image id -> its file: the photos and the generated images, nothing else."""
        ids = [i.photo for i in self.items] + [img for i in self.items for img in i.images.values()]
        return {image: self.folder / IMAGES / f"{image}.png" for image in ids}

    def item(self, item_id: str) -> Item | None:
        return next((i for i in self.items if i.id == item_id), None)

    @property
    def responses(self) -> Path:
        return self.folder / RESPONSES


def read_study(folder: Path) -> Study:
    """The study in `folder` (its study.json), or UserError naming what is wrong."""
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{folder} is not a study folder (no {MANIFEST}); write one with `rtd study create`") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: unreadable ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise UserError(f"{path}: not a study manifest of format {FORMAT}")
    methods = tuple(m["name"] for m in doc["methods"])
    items = tuple(Item(d["id"], d["product_id"], d["photo_name"], d["photo"], dict(d["images"])) for d in doc["items"])
    bad = [i.id for i in items if set(i.images) != set(methods)]
    if bad:
        raise UserError(f"{path}: items {bad[:3]} lack an image of some method")
    study = Study(folder, doc, methods, tuple(t["key"] for t in doc["tasks"]), items)
    missing = [p.name for p in study.images.values() if not p.is_file()]
    if missing:
        raise UserError(f"{folder / IMAGES}: {len(missing)} image(s) missing, first {missing[0]}")
    return study


@dataclass(frozen=True)
class CreateConfig:
    """`rtd study create`: the photos drawn and the methods compared (Sec. 5.3)."""

    out: Path = opt(help="study folder to write (must not hold a study yet)")
    methods: tuple[str, ...] = opt(help="two or more NAME=ARTIFACTS (a folder from `rtd export`); NAME is how the "
                                        "report calls the method, raters never see it")
    data: Path | None = opt(None, "LookBook folder of the test set (PID*_CLEAN0_* photos, PID*_CLEAN1_* products)")
    split: Path | None = opt(None, "split file (`rtd data split`): its test part is the test set")
    count: int = opt(70, "photos drawn, one per product (Sec. 5.3: 70)")
    seed: int = opt(0, "seed of the draw (which products, which of their photos)")
    batch: int = opt(16, "photos per generator call")


def parse_methods(specs: tuple[str, ...]) -> dict[str, Path]:
    """NAME=ARTIFACTS pairs -> {name: folder}; UserError for a bad or repeated name, or fewer than two."""
    methods: dict[str, Path] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not NAME_RE.match(name) or not folder:
            raise UserError(f"--methods: expected NAME=ARTIFACTS (NAME: letters, digits, _ . + -), got {spec!r}")
        if name in methods:
            raise UserError(f"--methods: {name!r} is given twice")
        methods[name] = Path(folder)
    if len(methods) < 2:
        raise UserError(f"--methods: a study compares two or more methods, got {len(methods)}")
    return methods


def products_of_test_set(cfg: CreateConfig) -> dict[str, tuple[Path, list[Path]]]:
    """product id -> (product image, its photos) of the test set: the split's test part, else the LookBook folder."""
    if cfg.split is not None:
        try:
            doc = json.loads(Path(cfg.split).read_text(encoding="utf-8"))
            base = Path(doc["data"])
            base = base if base.is_absolute() else (Path(cfg.split).parent / base).resolve()
            return {r["product_id"]: (base / r["product_image"], [base / p for p in r["photos"]]) for r in doc["test"]
                    if r["photos"]}
        except FileNotFoundError:
            raise UserError(f"split file not found: {cfg.split}") from None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"{cfg.split}: not a split file written by `rtd data split` ({e!r})") from None
    if cfg.data is None or not Path(cfg.data).is_dir():
        raise UserError(f"give the test set: --split FILE or --data FOLDER (a LookBook folder), got {cfg.data}")
    products: dict[str, Path] = {}
    photos: dict[str, list[Path]] = {}
    for path in sorted(Path(cfg.data).iterdir()):
        m = LOOKBOOK_RE.match(path.name)
        if m and is_image_file(path):
            (photos.setdefault(m.group(1), []).append(path) if m.group(2) == "0"
             else products.setdefault(m.group(1), path))
    return {pid: (products[pid], photos[pid]) for pid in sorted(products) if pid in photos}


def draw(products: dict[str, tuple[Path, list[Path]]], count: int, seed: int) -> list[tuple[str, Path, Path]]:
    """`count` different products, seeded, and one photo of each: (product id, photo, product image)."""
    if count < 1:
        raise UserError(f"--count must be >= 1, got {count}")
    if count > len(products):
        raise UserError(f"--count {count}, but the test set has {len(products)} products with photos")
    rng = np.random.default_rng(seed)
    ids = sorted(products)
    picked = sorted(rng.choice(len(ids), size=count, replace=False).tolist())
    out = []
    for i in picked:
        image, photos = products[ids[i]]
        out.append((ids[i], photos[int(rng.integers(len(photos)))], image))
    return out


def _save_png(img: Image.Image, path: Path) -> None:
    """A PNG without metadata (no text chunks: nothing but pixels reaches a rater)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img.convert("RGB").save(path, format="PNG", optimize=False)


def generate_all(artifacts: Path, photos: list[Path], batch: int) -> tuple[list[Image.Image], dict]:
    """Each photo's generated image through the artifacts' pipeline (crop if any -> generator), and the
    method's record for the manifest (architecture, size, sha256 of its graphs)."""
    from rtdgan.index.pipeline import Pipeline

    pipeline = Pipeline.open(artifacts, head=False)
    out: list[Image.Image] = []
    for start in range(0, len(photos), batch):
        prepared = [pipeline.prepare(p) for p in photos[start:start + batch]]
        (_, generated), _ = pipeline.run(pipeline.generation_plan(pipeline.batch(prepared)))
        out += [to_image(g) for g in np.asarray(generated)]  # (3, S, S) in [-1, 1] -> S x S RGB
    info = pipeline.artifacts
    generator = dict(info.model.get("generator", {}))
    record = {"artifacts": str(Path(artifacts).resolve()), "architecture": generator.get("architecture"),
              "stages": generator.get("stages"), "size": info.size,
              "generator_sha256": sha256_file(info.folder / "generator.onnx"),
              "embedder_sha256": info.embedder_sha256,
              "crop": pipeline.cropper is not None}
    return out, record


def create_study(cfg: CreateConfig) -> Study:
    """Draw the photos, generate every method's image once, write the study folder; returns it read back."""
    methods = parse_methods(cfg.methods)
    out = Path(cfg.out)
    if (out / MANIFEST).exists():
        raise UserError(f"{out} holds a study already (its {MANIFEST}); give another --out")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty; give a new or empty folder as --out")
    if cfg.batch < 1:
        raise UserError(f"--batch must be >= 1, got {cfg.batch}")
    for artifacts in methods.values():
        read_artifacts(artifacts)  # every folder checked before anything is written
    drawn = draw(products_of_test_set(cfg), cfg.count, cfg.seed)
    try:
        return _write_study(cfg, out, methods, drawn)
    except BaseException:
        for folder in (IMAGES, TRUTH):  # no half-written study stays behind
            shutil.rmtree(out / folder, ignore_errors=True)
        raise


def _write_study(cfg: CreateConfig, out: Path, methods: dict[str, Path], drawn: list[tuple[str, Path, Path]]) -> Study:
    """Write the drawn photos, every method's images and the manifest (last) into `out`."""
    photos = [photo for _, photo, _ in drawn]
    items = [{"id": new_id(), "product_id": pid, "photo_name": photo.name, "photo": new_id(), "images": {}}
             for pid, photo, _ in drawn]
    for item, (_, photo, product) in zip(items, drawn, strict=True):
        _save_png(decode_image(photo), out / IMAGES / f"{item['photo']}.png")
        _save_png(decode_image(product), out / TRUTH / f"{item['id']}.png")
    records = []
    for name, artifacts in methods.items():
        print(f"rtd study create: generating {len(photos)} images with {name} ({artifacts})", file=sys.stderr)
        generated, record = generate_all(artifacts, photos, cfg.batch)
        records.append({"name": name, **record})
        for item, img in zip(items, generated, strict=True):
            item["images"][name] = image_id = new_id()
            _save_png(img, out / IMAGES / f"{image_id}.png")
    doc = {"format": FORMAT, "written_by": "rtd study create", "seed": cfg.seed, "count": cfg.count,
           "test_set": {"split": str(cfg.split) if cfg.split else None, "data": str(cfg.data) if cfg.data else None},
           "tasks": [{"key": k, "prompt": p} for k, p in TASKS.items()], "methods": records, "items": items}
    write_atomic(out / MANIFEST, (json.dumps(doc, indent=1) + "\n").encode("utf-8"))
    return read_study(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `rtd study create` flags: CreateConfig's fields."""
    configs.add_arguments(parser, CreateConfig)


def run(args: argparse.Namespace) -> int:
    """Write the study folder; print its summary as JSON."""
    cfg = configs.job_config(CreateConfig, args, "study create")
    study = create_study(cfg)
    print(json.dumps({"study": str(study.folder), "items": len(study.items), "methods": list(study.methods),
                      "tasks": list(study.tasks), "serve": f"rtd study serve {study.folder}"}, indent=1))
    return 0
