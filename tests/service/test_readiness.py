"""/health/ready says no, with the reason, until the service can really answer a search."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from rtdgan.service.engine import Engine
from tests.service.conftest import Tiny, make_artifacts, running_client, settings_for, wait_ready


def test_not_ready_before_the_warm_up_has_passed(tiny: Tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = threading.Event()
    real_warm_up = Engine._warm_up

    async def held_warm_up(self: Engine) -> None:
        await anyio.to_thread.run_sync(gate.wait, 20)
        await real_warm_up(self)

    monkeypatch.setattr(Engine, "_warm_up", held_warm_up)
    with running_client(settings_for(tiny), ready=False) as c:
        assert c.get("/health/live").status_code == 200
        ready = c.get("/health/ready")
        assert ready.status_code == 503 and ready.headers["retry-after"] == "1"
        assert ready.json()["error"] == "not_ready" and ready.json()["detail"]
        search = c.post("/search", files={"image": ("q.png", tiny.query_for("P001"))})
        assert search.status_code == 503 and search.json()["error"] == "not_ready"
        assert search.headers["retry-after"] == "1"
        for _ in range(200):  # loading finishes, then it waits in the warm-up
            if "warming up" in c.get("/health/ready").json()["detail"]:
                break
            time.sleep(0.02)
        assert "warming up" in c.get("/health/ready").json()["detail"]
        gate.set()
        wait_ready(c)
        assert c.post("/search", files={"image": ("q.png", tiny.query_for("P001"))}).status_code == 200


def _drop_generator(folder: Path) -> None:
    (folder / "generator.onnx").unlink()


def _corrupt_embedder(folder: Path) -> None:
    data = bytearray((folder / "embedder.onnx").read_bytes())
    data[-1] ^= 0xFF
    (folder / "embedder.onnx").write_bytes(bytes(data))


def _garbage_generator_with_matching_sha(folder: Path) -> None:
    import hashlib

    (folder / "generator.onnx").write_bytes(b"this is not an onnx graph")
    model = json.loads((folder / "model.json").read_text())
    model["generator"]["onnx_sha256"] = hashlib.sha256(b"this is not an onnx graph").hexdigest()
    (folder / "model.json").write_text(json.dumps(model))


def _no_model_json(folder: Path) -> None:
    (folder / "model.json").unlink()


def _model_json_without_size(folder: Path) -> None:
    model = json.loads((folder / "model.json").read_text())
    del model["preprocessing"]
    (folder / "model.json").write_text(json.dumps(model))


BROKEN: dict[str, tuple[Callable[[Path], None], str]] = {
    "no_generator": (_drop_generator, "has no generator.onnx"),
    "corrupt_embedder": (_corrupt_embedder, "does not match model.json"),
    "garbage_onnx": (_garbage_generator_with_matching_sha, "cannot load ONNX model"),
    "no_model_json": (_no_model_json, "no model.json"),
    "model_json_without_size": (_model_json_without_size, "missing or bad field"),
}


def failed_readiness(client) -> tuple[int, str]:  # noqa: ANN001 - the running app's test client
    """Poll /health/ready (up to ~4 s) until the background load has failed; its status and reason."""
    for _ in range(200):
        ready = client.get("/health/ready")
        if "failed" in ready.json()["detail"]:
            break
        time.sleep(0.02)
    return ready.status_code, ready.json()["detail"]


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_artifact_folder_is_not_ready_with_the_reason(tiny: Tiny, tmp_path: Path, name: str) -> None:
    artifacts = Path(shutil.copytree(tiny.artifacts, tmp_path / "artifacts"))
    breaks, reason = BROKEN[name]
    breaks(artifacts)
    with running_client(settings_for(tiny, artifacts=artifacts), ready=False) as c:
        assert c.get("/health/live").status_code == 200
        status, detail = failed_readiness(c)
        assert status == 503
        assert reason in detail, detail
        assert c.post("/search", files={"image": ("q.png", tiny.query_for("P001"))}).status_code == 503


def test_index_from_another_embedder_is_refused(tiny: Tiny, tmp_path: Path) -> None:
    other = make_artifacts(tmp_path / "other", seed=1)  # same shapes, other weights: other sha256
    with running_client(settings_for(tiny, artifacts=other), ready=False) as c:
        _, detail = failed_readiness(c)
    assert "another embedder" in detail


def test_missing_index_is_not_ready(tiny: Tiny, tmp_path: Path) -> None:
    with running_client(settings_for(tiny, index=tmp_path / "nowhere"), ready=False) as c:
        _, detail = failed_readiness(c)
        assert "not an index folder" in detail
        assert c.get("/products/P001").status_code == 503
