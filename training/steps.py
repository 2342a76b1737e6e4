"""One training step per model, and the networks and optimisers those steps update.

`build_nets(cfg, device, distributed)` makes the generator, the critic(s) and their Adam optimisers
(wrapped in DistributedDataParallel under torchrun) from the model's registry entry (training/registry.py),
whose `step` is one of the functions here that the loop in train.py calls once per iteration: rtdGAN
(Algorithm 1), pix2pix (Isola et al. 2017) or PLDT (Yoo et al. 2016). Each step does one optimiser step of
G and one of D and returns its loss terms.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP

from rtdgan.models.layers import resize_to
from rtdgan.models.pyramid import stage_target
from rtdgan.training import registry
from rtdgan.training.config import TrainConfig
from rtdgan.training.losses import (
    critic_loss,
    pix2pix_discriminator_loss,
    pix2pix_generator_loss,
    pldt_converter_loss,
    pldt_domain_loss,
    pldt_real_fake_loss,
    rtdgan_generator_loss,
)
from rtdgan.training.schedule import Phase


@dataclass
class Nets:
    """The networks, their optimisers, and the views the forward/backward passes go through (DDP or not)."""

    generator: nn.Module  # ProgressiveGenerator | UNetGenerator | PLDTConverter
    critic: nn.Module  # ConditionalPatchCritic | PatchDiscriminator | PLDTRealFakeDiscriminator (D_R)
    domain_critic: nn.Module | None  # PLDT's D_A, else None
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer  # one Adam over every discriminator (Adam is per-parameter anyway)
    generator_train: nn.Module
    critic_train: nn.Module
    domain_train: nn.Module | None


def build_nets(cfg: TrainConfig, device: torch.device, distributed: bool) -> Nets:
    """The networks and optimisers of `cfg.model`, on `device`, wrapped in DDP when distributed."""
    spec = registry.get(cfg.model)
    generator, critic, domain = spec.build(cfg)
    fmt = torch_format(resolve_memory_format(cfg.memory_format, device, cfg.model))
    for net in (generator, critic, domain):
        if net is not None:
            net.to(device=device, memory_format=fmt).train()
    d_params = list(critic.parameters()) + (list(domain.parameters()) if domain is not None else [])
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr, betas=spec.betas)
    opt_d = torch.optim.Adam(d_params, lr=cfg.lr, betas=spec.betas)
    if not distributed:
        return Nets(generator, critic, domain, opt_g, opt_d, generator, critic, domain)
    ids = [device.index] if device.type == "cuda" else None
    # A stage-i generator leaves the later decoder blocks and the other ToRGBs without gradient (Fig. 2a),
    # so DDP must look for unused parameters in a staged model. Discriminators see real and fake batches in
    # separate forwards: their batch-norm buffers stay per process (broadcasting them mid-step breaks autograd).
    # (`forward_sync_buffers` replaces `broadcast_buffers` in newer torch; older ones only know the latter.)
    local = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters
             else {"broadcast_buffers": False})
    g_train = DDP(generator, device_ids=ids, find_unused_parameters=spec.staged)
    c_train = DDP(critic, device_ids=ids, **local)
    a_train = DDP(domain, device_ids=ids, **local) if domain is not None else None
    return Nets(generator, critic, domain, opt_g, opt_d, g_train, c_train, a_train)


CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of CPUs with bf16 matrix/dot-product units


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 units (AMX-BF16 or AVX512-BF16), where bf16 convolutions run faster than fp32.

    torch's own query (torch.cpu._is_avx512_bf16_supported / _is_amx_tile_supported, private) where it
    exists, else the flags in /proc/cpuinfo. Elsewhere bf16 still works on CPU, but emulated: 15-25x slower
    than fp32 on an AVX2 CPU (docs/benchmarks.md)."""
    queries = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(callable(q) for q in queries):
        return any(q() for q in queries)
    try:
        flags = set(Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace").split())
    except OSError:
        return False
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a run uses, fp32 or bf16: `precision` as given; auto: bf16 on CUDA and on a CPU with bf16
    units, else fp32."""
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16()) else "fp32"


def resolve_memory_format(memory_format: str, device: torch.device, model: str) -> str:
    """channels_last or contiguous: as given; auto: channels_last on CUDA, and on CPU for the models whose registry
    entry says it measured faster there (rtdGAN: its 64 px stage 1.3-1.5x on a 2-core AVX2 CPU at width 16, batch
    16; pix2pix gained nothing, 1.05x: bench/bench_train.py, docs/benchmarks.md)."""
    if memory_format != "auto":
        return memory_format
    return "channels_last" if device.type == "cuda" or registry.get(model).cpu_channels_last else "contiguous"


def torch_format(memory_format: str) -> torch.memory_format:
    return torch.channels_last if memory_format == "channels_last" else torch.contiguous_format


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """bf16 autocast of the forward passes under --precision bf16 (bf16 keeps fp32's exponent range: no loss
    scaling needed), a no-op under fp32. The losses cast their inputs to float (training/losses.py)."""
    enabled = resolve_precision(precision, device) == "bf16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


@contextmanager
def frozen(*modules: nn.Module | None) -> Iterator[None]:
    """Parameters take no gradient inside: the generator's update must not touch D's gradients."""
    params = [p for m in modules if m is not None for p in m.parameters()]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def sync_if(module: nn.Module, last: bool) -> AbstractContextManager:
    """DDP accumulates without all-reduce until the last backward of a step (several forwards, one sync)."""
    return module.no_sync() if isinstance(module, DDP) and not last else nullcontext()


def update(opt: torch.optim.Optimizer, loss: Tensor) -> None:
    """One optimiser step on `loss`."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def rtdgan_step(cfg: TrainConfig, nets: Nets, photo: Tensor, product: Tensor, phase: Phase) -> dict[str, Tensor]:
    """Algorithm 1, lines 8-13: update G_i on Eq. 4, then the critic once on Eq. 1 + GP (Sec. 4.1)."""
    device = photo.device
    target = stage_target(product, phase.stage, cfg.stages)  # (B, 3, s, s): y_i = y_g^{N-i}
    photo_i = resize_to(photo, target.shape[-1])  # (B, 3, s, s): x_i of Eq. 1, area-downsampled
    with autocast(device, cfg.precision):
        fake = nets.generator_train(photo, stage=phase.stage, alpha=phase.alpha)  # (B, 3, s, s)
        with frozen(nets.critic):
            critic_fake = nets.critic(photo_i, fake)  # (B, 1, h, w)
    # Outside autocast, in fp32 (the loss casts `fake` to float, and the DoG turns autocast off itself): the DoG
    # of Eq. 3 subtracts two blurs of nearly equal images, a difference bf16's 8-bit mantissa would drown in noise.
    g_loss, g_terms = rtdgan_generator_loss(critic_fake, fake, target, cfg.lambda_adv, cfg.lambda_con, cfg.lambda_lap)
    update(nets.opt_g, g_loss)
    # The critic's convolutions run in bf16, but the interpolates, the scores, the gradient norm and the
    # penalty (||grad|| - 1)^2 are fp32 (critic_loss casts): the square of a difference near 0 is where
    # rounding would hurt. Measured on one batch (width 16 and 64, 64 px): the penalty agrees with an fp32
    # critic's to ~1e-4 relative, the critic's parameter gradient to ~1 %.
    with autocast(device, cfg.precision):
        d_loss, d_terms = critic_loss(nets.critic_train, photo_i, target, fake, cfg.lambda_gp)
    update(nets.opt_d, d_loss)
    return g_terms | d_terms


def pix2pix_step(cfg: TrainConfig, nets: Nets, photo: Tensor, product: Tensor, phase: Phase) -> dict[str, Tensor]:
    """pix2pix (Isola et al. 2017): D on real and fake pairs, then G on BCE + 100 L1, as the reference code."""
    device = photo.device
    with autocast(device, cfg.precision):
        fake = nets.generator_train(photo)  # (B, 3, S, S)
    nets.opt_d.zero_grad(set_to_none=True)
    d_loss = torch.zeros((), device=device)
    for i, (image, is_real) in enumerate(((fake.detach(), False), (product, True))):
        with sync_if(nets.critic_train, last=i == 1):
            with autocast(device, cfg.precision):
                loss = pix2pix_discriminator_loss(nets.critic_train(photo, image), is_real)
            loss.backward()
        d_loss += loss.detach()
    nets.opt_d.step()
    with autocast(device, cfg.precision), frozen(nets.critic):
        g_loss, g_terms = pix2pix_generator_loss(nets.critic(photo, fake), fake, product)
    update(nets.opt_g, g_loss)
    return g_terms | {"d_loss": d_loss}


def pldt_step(cfg: TrainConfig, nets: Nets, photo: Tensor, product: Tensor, phase: Phase) -> dict[str, Tensor]:
    """PLDT (Yoo et al. 2016): D_R and D_A on their three kinds of input, then the converter fools both."""
    assert nets.domain_critic is not None and nets.domain_train is not None
    device = photo.device
    with autocast(device, cfg.precision):
        fake = nets.generator_train(photo)  # (B, 3, R, R)
    # The unassociated pair: each photo with the next item's product (another garment, unless two photos
    # of one product meet in a batch, which a shuffled order makes rare; a batch of one has none).
    unassociated = product.roll(1, dims=0)
    nets.opt_d.zero_grad(set_to_none=True)
    terms = {"d_real_fake": torch.zeros((), device=device), "d_domain": torch.zeros((), device=device)}
    for i, (image, is_real) in enumerate(((product, True), (fake.detach(), False))):
        with sync_if(nets.critic_train, last=i == 1):
            with autocast(device, cfg.precision):
                loss = pldt_real_fake_loss(nets.critic_train(image), is_real)
            loss.backward()
        terms["d_real_fake"] += loss.detach()
    for i, (image, is_assoc) in enumerate(((product, True), (unassociated, False), (fake.detach(), False))):
        with sync_if(nets.domain_train, last=i == 2):
            with autocast(device, cfg.precision):
                loss = pldt_domain_loss(nets.domain_train(photo, image), is_assoc)
            loss.backward()
        terms["d_domain"] += loss.detach()
    nets.opt_d.step()
    with autocast(device, cfg.precision), frozen(nets.critic, nets.domain_critic):
        g_loss, g_terms = pldt_converter_loss(nets.critic(fake), nets.domain_critic(photo, fake))
    update(nets.opt_g, g_loss)
    return g_terms | terms | {"d_loss": terms["d_real_fake"] + terms["d_domain"]}

