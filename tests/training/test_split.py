"""`rtd data split`: by product, seeded, about 10 % test, and the paper's near-duplicate cleaning (Sec. 4)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rtdgan.index.errors import UserError
from rtdgan.training.data import load_split
from rtdgan.training.split import SplitConfig, hamming_min, make_split, phash, split_products
from tests.helpers import make_lookbook


def test_split_by_product_seeded(tmp_path: Path) -> None:
    data = make_lookbook(tmp_path / "d", products=40, photos=2)
    info = make_split(SplitConfig(data, tmp_path / "s.json", seed=1))
    split = load_split(tmp_path / "s.json")
    train_ids = {r.product_id for r in split.train}
    test_ids = {r.product_id for r in split.test}
    assert not train_ids & test_ids and len(train_ids | test_ids) == 40
    assert len(test_ids) == 4 and info["counts"]["test"] == {"products": 4, "photos": 8}
    assert info["counts"]["train"] == {"products": 36, "photos": 72}
    assert split.test[0].product_image.is_absolute() and split.test[0].product_image.is_file()
    # same seed, same split; another seed, another split
    make_split(SplitConfig(data, tmp_path / "s2.json", seed=1))
    assert json.loads((tmp_path / "s.json").read_text())["test"] == json.loads((tmp_path / "s2.json").read_text())["test"]
    make_split(SplitConfig(data, tmp_path / "s3.json", seed=2))
    assert {r.product_id for r in load_split(tmp_path / "s3.json").test} != test_ids


def test_split_products_edges() -> None:
    train, test = split_products([str(i) for i in range(3)], 0.1, 0)
    assert len(test) == 1 and len(train) == 2  # at least one product on each side
    train, test = split_products([str(i) for i in range(100)], 0.25, 0)
    assert len(test) == 25


def test_phash_is_robust_to_reencoding_and_separates_different_images(tmp_path: Path) -> None:
    data = make_lookbook(tmp_path / "d", products=2, photos=1, size=64)
    a, b = sorted(data.glob("*.jpg"))[:2]
    img = Image.open(a)
    img.resize((50, 50)).save(tmp_path / "small.png")
    img.save(tmp_path / "lowq.jpg", quality=40)
    h = np.array([phash(a)], dtype=np.uint64)
    near = np.array([phash(tmp_path / "small.png"), phash(tmp_path / "lowq.jpg")], dtype=np.uint64)
    assert (hamming_min(near, h) <= 6).all()
    assert hamming_min(np.array([phash(b)], dtype=np.uint64), h)[0] > 12


def test_test_photos_duplicating_train_images_are_dropped(tmp_path: Path) -> None:
    data = make_lookbook(tmp_path / "d", products=20, photos=3)
    make_split(SplitConfig(data, tmp_path / "s.json", seed=3))
    split = load_split(tmp_path / "s.json")
    victim = split.test[0].photos[0]
    shutil.copy(split.train[0].photos[0], victim)  # a test photo that is a copy of a train photo
    info = make_split(SplitConfig(data, tmp_path / "clean.json", seed=3))
    clean = load_split(tmp_path / "clean.json")
    assert victim not in {p for r in clean.test for p in r.photos}
    assert [d["image"] for d in info["dropped"]] == [victim.name]
    assert info["counts"]["test"]["photos"] == sum(len(r.photos) for r in split.test) - 1


def test_corrupt_files_are_reported_and_left_out(tmp_path: Path) -> None:
    data = make_lookbook(tmp_path / "d", products=10, photos=2)
    bad = sorted(data.glob("*_CLEAN0_*"))[0]
    bad.write_bytes(b"\xff\xd8\xff garbage")
    info = make_split(SplitConfig(data, tmp_path / "s.json"))
    assert any(bad.name in s for s in info["skipped"])
    split = load_split(tmp_path / "s.json")
    assert bad not in {p for r in split.train + split.test for p in r.photos}


@pytest.mark.parametrize("kw", [{"test_fraction": 0.0}, {"test_fraction": 1.5}, {"phash_threshold": 99}])
def test_bad_options(tmp_path: Path, kw: dict) -> None:
    data = make_lookbook(tmp_path / "d", products=4, photos=1)
    with pytest.raises(UserError):
        make_split(SplitConfig(data, tmp_path / "s.json", **kw))


def test_load_split_refuses_other_json(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"hello": 1}')
    with pytest.raises(UserError, match="not a split file"):
        load_split(tmp_path / "x.json")
    with pytest.raises(UserError, match="not found"):
        load_split(tmp_path / "missing.json")


def test_split_of_a_relative_data_path_loads_from_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_lookbook(tmp_path / "d", products=10, photos=1)
    monkeypatch.chdir(tmp_path)
    make_split(SplitConfig(Path("d"), Path("s.json")))
    split = load_split(tmp_path / "s.json")
    assert all(p.is_file() for r in split.train + split.test for p in (r.product_image, *r.photos))
    assert json.loads((tmp_path / "s.json").read_text())["test"][0]["product_image"].startswith("PID")
