"""The model registry: everything that differs between rtdGAN, pix2pix and PLDT, in one place. No torch here.

`MODELS[name]` is a frozen `ModelSpec`: the generator and its config class, the critic(s), the training
step, the Adam settings, the native output size, how a trained generator is exported, and how reports
name it. The networks (`build_nets`), the training loop, `rtd export`, the evaluation's labels and the
`--model` choices all read it; no other module compares a model's name. A fourth model is one entry here
(its networks in models/, its step in training/steps.py).

Heavy pieces are named (`Ref("module:attribute")`) or built inside functions and imported on first use, so
the command line can list the models without importing torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, get_args

from rtdgan.index.errors import UserError
from rtdgan.training.config import ModelName, TrainConfig

if TYPE_CHECKING:
    from torch import Tensor, nn

    # (cfg, the networks and optimisers of training/steps.py, photo, product, phase) -> loss terms; the nets'
    # type is not named here: training/steps.py imports this module.
    StepFn = Callable[..., dict[str, Tensor]]
    Critics = tuple[nn.Module, nn.Module | None]

PLDT_RESOLUTION = 64  # Yoo et al. 2016 generate 64 x 64 products


@dataclass(frozen=True)
class Ref:
    """`module:attribute`, imported when first used."""

    target: str

    def get(self) -> Any:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)


def _same_size(resolution: int) -> int:
    return resolution


def _no_check(cfg: TrainConfig) -> None:
    return None


@dataclass(frozen=True)
class ModelSpec:
    """One model family: what build_nets, the loop, export and the reports need to know about it."""

    name: str  # the --model value and model.json's generator.architecture
    label: str  # how reports name it
    staged: bool  # trains rough-to-detail, stage by stage (Algorithm 1); else one stage of the same epoch budget
    betas: tuple[float, float]  # Adam (beta1, beta2) of G and D
    config_class: Ref  # the generator's config dataclass (a checkpoint's "generator_config" is its fields)
    generator_class: Ref  # the generator nn.Module, built from one config_class instance
    config_fields: Callable[[TrainConfig], dict[str, Any]]  # config_class's fields for a TrainConfig
    critics: Callable[[TrainConfig, Any], Critics]  # (D, the second D or None) for (TrainConfig, generator config)
    step_fn: Ref  # one optimiser step of G and one of D (training/steps.py)
    native_size: Callable[[int], int] = _same_size  # S -> side of the full network's own output (= data side)
    check: Callable[[TrainConfig], None] = _no_check  # model-specific one-line UserErrors
    # `--memory-format auto` on CPU: channels_last where it measured faster on CPU (bench/bench_train.py), else
    # contiguous; on CUDA auto is always channels_last (training/steps.py resolve_memory_format)
    cpu_channels_last: bool = False

    @property
    def step(self) -> StepFn:
        """The training step the loop calls once per iteration: step(cfg, nets, photo, product, phase)."""
        return self.step_fn.get()

    def stages(self, cfg: TrainConfig) -> int:
        """The number of stages a run of this model has: N, or 1 for a single-stage model."""
        return cfg.stages if self.staged else 1

    def build(self, cfg: TrainConfig) -> tuple[nn.Module, nn.Module, nn.Module | None]:
        """Freshly initialised (generator, critic, second critic or None) for a training run."""
        gcfg = self.config_class.get()(**self.config_fields(cfg))
        generator = self.generator_class.get()(gcfg)  # first: the seeded initial weights depend on the order
        critic, domain = self.critics(cfg, gcfg)
        return generator, critic, domain

    def generator_from_config(self, fields: dict[str, Any]) -> nn.Module:
        """The generator rebuilt from a checkpoint's generator_config (weights still to load)."""
        return self.generator_class.get()(self.config_class.get()(**fields))

    def generator_stages(self, generator: nn.Module) -> int:
        """N of a built generator (1 for a single-stage model)."""
        return int(generator.stages) if self.staged else 1

    def export_module(self, generator: nn.Module, stage: int) -> tuple[nn.Module, int]:
        """The one-input network to export for `stage`, and the side of its output (before any upsampling).

        rtdGAN: the stage-i network alone (Sec. 3.3, Fig. 6); single-stage models: the generator itself."""
        if self.staged:
            return generator.at_stage(stage), int(generator.output_size(stage))
        return generator, int(generator.cfg.resolution)

    def report_label(self, generator: dict) -> str:
        """A report's name for a model.json "generator" block: 'rtdGAN (N=3)', 'rtdGAN (N=3, stage 1)', 'PLDT'."""
        if not self.staged:
            return self.label
        stage = "" if generator.get("stage") == generator.get("stages") else f", stage {generator.get('stage')}"
        return f"{self.label} (N={generator.get('stages')}{stage})"


# ---- rtdGAN (Kwon et al. 2019): progressive generator, one conditional Wasserstein critic ------------------

