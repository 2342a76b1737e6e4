"""The synthetic street-to-shop set: layout, products.csv, determinism, coverage, what the images show."""

from __future__ import annotations

import csv
import itertools
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from rtdgan.index.errors import UserError
from rtdgan.training.data import load_records
from rtdgan.training.sheet import contact_sheet
from rtdgan.training.synth import (
    BOXES_CSV,
    CATEGORIES,
    COLOURS,
    FRAMINGS,
    MARKER,
    PATTERNS,
    Pose,
    SynthConfig,
    _apply,
    figure_transform,
    flat_pose,
    garment_pieces,
    make_garment,
    place,
    product_frame,
    synthesize,
)

NAME = re.compile(r"^PID(\d{6})_CLEAN([01])_IID(\d{6})\.jpg$")


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "products.csv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)  # (H, W, 3)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[SynthConfig, dict]:
    """7 products x 2 photos at 32 px."""
    cfg = SynthConfig(out=tmp_path_factory.mktemp("synth") / "small", products=7, photos_per_product=2, size=32, seed=3)
    return cfg, synthesize(cfg)


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """84 products x 1 photo at 32 px: every category x pattern pair twice, and (84 > 6 x 12) shared colours."""
    out = tmp_path_factory.mktemp("synth") / "many"
    synthesize(SynthConfig(out=out, products=84, photos_per_product=1, size=32, seed=11))
    return out


def test_layout_names_and_products_csv(small: tuple[SynthConfig, dict]) -> None:
    cfg, report = small
    assert report["products"] == 7 and report["photos"] == 14 and report["seconds"] > 0
    names = sorted(p.name for p in cfg.out.iterdir())
    assert set(names) - {n for n in names if NAME.match(n)} == {"products.csv", BOXES_CSV, MARKER}
    images = [NAME.match(n).groups() for n in names if NAME.match(n)]  # type: ignore[union-attr]
    assert len(images) == 7 * 3
    assert len({iid for _, _, iid in images}) == len(images), "IIDs must be unique across the folder"
    per_product = Counter((pid, clean) for pid, clean, _ in images)
    assert per_product == {(f"{i:06d}", c): (1 if c == "1" else 2) for i in range(7) for c in "01"}
    for n in names[:3]:
        with Image.open(cfg.out / n) as img:
            assert img.format == "JPEG" and img.mode == "RGB" and img.size == (32, 32)
    table = rows(cfg.out)
    assert list(table[0]) == ["product_id", "category", "colour", "pattern"]
    assert [r["product_id"] for r in table] == [f"{i:06d}" for i in range(7)]
    assert all(r["category"] in CATEGORIES and r["colour"] in COLOURS and r["pattern"] in PATTERNS for r in table)
    assert (cfg.out / "products.csv").read_text().splitlines()[1].startswith("000000,")


def test_the_training_side_reads_it(small: tuple[SynthConfig, dict]) -> None:
    cfg, _ = small
    scan = load_records(cfg.out)
    assert len(scan.records) == 7 and scan.photo_count == 14 and not scan.skipped
    assert [r.category for r in scan.records] == [r["category"] for r in rows(cfg.out)]


def test_same_seed_gives_identical_bytes_for_any_worker_count(small: tuple[SynthConfig, dict], tmp_path: Path) -> None:
    cfg, _ = small
    again = replace(cfg, out=tmp_path / "again", workers=2)
    synthesize(again)
    assert files(again.out) == files(cfg.out)


def test_a_different_seed_gives_different_images(small: tuple[SynthConfig, dict], tmp_path: Path) -> None:
    cfg, _ = small
    other = replace(cfg, out=tmp_path / "other", seed=cfg.seed + 1)
    synthesize(other)
    a, b = files(cfg.out), files(other.out)
    assert a.keys() == b.keys()
    images = [n for n in a if n.endswith(".jpg")]
    assert sum(a[n] != b[n] for n in images) == len(images)


