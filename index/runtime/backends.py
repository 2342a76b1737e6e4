"""Inference backends, chosen at run time: the same artifact .onnx files on onnxruntime or OpenVINO. No torch.

A `Backend` is a name, a resolved precision and the CPU-thread cap; `Backend.load(path)` compiles one ONNX graph
into a `Runner` (one input, one output, float32 in and out). The artifacts never change: what a backend does to
the numbers is measured by the parity gate (index/parity.py, `rtd check-backend`), and the service refuses a
non-reference backend whose recorded parity is missing or failing.

  onnxruntime  fp32: today's engine, the reference (CUDA first when onnxruntime-gpu has it, else CPU).
               fp16: onnxruntime's TensorRT provider with fp16 kernels and an engine cache in $RTD_TRT_CACHE
               (GPU nodes only; written, not measured on a machine without a GPU). auto = fp32.
  openvino     CPU; fp32 or bf16 (`INFERENCE_PRECISION_HINT`), `PERFORMANCE_HINT` LATENCY, threads capped like
               onnxruntime's. auto = bf16 when the CPU has bf16 units (OPTIMIZATION_CAPABILITIES lists BF16:
               AVX512-BF16 or AMX), else fp32. An explicit bf16 on a CPU without them is refused: OpenVINO
               would accept the hint and silently run fp32 (checked with OpenVINO 2026.4 on an AVX2-only CPU).
               int8: the `<graph>.int8.onnx` files `rtd quantize` wrote beside the fp32 graphs
               (index/quantize.py; a graph without one, e.g. the head, runs fp32); never chosen by auto.

The choice comes from `--backend` / `--precision` flags or the RTD_BACKEND / RTD_PRECISION environment
(`from_env`), so `rtd serve`, `rtd index build` and `rtd eval` choose the same way.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

from rtdgan.index.errors import UserError

log = logging.getLogger(__name__)

REFERENCE = ("onnxruntime", "fp32")  # what parity is measured against; needs no gate
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
# What each precision means, for every --precision flag (rtd serve, rtd index build, rtd eval).
PRECISION_HELP = ("auto, fp32, bf16 (openvino), int8 (openvino, graphs from `rtd quantize`) or fp16 (onnxruntime "
                  "TensorRT); auto: bf16 on a CPU with bf16 units, else fp32")
TRT = "TensorrtExecutionProvider"
TRT_CACHE_ENV = "RTD_TRT_CACHE"  # TensorRT engine cache folder (building an engine takes minutes)
CPU_EXTRA = "pip install 'rtdgan[cpu]'"


CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def default_providers() -> list[str]:
    """CUDA first when this onnxruntime build has it (onnxruntime-gpu), CPU always as the fallback."""
    available = ort.get_available_providers()
    return [CUDA, CPU] if CUDA in available else [CPU]


def make_session(path: Path, providers: Sequence[str] | None = None, threads: int | None = None) -> ort.InferenceSession:
    """An InferenceSession on the best available provider; `threads` caps intra-op CPU threads."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"ONNX model not found: {path}")
    options = ort.SessionOptions()
    # Idle intra-op threads spin by default; on a small CPU shared with the HTTP server and FAISS that
    # spinning halved throughput at concurrency 8 (bench/bench_service.py), so they sleep instead.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        if threads < 1:
            raise UserError(f"threads must be >= 1, got {threads}")
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    wanted = list(providers) if providers is not None else default_providers()
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=wanted)
    except Exception as e:  # noqa: BLE001 - ort raises its own exception types for bad files
        raise UserError(f"{path}: cannot load ONNX model ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
    # onnxruntime silently falls back to CPU when CUDA libraries are missing: log what we really got.
    log.info("onnxruntime session for %s on %s (asked for %s)", path.name, session.get_providers(), wanted)
    return session


class Runner(Protocol):
    """One compiled graph: names and shapes of its single input and output, and a batch call."""

    input_name: str
    output_name: str
    input_shape: list[int | str]  # a str for a dynamic dimension
    output_shape: list[int | str]
    providers: list[str]  # what it really runs on, e.g. ["CPUExecutionProvider"] or ["OpenVINO/CPU"]

    def run(self, batch: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Kind:
    """One backend family: its precisions, how "auto" resolves, how a graph is loaded."""

    precisions: tuple[str, ...]  # explicit precisions it runs
    resolve: Callable[[str], str]  # requested precision (checked to be in PRECISIONS) -> resolved, or UserError
    load: Callable[[Backend, Path], Runner]


@dataclass(frozen=True)
class Backend:
    """A backend with its precision resolved: what the models run on."""

    name: str = "onnxruntime"
    precision: str = "fp32"
    threads: int | None = None  # intra-op CPU threads per graph; None: the engine's choice
    providers: tuple[str, ...] | None = None  # onnxruntime only; None: CUDA when present, else CPU

    @property
    def key(self) -> str:
        """'openvino-bf16': names the backend's parity record (parity-<key>.json)."""
        return f"{self.name}-{self.precision}"

    @property
    def is_reference(self) -> bool:
        """onnxruntime fp32: the engine the artifacts were checked with at export; no gate."""
        return (self.name, self.precision) == REFERENCE

    def describe(self) -> dict[str, str]:
        return {"backend": self.name, "precision": self.precision}

    def load(self, path: Path) -> Runner:
        """Compile one ONNX graph on this backend; UserError for a missing or unreadable file."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"ONNX model not found: {path}")
        return KINDS[self.name].load(self, path)


# ---- onnxruntime ---------------------------------------------------------------------------------------


class OrtRunner:
    """An onnxruntime InferenceSession (`make_session`: providers, threads, no spinning)."""

    def __init__(self, session: Any) -> None:
        self.session = session
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(f"expected one input and one output, got {len(inputs)} and {len(outputs)}")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self.input_shape, self.output_shape = list(inputs[0].shape), list(outputs[0].shape)
        self.providers = session.get_providers()

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch})[0]


def _ort_resolve(precision: str) -> str:
    if precision in ("bf16", "int8"):
        why = (" (onnxruntime ran the int8 graphs slower than fp32 here: docs/benchmarks.md)"
               if precision == "int8" else "")
        raise UserError(f"onnxruntime runs fp32 (and fp16 on TensorRT); for {precision} use --backend openvino{why}")
    if precision == "fp16":
        import onnxruntime as ort

        if TRT not in ort.get_available_providers():
            raise UserError("--precision fp16 with onnxruntime needs its TensorRT provider (onnxruntime-gpu with "
                            "TensorRT, the GPU image); this onnxruntime has " + ", ".join(ort.get_available_providers()))
    return "fp32" if precision == "auto" else precision  # fp16 only when asked: it needs the gate


def _ort_providers(backend: Backend) -> list[str | tuple[str, dict]]:
    """fp32: the given providers, else CUDA when present, else CPU. fp16: TensorRT (fp16, engine cache), then
    CUDA and CPU for the nodes TensorRT does not take."""

    if backend.precision == "fp32":
        return list(backend.providers) if backend.providers else default_providers()
    cache = os.environ.get(TRT_CACHE_ENV, "") or str(Path.home() / ".cache" / "rtdgan" / "trt")
    Path(cache).mkdir(parents=True, exist_ok=True)
    return [(TRT, {"trt_fp16_enable": True, "trt_engine_cache_enable": True, "trt_engine_cache_path": cache}),
            CUDA, CPU]


def _ort_load(backend: Backend, path: Path) -> Runner:

    return OrtRunner(make_session(path, _ort_providers(backend), backend.threads))  # type: ignore[arg-type]


# ---- OpenVINO ------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def openvino_core() -> Any:
    """The process's one openvino.Core; UserError naming the extra when OpenVINO is not installed."""
    try:
        import openvino
    except ImportError as e:
        raise UserError(f"--backend openvino needs the openvino package: {CPU_EXTRA} (or pip install openvino)") from e
    return openvino.Core()


def cpu_has_bf16() -> bool:
    """Whether OpenVINO can run bf16 on this CPU's own units (AVX512-BF16 or AMX): it lists BF16 then."""
    return "BF16" in openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _ov_resolve(precision: str) -> str:
    if precision == "fp16":
        raise UserError("openvino on CPU runs fp32, bf16 or int8 (fp16 is onnxruntime's TensorRT, on GPU)")
    if precision == "auto":
        return "bf16" if cpu_has_bf16() else "fp32"
    if precision == "bf16" and not cpu_has_bf16():
        caps = ", ".join(openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        raise UserError(f"--precision bf16: this CPU has no bf16 units (OpenVINO lists {caps}); OpenVINO would "
                        f"run fp32 anyway. Use --precision fp32 or auto")
    if precision == "int8" and "INT8" not in openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        raise UserError("--precision int8: OpenVINO lists no INT8 capability on this CPU")
    return precision


def _dims(shape: Any) -> list[int | str]:
    return [d.get_length() if d.is_static else "?" for d in shape]


class OpenVinoRunner:
    """A compiled OpenVINO model; one infer request per thread (a request is not thread-safe)."""

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled
        if len(compiled.inputs) != 1 or len(compiled.outputs) != 1:
            raise UserError(f"expected one input and one output, got {len(compiled.inputs)} and {len(compiled.outputs)}")
        self.input_name = compiled.inputs[0].get_any_name()
        self.output_name = compiled.outputs[0].get_any_name()
        self.input_shape = _dims(compiled.inputs[0].get_partial_shape())
        self.output_shape = _dims(compiled.outputs[0].get_partial_shape())
        self.providers = ["OpenVINO/CPU"]
        self._local = threading.local()

    def run(self, batch: np.ndarray) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        out = request.infer({0: batch})[self.compiled.outputs[0]]
        return np.array(out, dtype=np.float32, copy=True)  # the request reuses its output buffer


def _ov_load(backend: Backend, path: Path) -> Runner:
    core = openvino_core()
    if backend.precision == "int8":  # the quantized sibling; its int8 layers run int8 whatever the hint says
        from rtdgan.index.runtime.quantize import int8_graph

        quantized = int8_graph(path)
        log.info("openvino int8: %s", f"{quantized.name} for {path.name}" if quantized else f"{path.name} stays fp32")
        path = quantized or path
    hint = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}[backend.precision]
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
    if backend.threads is not None:
        config["INFERENCE_NUM_THREADS"] = backend.threads
    try:
        compiled = core.compile_model(str(path), "CPU", config)
    except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses of its own
        raise UserError(f"{path}: OpenVINO cannot compile it ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
    got = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    log.info("openvino model %s on CPU, precision %s (asked %s), threads %s", path.name, got, backend.precision,
             compiled.get_property("INFERENCE_NUM_THREADS"))
    return OpenVinoRunner(compiled)


KINDS: dict[str, Kind] = {
    "onnxruntime": Kind(("fp32", "fp16"), _ort_resolve, _ort_load),
    "openvino": Kind(("fp32", "bf16", "int8"), _ov_resolve, _ov_load),
}


def make_backend(name: str | None = None, precision: str | None = None, *, threads: int | None = None,
                 providers: Sequence[str] | None = None) -> Backend:
    """The backend `name` (default onnxruntime) at `precision` (default auto, resolved here); UserError for an
    unknown name or a precision it cannot run here."""
    name = (name or "onnxruntime").strip().lower()
    precision = (precision or "auto").strip().lower()
    if name not in KINDS:
        raise UserError(f"unknown backend {name!r}; choose one of {', '.join(KINDS)}")
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if threads is not None and threads < 1:
        raise UserError(f"threads must be >= 1, got {threads}")
    resolved = KINDS[name].resolve(precision)
    return Backend(name, resolved, threads, tuple(providers) if providers else None)


def from_env(name: str | None = None, precision: str | None = None, *, threads: int | None = None,
             providers: Sequence[str] | None = None) -> Backend:
    """`make_backend` with RTD_BACKEND / RTD_PRECISION standing in for a name or precision not given."""
    return make_backend(name or os.environ.get("RTD_BACKEND"), precision or os.environ.get("RTD_PRECISION"),
                        threads=threads, providers=providers)
