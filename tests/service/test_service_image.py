"""The service image, rebuilt without Docker: docker/service.Dockerfile's files and pip steps in a fresh venv.

The test reads the Dockerfile, so it follows it: the same COPY list into an empty WORKDIR (so training/ and
models/ are absent, as in the image), the same RUN steps (its pip installs, `pip install --no-deps .` and its
own build checks) with the venv first on PATH, then the image's CMD (`rtd serve ...`) on a free loopback port
over tiny artifacts and index mounted through RTD_ARTIFACTS / RTD_INDEX, and its HEALTHCHECK command, which
must succeed once the service is ready. In that venv torch is not importable and `rtd train` answers with the
one-line extra hint. Differences from a real build, each on purpose:
  - the project's `cpu` extra (onnxruntime) is installed for its `gpu` extra (onnxruntime-gpu): there is no GPU
    here and the gpu wheel is huge; both install the same `onnxruntime` module and the service falls back to
    the CPU provider. The lock (requirements/lock-gpu.txt) still pins everything else.
  - the base image's apt-get, venv creation and useradd steps are not run (the host's python makes the venv:
    CPython 3.11, as the image's).
  - PIP_NO_CACHE_DIR is not applied (it only saves image space); PIP_FIND_LINKS is unset as the Makefile does
    (a developer's pip config may point find-links at local wheels).
  - the host is 127.0.0.1 and the port a free one, both in CMD and in HEALTHCHECK.
It needs a package index (PyPI or a mirror in pip's config): skipped with the reason when none answers.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from rtdgan.service.cli import TRAIN_EXTRA
from tests.helpers import fresh_venv, venv_env
from tests.service.conftest import free_port, make_world
from tests.service.test_docker import instructions

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "service.Dockerfile"
NOT_RUN = ("apt-get ", "useradd ", "python3.11 -m venv ")  # the base system's steps, not the service's
GPU_EXTRA, CPU_EXTRA = '".[gpu,milvus]"', '".[cpu,milvus]"'

pytestmark = pytest.mark.slow


def _env(venv: Path, dockerfile_env: dict[str, str]) -> dict[str, str]:
    """The venv's clean environment with the Dockerfile's ENV (PIP_NO_CACHE_DIR aside: it only saves image space)."""
    return venv_env(venv, {k: v for k, v in dockerfile_env.items() if k != "PIP_NO_CACHE_DIR"})


def _dockerfile_env(value: str) -> dict[str, str]:
    """ENV A=1 B="x y" (the key=value form)."""
    return {k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|\S+)', value)}


def _sh(command: str, cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def build(tmp: Path) -> tuple[Path, Path, dict[str, str], list[tuple[str, str]]]:
    """The image's /app and /opt/venv under tmp, built as the Dockerfile does; (app, venv, env, steps)."""
    steps = instructions(DOCKERFILE.read_text())
    venv, app = fresh_venv(tmp), tmp / "app"
    workdir, dockerfile_env, swapped = Path("/"), {}, 0
    for op, args in steps:
        if op == "ENV":
            dockerfile_env |= _dockerfile_env(args)
        elif op == "WORKDIR":
            workdir = Path(args)
            assert workdir.is_absolute(), "the test maps an absolute WORKDIR onto tmp/app"
            app.mkdir(parents=True, exist_ok=True)
        elif op == "COPY":
            *sources, dest = args.split()  # COPY SRC... DEST, relative to the build context and WORKDIR
            target = app / dest
            for source in sources:
                src = ROOT / source
                if src.is_dir():  # a folder's contents go into DEST (.dockerignore drops __pycache__)
                    shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                                    dirs_exist_ok=True)
                elif dest.endswith("/") or len(sources) > 1:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, target / src.name)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, target)
        elif op == "RUN" and not args.startswith(NOT_RUN):
            # The `cpu` extra for the `gpu` one: no GPU here, and onnxruntime-gpu is a huge wheel; the CPU
            # build installs the same `onnxruntime` module (the service then runs on the CPU provider).
            command = args.replace(GPU_EXTRA, CPU_EXTRA)
            swapped += command != args
            result = _sh(command, app if app.is_dir() else tmp, _env(venv, dockerfile_env))
            assert result.returncode == 0, f"RUN {command}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    assert swapped == 1, f"expected one `pip install ... {GPU_EXTRA}` step in {DOCKERFILE.name}"
    return app, venv, _env(venv, dockerfile_env), steps


