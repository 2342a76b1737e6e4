# The CPU inference image: the FastAPI service on onnxruntime and OpenVINO, for nodes without a GPU.
# The same service as docker/service.Dockerfile, installed from the project's `cpu` extra (onnxruntime + openvino)
# instead of `gpu`. Choose the backend at run time: RTD_BACKEND=openvino (docker-compose's `api-cpu`), precision
# auto = bf16 on a CPU with bf16 units (AMX / AVX512-BF16), else fp32. A non-reference backend needs a passing
# `rtd check-backend` record in the artifacts (docs/deployment.md, "Inference backends").
#   docker build -f docker/service-cpu.Dockerfile -t rtdgan-service-cpu .
#   docker run -p 8000:8000 -e RTD_BACKEND=openvino -v $PWD/artifacts:/artifacts:ro -v $PWD/index:/index:ro \
#     -v $PWD/catalog:/catalog:ro -e RTD_CATALOG=/catalog rtdgan-service-cpu
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# The dependencies come from the project itself: its `cpu` extra, versions pinned by the lock (`make lock`).
COPY pyproject.toml setup.py README.md ./
COPY requirements/lock-cpu.txt requirements/
RUN pip install -c requirements/lock-cpu.txt ".[cpu,milvus]"
# Only the packages the service imports (no training/, models/, torch), as in docker/service.Dockerfile.
COPY index/ index/
COPY service/ service/
RUN pip install --no-deps --force-reinstall . \
    && python -c "import rtdgan.service.app, sys; assert 'torch' not in sys.modules" \
    && python -c "import openvino, onnxruntime" \
    && rtd --version && rtd serve --help > /dev/null && rtd check-backend --help > /dev/null

RUN useradd --uid 10001 --create-home rtd
USER rtd

ENV RTD_ARTIFACTS=/artifacts \
    RTD_INDEX=/index \
    OMP_WAIT_POLICY=PASSIVE
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=4)"
CMD ["rtd", "serve", "--host", "0.0.0.0", "--port", "8000"]