def _rtdgan_fields(cfg: TrainConfig) -> dict[str, Any]:
    return {"resolution": cfg.resolution, "stages": cfg.stages, "width": cfg.width}


def _rtdgan_critics(cfg: TrainConfig, gcfg: Any) -> Critics:
    from rtdgan.models.critic import ConditionalPatchCritic, CriticConfig

    return ConditionalPatchCritic(CriticConfig(width=cfg.width)), None


def _rtdgan_check(cfg: TrainConfig) -> None:
    from rtdgan.models.generator import max_stages

    limit = max_stages(cfg.resolution)
    if not 1 <= cfg.stages <= limit:
        raise UserError(f"--stages {cfg.stages}: resolution {cfg.resolution} allows 1..{limit} stages "
                        f"(the coarsest stage must be at least 8 px)")
    if len(cfg.batch_sizes) != cfg.stages:
        raise UserError(f"--batch-sizes needs one value per stage ({cfg.stages}), got {len(cfg.batch_sizes)}")


# ---- pix2pix (Isola et al. 2017): U-Net generator, 70x70 PatchGAN ------------------------------------------

def _pix2pix_fields(cfg: TrainConfig) -> dict[str, Any]:
    return {"resolution": cfg.resolution, "width": cfg.width}


def _pix2pix_critics(cfg: TrainConfig, gcfg: Any) -> Critics:
    from rtdgan.models.pix2pix import PatchDiscriminator

    return PatchDiscriminator(gcfg), None


def _pix2pix_check(cfg: TrainConfig) -> None:
    from rtdgan.models.pix2pix import MIN_RESOLUTION

    if cfg.resolution < MIN_RESOLUTION:
        raise UserError(f"pix2pix needs --resolution >= {MIN_RESOLUTION}, got {cfg.resolution}")


# ---- PLDT (Yoo et al. 2016): converter at 64 px, real/fake and domain discriminators ------------------------

def _pldt_native(resolution: int) -> int:
    return min(resolution, PLDT_RESOLUTION)


def _pldt_fields(cfg: TrainConfig) -> dict[str, Any]:
    return {"resolution": _pldt_native(cfg.resolution), "width": cfg.width}


def _pldt_critics(cfg: TrainConfig, gcfg: Any) -> Critics:
    from rtdgan.models.pldt import PLDTDomainDiscriminator, PLDTRealFakeDiscriminator

    return PLDTRealFakeDiscriminator(gcfg), PLDTDomainDiscriminator(gcfg)


MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec("rtdgan", "rtdGAN", staged=True, betas=(0.0, 0.99),  # Sec. 4.1
              config_class=Ref("rtdgan.models.generator:GeneratorConfig"),
              generator_class=Ref("rtdgan.models.generator:ProgressiveGenerator"),
              config_fields=_rtdgan_fields, critics=_rtdgan_critics, step_fn=Ref("rtdgan.training.steps:rtdgan_step"),
              check=_rtdgan_check, cpu_channels_last=True),  # 64 px stage 1.3-1.5x (docs/benchmarks.md)
    ModelSpec("pix2pix", "pix2pix", staged=False, betas=(0.5, 0.999),  # Isola et al. 2017
              config_class=Ref("rtdgan.models.pix2pix:Pix2PixConfig"), generator_class=Ref("rtdgan.models.pix2pix:UNetGenerator"),
              config_fields=_pix2pix_fields, critics=_pix2pix_critics, step_fn=Ref("rtdgan.training.steps:pix2pix_step"),
              check=_pix2pix_check),
    ModelSpec("pldt", "PLDT", staged=False, betas=(0.5, 0.999),
              config_class=Ref("rtdgan.models.pldt:PLDTConfig"), generator_class=Ref("rtdgan.models.pldt:PLDTConverter"),
              config_fields=_pldt_fields, critics=_pldt_critics, step_fn=Ref("rtdgan.training.steps:pldt_step"),
              native_size=_pldt_native),
)}
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)
assert MODEL_NAMES == get_args(ModelName), "training/config.py's ModelName must list the registry's models"


def get(name: str) -> ModelSpec:
    """The spec of model `name`; a one-line UserError naming the choices for any other name."""
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}") from None


def data_resolution(cfg: TrainConfig) -> int:
    """Side of the images the data loader produces: the model's native output size at S (PLDT: min(S, 64))."""
    return get(cfg.model).native_size(cfg.resolution)


def report_label(generator: dict) -> str:
    """A report's row name for model.json's "generator" block ('rtdGAN (N=3)', 'pix2pix', 'PLDT');
    an architecture this code does not know is named as it is written."""
    spec = MODELS.get(str(generator.get("architecture")))
    return spec.report_label(generator) if spec else str(generator.get("architecture"))


def is_staged(architecture: str | None) -> bool:
    """True for a model trained rough-to-detail in N stages (reports list its N and stage)."""
    spec = MODELS.get(str(architecture))
    return spec is not None and spec.staged
