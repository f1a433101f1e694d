"""Exported policies (TorchScript, torch.export, ONNX), predict, and the export / evaluate CLI."""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from run_harness import smoke_config
from tensordict import TensorDict

import torchrl_o3f
from torchrl_o3f.__main__ import main
from torchrl_o3f.envs import make_env
from torchrl_o3f.objectives import list_algorithms
from torchrl_o3f.trainers import (
    CheckpointError,
    ExportError,
    ObservationError,
    OfflineOnlineTrainer,
    RenderError,
    evaluate,
    evaluate_run,
    export_policy,
    load_policy,
    read_export_metadata,
)
from torchrl_o3f.trainers import deploy as deploy_module

ALGOS = ["iql", "cql", "awac", "sac", "td3_bc", "lapo"]
OBS_DIM, ACT_DIM = 11, 3  # hopper


def test_every_registered_algorithm_is_exported_here():
    assert sorted(a.name for a in list_algorithms()) == sorted(ALGOS)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One smoke run per algorithm (trained on first use)."""
    root = tmp_path_factory.mktemp("runs")
    dataset_root = str(tmp_path_factory.mktemp("datasets"))
    made: dict[str, Path] = {}

    def run(algo: str) -> Path:
        if algo not in made:
            out = root / algo
            OfflineOnlineTrainer(smoke_config(out, dataset_root, algo)).train()
            made[algo] = out
        return made[algo]

    return run


def _observations(batch: int = 7) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(batch, OBS_DIM, generator=gen)
    obs[0] *= 100.0  # far outside the data: the squashed / clipped actions reach the bounds
    return obs


def _expected(run: Path, obs: torch.Tensor) -> torch.Tensor:
    policy = load_policy(run)
    return policy(TensorDict({"observation": obs.clone()}, [obs.shape[0]]))["action"]


def _onnx_actions(path: Path, obs: torch.Tensor) -> torch.Tensor:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["observation"]
    (action,) = session.run(["action"], {"observation": obs.numpy()})
    return torch.from_numpy(action)


def _load_exported(path: Path, fmt: str):
    if fmt == "torchscript":
        return torch.jit.load(str(path))
    return torch.export.load(str(path)).module()


@pytest.mark.parametrize("algo", ALGOS)
def test_exported_files_act_as_load_policy(runs, tmp_path, algo):
    run = runs(algo)
    obs = _observations()
    expected = _expected(run, obs)
    low, high = load_policy(run).action_low, load_policy(run).action_high
    for fmt, suffix in (("torchscript", ".pt"), ("export", ".pt2")):
        path = export_policy(run, tmp_path / f"policy{suffix}", format=fmt)
        module = _load_exported(path, fmt)
        with torch.no_grad():
            got = module(obs)
            one = module(obs[3:4])  # another batch size than the traced one
        assert got.dtype == torch.float32 and got.shape == (7, ACT_DIM)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(one, expected[3:4], rtol=0, atol=1e-5)
        assert bool(((got >= low) & (got <= high)).all())
        meta = read_export_metadata(path)
        assert meta["observation_dim"] == OBS_DIM and meta["action_dim"] == ACT_DIM
        assert meta["algorithm"] == algo and meta["task"] == "hopper-random"
        assert meta["format"] == fmt


@pytest.mark.parametrize("algo", ALGOS)
def test_onnx_file_acts_as_load_policy(runs, tmp_path, algo):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    run = runs(algo)
    obs = _observations()
    path = export_policy(run, tmp_path / "policy.onnx", format="onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.onnx"]  # weights inside
    torch.testing.assert_close(_onnx_actions(path, obs), _expected(run, obs), rtol=0, atol=1e-5)
    torch.testing.assert_close(
        _onnx_actions(path, obs[:1]), _expected(run, obs[:1]), rtol=0, atol=1e-5
    )
    assert read_export_metadata(path)["algorithm"] == algo


BLOCKED_IMPORT = """
import importlib.abc, json, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torchrl_o3f", "torchrl", "tensordict"):
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, Blocked())
for name in ("torchrl_o3f", "torchrl", "tensordict"):
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"{name} imported")

import torch

