"""Where the artifacts' files say things came from: paths relative to the artifacts (or none), never an absolute
path of the machine that wrote them; and `rtd check-backend` finding its photos from them (index/parity.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtdgan.index.errors import UserError
from rtdgan.index.parity import default_photos, source_name
from rtdgan.index.runtime.artifacts import Artifacts, portable_path, recorded_path


def artifacts_info(model: dict) -> Artifacts:
    return Artifacts(Path("unused"), 32, model, "0" * 64)


def test_a_path_beside_the_artifacts_is_recorded_relative_and_any_other_not_at_all(tmp_path: Path) -> None:
    artifacts = tmp_path / "demo" / "artifacts"
    assert portable_path(tmp_path / "demo" / "data", artifacts) == "../data"
    assert portable_path(tmp_path / "demo" / "run" / "checkpoints" / "last.pt", artifacts) == "../run/checkpoints/last.pt"
    assert portable_path(artifacts, artifacts) == "."
    assert portable_path(tmp_path / "elsewhere", artifacts) is None  # outside the artifacts' folder
    assert portable_path(None, artifacts) is None
    assert source_name(tmp_path / "elsewhere" / "photos", artifacts) == "photos"  # a parity record: the name only


def test_a_recorded_path_resolves_from_the_artifacts_or_from_a_version_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    artifacts = tmp_path / "artifacts"
    (artifacts / "v-000003").mkdir(parents=True)
    assert recorded_path(artifacts, "../data") == artifacts / "../data"
    assert recorded_path(artifacts / "v-000003", "../data") == artifacts / "../data"  # the version folder itself
    assert recorded_path(artifacts, str(data)) == data  # an older export's absolute path, still on this machine
    assert recorded_path(artifacts, "../missing") is None and recorded_path(artifacts, None) is None


def test_check_backend_finds_the_photos_model_json_records_or_names_the_flag(tmp_path: Path) -> None:
    shop, world = tmp_path / "data", tmp_path / "train-data"
    shop.mkdir()
    world.mkdir()
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    both = {"parity_photos": "../data", "generator": {"data": "../train-data"}}
    assert default_photos(artifacts_info(both), artifacts).resolve() == shop  # the photos the export measured on
    assert default_photos(artifacts_info({"generator": {"data": "../train-data"}}), artifacts).resolve() == world
    assert default_photos(artifacts_info({"generator": {"data": str(world)}}), artifacts) == world  # older exports
    stale = {"generator": {"data": "/tmp/exp/demo-final/train-data"}}  # a building machine's path, not here
    for model in (stale, {"generator": {"data": None}, "parity_photos": None}, {}):
        with pytest.raises(UserError, match=r"pass --photos DIR") as e:
            default_photos(artifacts_info(model), artifacts)
        assert "\n" not in str(e.value)
