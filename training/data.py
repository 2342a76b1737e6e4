"""Paired data on disk: the LookBook layout, a pairs manifest, and split files. No torch here.

LookBook (Yoo et al. 2016) is one flat folder of `PID%06d_CLEAN1_IID%06d.jpg` (the product image) and
`PID%06d_CLEAN0_IID%06d.jpg` (photos of people wearing it).  A pairs manifest is a CSV
`product_id,product_image,photo_image[,category]` with paths relative to the manifest, one row per photo.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rtdgan.index.errors import UserError
from rtdgan.index.files import PRODUCTS_CSV, read_products_csv, write_atomic
from rtdgan.index.lookbook import LOOKBOOK_RE

MANIFEST_COLUMNS = ("product_id", "product_image", "photo_image")
SPLIT_FORMAT = 1
WORLD_KEYS = ("products", "photos_per_product", "size", "seed", "framing")  # a synthetic world's recipe


@dataclass(frozen=True)
class ProductRecord:
    """One product: its catalog image and the street photos of people wearing it."""

    product_id: str
    product_image: Path
    photos: tuple[Path, ...]
    category: str | None = None


@dataclass
class DatasetScan:
    """What a data folder holds, and what was skipped with the reason."""

    records: list[ProductRecord]
    skipped: list[str] = field(default_factory=list)  # one human-readable line per skipped product/file
    ignored_files: int = 0  # files that are not part of the layout (ignored silently, counted)

    @property
    def photo_count(self) -> int:
        return sum(len(r.photos) for r in self.records)


def read_categories(products_csv: Path) -> dict[str, str]:
    """product_id -> category from a `products.csv` beside a LookBook folder (the synthetic set writes one)."""
    return {pid: row["category"] for pid, row in read_products_csv(products_csv).items()
            if row.get("category") is not None}


def scan_lookbook(folder: Path) -> DatasetScan:
    """Read the LookBook layout; a product with no photo or no product image is reported and skipped."""
    products: dict[str, list[Path]] = defaultdict(list)
    photos: dict[str, list[Path]] = defaultdict(list)
    ignored = 0
    for path in sorted(folder.iterdir()):
        m = LOOKBOOK_RE.match(path.name)
        if not m or not path.is_file():
            ignored += 1
            continue
        pid, clean = m.group(1), m.group(2)
        (products if clean == "1" else photos)[pid].append(path)
    categories = read_categories(folder / PRODUCTS_CSV)
    scan = DatasetScan(records=[], ignored_files=ignored)
    for pid in sorted(set(products) | set(photos)):
        if not products.get(pid):
            scan.skipped.append(f"product {pid}: {len(photos[pid])} photo(s) but no product image (CLEAN1)")
            continue
        if not photos.get(pid):
            scan.skipped.append(f"product {pid}: product image but no photo (CLEAN0)")
            continue
        # LookBook has one CLEAN1 image per product; if there are several, the first is the catalog image.
        scan.records.append(ProductRecord(pid, products[pid][0], tuple(photos[pid]), categories.get(pid)))
    return scan


def scan_manifest(manifest: Path) -> DatasetScan:
    """Read a pairs manifest CSV (paths relative to the manifest's folder)."""
    base = manifest.parent
    try:
        with manifest.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise UserError(f"{manifest}: manifest lacks column(s) {', '.join(missing)} "
                                f"(expected {','.join(MANIFEST_COLUMNS)}[,category])")
            rows = list(reader)
    except UnicodeDecodeError as e:
        raise UserError(f"{manifest}: not a UTF-8 CSV file ({e.reason})") from e
    product_image: dict[str, Path] = {}
    photos: dict[str, list[Path]] = defaultdict(list)
    category: dict[str, str | None] = {}
    scan = DatasetScan(records=[])
    for line, row in enumerate(rows, start=2):
        pid = (row["product_id"] or "").strip()
        if not pid or not row["product_image"] or not row["photo_image"]:
            scan.skipped.append(f"{manifest.name}:{line}: empty product_id, product_image or photo_image")
            continue
        prod, photo = base / row["product_image"].strip(), base / row["photo_image"].strip()
        if pid in product_image and product_image[pid] != prod:
            scan.skipped.append(f"{manifest.name}:{line}: product {pid} has a second product image {prod.name}; kept the first")
        product_image.setdefault(pid, prod)
        category.setdefault(pid, (row.get("category") or "").strip() or None)
        for p, what in ((prod, "product image"), (photo, "photo")):
            if not p.is_file():
                scan.skipped.append(f"{manifest.name}:{line}: {what} not found: {p}")
                break
        else:
            if photo not in photos[pid]:
                photos[pid].append(photo)
    for pid, prod in product_image.items():
        if photos.get(pid):
            scan.records.append(ProductRecord(pid, prod, tuple(photos[pid]), category[pid]))
        elif prod.is_file():
            scan.skipped.append(f"product {pid}: no usable photo")
    return scan


def synthetic_world(data: str | Path | None) -> dict | None:
    """The recipe of a synthetic world (`rtd data synth`'s synth.json: products, photos per product, size, seed,
    framing) when `data` is one here, else None: what a record of where a model came from keeps of it."""
    marker = Path(data) / "synth.json" if data else None
    if marker is None or not marker.is_file():
        return None
    try:
        doc = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return {k: doc.get(k) for k in WORLD_KEYS} if isinstance(doc, dict) else None


def load_records(data: Path) -> DatasetScan:
    """Scan a data set: a LookBook folder, a manifest CSV, or a folder holding `pairs.csv`."""
    data = Path(data)
    if not data.exists():
        raise UserError(f"data not found: {data}")
    if data.is_file():
        if data.suffix.lower() != ".csv":
            raise UserError(f"{data}: expected a LookBook folder or a pairs manifest (.csv)")
        scan = scan_manifest(data)
    elif (data / "pairs.csv").is_file():
        scan = scan_manifest(data / "pairs.csv")
    else:
        scan = scan_lookbook(data)
    if not scan.records:
        why = "; ".join(scan.skipped[:3]) or (
            f"no PID%06d_CLEAN1_IID%06d.jpg / PID%06d_CLEAN0_IID%06d.jpg files "
            f"({scan.ignored_files} other file(s)) and no pairs.csv")
        raise UserError(f"{data}: no usable photo/product pairs: {why}")
    return scan


@dataclass(frozen=True)
class Split:
    """A train/test split by product; paths are absolute."""

    train: list[ProductRecord]
    test: list[ProductRecord]
    info: dict  # the split file's header: seed, fractions, counts, what was dropped

    @property
    def data(self) -> Path:
        return Path(self.info["data"])


def _record_to_json(r: ProductRecord, base: Path) -> dict:
    def rel(p: Path) -> str:
        try:
            return str(Path(p).resolve().relative_to(base))
        except ValueError:
            return str(p)
    return {"product_id": r.product_id, "category": r.category, "product_image": rel(r.product_image),
            "photos": [rel(p) for p in r.photos]}


def _record_from_json(d: dict, base: Path) -> ProductRecord:
    return ProductRecord(d["product_id"], base / d["product_image"], tuple(base / p for p in d["photos"]),
                         d.get("category"))


def write_split(path: Path, info: dict, train: list[ProductRecord], test: list[ProductRecord]) -> None:
    """Write a split file (JSON) atomically; paths are stored relative to the data folder."""
    base = Path(info["data"]).resolve()
    doc = {"format": SPLIT_FORMAT, **info,
           "train": [_record_to_json(r, base) for r in train],
           "test": [_record_to_json(r, base) for r in test]}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(doc, indent=1) + "\n").encode("utf-8"))