jobs = json.loads(sys.argv[1])
obs = torch.tensor(jobs["observation"], dtype=torch.float32)
out = {}
for path in jobs["files"]:
    if path.endswith(".pt2"):
        module = torch.export.load(path).module()
    else:
        module = torch.jit.load(path)
    with torch.no_grad():
        out[path] = module(obs).tolist()
loaded = [m for m in sys.modules if m.split(".")[0] in ("torchrl_o3f", "torchrl", "tensordict")]
print(json.dumps({"actions": out, "loaded": loaded}))
"""


def test_exported_files_act_without_this_package(runs, tmp_path):
    obs = _observations()
    files, expected = [], {}
    for algo in ("td3_bc", "lapo", "sac"):
        run = runs(algo)
        for fmt, suffix in (("torchscript", ".pt"), ("export", ".pt2")):
            path = export_policy(run, tmp_path / f"{algo}{suffix}", format=fmt)
            files.append(str(path))
            expected[str(path)] = _expected(run, obs)
    jobs = json.dumps({"observation": obs.tolist(), "files": files})
    res = subprocess.run(
        [sys.executable, "-I", "-c", BLOCKED_IMPORT, jobs],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["loaded"] == []
    for path in files:
        torch.testing.assert_close(
            torch.tensor(got["actions"][path]), expected[path], rtol=0, atol=1e-5
        )


def test_td3bc_normalisation_is_inside_the_exported_file(runs, tmp_path):
    run = runs("td3_bc")
    policy = load_policy(run)
    net = policy.policy.module  # TanhDeterministicNet, its normalisation in buffers
    assert not torch.allclose(net.observation_loc, torch.zeros(OBS_DIM))  # the dataset's stats
    obs = _observations()
    expected = _expected(run, obs)
    # the same network without its normalisation acts differently on raw observations
    bare = copy.deepcopy(net)
    bare.set_observation_normalization(None, None)
    with torch.no_grad():
        assert not torch.allclose(bare(obs), expected, atol=1e-3)
    for fmt, suffix in (("torchscript", ".pt"), ("export", ".pt2")):
        path = export_policy(policy, tmp_path / f"td3{suffix}", format=fmt)
        module = _load_exported(path, fmt)
        with torch.no_grad():
            torch.testing.assert_close(module(obs), expected, rtol=0, atol=1e-5)
    state = torch.jit.load(str(tmp_path / "td3.pt")).state_dict()
    locs = [v for k, v in state.items() if k.endswith("observation_loc")]
    assert len(locs) == 1 and torch.equal(locs[0], net.observation_loc)


def test_export_refuses_bad_input_with_one_line(runs, tmp_path, capsys, monkeypatch):
    run = runs("iql")
    with pytest.raises(ExportError, match="choose one of: torchscript, export, onnx"):
        export_policy(run, tmp_path / "p.bin", format="pickle")
    with pytest.raises(ExportError, match="does not exist"):
        export_policy(run, tmp_path / "missing" / "p.pt")
    with pytest.raises(ExportError, match="own policy file"):
        export_policy(run, run / "policy.pt")
    with pytest.raises(CheckpointError):
        export_policy(tmp_path / "no-run", tmp_path / "p.pt")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "onnxscript" else real(n, *a)
    )
    with pytest.raises(ExportError, match=r"pip install 'torchrl-o3f\[onnx\]'"):
        export_policy(run, tmp_path / "p.onnx", format="onnx")
    monkeypatch.undo()
    cases = [
        (["export", str(run), "--format", "pickle", "--out", str(tmp_path / "p")], "pickle"),
        (["export", str(tmp_path / "no-run"), "--out", str(tmp_path / "p.pt")], "no run at"),
        (["export", str(run), "--out", str(tmp_path / "missing" / "p.pt")], "does not exist"),
        (["evaluate", str(tmp_path / "no-run")], "no run at"),
        (["evaluate", str(run), "--episodes", "0"], "num_episodes"),
    ]
    for argv, words in cases:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and words in err and err.count("\n") == 1, err
    assert not (tmp_path / "p").exists() and not list(tmp_path.glob(".*partial*"))


def test_export_command_writes_a_file(runs, tmp_path, capsys):
    run = runs("iql")
    out = tmp_path / "iql.pt2"
    assert main(["export", str(run), "--format", "export", "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    obs = _observations()
    with torch.no_grad():
        got = torch.export.load(str(out)).module()(obs)
    torch.testing.assert_close(got, _expected(run, obs), rtol=0, atol=1e-5)
    assert torchrl_o3f.export_policy is export_policy  # the lazy top-level name


@pytest.mark.parametrize("algo", ["iql", "lapo"])
def test_predict_takes_numpy_and_torch_one_or_a_batch(runs, algo):
    policy = load_policy(runs(algo))
    obs = _observations().numpy().astype(np.float64)  # what gymnasium gives
    batch = policy.predict(obs)
    assert isinstance(batch, np.ndarray) and batch.dtype == np.float32
    assert batch.shape == (7, ACT_DIM)
    np.testing.assert_allclose(batch, _expected(runs(algo), torch.from_numpy(obs).float()))
    one = policy.predict(obs[2])
    assert one.shape == (ACT_DIM,) and one.dtype == np.float32
    np.testing.assert_allclose(one, batch[2], atol=1e-6)
    np.testing.assert_allclose(policy.predict(torch.from_numpy(obs)), batch, atol=1e-6)
    low, high = policy.action_low.numpy(), policy.action_high.numpy()
    assert ((batch >= low) & (batch <= high)).all()
    with pytest.raises(ObservationError, match="batch"):
        policy.predict(obs[None])
    with pytest.raises(ObservationError, match="size 5"):
        policy.predict(np.zeros(5))


def test_evaluate_prints_the_score_the_trainer_computes(runs, capsys):
    run = runs("iql")
    summary = json.loads((run / "summary.json").read_text())
    assert main(["evaluate", str(run)]) == 0  # the trainer's own evaluation episodes
    line = capsys.readouterr().out.strip()
    assert line.startswith("normalised score ")
    assert float(line.split()[2]) == pytest.approx(summary["score_after_online"], abs=1e-4)
    assert main(["evaluate", str(run), "--episodes", "2", "--seed", "5"]) == 0
    printed = float(capsys.readouterr().out.split()[2])
    cfg = smoke_config(run, None, "iql")
    env = make_env("hopper-random", seed=5, max_episode_steps=cfg.max_episode_steps())
    direct = evaluate(load_policy(run), env, "hopper-random", num_episodes=2)
    assert printed == pytest.approx(direct["score"], abs=1e-4)
    again = evaluate_run(run, num_episodes=2, seed=5)
    assert again["score"] == direct["score"] and again["eval_episodes"] == 2


class _FakeFrames:
    """A gymnasium env wrapper whose ``render`` returns small frames (no OpenGL needed)."""

    def __init__(self, env):
        self.env = env
        self.metadata = {"render_fps": 25}
        self.count = 0

    def __getattr__(self, name):
        return getattr(self.env, name)

    def render(self):
        self.count += 1  # frames differ, so the gif keeps each of them
        return np.full((16, 16, 3), self.count % 256, dtype=np.uint8)


def test_render_video_writes_one_episode(runs, tmp_path, monkeypatch, capsys):
    imageio = pytest.importorskip("imageio")
    real = deploy_module.make_gym_env
    monkeypatch.setattr(
        deploy_module, "make_gym_env", lambda task, **kw: _FakeFrames(real(task, **kw))
    )
    run = runs("iql")
    video = tmp_path / "episode.gif"
    assert main(["evaluate", str(run), "--seed", "1", "--render-video", str(video)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("normalised score") and out[1].startswith(f"wrote {video}")
    steps = int(out[1].split(", ")[-1].split()[0])
    assert len(imageio.mimread(video)) == steps + 1  # the reset frame and one per step


def test_render_video_refuses_without_a_writer(runs, tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "imageio_ffmpeg" else real(n, *a)
    )
    with pytest.raises(RenderError, match="pip install imageio-ffmpeg"):
        deploy_module.render_episode(runs("iql"), tmp_path / "episode.mp4")
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "imageio" else real(n, *a)
    )
    argv = ["evaluate", str(runs("iql")), "--render-video", str(tmp_path / "e.gif")]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "pip install imageio" in captured.err and captured.err.count("\n") == 1
    assert captured.out == ""  # refused before any episode ran
