"""The service on a backend chosen at run time: `rtd serve` with RTD_BACKEND=openvino answers /search
over HTTP, shows its backend on /health/ready and /metrics, and the parity gate refuses a backend whose record
is missing or failing unless told otherwise."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from rtdgan.index.parity import CheckConfig, check_backend, load_images, run_check
from rtdgan.index.runtime import backends as B
from tests.index.test_backends import noisy_kind
from tests.service.conftest import SIZE, Tiny, free_port, running_client, settings_for, wait_http_ready

pytest.importorskip("openvino", reason="OpenVINO is the [cpu] extra's optional backend")


def serve_cmd(artifacts: Path, tiny: Tiny, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "rtdgan.service.serve_cli", "--artifacts", str(artifacts), "--index", str(tiny.index),
            "--port", str(port), *extra]


def test_serve_on_openvino_answers_search_over_http(tiny: Tiny, tmp_path: Path) -> None:
    artifacts = Path(shutil.copytree(tiny.artifacts, tmp_path / "artifacts"))  # same graphs: the index fits
    env = os.environ | {"RTD_BACKEND": "openvino", "RTD_PRECISION": "auto", "RTD_THREADS": "1"}
    refused = subprocess.run(serve_cmd(artifacts, tiny, free_port()), env=env, capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().count("\n") == 0, refused.stderr
    assert "no recorded parity" in refused.stderr and "rtd check-backend" in refused.stderr
    run_check(CheckConfig(artifacts=artifacts, backend="openvino", photos=tiny.samples, gallery=tiny.products))
    port, log = free_port(), tmp_path / "server.log"
    server = subprocess.Popen(serve_cmd(artifacts, tiny, port), env=env, stdout=subprocess.DEVNULL,
                              stderr=log.open("w"))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http_ready(base, server, log)
        ready = httpx.get(f"{base}/health/ready").json()
        precision = "bf16" if B.cpu_has_bf16() else "fp32"
        assert (ready["backend"], ready["precision"], ready["providers"]) == ("openvino", precision, ["OpenVINO/CPU"])
        # index.json records what the catalog was embedded on; a service on another backend says so.
        assert ready["index_backend"] == {"backend": "onnxruntime", "precision": "fp32"}
        for pid in ("P003", "P006"):
            response = httpx.post(f"{base}/search", files={"image": ("q.png", tiny.query_for(pid), "image/png")})
            assert response.status_code == 200, response.text
            assert response.json()["results"][0]["product_id"] == pid
        metrics = httpx.get(f"{base}/metrics").text
        assert f'rtd_backend_info{{backend="openvino",precision="{precision}"}} 1.0' in metrics
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert f"backend openvino {precision}" in log.read_text()  # the choice is logged at start
    assert f"the index was embedded on onnxruntime fp32, queries run on openvino {precision}" in log.read_text()


def test_unknown_backend_is_one_line(tiny: Tiny) -> None:
    for extra, env in ((["--backend", "tensorflow"], {}), ([], {"RTD_PRECISION": "int4"})):
        result = subprocess.run(serve_cmd(tiny.artifacts, tiny, free_port(), *extra), env=os.environ | env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.strip().count("\n") == 0, result.stderr
        assert "unknown" in result.stderr and "choose one of" in result.stderr


def test_a_failing_backend_is_refused_unless_allowed(tiny: Tiny, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    artifacts = Path(shutil.copytree(tiny.artifacts, tmp_path / "artifacts"))
    monkeypatch.setitem(B.KINDS, "noisy", noisy_kind(0.5))
    photos = load_images(tiny.samples, SIZE, 32, "photos")
    assert not check_backend(artifacts, B.make_backend("noisy"), photos)["passed"]
    with running_client(settings_for(tiny, artifacts=artifacts, backend="noisy"), ready=False) as client:
        for _ in range(200):
            ready = client.get("/health/ready")
            if "failed" in ready.json().get("detail", ready.text):
                break
            time.sleep(0.05)
        assert ready.status_code == 503
        assert "noisy-fp32 failed its parity check" in ready.text and "rtd check-backend" in ready.text
    with running_client(settings_for(tiny, artifacts=artifacts, backend="noisy", backend_unchecked=True)) as client:
        ready = client.get("/health/ready").json()
        assert (ready["backend"], ready["precision"]) == ("noisy", "fp32")
