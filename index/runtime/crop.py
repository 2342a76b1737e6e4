"""The person crop before the generator (for street-framed photos) at run time: crop.json and crop.onnx. No torch.

The generator was trained on LookBook framing (one full-length person filling the photo, the paper's data,
Sec. 4); a street photo shows its person at 40-95 % of the height, anywhere. `rtd fit-crop`
(training/crop.py) trains a tiny person-box regressor on synthetic photos whose person boxes the synthesizer
recorded (boxes.csv) and writes, beside the artifacts' generator.onnx (in the current version folder, so a
later `rtd export` starts without it):

  crop.onnx  `image` (B, 3, N, N) in [-1, 1] (the photo letterboxed to N px, the shared preprocessing) ->
             `box` (B, 4): the person's box (x0, y0, x1, y1) in [0, 1] of that letterboxed square;
  crop.json  format, input size N, the graph's sha256, `fill` (the person's share of the crop's side; 0.875 =
             LookBook framing), the training data, validation IoU, parity.

At query time (index/pipeline.py, the "crop" stage) each decoded photo, reduced to about CROP_SOURCE_SIDE px
on its long side (memory stays bounded whatever the upload's size), is letterboxed to N, its box predicted,
mapped back to the photo, squared (`square_box`: side = the box's longer side / crop.json's `fill`; 0.875 is
LookBook's framing, `rtd fit-crop --fill`'s default) and cut from the reduced photo, which then goes through the shared preprocessing to S as before. Artifacts
without crop.json behave as before.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from rtdgan.index.errors import ImageError, UserError
from rtdgan.index.files import sha256_file
from rtdgan.index.images import decode_image, letterbox, preprocess_many, to_array, to_image
from rtdgan.index.runtime.artifacts import Artifacts
from rtdgan.index.runtime.onnx import OnnxModel

CROP_FORMAT = 1
CROP_JSON, CROP_ONNX = "crop.json", "crop.onnx"
LOOKBOOK_FILL = 0.875  # the person's share of the side in a LookBook-framed photo (80-95 %: synth_scene.FRAMINGS)
# A query photo is decoded reduced (index/images.py `decode_image(reduce_to=...)`) to keep its long side at
# least this many pixels (below twice that): the pixels the crop is cut from.
CROP_SOURCE_SIDE = 256


def square_box(box: Sequence[float], width: float, height: float,
               fill: float = LOOKBOOK_FILL) -> tuple[float, float, float, float]:
    """The square (left, top, right, bottom) that frames a person box (x0, y0, x1, y1, pixels) as LookBook
    does: side = the box's longer side / `fill`, centred on the box, at most the image's shorter side, and
    moved inside the image."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = min(float(width), float(height), max(x1 - x0, y1 - y0, 1.0) / fill)
    cx = min(max((x0 + x1) / 2, side / 2), width - side / 2)
    cy = min(max((y0 + y1) / 2, side / 2), height - side / 2)
    return cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2


def unletterbox(box: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
    """A box in [0, 1] of `letterbox`'s square (the image centred on white) -> pixels of the width x height image."""
    side = max(width, height)
    dx, dy = (side - width) / 2, (side - height) / 2
    x0, y0, x1, y1 = (float(v) * side for v in box)
    return (min(max(x0 - dx, 0.0), width), min(max(y0 - dy, 0.0), height),
            min(max(x1 - dx, 0.0), width), min(max(y1 - dy, 0.0), height))


@dataclass(frozen=True)
class CropInfo:
    """An artifacts folder's crop.json whose crop.onnx matches it."""

    folder: Path
    doc: dict
    sha256: str  # of crop.json: names this crop (it holds crop.onnx's sha256 and the fill)

    @property
    def input_size(self) -> int:
        return int(self.doc["input_size"])

    @property
    def fill(self) -> float:
        """The person's share of the crop's side (`square_box`)."""
        return float(self.doc.get("fill", LOOKBOOK_FILL))

    def describe(self) -> dict:
        """What /health/ready shows and a head records: identity, input size, fill, validation IoU."""
        return {"sha256": self.sha256, "input_size": self.input_size, "fill": self.fill,
                "validation_iou": self.doc.get("validation", {}).get("iou")}


def has_crop(artifacts: Artifacts) -> bool:
    return (artifacts.folder / CROP_JSON).is_file()


def read_crop(artifacts: Artifacts) -> CropInfo:
    """The artifacts' crop.json checked against crop.onnx; UserError (one line) when it does not match."""
    folder = artifacts.folder
    path = folder / CROP_JSON
    if not path.is_file():
        raise UserError(f"{folder} has no {CROP_JSON}: train a person crop with `rtd fit-crop`")
    try:
        raw = path.read_bytes()
        doc = json.loads(raw.decode("utf-8"))
        fmt, size, digest = doc["format_version"], int(doc["input_size"]), doc["onnx_sha256"]
        fill = float(doc.get("fill", LOOKBOOK_FILL))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path}: not a crop.json written by `rtd fit-crop` ({type(e).__name__}: {e})") from e
    if fmt != CROP_FORMAT:
        raise UserError(f"{path}: format {fmt}, this code reads {CROP_FORMAT}; re-run `rtd fit-crop`")
    if size < 8 or not 0.0 < fill <= 2.0:
        raise UserError(f"{path}: input size {size} (at least 8) or fill {fill} (in (0, 2]) out of range")
    onnx_path = folder / CROP_ONNX
    if not onnx_path.is_file():
        raise UserError(f"{folder} has {CROP_JSON} but no {CROP_ONNX}")
    if sha256_file(onnx_path) != digest:
        raise UserError(f"{onnx_path} does not match {CROP_JSON} (sha256): a partial copy or another fit")
    return CropInfo(folder, doc, hashlib.sha256(raw).hexdigest())


