"""pyproject.toml's requirements and the lock files (requirements/lock-*.txt, written by requirements/lock.py).

Fast and offline: every requirement has a lower bound (tests/service/test_min_versions.py installs exactly
those), and every lock pins each of its file's requirements at a version the requirement allows, so a
pyproject.toml change without `make lock` fails here rather than at install time.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
BASE, EXTRAS = PROJECT["dependencies"], PROJECT["optional-dependencies"]
# Which requirements each lock must pin: (requirement lines, names it leaves to its image's base). The training
# image keeps its base image's PyTorch stack: torch, torchvision and what they need (numpy, pillow among ours).
LOCKS = {
    "lock-cpu.txt": (BASE + EXTRAS["cpu"] + EXTRAS["train"] + EXTRAS["dev"] + EXTRAS["milvus"], set()),
    "lock-gpu.txt": (BASE + EXTRAS["gpu"] + EXTRAS["milvus"], set()),
    "lock-train.txt": (BASE + EXTRAS["cpu"] + EXTRAS["train"], {"torch", "torchvision", "numpy", "pillow"}),
}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(name: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements" / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            package, version = line.split("==")
            pins[canonical(package)] = version
    return pins


def test_every_requirement_has_a_lower_bound() -> None:
    for line in BASE + [line for lines in EXTRAS.values() for line in lines]:
        assert any(s.operator == ">=" for s in Requirement(line).specifier), f"{line}: give it a `>=` lower bound"


def test_onnxruntime_comes_from_exactly_one_extra() -> None:
    names = {extra: {canonical(Requirement(r).name) for r in lines} for extra, lines in EXTRAS.items()}
    runtimes = {extra: {n for n in found if n.startswith("onnxruntime")} for extra, found in names.items()}
    assert runtimes["cpu"] == {"onnxruntime"} and runtimes["gpu"] == {"onnxruntime-gpu"}
    assert names["cpu"] == {"onnxruntime", "openvino"}  # OpenVINO: the CPU image's other backend
    assert not any(canonical(Requirement(r).name).startswith("onnxruntime") for r in BASE)
    assert not any(n.startswith("onnxruntime") for extra in ("train", "dev") for n in names[extra])


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_each_lock_pins_what_pyproject_allows(lock: str) -> None:
    pins = read_lock(lock)
    lines, left_out = LOCKS[lock]
    for line in lines:
        req = Requirement(line)
        name = canonical(req.name)
        if name in left_out:
            assert name not in pins, f"{lock} must not pin {name} (the image's base image provides it)"
            continue
        assert name in pins, f"{lock} has no pin for {name}: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"{lock} pins {name}=={pins[name]}, outside {line!r}: run `make lock`"
    assert "rtdgan" not in pins


def test_the_locks_agree_with_each_other() -> None:
    full = read_lock("lock-cpu.txt")
    for lock in ("lock-gpu.txt", "lock-train.txt"):
        shared = {n: v for n, v in read_lock(lock).items() if n in full}
        assert shared == {n: full[n] for n in shared}, f"{lock} and lock-cpu.txt pin different versions"
