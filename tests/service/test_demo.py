"""`rtd demo` end to end at a tiny size: synth -> split -> train -> export -> index -> the real service."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

from PIL import Image

from service.demo import DemoConfig, run_demo
from service.settings import Settings
from tests.service.conftest import running_client


def test_demo_builds_every_stage_then_serves_it(tmp_path: Path) -> None:
    cfg = DemoConfig(root=tmp_path / "demo", products=12, photos_per_product=2, size=32, stages=2, width=4,
                     epochs_fade=1, epochs_stab=1, batch_sizes=(8, 8), workers=1, serve=False)
    assert run_demo(cfg) == 0
    root = cfg.root
    for path in ("data/products.csv", "split.json", "sheet.png", "run/checkpoints/stage_2.pt",
                 "artifacts/generator.onnx", "artifacts/embedder.onnx", "artifacts/model.json", "index/index.json"):
        assert (root / path).is_file(), path
    model = json.loads((root / "artifacts" / "model.json").read_text())
    assert model["embedder"]["backbone"] == "efficientnet_lite0" and model["preprocessing"]["size"] == 32
    samples = sorted((root / "samples").iterdir())
    test_ids = {r["product_id"] for r in json.loads((root / "split.json").read_text())["test"]}
    assert samples and {p.name[3:9] for p in samples} <= test_ids  # only held-out photos are offered

    # A second run finds everything built and does nothing but (here) return.
    stamp = (root / "artifacts" / "model.json").stat().st_mtime_ns
    start = time.perf_counter()
    assert run_demo(cfg) == 0
    assert time.perf_counter() - start < 10
    assert (root / "artifacts" / "model.json").stat().st_mtime_ns == stamp

    # The service runs on what the demo built: a held-out photo gets products back.
    settings = Settings(artifacts=root / "artifacts", index=root / "index", demo_samples=root / "samples")
    with running_client(settings) as client:
        photo = samples[0].read_bytes()
        r = client.post("/search", files={"image": ("p.jpg", photo, "image/jpeg")}, data={"k": "5"})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert len(results) == 5 and all(h["product_id"] for h in results)
        g = client.post("/generate", files={"image": ("p.jpg", photo, "image/jpeg")})
        assert g.status_code == 200 and Image.open(io.BytesIO(g.content)).size == (32, 32)
