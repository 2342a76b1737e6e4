"""The retrieval head in the one pipeline: index build through its catalog side, one embedder call per
fused query, refusal of an index in another space, the service's /search and admin adds through the head.

Real onnxruntime graphs (tests/service/conftest.py `make_head`: E = 6 != D = 8, so a vector that skipped the head
cannot be stored or searched), a real FAISS index built by `rtd index build`'s code, the real app.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rtdgan.index.build import build_index
from rtdgan.index.catalog.engines import read_manifest
from rtdgan.index.errors import UserError
from rtdgan.index.pipeline import Pipeline
from rtdgan.index.runtime.artifacts import read_artifacts
from rtdgan.index.runtime.head import read_head
from tests.helpers import random_picture
from tests.service.conftest import Tiny, make_head, make_world, png_bytes, running_client, settings_for
from tests.service.conftest import swap_red_blue as swap

KEY = "head-admin-key"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Tiny, Path]:
    """The tiny world (its index built without a head) plus a fused head and an index built through it."""
    root = tmp_path_factory.mktemp("head_world")
    tiny = make_world(root)
    make_head(tiny.artifacts)
    build_index(tiny.artifacts, root / "catalog.csv", root / "head-index")
    return tiny, root / "head-index"


def test_the_index_records_the_head_and_a_fused_query_finds_the_product(world: tuple[Tiny, Path]) -> None:
    tiny, head_index = world
    head = read_head(read_artifacts(tiny.artifacts))
    manifest = read_manifest(head_index)
    assert manifest["head"]["sha256"] == head.sha256 and manifest["head"]["mode"] == "fused"
    assert manifest["dim"] == 6  # the head's space, not the embedder's D = 8
    pipeline = Pipeline.open(tiny.artifacts, head_index)
    assert pipeline.default_query == "fused" and pipeline.query_kinds == ("fused",)
    for pid in tiny.product_ids[:4]:
        hits = pipeline.search_image(tiny.query_for(pid), k=3)
        assert hits[0].product_id == pid and hits[0].score == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(UserError, match="query must be one of fused"):
        pipeline.search_image(tiny.query_for("P001"), query="generated")


def test_a_fused_query_embeds_the_generated_image_and_the_photo_in_one_call(world: tuple[Tiny, Path]) -> None:
    tiny, head_index = world
    pipeline = Pipeline.open(tiny.artifacts, head_index)
    calls: list[tuple[int, ...]] = []
    embed = pipeline.embed

    def counting(images: np.ndarray) -> np.ndarray:
        calls.append(images.shape)
        return embed(images)

    pipeline.embed = counting  # type: ignore[method-assign]
    photos = np.stack([pipeline.preprocess(tiny.query_for(pid)) for pid in tiny.product_ids[:3]])
    result = pipeline.query(photos, k=2)
    assert calls == [(6, 3, 16, 16)]  # 3 generated images, then the 3 photos: one embedder call
    assert [hits[0].product_id for hits in result.hits] == list(tiny.product_ids[:3])
    assert set(result.timings_ms) == {"generate", "embed", "head", "search"}


def test_features_are_the_fused_query_up_to_its_search(world: tuple[Tiny, Path]) -> None:
    """`Pipeline.features` runs the plan's steps before the search: with a head, its mode's query vectors; another
    kind's features come without vectors (they are not in the catalog's space)."""
    tiny, head_index = world
    pipeline = Pipeline.open(tiny.artifacts, head_index)
    photos = np.stack([pipeline.preprocess(tiny.query_for(pid)) for pid in tiny.product_ids[:3]])
    found, result = pipeline.features(photos), pipeline.query(photos, k=2)
    assert list(found.timings_ms) == ["generate", "embed", "head"] and found.vectors.shape == (3, 6)
    for name in ("generated", "photo"):
        np.testing.assert_allclose(found.features[name], result.features[name], atol=1e-5)
    assert [[h.product_id for h in hits] for hits in pipeline.search(found.vectors, 2)] == \
        [[h.product_id for h in hits] for hits in result.hits]
    np.testing.assert_allclose(found.vectors, pipeline.apply_head(
        np.concatenate([found.features["generated"], found.features["photo"]]), ("generated", "photo")), atol=1e-6)
    photo = pipeline.features(photos, "photo")
    assert list(photo.timings_ms) == ["embed"] and photo.vectors is None and photo.generated is None
    np.testing.assert_allclose(photo.features["photo"], found.features["photo"], atol=1e-5)


def test_an_index_in_another_space_is_refused(world: tuple[Tiny, Path], tmp_path: Path) -> None:
    tiny, head_index = world
    with pytest.raises(UserError, match="without a retrieval head, but the artifacts have one"):
        Pipeline.open(tiny.artifacts, tiny.index)
    with pytest.raises(UserError, match="through a retrieval head .* that the artifacts do not have"):
        Pipeline.open(tiny.artifacts, head_index, head=False)
    # head=False is the paper's protocol on the same artifacts: the index built without a head serves it.
    assert Pipeline.open(tiny.artifacts, tiny.index, head=False).query_kinds == ("generated", "photo")
    other = Path(shutil.copytree(tiny.artifacts, tmp_path / "artifacts"))
    make_head(other, seed=1)  # another fit: other weights, other head.json
    with pytest.raises(UserError, match="another retrieval head"):
        Pipeline.open(other, head_index)


def test_a_head_for_another_embedder_is_refused_by_index_build(world: tuple[Tiny, Path], tmp_path: Path) -> None:
    tiny, _ = world
    other = Path(shutil.copytree(tiny.artifacts, tmp_path / "artifacts"))
    doc = json.loads((other / "head.json").read_text())
    doc["trained_with"]["embedder_sha256"] = "0" * 64
    (other / "head.json").write_text(json.dumps(doc))
    with pytest.raises(UserError, match="another embedder's features"):
        build_index(other, tiny.products, tmp_path / "index")
    assert not (tmp_path / "index").exists()


def test_the_service_searches_and_adds_through_the_head(world: tuple[Tiny, Path], tmp_path: Path) -> None:
    tiny, head_index = world
    index = Path(shutil.copytree(head_index, tmp_path / "index"))
    with running_client(settings_for(tiny, index=index, admin_key=KEY)) as c:
        ready = c.get("/health/ready").json()
        assert ready["query"] == "fused" and ready["head"]["mode"] == "fused"
        found = c.post("/search", files={"image": ("q.png", tiny.query_for("P004"), "image/png")}).json()
        assert found["results"][0]["product_id"] == "P004"
        assert found["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
        # An admin add is embedded through the head's catalog side: its street photo then finds it first.
        picture = random_picture(np.random.default_rng(7), 32)
        added = c.post("/admin/products", headers={"X-API-Key": KEY}, data={"product_id": "NEW-1"},
                       files={"image": ("p.png", png_bytes(picture), "image/png")})
        assert added.status_code == 201, added.text
        query = png_bytes(swap(picture))
        found = c.post("/search", files={"image": ("q.png", query, "image/png")}).json()
        assert found["results"][0]["product_id"] == "NEW-1"
