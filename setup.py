"""Packaging: the four top-level folders install under one name, `rtdgan` (rtdgan.index, rtdgan.models,
rtdgan.service, rtdgan.training), so the wheel adds no generic top-level module (`index`, `models`, ...) to
site-packages. The metadata is in pyproject.toml; this file only maps the folders, and maps those that are
present: the service image copies index/ and service/ alone."""

from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
PARTS = ("index", "models", "service", "training")
present = [part for part in PARTS if (HERE / part / "__init__.py").is_file()]
packages = sorted(
    "rtdgan." + ".".join(init.parent.relative_to(HERE).parts)
    for part in present for init in (HERE / part).rglob("__init__.py"))

setup(package_dir={f"rtdgan.{part}": part for part in present}, packages=packages)