def test_the_service_image_serves_and_reports_healthy(tmp_path: Path) -> None:
    start = time.perf_counter()
    app, venv, env, steps = build(tmp_path)
    built_s = time.perf_counter() - start
    assert not (app / "training").exists() and not (app / "models").exists()
    # Every installed package that the lock names is at the lock's version (pip installed with `-c` it).
    lock = dict(line.split("==") for line in (ROOT / "requirements" / "lock-gpu.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    listed = subprocess.run([str(venv / "bin" / "pip"), "list", "--format=json"], env=env, capture_output=True,
                            text=True, timeout=120, check=True)
    installed = {re.sub(r"[-_.]+", "-", p["name"]).lower(): p["version"] for p in json.loads(listed.stdout)}
    drift = {name: (installed[name], pin) for name, pin in lock.items() if name in installed and installed[name] != pin}
    assert not drift and "fastapi" in installed and "onnxruntime" in installed, drift
    for missing in ("torch", "training", "models"):
        result = subprocess.run([str(venv / "bin" / "python"), "-c", f"import {missing}"], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr, f"{missing} is importable"

    # A training subcommand names the extra to install, in one line.
    result = subprocess.run([str(venv / "bin" / "rtd"), "train", "--data", "d", "--out", "o"], cwd=app, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert TRAIN_EXTRA in result.stderr and "Traceback" not in result.stderr

    # The index-build job (docker-compose.yml runs it in this image): the config as one JSON line on stderr.
    world = make_world(tmp_path / "world")
    result = subprocess.run([str(venv / "bin" / "rtd"), "index", "build", "--artifacts", str(world.artifacts),
                             "--catalog", str(tmp_path / "world" / "catalog.csv"), "--out", str(tmp_path / "index2")],
                            cwd=app, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    config = [line for line in result.stderr.splitlines() if line.startswith("rtd index build: config {")]
    assert len(config) == 1 and json.loads(config[0].split("config ", 1)[1])["kind"] == "auto"
    assert "indexed 10 products" in result.stdout
    result = subprocess.run([str(venv / "bin" / "rtd"), "index", "search", "--artifacts", str(world.artifacts),
                             "--index", str(tmp_path / "index2"), "--image", str(sorted(world.samples.iterdir())[3]),
                             "-k", "3"], cwd=app, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["results"][0]["product_id"] == world.product_ids[3]  # conftest's channel swap

    # CMD, with the port EXPOSE names moved to a free loopback one, and HEALTHCHECK against it.
    exposed = next(args for op, args in steps if op == "EXPOSE").split()[0]
    port = str(free_port())
    cmd = [{exposed: port, "0.0.0.0": "127.0.0.1"}.get(a, a) for a in json.loads(next(a for o, a in steps if o == "CMD"))]
    health = next(args for op, args in steps if op == "HEALTHCHECK")
    health = health.split(" CMD ", 1)[1].replace(f":{exposed}/", f":{port}/")
    serve_env = env | {"RTD_ARTIFACTS": str(world.artifacts), "RTD_INDEX": str(world.index), "RTD_THREADS": "1"}
    log = tmp_path / "serve.log"
    with log.open("w") as log_file:
        server = subprocess.Popen([str(venv / "bin" / cmd[0]), *cmd[1:]], cwd=app, env=serve_env,
                                  stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline, healthy = time.monotonic() + 120, None
        while time.monotonic() < deadline and server.poll() is None:
            healthy = _sh(health, app, env, timeout=10)
            if healthy.returncode == 0:
                break
            time.sleep(0.5)
        assert healthy is not None and healthy.returncode == 0, log.read_text()[-4000:]
        assert server.poll() is None
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    text = log.read_text()
    assert "rtd serve: config" in text and "Traceback" not in text
    assert _sh(health, app, env, timeout=10).returncode != 0  # the check fails once the server is gone
    print(f"service image rebuilt in {built_s:.0f} s; served and healthy in {time.perf_counter() - start:.0f} s")
