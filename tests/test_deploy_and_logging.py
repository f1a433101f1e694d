"""A trained policy for deployment, the loggers a torchrl user expects, the run's own log."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from run_harness import smoke_config
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

import torchrl_o3f
from torchrl_o3f.trainers import (
    CheckpointError,
    ConfigError,
    DeployedPolicy,
    OfflineOnlineTrainer,
    TrainerConfig,
)

ROOT = Path(__file__).resolve().parents[1]
TASK = "hopper-random"


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("datasets"))


def _cfg(out, dataset_root, algo="iql", **kw) -> TrainerConfig:
    return smoke_config(out, dataset_root, algo, **kw)


@pytest.mark.parametrize("algo", ["iql", "lapo"])
def test_load_policy_acts_as_the_trained_policy(tmp_path, dataset_root, algo):
    trainer = OfflineOnlineTrainer(_cfg(tmp_path, dataset_root, algo))
    trainer.train()
    obs = torch.randn(9, 11)
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        expected = trainer.agent.policy(TensorDict({"observation": obs}, [9]))["action"]
    policy_file = tmp_path / "policy.pt"
    assert policy_file.stat().st_size < (tmp_path / "checkpoints" / "final.pt").stat().st_size
    for source in (tmp_path, policy_file, tmp_path / "checkpoints" / "final.pt"):
        policy = torchrl_o3f.load_policy(source)
        assert isinstance(policy, DeployedPolicy)
        assert not any(p.requires_grad and p.grad is not None for p in policy.parameters())
        got = policy(TensorDict({"observation": obs}, [9]))["action"]  # deterministic by default
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        single = policy.act(obs[0])
        torch.testing.assert_close(single, expected[0], rtol=0, atol=1e-6)  # batch of 1
    # unbatched tensordicts and a stochastic variant
    sampled = torchrl_o3f.load_policy(policy_file, deterministic=False)
    assert sampled(TensorDict({"observation": obs[0]}, []))["action"].shape == (3,)


def test_load_policy_refuses_foreign_files(tmp_path):
    foreign = tmp_path / "tensor.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        torchrl_o3f.load_policy(foreign)


def test_a_missing_logger_extra_is_one_clear_error(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("tensorboard", "wandb") else real(name, *a),
    )
    for backend in ("tensorboard", "wandb"):
        cfg = _cfg(tmp_path, None)
        cfg.logger.backend = backend
        with pytest.raises(ConfigError, match=rf"torchrl-o3f\[{backend}\]"):
            cfg.validate()
    cfg = _cfg(tmp_path, None)
    cfg.logger.mode = "sometimes"
    with pytest.raises(ConfigError, match="logger.mode"):
        cfg.validate()


def test_wandb_gets_project_group_mode_and_the_resolved_config(tmp_path, dataset_root, monkeypatch):
    import torchrl.record.loggers as loggers

    seen = {}

    class FakeLogger:
        def log_scalar(self, *a, **k):
            pass

        def log_hparams(self, cfg):
            seen["hparams"] = dict(cfg)

    def fake_get_logger(backend, logger_name, experiment_name, **kwargs):
        seen.update(backend=backend, name=experiment_name, **kwargs)
        return FakeLogger()

    monkeypatch.setattr(loggers, "get_logger", fake_get_logger)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    cfg = _cfg(tmp_path, dataset_root)
    cfg.logger.backend, cfg.logger.project, cfg.logger.group = "wandb", "o3f", "sweep-1"
    cfg.logger.mode = "offline"
    OfflineOnlineTrainer(cfg).train()
    assert seen["backend"] == "wandb" and seen["name"] == "iql-hopper-random"
    wandb = seen["wandb_kwargs"]
    assert wandb["project"] == "o3f" and wandb["group"] == "sweep-1"
    assert wandb["mode"] == "offline" and wandb["offline"] is True
    assert seen["hparams"]["algo.lr.actor"] == pytest.approx(3e-4)
    assert seen["hparams"]["exploration.sigma"] == pytest.approx(0.2)


@pytest.mark.slow
def test_the_hydra_job_log_holds_the_runs_own_lines(tmp_path, dataset_root):
    res = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "o3f_iql.py"), "budget=smoke", f"task={TASK}"]
        + ["device=cpu", "progress=false", "algo.num_cells=32", "exploration.num_candidates=16"]
        + [f"dataset_root={dataset_root}", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    log = (tmp_path / "o3f_iql.log").read_text()
    assert "evaluation (offline, step 0" in log and "finished: normalised score" in log
    assert "evaluation episodes" in res.stdout  # the summary says what each score rests on


def test_learning_curve_has_one_x_unit_per_panel(tmp_path):
    import matplotlib.image as mpimg

    from torchrl_o3f.trainers import plot_learning_curve

    rows = [
        {"phase": "offline", "step": s, "frames": 0, "score": s / 10, "score_std": 1.0}
        for s in (0, 10, 20)
    ] + [
        {"phase": "online", "step": 20, "frames": f, "score": 3 + f / 10, "score_std": 1.0}
        for f in (5, 10)
    ]
    rows[-1]["eval_episodes"] = 5
    both = plot_learning_curve(rows, tmp_path / "both.png", title="O3F-IQL")
    offline = plot_learning_curve(rows[:3], tmp_path / "offline.png", title="IQL")
    h2, w2 = mpimg.imread(both).shape[:2]
    h1, w1 = mpimg.imread(offline).shape[:2]
    assert w2 > 1.5 * w1 and h1 == h2  # two panels (steps | frames) against one


def test_checkpoints_are_not_duplicated_and_follow_the_umask(tmp_path, dataset_root):
    import os
    import stat

    old = os.umask(0o022)
    try:
        OfflineOnlineTrainer(_cfg(tmp_path, dataset_root)).train()
    finally:
        os.umask(old)
    ckpt = tmp_path / "checkpoints"
    assert os.path.samefile(ckpt / "final.pt", ckpt / "latest.pt")  # one file on disk
    for name in ("summary.json", "config.yaml", "policy.pt", "checkpoints/final.pt"):
        mode = stat.S_IMODE((tmp_path / name).stat().st_mode)
        assert mode == 0o644, (name, oct(mode))


def test_recipes_md_python_blocks_run(tmp_path, monkeypatch):
    import re

    text = (ROOT / "docs" / "recipes.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "docs_recipes"}
    for block in blocks:
        exec(compile(block, "docs/recipes.md", "exec"), namespace)
    assert (tmp_path / "runs" / "demo" / "policy.pt").exists()


def test_a_normalising_run_deploys_its_statistics_and_old_policy_files_still_load(
    tmp_path, dataset_root
):
    from torchrl_o3f.trainers.checkpoint import load_checkpoint, save_checkpoint

    cfg = _cfg(tmp_path, dataset_root, "iql", **{"algo.normalize_observations": True})
    trainer = OfflineOnlineTrainer(cfg)
    trainer.train()
    stats = trainer.agent.loss.observation_normalization()
    assert stats is not None and not torch.equal(stats["observation_loc"], torch.zeros(11))
    derived = OmegaConf.load(tmp_path / "config.yaml").derived  # what a reader of the run sees
    assert derived["loss.observation_loc"] == pytest.approx(stats["observation_loc"].tolist())
    assert derived["loss.observation_scale"] == pytest.approx(stats["observation_scale"].tolist())
    obs = torch.randn(9, 11)
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        expected = trainer.agent.policy(TensorDict({"observation": obs}, [9]))["action"]
    for source in (tmp_path / "policy.pt", tmp_path / "checkpoints" / "final.pt"):
        policy = torchrl_o3f.load_policy(source)
        state = policy.policy.state_dict()
        (loc,) = [v for k, v in state.items() if k.endswith("observation_loc")]
        torch.testing.assert_close(loc, stats["observation_loc"], rtol=0, atol=0)
        got = policy(TensorDict({"observation": obs}, [9]))["action"]
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # a policy file written before the option existed: its record has no such key
    plain = OfflineOnlineTrainer(_cfg(tmp_path / "plain", dataset_root, "iql"))
    plain.train()
    old = load_checkpoint(tmp_path / "plain" / "policy.pt")
    assert "loss.observation_loc" not in OmegaConf.load(tmp_path / "plain" / "config.yaml").derived
    for key in ("algo", "online"):
        del old["config"][key]["normalize_observations"]
    save_checkpoint(old, tmp_path / "old.pt")
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        expected = plain.agent.policy(TensorDict({"observation": obs}, [9]))["action"]
    got = torchrl_o3f.load_policy(tmp_path / "old.pt")(TensorDict({"observation": obs}, [9]))
    torch.testing.assert_close(got["action"], expected, rtol=0, atol=0)
