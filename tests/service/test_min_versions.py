"""The service on the oldest versions pyproject.toml allows: its lower bounds are true minimums.

A fresh venv gets the service's files (pyproject.toml, index/, service/, as the service image has them) with
`pip install -c MINS ".[cpu]"`, where MINS pins every base requirement and the `cpu` extra's onnxruntime to
its `>=` bound (generated from pyproject.toml here). In that venv: `rtd index build` over the tiny world,
`rtd serve`, then a search, a product image and a product page over HTTP; and, when torch is importable in
the test's own venv, artifacts written by the real exporters (ONNX IR 10, opset 18, what `rtd export`
writes) are built into an index and searched with `rtd index search`.

Slow (about 1.5 minutes, most of it downloading old wheels) and it needs a package index: skipped with the
reason when none answers.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tomllib
from packaging.requirements import Requirement

from tests.helpers import fresh_venv, venv_env
from tests.service.conftest import Tiny, free_port, make_world

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def minimum_pins() -> dict[str, str]:
    """{name: lower bound} of the service's requirements: the base ones and the `cpu` extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in project["dependencies"] + project["optional-dependencies"]["cpu"]:
        req = Requirement(line)
        bound = next(s.version for s in req.specifier if s.operator == ">=")
        pins[re.sub(r"[-_.]+", "-", req.name).lower()] = bound
    return pins


def _env(venv: Path, **extra: str) -> dict[str, str]:
    return venv_env(venv, RTD_PROVIDERS="CPUExecutionProvider", RTD_THREADS="1", **extra)


def _run(venv: Path, *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / args[0]), *args[1:]], cwd=cwd, env=_env(venv), capture_output=True,
                          text=True, timeout=timeout)


def install_minimums(tmp: Path) -> tuple[Path, Path]:
    """(venv, app): the service's files installed at their minimum versions."""
    venv, app = fresh_venv(tmp), tmp / "app"
    app.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, app / name)
    for package in ("index", "service"):
        shutil.copytree(ROOT / package, app / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    mins = minimum_pins()
    (tmp / "mins.txt").write_text("".join(f"{name}=={version}\n" for name, version in mins.items()))
    result = _run(venv, "pip", "install", "-c", str(tmp / "mins.txt"), ".[cpu]", cwd=app, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    listed = json.loads(_run(venv, "pip", "list", "--format=json", cwd=app).stdout)
    installed = {re.sub(r"[-_.]+", "-", p["name"]).lower(): p["version"] for p in listed}
    for name, version in mins.items():  # "1.8" installs as 1.8.0: compare release numbers padded with zeros
        got, want = (tuple(int(x) for x in re.findall(r"\d+", v)[:3]) for v in (installed[name], version))
        assert got + (0,) * (3 - len(got)) == want + (0,) * (3 - len(want)), f"{name} {installed[name]} != {version}"
    return venv, app


def exported_artifacts(folder: Path, size: int = 32) -> Path | None:
    """Artifacts written by training/export.py's and export_embedder.py's exporters (untrained weights); None
    without torch."""
    try:
        import torch
        from torch import nn

        from rtdgan.models.embedders import Embedder, EmbedderInfo
        from rtdgan.models.generator import GeneratorConfig, ProgressiveGenerator
        from rtdgan.training.export import export_generator
        from rtdgan.training.export_embedder import export_embedder
    except ImportError:
        return None
    from rtdgan.index.files import sha256_file

    folder.mkdir(parents=True)
    torch.manual_seed(0)
    sample = np.random.default_rng(0).uniform(-1, 1, (2, 3, size, size)).astype(np.float32)
    generator = ProgressiveGenerator(GeneratorConfig(size, 2, 4)).at_stage().eval()
    export_generator(generator, folder / "generator.onnx", size, sample)
    features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())
    embedder = Embedder(features, 16, size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)).eval()
    info = EmbedderInfo("tiny_conv", 16, size, "test:random-init", "0" * 64)
    fragment = export_embedder(embedder, info, folder / "embedder.onnx", size, sample)
    model = {"format_version": 1, "generator": {"architecture": "rtdgan", "onnx_sha256": sha256_file(
        folder / "generator.onnx")}, "embedder": fragment, "preprocessing": {"size": size}}
    (folder / "model.json").write_text(json.dumps(model))
    return folder


@contextlib.contextmanager
def serving(venv: Path, app: Path, artifacts: Path, index: Path, log: Path) -> Iterator[str]:
    port = free_port()
    with log.open("w") as out:
        server = subprocess.Popen([str(venv / "bin" / "rtd"), "serve", "--artifacts", str(artifacts), "--index",
                                   str(index), "--port", str(port)], cwd=app, env=_env(venv), stdout=out,
                                  stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, ready = time.monotonic() + 90, None
        while time.monotonic() < deadline and server.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                ready = httpx.get(f"{base}/health/ready", timeout=2)
                if ready.status_code == 200:
                    break
            time.sleep(0.2)
        assert ready is not None and ready.status_code == 200, log.read_text()[-4000:]
        yield base
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def test_the_service_runs_on_its_minimum_versions(tmp_path: Path) -> None:
    venv, app = install_minimums(tmp_path)
    world: Tiny = make_world(tmp_path / "world")
    result = _run(venv, "python", "-c", "import rtdgan.service.app, sys; assert 'torch' not in sys.modules", cwd=app)
    assert result.returncode == 0, result.stderr

    built = _run(venv, "rtd", "index", "build", "--artifacts", str(world.artifacts), "--catalog",
                 str(tmp_path / "world" / "catalog.csv"), "--out", str(tmp_path / "index"), cwd=app)
    assert built.returncode == 0 and "indexed 10 products" in built.stdout, built.stderr[-3000:]
    with serving(venv, app, world.artifacts, tmp_path / "index", tmp_path / "serve.log") as base:
        found = httpx.post(f"{base}/search", files={"image": ("q.png", world.query_for("P006"))}, data={"k": "3"},
                           timeout=30)
        assert found.status_code == 200, found.text
        assert found.json()["results"][0]["product_id"] == "P006"
        image = httpx.get(f"{base}/products/P006/image", timeout=10)
        assert image.status_code == 200 and image.content == (world.products / "P006.png").read_bytes()
        assert httpx.get(f"{base}/products/P006", timeout=10).json()["product_id"] == "P006"
    assert "Traceback" not in (tmp_path / "serve.log").read_text()

    exported = exported_artifacts(tmp_path / "exported")
    if exported is None:
        return  # no torch in this venv: the exporters' output is checked where they run
    built = _run(venv, "rtd", "index", "build", "--artifacts", str(exported), "--catalog",
                 str(tmp_path / "world" / "catalog.csv"), "--out", str(tmp_path / "index-exported"), cwd=app)
    assert built.returncode == 0, built.stderr[-3000:]
    photo = sorted(world.samples.iterdir())[0]
    searched = _run(venv, "rtd", "index", "search", "--artifacts", str(exported), "--index",
                    str(tmp_path / "index-exported"), "--image", str(photo), "-k", "3", cwd=app)
    assert searched.returncode == 0, searched.stderr[-3000:]
    assert len(json.loads(searched.stdout)["results"]) == 3
