"""Docker files, checked without Docker: compose validated by `docker-compose config`, Dockerfiles read.

tests/service/test_service_image.py rebuilds the service image's files and pip steps in a venv and runs it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[2]
SERVICE = (ROOT / "docker" / "service.Dockerfile").read_text()
TRAIN = (ROOT / "docker" / "train.Dockerfile").read_text()
SERVICE_CPU = (ROOT / "docker" / "service-cpu.Dockerfile").read_text()
COMPOSE = shutil.which("docker-compose")


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in dockerfile.splitlines() if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def requirement_names(specs: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[ ]", s.strip('"'), maxsplit=1)[0].lower() for s in specs}


def test_service_image_is_cuda_onnxruntime_gpu_without_torch() -> None:
    steps = instructions(SERVICE)
    assert steps[0][0] == "FROM" and re.match(r"nvidia/cuda:12[\d.]*-cudnn-runtime-ubuntu", steps[0][1])
    runs = " ".join(args for op, args in steps if op == "RUN")
    installs = " ".join(re.findall(r"pip install ([^&;]*)", runs))
    assert 'pip install -c requirements/lock-gpu.txt ".[gpu,milvus]"' in runs  # onnxruntime-gpu, pymilvus: pyproject.toml
    assert not re.search(r"\btorch", installs), "no torch in the service image"
    assert "pip install --no-deps --force-reinstall ." in runs
    # The build checks what the shipped CMD needs: `rtd serve` (service/cli.py imports no training/ module).
    assert "rtd serve --help" in runs and "assert 'torch' not in sys.modules" in runs
    copied = [args.split()[0] for op, args in steps if op == "COPY"]
    assert not any(src.startswith(("training", "models")) for src in copied)
    assert all((ROOT / src).exists() for src in copied if src != "README.md")
    assert any(op == "USER" and args != "root" for op, args in steps)
    health = next(args for op, args in steps if op == "HEALTHCHECK")
    assert "/health/ready" in health
    assert next(args for op, args in steps if op == "CMD").startswith('["rtd", "serve"')


def test_images_install_the_project_and_its_lock_not_a_hand_written_list() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    assert requirement_names(extras["gpu"]) == {"onnxruntime-gpu"}
    assert requirement_names(extras["cpu"]) == {"onnxruntime", "openvino"}  # OpenVINO: the CPU backend
    assert "onnxruntime" not in requirement_names(pyproject["project"]["dependencies"])  # from one extra only
    names = {id(SERVICE): "service", id(TRAIN): "train", id(SERVICE_CPU): "service-cpu"}
    for dockerfile, lock in ((SERVICE, "lock-gpu.txt"), (TRAIN, "lock-train.txt"), (SERVICE_CPU, "lock-cpu.txt")):
        steps = instructions(dockerfile)
        runs = " ".join(args for op, args in steps if op == "RUN")
        for args in re.findall(r"pip install ([^&;]*)", runs):
            assert not re.search(r"[\w-]+[<>=~]=?\d", args), f"a hand-written requirement in `pip install {args}`"
            assert args.startswith(f"-c requirements/{lock} ") or args.startswith("--no-deps"), args
        assert any(op == "COPY" and args.split()[0] == f"requirements/{lock}" for op, args in steps)
        assert f"!requirements/{lock}" in (ROOT / "docker" / f"{names[id(dockerfile)]}.Dockerfile.dockerignore").read_text()
    # The lock pins an onnxruntime-gpu the extra allows (a CUDA 12 build, for the nvidia/cuda:12 base).
    lock = (ROOT / "requirements" / "lock-gpu.txt").read_text()
    assert re.search(r"^onnxruntime-gpu==1\.(19|2[0-6])\.", lock, re.MULTILINE)
    assert not re.search(r"^onnxruntime==", lock, re.MULTILINE)


def test_cpu_service_image_is_onnxruntime_and_openvino_without_torch() -> None:
    steps = instructions(SERVICE_CPU)
    assert steps[0][0] == "FROM" and steps[0][1].startswith("python:3.11")
    runs = " ".join(args for op, args in steps if op == "RUN")
    assert 'pip install -c requirements/lock-cpu.txt ".[cpu,milvus]"' in runs  # onnxruntime + openvino + pymilvus
    assert not re.search(r"\btorch", " ".join(re.findall(r"pip install ([^&;]*)", runs)))
    assert "import openvino, onnxruntime" in runs and "rtd check-backend --help" in runs
    copied = [args.split()[0] for op, args in steps if op == "COPY"]
    assert not any(src.startswith(("training", "models")) for src in copied)
    assert any(op == "USER" and args != "root" for op, args in steps)
    assert "/health/ready" in next(args for op, args in steps if op == "HEALTHCHECK")
    assert next(args for op, args in steps if op == "CMD").startswith('["rtd", "serve"')


def test_train_image_has_pytorch_and_the_train_extra() -> None:
    steps = instructions(TRAIN)
    assert steps[0][0] == "FROM" and steps[0][1].startswith("pytorch/pytorch:") and "cuda" in steps[0][1]
    torch_version = tuple(int(x) for x in steps[0][1].split(":")[1].split("-")[0].split(".")[:2])
    assert torch_version >= (2, 6), "training/export.py needs torch.onnx.export(optimize=...), PyTorch 2.6+"
    runs = " ".join(args for op, args in steps if op == "RUN")
    assert 'pip install -c requirements/lock-train.txt ".[cpu,train]"' in runs
    lock = (ROOT / "requirements" / "lock-train.txt").read_text()
    assert not re.search(r"^(torch|torchvision|sympy|numpy)==", lock, re.MULTILINE), "the base image's PyTorch stack"
    copied = {args.split()[0].rstrip("/") for op, args in steps if op == "COPY"}
    assert {"training", "models", "index", "service"} <= copied
    assert all((ROOT / src).exists() for src in copied if src not in ("pyproject.toml", "README.md"))


@pytest.mark.skipif(COMPOSE is None, reason="needs docker-compose (apt-get install docker-compose)")
def test_compose_file_is_valid_and_complete(tmp_path: Path) -> None:
    def compose(*args: str) -> str:
        result = subprocess.run([COMPOSE, "-f", str(ROOT / "docker-compose.yml"), *args], capture_output=True,
                                text=True, timeout=60, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
        assert result.returncode == 0, result.stderr
        return result.stdout

    config = compose("config")
    assert sorted(compose("config", "--services").split()) == [
        "api", "api-cpu", "api-milvus", "export", "index-build", "index-build-milvus", "milvus-etcd", "milvus-minio",
        "milvus-standalone"]
    sections = dict(re.findall(r"(?m)^  ([a-z-]+):\n((?:    .*\n|\n)*)", config))  # service -> its block
    api, cpu = sections["api"], sections["api-cpu"]
    jobs = "".join(sections[name] for name in ("export", "index-build"))
    assert "profiles" not in api and jobs.count("profiles:\n    - jobs") == 2  # the jobs run only when asked for
    # The CPU service: its own profile and image, OpenVINO chosen at run time, no GPU reserved.
    assert "profiles:\n    - cpu" in cpu and "dockerfile: docker/service-cpu.Dockerfile" in cpu
    assert re.search(r"RTD_BACKEND: openvino\n", cpu) and "nvidia" not in cpu and "/health/ready" in cpu
    assert re.search(r"/artifacts:/artifacts:ro", cpu) and re.search(r"RTD_CATALOG: /catalog\n", cpu)
    assert re.search(r"RTD_BACKEND: onnxruntime\n", api)  # the GPU service's default: the reference
    assert re.search(r"devices:\s+- capabilities:\s+- gpu\s+count: 1\s+driver: nvidia", api)
    assert re.search(r"/artifacts:/artifacts:ro", api) and re.search(r"/index:/index:ro", api)
    # The index's image paths are relative to the catalog root: the api mounts the catalog and names the root.
    assert re.search(r"/catalog:/catalog:ro", api) and re.search(r"RTD_CATALOG: /catalog\n", api)
    # The export job writes into the mounted /artifacts (a version folder + the pointer), photos from /data.
    assert re.search(r"- --out\s+- /artifacts\s+- --parity-data\s+- /data", jobs)
    assert "/health/ready" in api and "restart: unless-stopped" in api
    assert "dockerfile: docker/service.Dockerfile" in api
    assert "dockerfile: docker/train.Dockerfile" in config
    assert re.search(r"index-build:\n(.*\n)*?\s+- build\n", config)


@pytest.mark.skipif(COMPOSE is None, reason="needs docker-compose (apt-get install docker-compose)")
def test_compose_milvus_profile_runs_the_api_on_milvus_standalone(tmp_path: Path) -> None:
    """Profile `milvus` = Milvus Standalone with its own etcd and MinIO, the API pointed at it."""
    result = subprocess.run([COMPOSE, "-f", str(ROOT / "docker-compose.yml"), "--profile", "milvus", "config"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    milvus = {name: services[name] for name in ("milvus-etcd", "milvus-minio", "milvus-standalone", "api-milvus",
                                                "index-build-milvus")}
    assert all(s["profiles"] == ["milvus"] for s in milvus.values())  # nothing of it starts without the profile
    standalone = milvus["milvus-standalone"]
    assert standalone["image"].startswith("milvusdb/milvus:v2.") and standalone["command"] == ["milvus", "run", "standalone"]
    assert standalone["environment"]["ETCD_ENDPOINTS"] == "milvus-etcd:2379"
    assert standalone["environment"]["MINIO_ADDRESS"] == "milvus-minio:9000"
    assert {"milvus-etcd", "milvus-minio"} <= set(standalone["depends_on"]) and "9091/healthz" in str(standalone["healthcheck"])
    api = milvus["api-milvus"]
    assert api["environment"]["RTD_INDEX"] == "milvus://milvus-standalone:19530/products"
    assert api["depends_on"]["milvus-standalone"]["condition"] == "service_healthy"
    assert api["build"]["dockerfile"] == "docker/service.Dockerfile" and "/health/ready" in str(api["healthcheck"])
    mounts = {v.split(":")[1]: v.split(":")[2:] for v in api["volumes"]}  # target -> [mode]
    assert "/index" not in mounts and mounts["/catalog"] != ["ro"]  # shared, writable: admin-added images
    job = milvus["index-build-milvus"]
    assert job["command"][-2:] == ["--out", "milvus://milvus-standalone:19530/products"]
    # The image the API runs has the Milvus client (the `milvus` extra) and the location parses as a server.
    assert '".[gpu,milvus]"' in SERVICE
    from rtdgan.index.catalog.base import parse_location

    assert parse_location(api["environment"]["RTD_INDEX"]).uri == "http://milvus-standalone:19530"
