"""Service settings: one frozen pydantic-settings object, read from `RTD_*` environment variables.

`rtd serve` turns its flags into the same object, so a container (env) and a shell (flags) configure the
service identically. Lists (providers, CORS origins) are comma-separated in the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIB = 1 << 20
CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """Everything the service can be told; every field is used somewhere in `service/`."""

    model_config = SettingsConfigDict(env_prefix="RTD_", frozen=True, extra="forbid")

    artifacts: Path = Path("artifacts")  # generator.onnx, embedder.onnx, model.json
    # The catalog: an index folder (catalog-*.faiss/.sqlite, index.json, + images/ for admin adds) or a Milvus
    # location, milvus:///abs/path/catalog.db[/collection] or milvus://host:19530/collection (index/catalogs.py)
    index: Path = Path("index")
    providers: CommaList = Field(default_factory=list)  # onnxruntime providers; empty = CUDA if present, else CPU
    threads: int | None = Field(default=None, ge=1)  # intra-op CPU threads per session; None = onnxruntime's choice
    # Inference backend (index/backends.py): onnxruntime (the reference) or openvino; precision auto resolves per
    # machine. A non-reference backend needs a passing `rtd check-backend` record unless backend_unchecked.
    backend: str = "onnxruntime"
    precision: str = "auto"  # auto | fp32 | bf16 | int8 | fp16: rtdgan.index.runtime.backends.PRECISION_HELP
    backend_unchecked: bool = False  # serve a backend without a passing parity record (index/parity.py)
    max_batch: int = Field(default=16, ge=1)  # requests fused into one inference call
    max_wait_ms: float = Field(default=0.0, ge=0)  # extra wait for company before a batch; 0 = greedy (service/batching.py)
    queue_size: int = Field(default=64, ge=1)  # requests waiting per model; past it: 503 + Retry-After
    retry_after_s: int = Field(default=1, ge=1)  # the Retry-After we answer with on 503
    max_upload_bytes: int = Field(default=10 * MIB, ge=1)  # one uploaded image
    max_pixels: int = Field(default=40_000_000, ge=1)  # decompression-bomb guard, checked before decoding
    max_decodes: int = Field(default=4, ge=1)  # image decodes at once (each holds at most one decoded upload, <= ~170 MB)
    follow_interval_s: float = Field(default=1.0, ge=0)  # how often to pick up other replicas' writes; 0 = never
    compact_log_bytes: int = Field(default=64 * MIB, ge=1)  # fold the catalog's write log into new base files past this
    # Deadlines and HTTP limits (a slow or stuck client cannot hold resources indefinitely).
    request_timeout_ms: float = Field(default=1_500.0, gt=0)  # /search or /generate past this (from the body in): 503
    header_timeout_s: float = Field(default=10.0, gt=0)  # the request line and headers must arrive within this
    body_timeout_s: float = Field(default=30.0, gt=0)  # the whole body must arrive within this (else 408)
    keep_alive_timeout_s: float = Field(default=5.0, gt=0)  # an idle keep-alive connection is closed after this
    max_connections: int = Field(default=256, ge=1)  # open connections at once; past it: 503
    drain_limit_bytes: int = Field(default=64 * MIB, ge=0)  # read and discard this much of a refused body (413)
    # Ops.
    catalog: Path | None = None  # the catalog images' root: index paths are relative to it (None: as stored)
    log_format: Literal["text", "json"] = "text"  # json: one JSON object per log line
    admin_key: SecretStr | None = None  # X-API-Key for /admin/*; unset = admin disabled (403)
    cors_origins: CommaList = Field(default_factory=list)  # browser origins allowed to call the API
    public_base_url: str = ""  # prefix for image links in results, e.g. https://shop.example/api; "" = relative
    demo_samples: Path | None = None  # a folder of street photos offered one click away on the demo page
    demo_sample_count: int = Field(default=8, ge=0)  # how many of them the demo page lists

    @field_validator("providers", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("backend", "precision")
    @classmethod
    def _known_backend(cls, value: str, info: ValidationInfo) -> str:
        from rtdgan.index.runtime.backends import KINDS, PRECISIONS

        value = value.strip().lower()
        known = KINDS if info.field_name == "backend" else PRECISIONS
        if value not in known:
            raise ValueError(f"unknown {info.field_name} {value!r}; choose one of {', '.join(known)}")
        return value

    @field_validator("public_base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")
