"""Algorithm 1's schedule at every boundary, and the per-epoch data order."""

from __future__ import annotations

import pytest

from rtdgan.training.schedule import describe, epoch_order, make_plan, schedule_at, steps_per_epoch

# 3 stages, t_fade = 2, t_stab = 1 epochs, 10 items, batches 4 / 3 / 2 -> 3, 4 and 5 steps per epoch.
PLAN = make_plan(3, epochs_fade=2, epochs_stab=1, batch_sizes=(4, 3, 2), items=10)


def test_steps_per_epoch_keeps_the_last_small_batch() -> None:
    assert steps_per_epoch(10, 4) == 3
    assert steps_per_epoch(8, 4) == 2
    assert steps_per_epoch(3, 8) == 1


def test_totals() -> None:
    # Every stage runs t_fade + t_stab = 3 epochs, stage 1 included (all at alpha 1).
    assert [s.steps for s in PLAN.stages] == [9, 12, 15]
    assert PLAN.total_steps == 36
    assert PLAN.total_epochs == 9
    assert [s.fade_steps for s in PLAN.stages] == [0, 8, 10]
    assert describe(PLAN)[-1] == "total: 9 epochs, 36 steps"


def test_first_step() -> None:
    p = schedule_at(0, PLAN)
    assert (p.stage, p.alpha, p.fading, p.batch_size, p.epoch, p.step_in_epoch) == (1, 1.0, False, 4, 0, 0)


def test_stage_one_never_fades() -> None:
    assert all(schedule_at(s, PLAN).alpha == 1.0 and not schedule_at(s, PLAN).fading for s in range(9))
    last = schedule_at(8, PLAN)
    assert last.last_in_stage and last.stage == 1 and last.epoch == 2 and last.step_in_epoch == 2


def test_first_step_of_stage_two_starts_the_fade() -> None:
    p = schedule_at(9, PLAN)
    assert (p.stage, p.fading, p.batch_size, p.epoch, p.epoch_in_stage, p.step_in_stage) == (2, True, 3, 3, 0, 0)
    assert p.alpha == pytest.approx(1 / 8)  # Algorithm 1: alpha starts at 0 and is incremented before the update


def test_alpha_rises_linearly_through_the_fade() -> None:
    alphas = [schedule_at(9 + k, PLAN).alpha for k in range(8)]
    assert alphas == pytest.approx([(k + 1) / 8 for k in range(8)])
    mid = schedule_at(9 + 4, PLAN)  # crosses an epoch boundary inside the fade (4 steps per epoch)
    assert mid.epoch_in_stage == 1 and mid.step_in_epoch == 0 and mid.fading


def test_last_fade_step_and_first_stab_step() -> None:
    last_fade = schedule_at(9 + 7, PLAN)
    assert last_fade.fading and last_fade.alpha == 1.0 and last_fade.epoch_in_stage == 1
    first_stab = schedule_at(9 + 8, PLAN)
    assert not first_stab.fading and first_stab.alpha == 1.0
    assert first_stab.epoch_in_stage == 2 and first_stab.step_in_epoch == 0 and first_stab.epoch == 5


def test_first_step_of_stage_three() -> None:
    p = schedule_at(21, PLAN)
    assert (p.stage, p.batch_size, p.epoch, p.step_in_stage, p.steps_per_epoch) == (3, 2, 6, 0, 5)
    assert p.alpha == pytest.approx(1 / 10) and p.fading
    assert schedule_at(20, PLAN).last_in_stage and schedule_at(20, PLAN).stage == 2


def test_very_last_step() -> None:
    p = schedule_at(35, PLAN)
    assert (p.stage, p.alpha, p.fading, p.epoch, p.step_in_epoch, p.last_in_stage) == (3, 1.0, False, 8, 4, True)
    with pytest.raises(AssertionError):
        schedule_at(36, PLAN)
    with pytest.raises(AssertionError):
        schedule_at(-1, PLAN)


def test_extra_epochs_lengthen_only_the_last_stage_and_leave_every_earlier_step_alone() -> None:
    longer = make_plan(3, epochs_fade=2, epochs_stab=1, batch_sizes=(4, 3, 2), items=10, epochs_extra=2)
    assert [s.steps for s in longer.stages] == [9, 12, 25]  # 2 more epochs of 5 steps at the last stage
    assert longer.total_steps == 46 and longer.total_epochs == 11
    assert [schedule_at(s, longer) for s in range(35)] == [schedule_at(s, PLAN) for s in range(35)]
    end = schedule_at(35, longer)  # the old last step is no longer the stage's end
    assert not end.last_in_stage and end.stage == 3 and end.alpha == 1.0
    assert schedule_at(45, longer).last_in_stage and schedule_at(45, longer).epoch == 10
    with pytest.raises(AssertionError):
        make_plan(3, 2, 1, (4, 3, 2), 10, epochs_extra=-1)


def test_zero_fade_epochs_means_alpha_one() -> None:
    plan = make_plan(2, epochs_fade=0, epochs_stab=1, batch_sizes=(2, 2), items=4)
    assert [schedule_at(s, plan).alpha for s in range(plan.total_steps)] == [1.0] * 4
    with pytest.raises(AssertionError):
        make_plan(2, 0, 0, (2, 2), 4)
    with pytest.raises(AssertionError):
        make_plan(3, 1, 1, (2, 2), 4)


def test_epoch_order_is_a_seeded_shuffle_split_over_ranks() -> None:
    a = epoch_order(10, seed=0, epoch=0)
    assert sorted(a) == list(range(10)) and a == epoch_order(10, seed=0, epoch=0)
    assert a != epoch_order(10, seed=0, epoch=1) and a != epoch_order(10, seed=1, epoch=0)
    r0, r1 = epoch_order(11, 0, 3, rank=0, world=2), epoch_order(11, 0, 3, rank=1, world=2)
    assert len(r0) == len(r1) == 6  # padded to an equal share
    assert set(r0) | set(r1) == set(range(11))
