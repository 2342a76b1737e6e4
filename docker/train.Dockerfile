# The training image: PyTorch with CUDA, for `rtd train`, `rtd eval`, `rtd export` and `rtd index build`.
#   docker build -f docker/train.Dockerfile -t rtdgan-train .
#   docker run --gpus all -v $PWD/data:/data -v $PWD/runs:/runs rtdgan-train train --data /data --out /runs/r1
# PyTorch >= 2.6: training/export.py calls torch.onnx.export(..., optimize=False), new in 2.6.
FROM pytorch/pytorch:2.6.0-cuda12.4-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY requirements/lock-train.txt requirements/
COPY index/ index/
COPY models/ models/
COPY service/ service/
COPY training/ training/
# torch and torchvision come with the base image (they satisfy the train extra, so pip keeps them); the lock pins
# everything else and leaves the base image's PyTorch stack (numpy, sympy, ...) alone. CPU onnxruntime (the
# `cpu` extra) runs the export's parity checks and `rtd eval`.
RUN pip install -c requirements/lock-train.txt ".[cpu,train]" \
    && python -c "import torch, training, models, onnxruntime; print('torch', torch.__version__)"

ENTRYPOINT ["rtd"]
CMD ["--help"]
