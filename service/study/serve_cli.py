"""`rtd study serve STUDY`: the raters' page (app.py) under uvicorn; `rtd study simulate STUDY`: simulated raters.

The admin key that unlocks GET /api/export comes from $RTD_STUDY_ADMIN_KEY (or --admin-key, which other users
of the machine can read in the process list); without one the export is disabled.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from rtdgan.index.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `rtd study serve` flags."""
    parser.add_argument("study", type=Path, help="study folder (`rtd study create`)")
    parser.add_argument("--responses", type=Path, default=None,
                        help="SQLite file of the responses (default: STUDY/responses.sqlite)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; 0.0.0.0 for "
                                                           "raters on other machines)")
    parser.add_argument("--port", type=int, default=8010, help="port (default: 8010)")
    parser.add_argument("--admin-key", default=None, help="key of GET /api/export (default: $RTD_STUDY_ADMIN_KEY)")
    parser.add_argument("--secure-cookie", action="store_true", help="mark the rater cookie Secure (behind HTTPS)")


def run(args: argparse.Namespace) -> int:
    """Serve the study until stopped."""
    import uvicorn

    from rtdgan.service.study.app import StudySettings, create_study_app

    key = args.admin_key or os.environ.get("RTD_STUDY_ADMIN_KEY") or None
    config = {"study": str(args.study), "responses": str(args.responses) if args.responses else None,
              "host": args.host, "port": args.port, "admin_key": "set" if key else None,
              "secure_cookie": args.secure_cookie}
    print("rtd study serve: config " + json.dumps(config), file=sys.stderr)
    if key is not None and len(key) < 12:
        raise UserError("the admin key must be at least 12 characters")
    settings = StudySettings(study=args.study, responses=args.responses, admin_key=key,
                             secure_cookie=args.secure_cookie)
    app = create_study_app(settings)
    study = app.state.study
    print(f"rtd study serve: {len(study.items)} items x {len(study.tasks)} tasks, {len(study.methods)} methods; "
          f"raters open http://{args.host}:{args.port}/ ; export {'on' if key else 'off (no admin key)'}",
          file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def add_arguments_simulate(parser: argparse.ArgumentParser) -> None:
    """The `rtd study simulate` flags."""
    parser.add_argument("study", type=Path, help="study folder (`rtd study create`)")
    parser.add_argument("--raters", type=int, default=30, help="simulated raters (Sec. 5.3 had 30 people)")
    parser.add_argument("--noise", type=float, default=0.05, help="spread of a simulated rater's judgement (RMSE units)")
    parser.add_argument("--complete", type=float, default=1.0, help="share of each rater's plan answered (a study "
                                                                    "still running: < 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated raters")


def run_simulate(args: argparse.Namespace) -> int:
    """Fill the study's responses with simulated raters (marked as such: the report says so)."""
    from rtdgan.service.study.simulate import simulate

    config = {"study": str(args.study), "raters": args.raters, "noise": args.noise, "complete": args.complete,
              "seed": args.seed}
    print("rtd study simulate: config " + json.dumps(config), file=sys.stderr)

    counts = simulate(args.study, args.raters, noise=args.noise, complete=args.complete, seed=args.seed)
    print(json.dumps(counts))
    return 0