def load_split(path: Path) -> Split:
    """Read a split file written by `rtd data split`."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise UserError(f"split file not found: {path}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a split file (invalid JSON: {e})") from e
    if not isinstance(doc, dict) or doc.get("format") != SPLIT_FORMAT or "train" not in doc:
        raise UserError(f"{path}: not a split file written by `rtd data split` (format {SPLIT_FORMAT})")
    base = Path(doc["data"])
    if not base.is_absolute():
        base = (path.parent / base).resolve()
    info = {k: v for k, v in doc.items() if k not in ("train", "test")} | {"data": str(base)}
    return Split([_record_from_json(d, base) for d in doc["train"]],
                 [_record_from_json(d, base) for d in doc["test"]], info)


def write_pairs_manifest(out: Path, worlds: Sequence[tuple[str, Path, Path | None]]) -> Path:
    """Join data sets into one pairs manifest, out/pairs.csv (written atomically; paths relative to `out`).

    `worlds`: (prefix, data, products) per data set: every photo of every product of `data`, the product id
    prefixed (two synthetic worlds number their products alike), the product image taken from the same
    product of `products` when given (e.g. the same synthetic world rendered at the catalog's size: street
    photos at 256 px, product images at 64 px), else from `data`. Returns the manifest's path."""
    out = Path(out)
    rows = []
    for prefix, data, products in worlds:
        images = ({r.product_id: r.product_image for r in load_records(products).records}
                  if products is not None else None)
        for r in load_records(data).records:
            image = r.product_image if images is None else images.get(r.product_id)
            if image is None:
                raise UserError(f"{products} has no product {r.product_id} of {data}")
            for photo in r.photos:
                rows.append([f"{prefix}{r.product_id}", os.path.relpath(image, out), os.path.relpath(photo, out),
                             r.category or ""])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*MANIFEST_COLUMNS, "category"])
    writer.writerows(rows)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "pairs.csv", buffer.getvalue().encode("utf-8"))
    return out / "pairs.csv"
