# The training image: PyTorch with CUDA, for `rtd train`, `rtd eval`, `rtd export` and `rtd index build`.
#   docker build -f docker/train.Dockerfile -t rtdgan-train .
#   docker run --gpus all -v $PWD/data:/data -v $PWD/runs:/runs rtdgan-train train --data /data --out /runs/r1
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY index/ index/
COPY models/ models/
COPY service/ service/
COPY training/ training/
# torch comes with the base image (it satisfies the train extra's torch>=2.3, so pip keeps it).
RUN pip install ".[train]" && python -c "import torch, training, models; print('torch', torch.__version__)"

ENTRYPOINT ["rtd"]
CMD ["--help"]
