"""Data formats: the LookBook layout, the pairs manifest, and the torch view through the shared preprocessing."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from rtdgan.index.errors import UserError
from rtdgan.index.images import preprocess
from rtdgan.training.data import load_records
from rtdgan.training.dataset import PairDataset
from tests.helpers import make_lookbook


def test_lookbook_layout(lookbook: Path) -> None:
    (lookbook / "README.txt").write_text("not part of the layout")
    (lookbook / "PID000099_CLEAN0_IID999999.jpg").write_bytes((lookbook / "PID000000_CLEAN0_IID000001.jpg").read_bytes())
    shutil.copy(lookbook / "PID000001_CLEAN1_IID000004.jpg", lookbook / "PID000098_CLEAN1_IID999998.jpg")
    scan = load_records(lookbook)
    assert [r.product_id for r in scan.records] == [f"{i:06d}" for i in range(10)]
    assert all(len(r.photos) == 3 for r in scan.records) and scan.photo_count == 30
    assert scan.records[0].product_image.name == "PID000000_CLEAN1_IID000000.jpg"
    assert scan.ignored_files == 1
    # a product with photos but no product image, and one with no photo, are reported and skipped
    assert any("000099" in s and "no product image" in s for s in scan.skipped)
    assert any("000098" in s and "no photo" in s for s in scan.skipped)


def test_lookbook_categories_from_products_csv(lookbook: Path) -> None:
    (lookbook / "products.csv").write_text("product_id,category,colour,pattern\n000003,skirt,red,dots\n")
    records = {r.product_id: r for r in load_records(lookbook).records}
    assert records["000003"].category == "skirt" and records["000004"].category is None


def test_manifest(tmp_path: Path) -> None:
    make_lookbook(tmp_path / "imgs", products=3, photos=2)
    rows = ["product_id,product_image,photo_image,category"]
    for p in range(3):
        prod = sorted((tmp_path / "imgs").glob(f"PID{p:06d}_CLEAN1_*"))[0].name
        for photo in sorted((tmp_path / "imgs").glob(f"PID{p:06d}_CLEAN0_*")):
            rows.append(f"sku-{p},imgs/{prod},imgs/{photo.name},dress")
    rows.append("sku-9,imgs/missing.jpg,imgs/also-missing.jpg,dress")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    for where in (tmp_path / "pairs.csv", tmp_path):  # the CSV itself, or a folder holding pairs.csv
        scan = load_records(where)
        assert [r.product_id for r in scan.records] == ["sku-0", "sku-1", "sku-2"]
        assert all(len(r.photos) == 2 and r.category == "dress" for r in scan.records)
        assert any("not found" in s for s in scan.skipped)


def test_manifest_missing_columns(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("id,image\n1,a.jpg\n")
    with pytest.raises(UserError, match="lacks column"):
        load_records(tmp_path / "m.csv")


@pytest.mark.parametrize("case", ["missing", "empty", "non_images"])
def test_bad_data_folders(tmp_path: Path, case: str) -> None:
    folder = tmp_path / "data"
    if case != "missing":
        folder.mkdir()
    if case == "non_images":
        for i in range(3):
            (folder / f"notes{i}.txt").write_text("hello")
    with pytest.raises(UserError):
        load_records(folder)


def test_pair_dataset_matches_the_service_preprocessing(lookbook: Path) -> None:
    """Training and the service must see identical arrays: both go through rtdgan.index.images.preprocess."""
    records = load_records(lookbook).records
    for preload in (False, True):
        ds = PairDataset(records, 24, preload=preload)
        assert len(ds) == 30
        photo, product = ds[4]
        assert photo.shape == (3, 24, 24) and photo.dtype == torch.float32
        assert np.array_equal(photo.numpy(), preprocess(records[1].photos[1], 24))
        assert np.array_equal(product.numpy(), preprocess(records[1].product_image, 24))


def test_pair_dataset_skips_corrupt_files(lookbook: Path) -> None:
    records = load_records(lookbook).records
    bad = records[0].photos[0]
    bad.write_bytes(bad.read_bytes()[:100])  # truncated JPEG
    ds = PairDataset(records, 16)
    photo, _ = ds[0]  # replaced by the next readable item
    assert np.array_equal(photo.numpy(), preprocess(records[0].photos[1], 16))
    assert bad in ds.bad_files and "corrupt" in ds.bad_files[bad]
