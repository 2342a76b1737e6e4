"""The person crop in the one pipeline (for street-framed photos): the squaring rule, the crop stage before the
generator, artifacts without a crop unchanged, /health/ready and /search with a crop.

Real onnxruntime graphs (tests/service/conftest.py `make_crop`: crop.onnx answers a fixed box, so where the crop
must land is known), a real index built by `rtd index build`'s code, the real app.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rtdgan.index.errors import UserError
from rtdgan.index.images import letterbox, to_array
from rtdgan.index.parity import load_photos, outputs
from rtdgan.index.pipeline import Pipeline
from rtdgan.index.runtime.artifacts import read_artifacts
from rtdgan.index.runtime.crop import CROP_SOURCE_SIDE, Cropper, read_crop, square_box, unletterbox
from tests.service.conftest import Tiny, make_crop, make_world, png_bytes, running_client, settings_for

BOX = (0.25, 0.125, 0.5, 0.875)  # make_crop's answer: a standing person left of centre


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Tiny, Path]:
    """The tiny world (no crop) and a copy of its artifacts with a crop (the index is the same: the catalog side
    does not crop)."""
    root = tmp_path_factory.mktemp("crop_world")
    tiny = make_world(root)
    cropped = make_crop(Path(shutil.copytree(tiny.artifacts, root / "artifacts-crop")), BOX)
    return tiny, cropped


def test_square_box_frames_the_person_as_lookbook_and_stays_inside() -> None:
    # A 40 x 80 person in a 200 x 100 photo: side 80 / 0.875, centred on the person.
    left, top, right, bottom = square_box((100, 10, 140, 90), 200, 100)
    assert right - left == pytest.approx(80 / 0.875) and bottom - top == pytest.approx(80 / 0.875)
    assert (left + right) / 2 == pytest.approx(120)
    assert 0 <= top and bottom <= 100
    # At the edge: moved inside; larger than the photo allows: the photo's shorter side.
    assert square_box((0, 0, 20, 20), 100, 100)[:2] == (0.0, 0.0)
    assert square_box((0, 0, 100, 100), 100, 60) == pytest.approx((20.0, 0.0, 80.0, 60.0))


def test_unletterbox_maps_the_square_back_to_the_photo() -> None:
    # A 200 x 100 photo letterboxed: 50 px of white above and below in the 200 px square.
    assert unletterbox((0.0, 0.25, 1.0, 0.75), 200, 100) == pytest.approx((0.0, 0.0, 200.0, 100.0))
    assert unletterbox((0.5, 0.0, 0.75, 1.0), 200, 100) == pytest.approx((100.0, 0.0, 150.0, 100.0))


def test_the_cropper_cuts_a_square_inside_the_photo_around_the_box(world: tuple[Tiny, Path]) -> None:
    _, cropped = world
    cropper = Cropper(read_crop(read_artifacts(cropped)))
    photo = Image.new("RGB", (160, 160), (200, 30, 30))
    (x0, y0, x1, y1), = cropper.squares([photo])
    assert x1 - x0 == y1 - y0 == round(0.75 * 160 / 0.875)  # the box's longer side (0.75) / 0.875
    assert 0 <= x0 and 0 <= y0 and x1 <= 160 and y1 <= 160
    assert x0 == 0 and abs(y0 - (0.5 * 160 - 0.75 * 160 / 0.875 / 2)) <= 1  # centred on the box, moved inside
    wide = Image.new("RGB", (300, 100), (0, 0, 0))  # letterboxed with white above and below
    (x0, y0, x1, y1), = cropper.squares([wide])
    assert 0 <= y0 and y1 <= 100 and x1 - x0 == y1 - y0 <= 100


def test_the_pipeline_crops_before_the_generator_and_keeps_the_shapes(world: tuple[Tiny, Path]) -> None:
    tiny, cropped = world
    plain = Pipeline.open(tiny.artifacts, tiny.index)
    pipeline = Pipeline.open(cropped, tiny.index)
    assert plain.cropper is None and pipeline.cropper is not None
    assert Pipeline.open(cropped, tiny.index, crop=False).cropper is None
    # The query photo: a 64 px picture whose left half is the product's street photo, the right half noise.
    source = Image.new("RGB", (64, 64), (255, 255, 255))
    street = Image.open(io.BytesIO(tiny.query_for("P003"))).convert("RGB").resize((32, 32))
    source.paste(street, (8, 16))
    prepared = pipeline.prepare(png_bytes(source))
    assert isinstance(prepared, Image.Image) and prepared.size == (64, 64)
    result = pipeline.query([prepared], k=3)
    assert list(result.timings_ms) == ["crop", "generate", "embed", "search"]
    assert result.generated is not None and result.generated.shape == (1, 3, pipeline.size, pipeline.size)
    assert len(result.hits[0]) == 3
    # The generator saw the crop: the same as generating from the square cut by hand.
    (x0, y0, x1, y1), = pipeline.cropper.squares([prepared])
    by_hand = to_array(letterbox(prepared.crop((x0, y0, x1, y1)), pipeline.size))[None]
    np.testing.assert_allclose(result.generated, pipeline.generate(by_hand), atol=1e-5)
    # A preprocessed batch is cropped too (the 64 px-source case), with the same output shapes as without a crop.
    batch = np.stack([plain.preprocess(tiny.query_for(pid)) for pid in tiny.product_ids[:3]])
    a, b = plain.query(batch, k=2), pipeline.query(batch, k=2)
    assert "crop" not in a.timings_ms and "crop" in b.timings_ms
    assert [len(h) for h in a.hits] == [len(h) for h in b.hits] == [2, 2, 2]
    assert a.generated.shape == b.generated.shape and not np.allclose(a.generated, b.generated)


def test_artifacts_without_a_crop_behave_as_before(world: tuple[Tiny, Path]) -> None:
    tiny, _ = world
    pipeline = Pipeline.open(tiny.artifacts, tiny.index)
    prepared = pipeline.prepare(tiny.query_for("P002"))
    assert isinstance(prepared, np.ndarray) and prepared.shape == (3, pipeline.size, pipeline.size)
    np.testing.assert_array_equal(prepared, pipeline.preprocess(tiny.query_for("P002")))
    result = pipeline.query(prepared[None], k=1)
    assert "crop" not in result.timings_ms and result.hits[0][0].product_id == "P002"
    assert pipeline.search_image(tiny.query_for("P002"), k=1)[0].product_id == "P002"


def test_a_source_photo_is_reduced_before_the_crop(world: tuple[Tiny, Path]) -> None:
    _, cropped = world
    pipeline = Pipeline.open(cropped)
    big = Image.new("RGB", (3000, 1500), (10, 120, 200))
    prepared = pipeline.prepare(png_bytes(big))
    assert CROP_SOURCE_SIDE <= max(prepared.size) < 2 * CROP_SOURCE_SIDE  # bounded memory: a huge upload is reduced as it is decoded


def test_a_crop_json_that_does_not_match_its_graph_is_refused(world: tuple[Tiny, Path], tmp_path: Path) -> None:
    _, cropped = world
    other = Path(shutil.copytree(cropped, tmp_path / "artifacts"))
    doc = json.loads((other / "crop.json").read_text())
    doc["onnx_sha256"] = "0" * 64
    (other / "crop.json").write_text(json.dumps(doc))
    with pytest.raises(UserError, match="does not match crop.json"):
        Pipeline.open(other)


def test_the_service_reports_and_uses_the_crop(world: tuple[Tiny, Path], tmp_path: Path) -> None:
    tiny, cropped = world
    with running_client(settings_for(tiny, artifacts=cropped)) as c:
        ready = c.get("/health/ready").json()
        crop = read_crop(read_artifacts(cropped))
        assert ready["crop"] == {"sha256": crop.sha256, "input_size": 16, "fill": 0.875, "validation_iou": 0.5}
        found = c.post("/search", files={"image": ("q.png", tiny.query_for("P004"), "image/png")})
        assert found.status_code == 200, found.text
        body = found.json()
        assert "crop" in body["timings_ms"] and len(body["results"]) == 10
        # The service crops once, as the pipeline run directly does (a second crop would change the ranking).
        direct = Pipeline.open(cropped, tiny.index).search_image(tiny.query_for("P004"), k=10)
        assert [r["product_id"] for r in body["results"]] == [h.product_id for h in direct]
        assert np.allclose([r["score"] for r in body["results"]], [h.score for h in direct], atol=1e-4)
        generated = c.post("/generate", files={"image": ("q.png", tiny.query_for("P004"), "image/png")})
        assert generated.status_code == 200 and generated.headers["content-type"] == "image/png"
        # /generate takes the pipeline's crop -> generate (`generation_plan`), cropping once as /search does.
        pipeline = Pipeline.open(cropped, tiny.index)
        (_, want), timings = pipeline.run(pipeline.generation_plan([pipeline.prepare(tiny.query_for("P004"))]))
        got = np.asarray(Image.open(io.BytesIO(generated.content)).convert("RGB"), np.float32) / 127.5 - 1.0
        assert list(timings) == ["crop", "generate"]
        np.testing.assert_allclose(got, want[0].transpose(1, 2, 0), atol=1.5 / 127.5)
    with running_client(settings_for(tiny)) as c:
        ready = c.get("/health/ready").json()
        assert ready["crop"] is None
        body = c.post("/search", files={"image": ("q.png", tiny.query_for("P004"), "image/png")}).json()
        assert "crop" not in body["timings_ms"] and body["results"][0]["product_id"] == "P004"


def test_features_and_the_parity_gate_take_the_served_path_with_the_crop(world: tuple[Tiny, Path]) -> None:
    """`Pipeline.features` is the served query up to its search, the crop included; the backend parity gate
    (index/parity.py `outputs`) measures exactly that path."""
    tiny, cropped = world
    pipeline = Pipeline.open(cropped, tiny.index)
    photos = pipeline.batch([pipeline.prepare(tiny.query_for(pid)) for pid in tiny.product_ids[:3]])
    assert isinstance(photos, list) and isinstance(photos[0], Image.Image)
    found = pipeline.features(photos)
    assert list(found.timings_ms) == ["crop", "generate", "embed"] and list(found.features) == ["generated"]
    result = pipeline.query(photos, k=3)
    np.testing.assert_allclose(found.generated, result.generated, atol=1e-5)
    np.testing.assert_allclose(found.vectors, result.features["generated"], atol=1e-5)
    assert [[h.product_id for h in hits] for hits in pipeline.search(found.vectors, 3)] == \
        [[h.product_id for h in hits] for hits in result.hits]
    # The photos the models saw are the crops, not the letterboxed photos.
    np.testing.assert_allclose(found.photos, pipeline.crop(photos), atol=1e-6)
    plain = Pipeline.open(tiny.artifacts, tiny.index)
    assert not np.allclose(found.photos, np.stack([plain.prepare(tiny.query_for(p)) for p in tiny.product_ids[:3]]))
    # Without a head, a fused query's features are both inputs' (one embedder call), with no vector to search by.
    fused = pipeline.features(photos, "fused")
    assert list(fused.features) == ["generated", "photo"] and fused.vectors is None
    np.testing.assert_allclose(fused.features["photo"], pipeline.embed(found.photos), atol=1e-5)
    with pytest.raises(UserError, match="query must be one of generated, photo with no retrieval head"):
        pipeline.query(photos, k=3, query="fused")
    # The gate's outputs: the served query's generated images and vectors, the photos' features after the crop.
    gallery = np.stack([pipeline.preprocess(tiny.products / f"{pid}.png") for pid in tiny.product_ids[:4]])
    out = outputs(pipeline, photos, gallery)
    np.testing.assert_allclose(out["generated"], found.generated, atol=1e-5)
    np.testing.assert_allclose(out["query"], found.vectors, atol=1e-5)
    np.testing.assert_allclose(out["features"], np.concatenate([fused.features["generated"], fused.features["photo"]]),
                               atol=1e-5)
    np.testing.assert_allclose(out["gallery"], pipeline.embed_catalog(gallery), atol=1e-5)
    # `rtd check-backend` reads its photos as the service does: decoded for the crop stage when there is one.
    decoded = load_photos(tiny.samples, read_artifacts(cropped), 2)
    assert len(decoded) == 2 and all(isinstance(p, Image.Image) for p in decoded)
    assert load_photos(tiny.samples, read_artifacts(tiny.artifacts), 2).shape == (2, 3, pipeline.size, pipeline.size)
