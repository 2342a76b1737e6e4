# The inference image: the FastAPI service on onnxruntime-gpu (CUDA 12 + cuDNN 9). No torch in here:
# the service's whole contract with training is the artifact folder and the index folder (docs/architecture.md).
# tests/service/test_service_image.py rebuilds this image's files and pip steps in a fresh venv (the `cpu` extra for
# `gpu`) and runs its CMD and HEALTHCHECK: keep COPY, RUN, CMD and HEALTHCHECK parseable there.
#   docker build -f docker/service.Dockerfile -t rtdgan-service .
#   docker run --gpus all -p 8000:8000 -v $PWD/artifacts:/artifacts:ro -v $PWD/index:/index:ro \
#     -v $PWD/catalog:/catalog:ro -e RTD_CATALOG=/catalog rtdgan-service
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Python 3.11 (Ubuntu 22.04's universe): the Python requirements/lock-gpu.txt is resolved for.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app
# The dependencies come from the project itself: its `gpu` extra (onnxruntime-gpu, never beside the `cpu` extra's
# onnxruntime: both install the module `onnxruntime`), every version pinned by the lock (`make lock`). They are
# installed before the code is copied, in a layer that changes only with pyproject.toml or the lock.
COPY pyproject.toml setup.py README.md ./
COPY requirements/lock-gpu.txt requirements/
RUN pip install -c requirements/lock-gpu.txt ".[gpu,milvus]"
# Only the packages the service imports; training/ and models/ (torch) are not even copied. `rtd` imports a
# subcommand's module only when it runs (service/cli.py), so `rtd serve` and `rtd index` work without them.
COPY index/ index/
COPY service/ service/
RUN pip install --no-deps --force-reinstall . \
    && python -c "import rtdgan.service.app, sys; assert 'torch' not in sys.modules" \
    && rtd --version && rtd serve --help > /dev/null && rtd index build --help > /dev/null

RUN useradd --uid 10001 --create-home rtd
USER rtd

ENV RTD_ARTIFACTS=/artifacts \
    RTD_INDEX=/index \
    OMP_WAIT_POLICY=PASSIVE
EXPOSE 8000
# Ready means: models and catalog loaded and a warm-up inference passed (503 before, or on a broken mount).
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=4)"
CMD ["rtd", "serve", "--host", "0.0.0.0", "--port", "8000"]