class Cropper:
    """crop.onnx over decoded photos: predict each person's box, square it, cut it out."""

    def __init__(self, info: CropInfo, providers: Sequence[str] | None = None, threads: int | None = None) -> None:
        self.info = info
        self.model = OnnxModel(info.folder / CROP_ONNX, providers, threads)
        if self.model.size is not None and self.model.size != info.input_size:
            raise UserError(f"{CROP_ONNX} takes {self.model.size} px, {CROP_JSON} says {info.input_size}")

    def boxes(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(B, 4) person boxes (x0, y0, x1, y1) in [0, 1] of each image's letterboxed square, one call."""
        n = self.info.input_size
        return self.model(np.stack([to_array(letterbox(img, n)) for img in images]))

    def squares(self, images: Sequence[Image.Image]) -> list[tuple[int, int, int, int]]:
        """Per image the square (left, top, right, bottom), whole pixels inside it, that LookBook-frames its person."""
        out = []
        for img, box in zip(images, self.boxes(images), strict=True):
            w, h = img.size
            left, top, right, bottom = square_box(unletterbox(box, w, h), w, h, self.info.fill)
            side = max(1, min(round(right - left), w, h))
            x, y = min(max(round(left), 0), w - side), min(max(round(top), 0), h - side)
            out.append((x, y, x + side, y + side))
        return out

    def __call__(self, images: Sequence[Image.Image] | np.ndarray, size: int) -> np.ndarray:
        """Decoded RGB photos (or a (B, 3, H, W) batch in [-1, 1]) -> (B, 3, size, size) crops in [-1, 1]."""
        if isinstance(images, np.ndarray):
            images = [to_image(a) for a in images]
        return np.stack([to_array(letterbox(img.crop(square), size))
                         for img, square in zip(images, self.squares(images), strict=True)])


def prepare_photos(pool: Executor, paths: Sequence[Path], size: int,
                   crop: bool) -> list[np.ndarray | Image.Image | str]:
    """Query photos from files, read in the pool's threads, as the pipeline's plan takes them (index/pipeline.py
    `prepare`): (3, S, S) each, or with a person crop (`crop`) the photo decoded at about CROP_SOURCE_SIDE px
    (the crop stage cuts it); or why a file could not be read ("name: reason"), so a batch job skips it."""
    if not crop:
        return preprocess_many(pool, paths, size)  # type: ignore[return-value]

    def decode(path: Path) -> Image.Image | str:
        try:
            return decode_image(path, reduce_to=CROP_SOURCE_SIDE)
        except ImageError as e:
            return f"{Path(path).name}: {e.reason}"
    return list(pool.map(decode, paths))


def query_photos(pool: Executor, paths: Sequence[Path], size: int, cropper: Cropper | None) -> list[np.ndarray | str]:
    """Query photos from files as the pipeline's generate stage takes them: (3, S, S) each, cut to the person
    first by `cropper` when there is one (from the photo decoded at about CROP_SOURCE_SIDE px, as `/search` does),
    or why a file could not be read ("name: reason"), so a batch job (`rtd eval`) skips it."""
    decoded = prepare_photos(pool, paths, size, cropper is not None)
    if cropper is None:
        return decoded  # type: ignore[return-value]
    good = [d for d in decoded if not isinstance(d, str)]
    crops = iter(cropper(good, size) if good else ())
    return [d if isinstance(d, str) else next(crops) for d in decoded]
