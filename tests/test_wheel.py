"""The wheel as a user installs it: one top-level name, every file the demo and the service read, and the demo
built and searched from outside the checkout by a non-editable install in a fresh venv."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import fresh_venv, venv_env

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock-cpu.txt"
DATA_FOLDERS = ("models/pretrained", "service/static")  # read at run time: the demo's weights, the demo page

pytestmark = pytest.mark.slow  # builds a wheel; the second test installs it into a fresh venv


def tracked_tree(dest: Path) -> Path:
    """The checkout's tracked files (as they are in the working tree) copied to `dest`: a clean source tree, so
    nothing untracked (runs, demo output, caches) can reach the wheel."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
    for name in filter(None, listed.decode().split("\0")):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from its tracked files with this venv's setuptools."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tracked_tree(tmp / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp / "dist"), str(source)], check=True, capture_output=True, timeout=300)
    (built,) = (tmp / "dist").glob("rtdgan-*.whl")
    return built


def test_the_wheel_adds_one_top_level_name_and_every_data_file(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"rtdgan", wheel.name.split("-py")[0] + ".dist-info"}
    top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
    assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["rtdgan"]
    for folder in ("index", "index/runtime", "index/catalog", "models", "training", "service", "service/routes"):
        assert f"rtdgan/{folder}/__init__.py" in names, folder
    listed = subprocess.run(["git", "ls-files", *DATA_FOLDERS], cwd=ROOT, capture_output=True, text=True,
                            check=True, timeout=60).stdout.split()
    assert any(name.endswith(".onnx") for name in listed) and any(name.endswith(".pt") for name in listed)
    missing = [name for name in listed if f"rtdgan/{name}" not in names]
    assert not missing, f"the wheel lacks {missing}"
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]


@pytest.mark.timeout(1800)
def test_a_non_editable_install_builds_the_demo_and_searches_it(wheel: Path, tmp_path: Path) -> None:
    """pip install the wheel (with the `cpu` and `train` extras at the lock's versions) into a fresh venv, then,
    from a folder outside the checkout: `rtd demo --build-only` on a small shop and `rtd index search`."""
    venv = fresh_venv(tmp_path)
    env = venv_env(venv, RTD_PROVIDERS="CPUExecutionProvider", RTD_THREADS="1")
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-c", str(LOCK), f"{wheel}[cpu,train]"],
                             env=env, capture_output=True, text=True, timeout=1200)
    assert install.returncode == 0, install.stderr[-4000:]
    work = tmp_path / "work"  # no checkout here: the installed package is all there is
    work.mkdir()
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import importlib.util, rtdgan.service.app as a; print(a.__file__); "
                            "print([m for m in ('index', 'models', 'service', 'training') if importlib.util.find_spec(m)])"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    location, shadowing = where.stdout.splitlines()
    assert Path(location).is_relative_to(venv) and shadowing == "[]", where.stdout

    built = subprocess.run([str(venv / "bin" / "rtd"), "demo", "--build-only", "--products", "12", "--root", "demo"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=1200)
    assert built.returncode == 0, built.stderr[-4000:]
    demo = work / "demo"
    for name in ("artifacts/model.json", "index/index.json", "check.json"):
        assert (demo / name).is_file(), name
    photo = next(p for p in sorted((demo / "data").iterdir()) if "_CLEAN0_" in p.name)  # a model photo (LookBook)
    search = subprocess.run([str(venv / "bin" / "rtd"), "index", "search", "--artifacts", "demo/artifacts",
                             "--index", "demo/index", "--image", str(photo.relative_to(work)), "-k", "5"],
                            cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert search.returncode == 0, search.stderr[-4000:]
    results = json.loads(search.stdout)
    hits = results["results"] if isinstance(results, dict) else results
    assert len(hits) == 5 and {"product_id", "score"} <= set(hits[0]), results
