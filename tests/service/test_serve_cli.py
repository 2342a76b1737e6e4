"""`rtd serve` (service/serve_cli.py): flags and env to Settings, fail fast on bad folders, a real server."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from rtdgan.index.errors import UserError
from rtdgan.service import serve_cli
from tests.service.conftest import Tiny, free_port, wait_http_ready


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serve_cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_flags_override_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTD_ARTIFACTS", "/env/artifacts")
    monkeypatch.setenv("RTD_INDEX", "/env/index")
    monkeypatch.setenv("RTD_MAX_WAIT_MS", "7.5")
    s = serve_cli.build_settings(parse("--index", str(tmp_path), "--demo-samples", str(tmp_path / "s")))
    assert s.artifacts == Path("/env/artifacts") and s.index == tmp_path
    assert s.demo_samples == tmp_path / "s" and s.max_wait_ms == 7.5
    args = parse()
    assert (args.host, args.port, args.log_level) == ("127.0.0.1", 8000, "info")


def test_bad_environment_is_one_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTD_QUEUE_SIZE", "lots")
    with pytest.raises(UserError, match="queue_size"):
        serve_cli.build_settings(parse())


def test_bad_folders_fail_before_serving(tiny: Tiny, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no model.json"):
        serve_cli.run(parse("--artifacts", str(tmp_path), "--index", str(tiny.index)))
    with pytest.raises(UserError, match="not an index folder"):
        serve_cli.run(parse("--artifacts", str(tiny.artifacts), "--index", str(tmp_path)))
    with pytest.raises(UserError, match="--port"):
        serve_cli.run(parse("--artifacts", str(tiny.artifacts), "--index", str(tiny.index), "--port", "70000"))
    result = subprocess.run([sys.executable, "-m", "rtdgan.service.serve_cli", "--artifacts", str(tmp_path), "--index",
                             str(tiny.index)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "no model.json" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_runs_a_real_server_with_request_ids_in_the_log(tiny: Tiny, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    env = os.environ | {"RTD_ADMIN_KEY": "do-not-print-me", "RTD_PROVIDERS": "CPUExecutionProvider"}
    server = subprocess.Popen(
        [sys.executable, "-m", "rtdgan.service.serve_cli", "--artifacts", str(tiny.artifacts), "--index", str(tiny.index),
         "--port", str(port), "--demo-samples", str(tiny.samples)], env=env, stdout=subprocess.DEVNULL,
        stderr=log.open("w"))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http_ready(base, server, log)
        response = httpx.post(f"{base}/search", files={"image": ("q.png", tiny.query_for("P005"))},
                              headers={"X-Request-ID": "trace-me-42"}, timeout=30)
        assert response.json()["results"][0]["product_id"] == "P005"
        assert len(httpx.get(f"{base}/demo/samples").json()["samples"]) == 8
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
    text = log.read_text()
    assert "rtd serve: config" in text and "do-not-print-me" not in text
    assert "[trace-me-42] POST /search -> 200" in text
    assert "CPUExecutionProvider" in text  # the provider choice is logged at start
    # A graceful stop (uvicorn re-raises SIGTERM after shutting down, so the status may say "killed by 15").
    assert "Application shutdown complete" in text and server.returncode in (0, -signal.SIGTERM)
