"""Behavior policies: the actor, its checkpoints, SAC training and the shipped policies."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mujoco
import numpy as np
import pytest
import torch
import yaml
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_o3f.data import (
    BehaviorPolicy,
    PolicyInfo,
    evaluate_policy,
    list_policies,
    load_behavior_policy,
    make_behavior_actor,
)
from torchrl_o3f.data.__main__ import main
from torchrl_o3f.data.behavior import MEDIUM_TARGETS, POLICY_DIR, install_policy
from torchrl_o3f.trainers import train_behavior
from torchrl_o3f.trainers.checkpoint import EXIT_RESUMABLE


def _policy(seed=0):
    torch.manual_seed(seed)
    info = PolicyInfo("toy-medium", "Hopper-v5", 11, 3, [-1.0] * 3, [1.0] * 3, 16, 1)
    return BehaviorPolicy.from_info(info)


def test_behavior_policy_matches_the_torchrl_actor():
    actor = make_behavior_actor(11, 3, num_cells=16, depth=1)
    net = actor.module[0].module[0]
    info = PolicyInfo("toy", "Hopper-v5", 11, 3, [-1.0] * 3, [1.0] * 3, 16, 1)
    policy = BehaviorPolicy(net, info)
    obs = torch.randn(64, 11)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        expected = actor(TensorDict({"observation": obs}, [64]))["action"]
    got = policy.act(obs.numpy(), deterministic=True)
    np.testing.assert_allclose(got, expected.detach().numpy(), atol=1e-5)
    # stochastic samples: seeded, within bounds, spread around the deterministic action
    a = policy.act(obs.numpy(), generator=torch.Generator().manual_seed(1))
    b = policy.act(obs.numpy(), generator=torch.Generator().manual_seed(1))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a).max() <= 1 and not np.allclose(a, got)


def test_checkpoint_round_trip(tmp_path):
    policy = _policy()
    policy.info.returns = {"deterministic": {"mean": 1.0, "std": 0.0, "episodes": 1}}
    pt, js = policy.save(tmp_path / "toy-medium")
    assert (
        pt.suffix == ".pt" and json.loads(js.read_text())["returns"]["deterministic"]["mean"] == 1
    )
    assert list_policies(tmp_path) == ["toy-medium"]
    loaded = load_behavior_policy("toy-medium", tmp_path)
    obs = np.random.default_rng(0).standard_normal((4, 11)).astype(np.float32)
    np.testing.assert_array_equal(
        loaded.act(obs, deterministic=True), policy.act(obs, deterministic=True)
    )
    # only the actor's weights are stored
    assert set(torch.load(pt, weights_only=True)) == set(policy.net.state_dict())


def test_missing_checkpoint_says_how_to_train(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-behavior walker2d"):
        load_behavior_policy("walker2d-medium", tmp_path)


def test_evaluate_policy_is_reproducible():
    policy = _policy()
    a = evaluate_policy(policy, "hopper-random", num_episodes=2, deterministic=False, seed=3)
    b = evaluate_policy(policy, "hopper-random", num_episodes=2, deterministic=False, seed=3)
    np.testing.assert_array_equal(a, b)


TINY_SAC = {"num_cells": 16, "depth": 1, "batch_size": 32}


def _train(tmp_path, **kw):
    args = dict(
        target_return=1e6,
        max_steps=300,
        warmup_steps=200,
        eval_every=50,
        eval_episodes=1,
        final_episodes=2,
        out_dir=tmp_path / "out",
        run_dir=tmp_path / "run",
        algo_overrides=TINY_SAC,
        log=None,
    )
    return train_behavior("hopper", **{**args, **kw})


def test_train_behavior_runs_the_registered_sac_through_the_trainer(tmp_path, one_thread):
    from torchrl_o3f.trainers import load_checkpoint
    from torchrl_o3f.trainers import load_policy as load_run_policy

    pt = _train(tmp_path)
    info = json.loads(pt.with_suffix(".json").read_text())
    assert info["name"] == "hopper-medium" and info["env_id"] == "Hopper-v5"
    assert info["mujoco_version"] == mujoco.__version__
    assert info["train_steps"] in (250, 300) and (info["num_cells"], info["depth"]) == (16, 1)
    assert info["returns"]["deterministic"]["episodes"] == 2
    assert set(info["returns"]) == {"deterministic", "stochastic"}
    assert info["extra"]["batch_size"] == 32 and info["extra"]["warmup_steps"] == 200
    # the run is the trainer's: its resolved config, an online-only SAC run with a warm-up
    record = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert record["algo"]["name"] == "sac" and record["offline_data"] is False
    assert record["budget"]["warmup_frames"] == 200 and record["budget"]["offline_steps"] == 0
    final = load_checkpoint(tmp_path / "run" / "checkpoints" / "final.pt")
    assert final["counters"]["frames"] == 300 and final["counters"]["step"] == 0
    # one update per frame after the warm-up, none during it
    assert final["agent"]["num_updates"] == 100
    # the first 200 frames act uniformly at random: spread over the whole action box
    actions = final["online_data"]["action"]
    assert actions[:200].abs().max() > 0.95 and actions[:200].mean().abs() < 0.15
    # a snapshot after every evaluation past the warm-up, the same actor as the run's
    snaps = sorted(p.name for p in (tmp_path / "run" / "behavior").glob("*.json"))
    assert snaps == ["hopper-medium-step250.json", "hopper-medium-step300.json"]
    snap = load_behavior_policy("hopper-medium-step300", tmp_path / "run" / "behavior")
    deployed = load_run_policy(tmp_path / "run")
    obs = torch.randn(8, 11)
    expected = deployed(TensorDict({"observation": obs}, [8]))["action"]
    np.testing.assert_allclose(
        snap.act(obs.numpy(), deterministic=True), expected.numpy(), atol=1e-5
    )
    # a snapshot, measured and installed under another name
    pt = install_policy(
        tmp_path / "run" / "behavior" / "hopper-medium-step250.pt",
        name="hopper-expert",
        num_episodes=1,
        out_dir=tmp_path / "installed",
    )
    installed = load_behavior_policy("hopper-expert", tmp_path / "installed").info
    assert installed.train_steps == 250
    assert installed.extra["installed_from"] == "hopper-medium-step250"
    assert installed.returns["stochastic"]["episodes"] == 1


def test_train_behavior_stops_at_its_target(tmp_path, one_thread):
    # any return is within 10% of a target of ~0 +- huge tolerance: the first evaluation
    # after the warm-up ends the run
    pt = _train(tmp_path, target_return=10.0, tolerance=1e9)
    assert json.loads(pt.with_suffix(".json").read_text())["train_steps"] == 250
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["online_frames"] == 250


def test_train_behavior_never_overwrites_a_policy_unless_asked(tmp_path, capsys):
    shipped = {p.name: _sha256(p) for p in POLICY_DIR.iterdir()}
    with pytest.raises(FileExistsError, match="--overwrite"):
        train_behavior("hopper", log=None)  # the shipped folder
    assert main(["train-behavior", "hopper", "--run-dir", str(tmp_path / "r")]) == 1
    assert "--out-dir" in capsys.readouterr().err
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "hopper-medium.pt").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="--out-dir"):
        _train(tmp_path)
    assert (tmp_path / "out" / "hopper-medium.pt").read_bytes() == b"mine"
    assert not (tmp_path / "run").exists() and not (tmp_path / "r").exists()  # before any work
    assert {p.name: _sha256(p) for p in POLICY_DIR.iterdir()} == shipped


def test_train_behavior_rejects_bad_settings(tmp_path, capsys):
    with pytest.raises(ValueError, match="locomotion policies.*pointmaze"):
        train_behavior("pointmaze", out_dir=tmp_path, log=None)
    with pytest.raises(ValueError, match="no evaluation after the warm-up"):
        _train(tmp_path, max_steps=220)
    args = ["train-behavior", "hopper", "--out-dir", str(tmp_path), "--sac", "num_cels=8"]
    assert main(args) == 1
    assert "num_cels" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_train_behavior_resumes_after_sigterm_as_the_same_run(tmp_path):
    def cmd(name):
        return [
            sys.executable,
            "-m",
            "torchrl_o3f.data",
            "train-behavior",
            "hopper",
            "--target-return=1e6",
            "--max-steps=600",
            "--warmup-steps=100",
            "--eval-every=100",
            "--eval-episodes=1",
            "--final-episodes=1",
            *(f"--sac={k}={v}" for k, v in TINY_SAC.items()),
            f"--out-dir={tmp_path / name}",
            f"--run-dir={tmp_path / name / 'run'}",
        ]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = subprocess.run(cmd("ref"), capture_output=True, text=True, timeout=300, env=env)
    assert ref.returncode == 0, ref.stderr[-3000:]
    proc = subprocess.Popen(
        cmd("cut"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    first = tmp_path / "cut" / "run" / "behavior" / "hopper-medium-step200.json"
    deadline = time.time() + 240
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == EXIT_RESUMABLE, err[-3000:]
    assert not (tmp_path / "cut" / "hopper-medium.pt").exists()
    again = subprocess.run(cmd("cut"), capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    from torchrl_o3f.trainers import load_checkpoint

    a = load_checkpoint(tmp_path / "ref" / "run" / "checkpoints" / "final.pt")
    b = load_checkpoint(tmp_path / "cut" / "run" / "checkpoints" / "final.pt")
    for key in a["agent"]["loss"]:
        torch.testing.assert_close(b["agent"]["loss"][key], a["agent"]["loss"][key], rtol=0, atol=0)
    assert _sha256(tmp_path / "ref" / "hopper-medium.pt") == _sha256(
        tmp_path / "cut" / "hopper-medium.pt"
    )


def _sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.mark.parametrize("name", list_policies())
def test_shipped_policies(name):
    policy = load_behavior_policy(name)
    info = policy.info
    family, quality = name.split("-", 1)
    assert info.mujoco_version == mujoco.__version__, "returns were measured on another mujoco"
    det = info.returns["deterministic"]
    assert det["episodes"] >= 10 and info.returns["stochastic"]["episodes"] >= 10
    if quality == "medium" and not info.extra.get("provisional"):
        # a D4RL-style medium policy: near the target return
        assert abs(det["mean"] - MEDIUM_TARGETS[family]) < 0.35 * MEDIUM_TARGETS[family]
    # the recorded numbers are reproducible: the first episodes of the recorded measurement
    rets = evaluate_policy(policy, f"{family}-random", num_episodes=2, deterministic=True, seed=0)
    assert abs(rets.mean() - det["mean"]) < 3 * det["std"] + 0.05 * abs(det["mean"])


def test_fast_single_observation_path_matches_torch():
    policy = _policy(3)
    obs = np.random.default_rng(1).standard_normal((5, 11)).astype(np.float32)
    for deterministic in (True, False):
        batched = policy.act(obs, deterministic=deterministic, generator=torch.Generator())
        gen = torch.Generator()
        single = np.stack([policy.act(o, deterministic=deterministic, generator=gen) for o in obs])
        np.testing.assert_allclose(single, batched, atol=1e-5)
    # the torch path serves activations the fast path does not know
    info = PolicyInfo("toy", "Hopper-v5", 11, 3, [-1.0] * 3, [1.0] * 3, 16, 1)
    tanh_net = make_behavior_actor(11, 3, num_cells=16, depth=1).module[0].module[0]
    tanh_net[1] = torch.nn.Tanh()
    slow = BehaviorPolicy(tanh_net, info)
    assert slow.act(obs[0], deterministic=True).shape == (3,)


# The shipped behavior policies and the first 1000 transitions of the datasets built from
# them. train-behavior never replaces a shipped file unless asked (--overwrite); whoever ships
# a new policy on purpose updates these pins in the same change.
SHIPPED_SHA256 = {
    "halfcheetah-medium.json": "67ad5989707602a04d09984e6ec7fca41b5afbee74623913b7b352b48d531d9c",
    "halfcheetah-medium.pt": "b0d1b5e512a04dfd9aaa3eb56422101a221688a66b8eabbd4c95b79d69467fc3",
    "hopper-medium.json": "551ad3dd94c9b01ef85d814e592fb7821cb4f488375167e8cc6ba7918dc58bfc",
    "hopper-medium.pt": "8b3c31038ff4454316efbf25f520834227e9982e3e24be594f0984ce2189fc64",
    "walker2d-medium.json": "e2393a9695cd5993a159f41ce87345323fa755087cf55ed48ec283934ebac740",
    "walker2d-medium.pt": "ccaa517040e01f03310f8ead32b4a614d97fdf08cdf89bd91df5896f15edf672",
}
DATASET_SHA256 = {  # observation, action, reward, next observation, terminated, truncated
    # one digest per CPU kind the project's machines have had: the policies' float32 matmuls
    # round differently on another instruction set (an AVX-512 machine gives the second), and
    # each machine must reproduce its own digest exactly
    "halfcheetah-medium": {
        "e150de627c931d6c48191f95c7d5b023a57fee295842d802d972185342a2a860",
        "ca3efe55de1dac29fa64f694c86f299220f5a3f5de555ebd6eca20f608ef186a",
    },
    "hopper-medium": {
        "1ce8c6d244fd0bb99f2b9d875eb2d9d25dbdfc073e5e1d3e8f4c29e3d4f497fa",
        "35f2ff95f8cd1053e89262c24a8b214ee03c77302b29c9e7fe4b53a1fb6fabc5",
    },
    "walker2d-medium": {
        "d9cb6876c2022dc06a7ebcc0a79caac0248e8a9644c8fb803bc0a0ec4873b596",
        "b19db65a421d1b5d978b032b47edc1aa17e16729993d2dfc5dd2b197d6980d69",
    },
}


def test_shipped_policies_are_bit_identical():
    assert {p.name: _sha256(p) for p in sorted(POLICY_DIR.iterdir())} == SHIPPED_SHA256


@pytest.mark.parametrize("task", sorted(DATASET_SHA256))
def test_datasets_built_from_the_shipped_policies_are_bit_identical(task, tmp_path, one_thread):
    import platform

    from torchrl_o3f.data import build_dataset, load_offline_dataset

    recorded = load_behavior_policy(task).info.mujoco_version
    if mujoco.__version__ != recorded or platform.machine() != "x86_64":
        pytest.skip(f"pinned on x86_64 with mujoco {recorded} (the policies' measurements)")
    dataset_id = build_dataset(task, size=1000, seed=0, root=str(tmp_path), progress=False)
    data = load_offline_dataset(dataset_id, root=str(tmp_path))
    digest = hashlib.sha256()
    keys = ("observation", "action", ("next", "reward"), ("next", "observation"))
    for key in (*keys, ("next", "terminated"), ("next", "truncated")):
        digest.update(data[key].contiguous().numpy().tobytes())
    assert digest.hexdigest() in DATASET_SHA256[task], (
        f"{task}: {digest.hexdigest()} (CPU capability {torch.backends.cpu.get_cpu_capability()})"
    )