def test_products_do_not_change_with_the_number_of_photos(small: tuple[SynthConfig, dict], tmp_path: Path) -> None:
    cfg, _ = small
    fewer = replace(cfg, out=tmp_path / "fewer", photos_per_product=1)
    synthesize(fewer)
    product = {n[:9]: b for n, b in files(cfg.out).items() if "_CLEAN1_" in n}
    assert product == {n[:9]: b for n, b in files(fewer.out).items() if "_CLEAN1_" in n}


def test_every_category_and_pattern_occurs(many: Path) -> None:
    table = rows(many)
    assert Counter(r["category"] for r in table) == {c: 14 for c in CATEGORIES}
    assert Counter(r["pattern"] for r in table) == {p: 12 for p in PATTERNS}
    assert len({(r["category"], r["pattern"]) for r in table}) == 42
    assert len({r["colour"] for r in table}) >= 10


def test_product_image_is_a_garment_on_white(many: Path) -> None:
    for path in many.glob("*_CLEAN1_*.jpg"):
        a = pixels(path)
        ring = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])  # (4 * 32, 3)
        assert (ring.min(axis=1) > 235).mean() > 0.95, f"{path.name}: border not white"
        centre = a[12:20, 12:20].reshape(-1, 3)
        assert (centre.min(axis=1) < 235).mean() > 0.5, f"{path.name}: no garment in the centre"


def test_photo_is_not_mostly_white(many: Path) -> None:
    for path in many.glob("*_CLEAN0_*.jpg"):
        a = pixels(path)
        assert (a.min(axis=2) > 240).mean() < 0.5, f"{path.name}: mostly white"
        assert a.std() > 8, f"{path.name}: flat"


def test_products_sharing_category_and_colour_still_differ(many: Path) -> None:
    table = rows(many)
    groups: dict[tuple[str, str], list[str]] = {}
    for r in table:
        groups.setdefault((r["category"], r["colour"]), []).append(r["product_id"])
    shared = [ids for ids in groups.values() if len(ids) > 1]
    assert shared, "84 products over 6 categories x 12 colours must share some"
    image = {p.name[3:9]: pixels(p) for p in many.glob("*_CLEAN1_*.jpg")}
    for ids in shared:
        for a, b in itertools.combinations(ids, 2):
            assert np.abs(image[a] - image[b]).mean() > 3, f"products {a} and {b} look the same"


def test_photo_pieces_sample_the_product_garment() -> None:
    """Every pixel of a garment piece in a photo, at any pose, samples the product image inside that piece."""
    size = 64
    fig = np.array([[120.0, 0.0, 60.0], [0.0, 120.0, 0.0], [0.0, 0.0, 1.0]])  # figure units -> photo pixels
    pose = Pose((0.1, 0.2), (0.0, 0.12))  # far from the flat lay's 0.8 / 0.4 (arms) and 0.05 (legs)
    for index in range(12):
        g = make_garment(np.random.default_rng([0, index, 0]), index)
        m = product_frame(g, size)
        for piece in garment_pieces(g):
            to_product = m @ place(piece, flat_pose(g))
            flat = Image.new("L", (size, size), 0)
            ImageDraw.Draw(flat).polygon(_apply(to_product, piece.outline).ravel().tolist(), fill=255)
            flat = np.asarray(flat.filter(ImageFilter.MaxFilter(3)))  # a pixel of slack for rounding
            to_photo = fig @ place(piece, pose)
            photo = Image.new("L", (120, 120), 0)
            ImageDraw.Draw(photo).polygon(_apply(to_photo, piece.outline).ravel().tolist(), fill=255)
            ys, xs = np.nonzero(np.asarray(photo.filter(ImageFilter.MinFilter(3))))
            assert len(xs) > 20
            back = _apply(to_product @ np.linalg.inv(to_photo), np.stack([xs, ys], axis=1).astype(float))
            back = np.clip(np.round(back).astype(int), 0, size - 1)
            assert flat[back[:, 1], back[:, 0]].min() == 255, f"{g.category}: a photo pixel maps off the garment"
            if piece.limb is not None:  # and the limb really moved between the flat lay and the pose
                assert not np.allclose(place(piece, pose), place(piece, flat_pose(g)), atol=0.02)


