"""The rough-to-detail schedule (Algorithm 1) as pure functions: step -> stage, alpha, batch size, epoch.

Every stage runs t_fade + t_stab epochs. During the fade-in epochs alpha rises linearly from 0 to 1
(Algorithm 1, lines 6 and 9-10: alpha starts at 0 and is incremented before each update, so the first
update of a stage uses alpha = 1/fade_steps and the last fade-in update uses alpha = 1); the
stabilisation epochs keep alpha = 1.

Stage 1 has nothing to fade in: its M - N + 1 decoder blocks are built at once (Sec. 3.3, "Preparation"),
so it trains with alpha = 1 throughout. It still gets the full t_fade + t_stab epochs, as in Algorithm 1
(the while-loop bound is the same for every i): stage 1 learns the global structure that later stages
only refine (Sec. 3.3), so it should not get a smaller budget than they do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StagePlan:
    """One stage: its batch size and how many optimiser steps fade in, stabilise, make an epoch."""

    stage: int  # 1..N
    batch_size: int
    steps_per_epoch: int
    fade_epochs: int  # 0 for stage 1 (nothing to fade in)
    stab_epochs: int

    @property
    def fade_steps(self) -> int:
        return self.fade_epochs * self.steps_per_epoch

    @property
    def steps(self) -> int:
        return (self.fade_epochs + self.stab_epochs) * self.steps_per_epoch

    @property
    def epochs(self) -> int:
        return self.fade_epochs + self.stab_epochs


@dataclass(frozen=True)
class Plan:
    """The whole run: stages in order."""

    stages: tuple[StagePlan, ...]

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)

    @property
    def total_epochs(self) -> int:
        return sum(s.epochs for s in self.stages)


@dataclass(frozen=True)
class Phase:
    """Where step `step` (0-based, counting optimiser steps from the start of training) falls."""

    step: int
    stage: int  # 1..N
    alpha: float  # weight of the newest decoder block (Fig. 2b)
    batch_size: int
    fading: bool  # True during a stage's fade-in epochs
    epoch: int  # 0-based epoch counted over the whole run (sets the data order)
    epoch_in_stage: int
    step_in_stage: int
    step_in_epoch: int
    steps_per_epoch: int
    last_in_stage: bool


def steps_per_epoch(items: int, batch_size: int) -> int:
    """Optimiser steps in one pass over `items` examples; the last, smaller batch is kept."""
    return math.ceil(items / batch_size)


def make_plan(stages: int, epochs_fade: int, epochs_stab: int, batch_sizes: tuple[int, ...], items: int,
              epochs_extra: int = 0) -> Plan:
    """Plan N stages of t_fade + t_stab epochs each (Algorithm 1), the last one `epochs_extra` epochs
    longer; batch_sizes[i-1] is stage i's batch."""
    assert stages >= 1, f"need at least one stage, got {stages}"
    assert len(batch_sizes) == stages, f"{len(batch_sizes)} batch sizes for {stages} stages"
    assert all(b >= 1 for b in batch_sizes), f"batch sizes must be positive: {batch_sizes}"
    assert items >= 1, "no training items"
    assert epochs_fade >= 0 and epochs_stab >= 0 and epochs_fade + epochs_stab >= 1, (
        f"need at least one epoch per stage (fade {epochs_fade}, stab {epochs_stab})"
    )
    assert epochs_extra >= 0, f"extra epochs must be >= 0, got {epochs_extra}"
    plans = []
    for i, bs in enumerate(batch_sizes, start=1):
        fade, stab = (0, epochs_fade + epochs_stab) if i == 1 else (epochs_fade, epochs_stab)
        stab += epochs_extra if i == stages else 0
        plans.append(StagePlan(i, bs, steps_per_epoch(items, bs), fade, stab))
    return Plan(tuple(plans))


def schedule_at(step: int, plan: Plan) -> Phase:
    """The stage, alpha, batch size and epoch of optimiser step `step` (0 <= step < plan.total_steps)."""
    assert 0 <= step < plan.total_steps, f"step {step} outside 0..{plan.total_steps - 1}"
    first_step, first_epoch = 0, 0
    for sp in plan.stages:
        if step < first_step + sp.steps:
            k = step - first_step  # step within the stage
            fading = k < sp.fade_steps
            alpha = (k + 1) / sp.fade_steps if fading else 1.0
            return Phase(
                step=step, stage=sp.stage, alpha=alpha, batch_size=sp.batch_size, fading=fading,
                epoch=first_epoch + k // sp.steps_per_epoch, epoch_in_stage=k // sp.steps_per_epoch,
                step_in_stage=k, step_in_epoch=k % sp.steps_per_epoch, steps_per_epoch=sp.steps_per_epoch,
                last_in_stage=k == sp.steps - 1,
            )
        first_step += sp.steps
        first_epoch += sp.epochs
    raise AssertionError("unreachable")


def describe(plan: Plan, world: int = 1) -> list[str]:
    """One human-readable line per stage, for --dry-run and the start of a run (`world` processes)."""
    lines = []
    for sp in plan.stages:
        batch = f"{sp.batch_size * world} ({sp.batch_size} per process)" if world > 1 else f"{sp.batch_size}"
        lines.append(f"stage {sp.stage}: batch {batch}, {sp.steps_per_epoch} steps/epoch, "
                     f"fade-in {sp.fade_epochs} epochs ({sp.fade_steps} steps), stabilise {sp.stab_epochs} "
                     f"epochs, {sp.steps} steps")
    lines.append(f"total: {plan.total_epochs} epochs, {plan.total_steps} steps")
    return lines


def epoch_order(items: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> list[int]:
    """This rank's item order for an epoch: a shuffle that depends only on (seed, epoch).

    Like DistributedSampler: the permutation is padded to a multiple of `world` and dealt out, so every
    rank gets the same number of items. Being a pure function, it needs no saved state: --resume
    recomputes the epoch's order and skips the batches already done.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(items, generator=g).tolist()
    per_rank = math.ceil(items / world)
    order = (order * world)[: per_rank * world]  # pad by repeating the first items
    return order[rank::world]
