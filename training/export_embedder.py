"""Export an embedder to `embedder.onnx` and prove onnxruntime gives the same embeddings (docs/architecture.md).

The file appears only after the parity check passes: it is written beside the target under a temporary
name (`rtdgan.index.files.replace_atomic`), checked with onnxruntime on real preprocessed images, then renamed
into place; a failed check leaves nothing behind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rtdgan.index.files import replace_atomic, sha256_file
from rtdgan.index.runtime.backends import CPU
from rtdgan.index.runtime.onnx import OnnxEmbedder
from rtdgan.models.embedders import Embedder, EmbedderInfo

OPSET = 18
# Per-row cosine between PyTorch and onnxruntime embeddings; float32 reordering alone stays far above it.
MIN_PARITY_COSINE = 0.9999


def export_embedder(embedder: Embedder, info: EmbedderInfo, out_path: Path, size: int, sample: np.ndarray) -> dict:
    """Write embedder.onnx (input `image` [B,3,S,S], output `embedding` [B,D]); return model.json's fragment."""
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    if sample.ndim != 4 or sample.shape[1:] != (3, size, size) or len(sample) == 0:
        raise ValueError(f"sample must be a non-empty (B, 3, {size}, {size}) batch, got {sample.shape}")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    embedder = embedder.eval().cpu()
    x = torch.from_numpy(sample)  # (B, 3, S, S)
    with replace_atomic(out_path) as f, torch.no_grad():
        tmp = Path(f.name)  # the exporter writes the file by its name; replace_atomic syncs and renames it
        expected = embedder(x).numpy()  # (B, D)
        # Batch is dynamic; S is fixed, so the resize inside the graph is a constant-size Resize.
        torch.onnx.export(
            embedder, (x,), str(tmp), input_names=["image"], output_names=["embedding"],
            dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1)}},
            opset_version=OPSET, dynamo=True, external_data=False,
        )
        got = OnnxEmbedder(tmp, providers=[CPU])(sample)  # (B, D)
        if got.shape != expected.shape:
            raise RuntimeError(f"ONNX embedder output {got.shape} != PyTorch output {expected.shape}")
        cosine = (got * expected).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
        if not np.all(cosine > MIN_PARITY_COSINE):
            raise RuntimeError(f"ONNX embedder parity failed: min cosine {cosine.min():.6f} <= {MIN_PARITY_COSINE}")
    return {
        "backbone": info.name,
        "weights_source": info.weights_source,
        "weights_sha256": info.weights_sha256,
        "dim": info.dim,
        "input_size": info.input_size,
        "level": info.level,  # comparison scale: Gaussian pyramid levels taken before the backbone
        "onnx_sha256": sha256_file(out_path),
    }
