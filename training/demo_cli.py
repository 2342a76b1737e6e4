"""`rtd demo`: flags -> DemoConfig (derived from the dataclass, index/configs.py) -> build -> serve.

The one module of training/ that calls into service/: building the demo is training's work (training/demo.py,
which never imports service/), serving it is the service's. This module is CLI wiring, the top layer, so it
may use both (docs/architecture.md); it imports service/ lazily, inside `run`, and tests/test_layers.py names
it as the one exception to "training/ does not use service/".
"""

from __future__ import annotations

import argparse

from rtdgan.index import configs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `rtd demo` flags: DemoConfig's fields marked for the command line (the recipe is not)."""
    from rtdgan.training.demo_config import DemoConfig

    configs.add_arguments(parser, DemoConfig)


def run(args: argparse.Namespace) -> int:
    """Build what is missing (training/demo.py), then serve it until stopped unless --build-only."""
    from rtdgan.training.demo import build_demo
    from rtdgan.training.demo_config import DemoConfig
    from rtdgan.training.demo_stage import say

    cfg = configs.job_config(DemoConfig, args, "demo")
    built = build_demo(cfg)
    if cfg.build_only:
        return 0
    from rtdgan.service.serve_cli import serve
    from rtdgan.service.settings import Settings

    say(f"serving on http://{cfg.host}:{cfg.port}  (Ctrl-C stops)")
    serve(Settings(artifacts=built.artifacts, index=built.index, demo_samples=built.samples), cfg.host, cfg.port)
    return 0
