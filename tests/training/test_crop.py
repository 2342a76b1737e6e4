"""The person crop (for street-framed photos): the synthesizer's boxes, the regressor learns them better than a
constant centre box, its ONNX matches PyTorch, and `rtd fit-crop` writes a crop the pipeline reads. CPU, tiny sizes."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rtdgan.index import configs
from rtdgan.index.errors import UserError
from rtdgan.index.pipeline import Pipeline
from rtdgan.index.runtime.artifacts import read_artifacts
from rtdgan.index.runtime.crop import read_crop
from rtdgan.index.runtime.onnx import OnnxModel
from rtdgan.models.cropper import CropperConfig, PersonCropper
from rtdgan.training import crop as C
from rtdgan.training import crop_cli
from rtdgan.training import head as H
from rtdgan.training.data import load_records
from rtdgan.training.synth import BOX_COLUMNS, BOXES_CSV, SynthConfig, photo_person_box, synthesize
from tests.service.conftest import make_crop
from tests.training.test_head import make_artifacts


@pytest.fixture(scope="module")
def street(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 products x 2 street-framed photos at 32 px, with boxes.csv."""
    out = tmp_path_factory.mktemp("crop") / "street"
    synthesize(SynthConfig(out=out, products=120, photos_per_product=2, size=32, seed=21, framing="street"))
    return out


def test_synth_records_each_photos_person_box(street: Path) -> None:
    with (street / BOXES_CSV).open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == BOX_COLUMNS
        rows = list(reader)
    assert len(rows) == 240 and all((street / r["photo"]).is_file() for r in rows)
    boxes = np.array([[float(r[c]) for c in BOX_COLUMNS[1:]] for r in rows])
    assert np.all((boxes >= 0) & (boxes <= 1)) and np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
    heights = boxes[:, 3] - boxes[:, 1]
    assert heights.min() < 0.6 and heights.max() > 0.8  # street framing: 40-95 % of the height
    # The recorded box is the replayed one (training/synth.py photo_person_box: one home for both).
    replayed = np.clip(photo_person_box(21, 7, 1, 32, "street") / 32, 0, 1)
    np.testing.assert_allclose(boxes[7 * 2 + 1], replayed, atol=1e-4)


@pytest.mark.slow
def test_the_regressor_beats_a_centre_box_and_fit_crop_writes_a_readable_crop(street: Path, tmp_path: Path) -> None:
    artifacts = make_artifacts(tmp_path / "artifacts")
    cfg = C.FitCropConfig(artifacts=artifacts, data=(street,), size=32, width=8, epochs=12, batch_size=32,
                          lr=3e-3, val_fraction=0.2, threads=1)
    doc = C.fit_crop(cfg)
    v = doc["validation"]
    assert v["iou"] > v["centre_box_iou"] + 0.05, v  # it learned where the person is
    assert doc["parity"]["max_abs_error"] <= C.MAX_PARITY_ABS_ERROR
    info = read_crop(read_artifacts(artifacts))
    assert info.input_size == 32 and info.fill == 0.875 and info.doc["onnx_sha256"] == doc["onnx_sha256"]
    assert Pipeline.open(artifacts).cropper is not None


def test_crop_onnx_matches_pytorch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = PersonCropper(CropperConfig(size=32, width=8)).eval()
    sample = np.random.default_rng(0).uniform(-1, 1, (6, 3, 32, 32)).astype(np.float32)
    data, parity = C.export_cropper(model, sample)
    assert parity["max_abs_error"] <= C.MAX_PARITY_ABS_ERROR and parity["batch_max_abs_error"] <= C.MAX_PARITY_ABS_ERROR
    (tmp_path / "crop.onnx").write_bytes(data)
    got = OnnxModel(tmp_path / "crop.onnx")(sample)
    with torch.no_grad():
        expected = model(torch.from_numpy(sample)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.all(got[:, 0] <= got[:, 2]) and np.all(got[:, 1] <= got[:, 3]) and got.min() >= 0 and got.max() <= 1


def test_a_folder_without_boxes_is_refused_with_the_reason(tmp_path: Path) -> None:
    artifacts = make_artifacts(tmp_path / "artifacts")
    (tmp_path / "photos").mkdir()
    with pytest.raises(UserError, match="no boxes.csv.*cannot train it"):
        C.fit_crop(C.FitCropConfig(artifacts=artifacts, data=(tmp_path / "photos",)))
    assert not (artifacts / "crop.json").exists()


def test_the_cli_derives_its_flags_from_the_config(street: Path, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    crop_cli.add_arguments(parser)
    args = parser.parse_args(["--artifacts", str(tmp_path), "--data", f"{street},{street}", "--epochs", "3"])
    cfg = configs.from_args(C.FitCropConfig, args)
    assert cfg.data == (street, street) and cfg.epochs == 3 and cfg.size == 64
    assert json.loads(json.dumps(configs.to_json_dict(cfg)))["data"] == [str(street)] * 2


def test_fit_head_extracts_the_photos_through_the_crop(street: Path, tmp_path: Path) -> None:
    """With a crop in the artifacts the head's training photos are cut as the queries will be; products never."""
    artifacts = make_artifacts(tmp_path / "artifacts")
    info = read_artifacts(artifacts)
    records = load_records(street).records[:8]
    plain, _ = H.extract_features(artifacts, records)
    key = H.features_key(info, records)
    make_crop(artifacts, (0.3, 0.3, 0.6, 0.7), input_size=16)  # a square of half the side, cut out
    cropped, _ = H.extract_features(artifacts, records)
    np.testing.assert_allclose(cropped.products, plain.products, atol=1e-6)
    assert not np.allclose(cropped.photos, plain.photos, atol=1e-3)
    pipeline = Pipeline.open(artifacts)  # the query path: prepare -> crop stage -> embed
    query = pipeline.embed(pipeline.crop([pipeline.prepare(records[0].photos[0])]))
    np.testing.assert_allclose(cropped.photos[0], query[0], atol=1e-5)
    np.testing.assert_allclose(H.extract_features(artifacts, records, crop=False)[0].photos, plain.photos, atol=1e-6)
    assert H.features_key(info, records) != key == H.features_key(info, records, crop=False)
