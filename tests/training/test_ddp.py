"""DistributedDataParallel on CPU: 2 processes over gloo train every model; both ranks end with the same weights.

This covers the two DDP traps of rtdGAN: the gradient penalty's double backward through a DDP critic,
and a generator whose inactive decoder blocks get no gradient at the early stages (Fig. 2a).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytestmark = pytest.mark.slow  # two processes train every model

WORLD = 2
MODELS = ("rtdgan", "pix2pix", "pldt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, data: str, root: str) -> None:
    """One torchrun-like process: env vars set, then `train` for each model, weights saved per rank."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import rtdgan.training.train as train_module
    from rtdgan.training.train import TrainConfig

    captured = {}
    build_nets = train_module.build_nets

    def capture(*args, **kwargs):  # keep this rank's networks to compare after training
        captured["nets"] = build_nets(*args, **kwargs)
        return captured["nets"]

    train_module.build_nets = capture
    # One process group for the three runs: train() uses an existing group and leaves it open.
    dist.init_process_group("gloo")
    try:
        for model in MODELS:
            # 8 items, global batch 4 (2 per rank): stage 1 = 2 epochs x 2 steps, stage 2 fades in over 2 steps.
            cfg = TrainConfig(data=data, out=f"{root}/{model}", model=model, stages=2, resolution=32, width=4,
                              epochs_fade=1, epochs_stab=1, batch_sizes=(4, 4), log_every=1, limit_items=8)
            train_module.train(cfg)
            nets = captured["nets"]
            assert isinstance(nets.generator_train, torch.nn.parallel.DistributedDataParallel)
            # Parameters, not buffers: batch-norm running statistics are per process between forwards.
            state = {name: dict(net.named_parameters()) for name, net in
                     (("generator", nets.generator), ("critic", nets.critic), ("domain_critic", nets.domain_critic))
                     if net is not None}
            torch.save(state, f"{root}/{model}_rank{rank}.pt")
        dist.barrier()  # both ranks done before either tears the group down (gloo aborts a peer otherwise)
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_keep_identical_weights(tiny_lookbook: Path, tmp_path: Path) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tiny_lookbook), str(tmp_path)), nprocs=WORLD, join=True)
    for model in MODELS:
        a = torch.load(tmp_path / f"{model}_rank0.pt", weights_only=True)
        b = torch.load(tmp_path / f"{model}_rank1.pt", weights_only=True)
        for net in a:
            for k, v in a[net].items():
                assert torch.equal(v, b[net][k]), f"{model} {net}.{k} differs between ranks"
        # Only rank 0 wrote the run folder: its checkpoint holds rank 0's weights, one stats line per step.
        saved = torch.load(tmp_path / model / "checkpoints" / "last.pt", weights_only=True)["models"]["generator"]
        assert all(torch.equal(saved[k], v) for k, v in a["generator"].items())
        assert len(a["generator"]) > 10 and len(a["critic"]) > 3
        lines = [json.loads(x) for x in (tmp_path / model / "stats.jsonl").read_text().splitlines()]
        # 8 steps: rtdgan 2 stages x 2 epochs x 2 steps; baselines 1 stage x 4 epochs x 2 steps.
        assert [x["step"] for x in lines] == list(range(1, 9))
        assert all(x["batch_size"] == 4 for x in lines)