@pytest.mark.parametrize("change, message", [
    (dict(products=0), "--products"),
    (dict(size=8), "--size"),
    (dict(photos_per_product=0), "--photos-per-product"),
    (dict(seed=-1), "--seed"),
    (dict(workers=0), "--workers"),
    (dict(jpeg_quality=0), "jpeg_quality"),
    (dict(framing="portrait"), "--framing"),
])
def test_bad_settings_are_user_errors(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        synthesize(replace(SynthConfig(out=tmp_path / "x", products=2, size=16), **change))
    assert not (tmp_path / "x").exists()


def test_lookbook_framing_puts_a_tall_person_near_the_centre() -> None:
    """Figure units: height 1 from the head (y = 0) to the feet, x = 0 on the body's axis."""
    def spots(framing: str) -> np.ndarray:
        out = []
        for seed in range(200):
            m = figure_transform(np.random.default_rng(seed), 64, FRAMINGS[framing])
            (hx, hy), (fx, fy) = (_apply(m, np.array([point]))[0] for point in ((0.0, 0.0), (0.0, 1.0)))
            out.append(((hx + fx) / 2, fy - hy))  # (centre x, height) in pixels
        return np.array(out)

    street, lookbook = spots("street"), spots("lookbook")
    assert lookbook[:, 1].min() > 0.7 * 64 and street[:, 1].min() < 0.5 * 64  # perspective bends it a little
    assert np.abs(lookbook[:, 0] - 32).max() < 6 < np.abs(street[:, 0] - 32).max()


def test_refuses_a_foreign_folder_and_a_file(tmp_path: Path) -> None:
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"not ours")
    with pytest.raises(UserError, match="not empty and was not written by"):
        synthesize(SynthConfig(out=foreign, products=1, size=16))
    assert [p.name for p in foreign.iterdir()] == ["holiday.jpg"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        synthesize(SynthConfig(out=tmp_path / "file", products=1, size=16))


def test_rewrites_its_own_folder_without_stale_files(tmp_path: Path) -> None:
    out = tmp_path / "set"
    synthesize(SynthConfig(out=out, products=4, photos_per_product=2, size=16))
    (out / "split.json").write_text("{}")  # another tool's file beside the set is left alone
    synthesize(SynthConfig(out=out, products=2, photos_per_product=1, size=16))
    assert sorted(p.name for p in out.iterdir() if NAME.match(p.name)) == [
        "PID000000_CLEAN0_IID000001.jpg", "PID000000_CLEAN1_IID000000.jpg",
        "PID000001_CLEAN0_IID000003.jpg", "PID000001_CLEAN1_IID000002.jpg"]
    assert len(rows(out)) == 2 and (out / "split.json").is_file()


def test_contact_sheet(small: tuple[SynthConfig, dict], tmp_path: Path) -> None:
    cfg, _ = small
    out = contact_sheet(cfg.out, tmp_path / "sheets" / "sheet.png", products=3, photos=2, size=32)
    with Image.open(out) as img:
        assert img.format == "PNG"
        w, h = img.size
    assert w == 3 * 32 + 2 * 2 + 8 and 3 * 32 < h < 3 * 32 + 3 * 30
    a = np.asarray(Image.open(out).convert("RGB"), dtype=np.int16)
    assert a.std() > 20  # images, not an empty canvas


def test_contact_sheet_needs_lookbook_files(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images")
    with pytest.raises(UserError):
        contact_sheet(tmp_path / "empty", tmp_path / "s.png")
    with pytest.raises(UserError, match="not found"):
        contact_sheet(tmp_path / "missing", tmp_path / "s.png")
