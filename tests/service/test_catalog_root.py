"""Catalog images are found through the catalog root, not the build machine's paths (service/engine.py `image_file`).

`rtd index build` stores image paths relative to the catalog root and records the root in index.json; the
service looks under RTD_CATALOG first, else under the recorded root. So an index built on the host serves in
a container that mounts the catalog somewhere else (docker-compose.yml: ./catalog -> /catalog).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.service.conftest import make_world, running_client, settings_for


def test_moved_catalog_is_served_through_rtd_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = make_world(tmp_path / "built")  # catalog.csv beside catalog/: the root is built/
    manifest = json.loads((world.index / "index.json").read_text())
    assert manifest["catalog_root"] == str((tmp_path / "built").resolve())
    expected = (world.products / f"{world.product_ids[2]}.png").read_bytes()

    # The catalog images move (the "container" mounts them elsewhere); the index is not rebuilt.
    mounted = tmp_path / "mnt" / "catalog-root"
    mounted.mkdir(parents=True)
    shutil.move(str(world.products), str(mounted / "catalog"))
    url = f"/products/{world.product_ids[2]}/image"

    with running_client(settings_for(world)) as client:  # no RTD_CATALOG: the recorded root has no images
        response = client.get(url)
        assert response.status_code == 404 and response.json()["error"] == "image_missing"
        assert client.get(f"/products/{world.product_ids[2]}").status_code == 200  # the product itself is there

    monkeypatch.setenv("RTD_CATALOG", str(mounted))
    with running_client(settings_for(world)) as client:
        response = client.get(url)
        assert response.status_code == 200 and response.content == expected

    # Back where it was built: the recorded root serves it without RTD_CATALOG.
    monkeypatch.delenv("RTD_CATALOG")
    shutil.move(str(mounted / "catalog"), str(world.products))
    with running_client(settings_for(world)) as client:
        assert client.get(url).content == expected
