"""The example of docs/study.md: a ranking study on the synthetic experiment's committed generators, filled
with SIMULATED raters (never people), to show what `rtd study report` writes.

Exports rtdGAN N = 3 (the demo generator), pix2pix and PLDT (the paper's three methods of Sec. 5.3; `--models`
adds N = 1 or N = 2) with EfficientNet-Lite0, draws the first 100 products of the experiment's held-out shop
(seed 6500, 64 px, LookBook framing; product i is the same as in the 1,000-product shop), then runs
`rtd study create` (70 photos), `rtd study simulate` (30 raters) and `rtd study report`.

    .venv/bin/python bench/experiments/study_example.py --root /tmp/rtd-study     # report in ROOT/study/report
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: bench.common

from bench.common import PRETRAINED, ROOT, say, synth_world  # noqa: E402

CARRY = ROOT / "docs" / "results-synthetic" / "carry"
RTD = str(Path(sys.executable).with_name("rtd"))


def rtd(*args: str) -> None:
    say("rtd " + " ".join(args))
    subprocess.run([RTD, *args], check=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, required=True, help="folder for the shop, artifacts and the study")
    p.add_argument("--models", default="rtdgan-n3,pix2pix,pldt", help="of rtdgan-n3, rtdgan-n2, rtdgan-n1, pix2pix, pldt")
    p.add_argument("--raters", type=int, default=30)
    a = p.parse_args()
    from rtdgan.training.demo_generator import weights_run

    shop = a.root / "shop"
    synth_world(shop, 100, seed=6500, framing="lookbook", size=64, photos=2)
    methods = []
    for name in a.models.split(","):
        artifacts = a.root / "artifacts" / name
        if not (artifacts / "model.json").is_file():
            run = weights_run(PRETRAINED if name == "rtdgan-n3" else CARRY / f"{name}.pt", a.root / "runs" / name)
            rtd("export", "--run", str(run), "--out", str(artifacts), "--embedder", "efficientnet_lite0",
                "--parity-data", str(shop), "--no-check-backends")
        methods.append(f"{name}={artifacts}")
    study = a.root / "study"
    if not (study / "study.json").is_file():
        rtd("study", "create", "--out", str(study), "--methods", ",".join(methods), "--data", str(shop))
        rtd("study", "simulate", str(study), "--raters", str(a.raters))
    rtd("study", "report", str(study))
    return 0


if __name__ == "__main__":
    sys.exit(main())
