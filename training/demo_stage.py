"""What every stage of the demo build shares: its console line, removing what a change has made stale, and the
synthetic worlds it draws (`rtd data synth`, skipped when the same world is complete there already)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from rtdgan.training.demo_config import DemoConfig


def say(text: str) -> None:
    """One line of the build's progress, on stderr."""
    print(f"rtd demo: {text}", file=sys.stderr, flush=True)


def remove(root: Path, *names: str) -> None:
    """Delete built stages (folders or files) under `root` so that the next steps build them again."""
    for name in names:
        path = root / name
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def synth_world(out: Path, products: int, photos: int, cfg: DemoConfig, seed: int, framing: str | None = None,
                size: int | None = None) -> Path:
    """A synthetic world (`rtd data synth`) unless one of these settings is complete there already."""
    from rtdgan.training.synth import SynthConfig, synthesize

    want = {"products": products, "photos_per_product": photos, "size": size or cfg.size, "seed": seed,
            "framing": framing or cfg.framing}
    marker = out / "synth.json"
    have = json.loads(marker.read_text()) if marker.is_file() else {}
    if not (have.get("complete") and all(have.get(k) == v for k, v in want.items())):
        if have and not out.is_symlink():  # another world's files: none may stay behind
            shutil.rmtree(out)
        say(f"data: writing {products} products x {photos} {want['framing']}-framed photos at {want['size']} px "
            f"to {out}")
        synthesize(SynthConfig(out=out, workers=cfg.workers, **want))
    return out


def strip_part(artifacts: Path, *names: str) -> bool:
    """Remove an optional part (the person crop, the head) from the artifacts' current version folder, its JSON
    (`names[0]`) first, so that no reader finds a JSON whose graphs are gone; whether it was there."""
    from rtdgan.index.runtime.artifacts import read_artifacts

    folder = read_artifacts(artifacts).folder
    had = (folder / names[0]).is_file()
    for name in names:
        (folder / name).unlink(missing_ok=True)
    return had
