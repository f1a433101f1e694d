"""The baselines through the trainer, and the objective switch at the phase boundary."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from run_harness import smoke_config

from torchrl_o3f.trainers import (
    ConfigError,
    OfflineOnlineTrainer,
    TrainerConfig,
    load_checkpoint,
)
from torchrl_o3f.trainers.checkpoint import EXIT_RESUMABLE

ROOT = Path(__file__).resolve().parents[1]
TASK = "hopper-random"


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("datasets"))


def _cfg(out, dataset_root, algo="iql", **kw) -> TrainerConfig:
    return smoke_config(out, dataset_root, algo, **kw)

@pytest.mark.parametrize("algo", ["sac", "cql", "awac"])
@pytest.mark.parametrize("mode", ["none", "o3f"])
def test_each_baseline_runs_offline_then_online(tmp_path, dataset_root, algo, mode):
    cfg = _cfg(tmp_path, dataset_root, algo)
    cfg.exploration.mode = mode
    trainer = OfflineOnlineTrainer(cfg)
    summary = trainer.train()
    assert summary["online_algo"] == algo and summary["online_frames"] == 60
    if mode == "o3f":  # the selector reads the ensemble the baseline trains
        assert trainer.exploration.qvalue_network is trainer.agent.loss.qvalue_network
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    episode_rows = [r for r in rows if "online/episode_return" in r]
    assert episode_rows and all("online/q_overestimation" in r for r in episode_rows)


def test_cql_to_sac_starts_sac_from_the_cql_policy_and_critics(tmp_path, dataset_root):
    cfg = _cfg(tmp_path, dataset_root, "cql", online_algo="sac")
    cfg.budget.online_frames = 0  # the switch alone: the final agent is the switched one
    trainer = OfflineOnlineTrainer(cfg)
    summary = trainer.train()
    assert summary["algo"] == "cql" and summary["online_algo"] == "sac"
    assert trainer.agent.cfg.name == "sac"
    # the online SAC takes CQL's network shapes and reward transform
    assert trainer.agent.cfg.depth == cfg.algo.depth and trainer.agent.cfg.num_cells == 32
    switch = json.loads((tmp_path / "switch.json").read_text())
    assert switch["from"] == "cql" and switch["to"] == "sac"
    copied = set(switch["copied"])
    assert any(k.startswith("actor_network.") for k in copied)
    assert any(k.startswith("qvalue_network.") for k in copied)
    assert any(k.startswith("target_qvalue_network_params") for k in copied)
    assert any("alpha" in k for k in copied)  # the entropy temperature goes on
    assert not any("alpha_prime" in k for k in copied)  # CQL's multiplier has no counterpart
    offline = load_checkpoint(tmp_path / "checkpoints" / "offline.pt")["agent"]["loss"]
    final = load_checkpoint(tmp_path / "checkpoints" / "final.pt")["agent"]["loss"]
    for key in copied:
        torch.testing.assert_close(final[key], offline[key], rtol=0, atol=0, msg=key)
    # the exploration module follows the online critic
    cfg2 = _cfg(tmp_path / "o3f", dataset_root, "cql", online_algo="sac")
    cfg2.budget.online_frames = 0
    t2 = OfflineOnlineTrainer(cfg2)
    t2.train()
    assert t2.exploration.qvalue_network is t2.agent.loss.qvalue_network


@pytest.mark.parametrize("online", ["sac", "lapo"])
def test_a_switch_that_cannot_carry_the_policy_is_refused_before_any_work(
    tmp_path, dataset_root, online
):
    """IQL -> SAC (another actor), IQL -> LAPO (a CVAE and a latent actor IQL does not have)."""
    cfg = _cfg(tmp_path, dataset_root, "iql", online_algo=online)
    with pytest.raises(ConfigError, match=f"online_algo={online}: the switch iql -> {online}"):
        OfflineOnlineTrainer(cfg)
    assert not list(tmp_path.iterdir())  # refused before any work
    message = str(pytest.raises(ConfigError, cfg.validate).value)
    assert "actor_network.*" in message if online == "sac" else "cvae.*" in message
    assert "switch_fresh=true" in message


def test_switch_fresh_starts_what_cannot_be_carried_from_scratch(tmp_path, dataset_root):
    cfg = _cfg(tmp_path, dataset_root, "iql", online_algo="lapo", switch_fresh=True)
    cfg.budget.online_frames = 0  # the switch alone
    OfflineOnlineTrainer(cfg).train()
    switch = json.loads((tmp_path / "switch.json").read_text())
    assert any(k.startswith("cvae.") for k in switch["fresh"])
    assert any(k.startswith("qvalue_network.") for k in switch["copied"])  # critics carried


def test_offline_checkpoint_starts_a_switched_online_phase(tmp_path, dataset_root):
    base = tmp_path / "base"
    OfflineOnlineTrainer(_cfg(base, dataset_root, "cql")).train()
    cfg = _cfg(
        tmp_path / "switched",
        dataset_root,
        "cql",
        online_algo="sac",
        offline_checkpoint=str(base / "checkpoints" / "offline.pt"),
    )
    summary = OfflineOnlineTrainer(cfg).train()
    assert summary["online_algo"] == "sac" and summary["online_frames"] == 60
    assert (tmp_path / "switched" / "switch.json").exists()


def _cmd(out, dataset_root, *extra):
    return [
        sys.executable,
        str(ROOT / "recipes" / "finetune.py"),
        "budget=smoke",
        f"task={TASK}",
        "device=cpu",
        "progress=false",
        "algo.num_cells=32",
        "algo.batch_size=64",
        "budget.online_frames=150",
        "budget.eval_every=1000",
        f"dataset_root={dataset_root}",
        f"output_dir={out}",
        f"hydra.run.dir={out}",
        *extra,
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra", [["algo=cql", "online_algo=sac"], ["algo=awac"]], ids=["cql-sac", "awac"]
)
def test_sigterm_online_then_resume_is_the_uninterrupted_run(tmp_path, dataset_root, extra):
    ref = tmp_path / "ref"
    res = subprocess.run(
        _cmd(ref, dataset_root, *extra), capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "run"
    proc = subprocess.Popen(
        _cmd(run, dataset_root, *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    boundary = run / "checkpoints" / "offline.pt"
    deadline = time.time() + 240
    while not boundary.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)  # into the online phase, past the switch
    os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == EXIT_RESUMABLE, err[-3000:]
    res = subprocess.run(
        _cmd(run, dataset_root, *extra, f"resume={run}"),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    a = load_checkpoint(ref / "checkpoints" / "final.pt")
    b = load_checkpoint(run / "checkpoints" / "final.pt")
    assert a["agent"]["loss"].keys() == b["agent"]["loss"].keys()
    for key in a["agent"]["loss"]:
        torch.testing.assert_close(b["agent"]["loss"][key], a["agent"]["loss"][key], rtol=0, atol=0)
    torch.testing.assert_close(b["online_data"]["action"], a["online_data"]["action"])
