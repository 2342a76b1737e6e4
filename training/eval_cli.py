"""`rtd eval` and `rtd eval compare`: flags -> one frozen EvalConfig, printed, then training/evaluate.py.

No torch anywhere on this path: evaluation runs the exported ONNX files with onnxruntime, like the service.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from rtdgan.index.configs import print_config
from rtdgan.index.errors import UserError
from rtdgan.index.runtime.backends import PRECISION_HELP, from_env


def _ks(text: str) -> tuple[int, ...]:
    try:
        ks = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,5,10, got {text!r}") from e
    if not ks or ks[0] < 1:
        raise argparse.ArgumentTypeError(f"K values must be positive integers, got {text!r}")
    return tuple(ks)


def _default(name: str) -> object:
    """EvalConfig's default for a field: each default is written once, in the dataclass."""
    from rtdgan.training.eval_protocol import EvalConfig

    return next(f.default for f in dataclasses.fields(EvalConfig) if f.name == name)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `rtd eval` flags (EvalConfig's fields and defaults), and the `compare` subcommand, to `parser`."""
    from rtdgan.training.eval_protocol import QUERY_CHOICES

    p = parser
    p.add_argument("--artifacts", type=Path, help="folder from `rtd export` (generator.onnx, embedder.onnx, model.json)")
    p.add_argument("--data", type=Path, help="data folder (the split was made from it)")
    p.add_argument("--split", type=Path, help="split file from `rtd data split`; its test part is evaluated "
                   "(default: every product of --data, e.g. a held-out shop)")
    p.add_argument("--out", type=Path, help="report folder (report.json, report.md, recall.png, samples.png, queries.csv)")
    p.add_argument("--catalog", metavar="LOCATION", default=None,
                   help="rank against this prebuilt catalog (an index folder from `rtd index build`, "
                        "milvus:///abs.db[/coll] or milvus://host:19530/coll) instead of the test products alone; it "
                        "must hold every test product; ranks are read down to the largest K (default: the test "
                        "products, exact, every rank known)")
    ks = _default("ks")
    p.add_argument("--k", type=_ks, default=ks, help=f"Recall@K cut-offs (default: {','.join(map(str, ks))})")
    p.add_argument("--query", choices=QUERY_CHOICES, default=_default("query"),
                   help="all: every kind side by side (generated and photo with the frozen embedder, the paper's "
                        "protocol, and the retrieval head's query when the artifacts have one); generated: the "
                        "paper's method; photo: the no-generation baseline; head: the head's query; both: generated "
                        "and photo (default: %(default)s)")
    p.add_argument("--limit", type=int, default=_default("limit"), help="evaluate the first N query photos only")
    p.add_argument("--batch-size", type=int, default=_default("batch_size"),
                   help="images per onnxruntime call (default: %(default)s)")
    p.add_argument("--samples", type=int, default=_default("samples"),
                   help="rows of the sample grid, samples.png (default: %(default)s)")
    p.add_argument("--bootstrap", type=int, default=_default("bootstrap"),
                   help="product resamples for the 95 %% intervals of Recall@K (default: %(default)s)")
    p.add_argument("--seed", type=int, default=_default("seed"), help="seed of the bootstrap (default: %(default)s)")
    p.add_argument("--backend", default=None, help="inference backend, onnxruntime or openvino (index/backends.py; "
                   "default: $RTD_BACKEND, else onnxruntime)")
    p.add_argument("--precision", default=None, help=f"{PRECISION_HELP} (default: $RTD_PRECISION, else auto)")
    sub = p.add_subparsers(dest="eval_command", parser_class=type(p))
    c = sub.add_parser("compare", help="merge several report.json files into one table and one plot")
    c.add_argument("reports", type=Path, nargs="+", help="report.json files (or their folders)")
    c.add_argument("--out", type=Path, required=True, help="folder for compare.md, compare.json, recall.png")


def run(args: argparse.Namespace) -> int:
    """`rtd eval` (or `rtd eval compare`): print the config, run, print a summary; returns the exit code."""
    from rtdgan.training.eval_protocol import EvalConfig
    from rtdgan.training.eval_report import compare_reports, summary_text
    from rtdgan.training.evaluate import evaluate

    if getattr(args, "eval_command", None) == "compare":
        print(f"rtd eval compare: config {json.dumps({'reports': [str(r) for r in args.reports], 'out': str(args.out)})}",
              file=sys.stderr)
        merged = compare_reports(args.reports, args.out)
        print((Path(args.out) / "compare.md").read_text(encoding="utf-8"))
        print(json.dumps({"out": str(args.out), "rows": len(merged["rows"])}))
        return 0
    missing = [f"--{name}" for name in ("artifacts", "data", "out") if getattr(args, name) is None]
    if missing:
        raise UserError(f"missing {', '.join(missing)} (or use `rtd eval compare REPORT... --out DIR`)")
    cfg = EvalConfig(artifacts=args.artifacts, data=args.data, split=args.split, out=args.out,
                     catalog=str(args.catalog) if args.catalog is not None else None, ks=tuple(args.k),
                     query=args.query, limit=args.limit, batch_size=args.batch_size, samples=args.samples,
                     bootstrap=args.bootstrap, seed=args.seed)
    print_config("eval", cfg)
    # The pipelines read the backend from RTD_BACKEND / RTD_PRECISION (rtdgan.index.runtime.backends.from_env): the flags set
    # them, checked here first (an unknown backend is one line, before any work).
    backend = from_env(args.backend, args.precision)
    os.environ["RTD_BACKEND"], os.environ["RTD_PRECISION"] = backend.name, backend.precision
    print(f"rtd eval: backend {backend.name}, precision {backend.precision}", file=sys.stderr)
    report = evaluate(cfg)
    print(summary_text(report))  # report.md in --out has the same with the setup and the method notes
    print(json.dumps({"out": str(cfg.out), "queries": report["test_set"]["queries"],
                      "kinds": [r["method"] for r in report["results"]],
                      "queries_per_s": report["throughput"]["queries_per_s"]}))
    return 0
