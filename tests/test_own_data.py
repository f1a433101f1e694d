"""The trainer on a user's own dataset (TensorDict, replay buffer) and env (id or factory)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from loss_harness import ted_batch
from torchrl.data import LazyTensorStorage, ReplayBuffer

from torchrl_o3f.data import as_ted_dataset, normalized_score
from torchrl_o3f.envs import Task, make_env_from_id, register_task
from torchrl_o3f.trainers import BUDGETS, OfflineOnlineTrainer, TrainerConfig


@pytest.fixture(scope="module")
def pendulum_task():
    return register_task(
        Task(
            name="test-pendulum",
            family="generic",
            quality="custom",
            env_id="Pendulum-v1",
            max_episode_steps=50,
            dataset_id="test-pendulum",
            sigma=0.2,
            buildable=False,
            score="raw",
        ),
        overwrite=True,
    )


def _cfg(tmp_path) -> TrainerConfig:
    cfg = TrainerConfig(
        task="test-pendulum",
        algo="iql",
        budget=dataclasses.replace(BUDGETS["smoke"], max_episode_steps=None),
        output_dir=str(tmp_path),
        progress=False,
        device="cpu",
    )
    cfg.algo.num_cells, cfg.algo.batch_size = 16, 32
    cfg.algo.reward_normalization = "none"
    cfg.exploration.num_candidates = 8
    return cfg


def _data(n=300):
    td = ted_batch(n, 3, 1, low=-2.0, high=2.0, generator=torch.Generator().manual_seed(0))
    td["next", "done"][49::50] = True
    return td


@pytest.mark.parametrize("form", ["tensordict", "replay_buffer"])
@pytest.mark.parametrize("env", [None, "Pendulum-v1", "factory"])
def test_own_dataset_and_env(tmp_path, pendulum_task, form, env):
    data = _data()
    if form == "replay_buffer":
        rb = ReplayBuffer(storage=LazyTensorStorage(400))
        rb.extend(data)
        data = rb
    if env == "factory":
        env = lambda: make_env_from_id("Pendulum-v1")  # noqa: E731
    summary = OfflineOnlineTrainer(_cfg(tmp_path), dataset=data, env=env).train()
    assert summary["online_frames"] == 60
    # raw scores: the return itself
    assert summary["score_after_online"] == pytest.approx(summary["return_after_online"])


def test_bad_own_data_is_a_clear_error(tmp_path, pendulum_task):
    wrong = ted_batch(64, 5, 1)  # observations of size 5 for a 3-dim env
    with pytest.raises(ValueError, match="observations of size 5"):
        OfflineOnlineTrainer(_cfg(tmp_path), dataset=wrong).train()
    partial = _data().exclude(("next", "terminated"))
    with pytest.raises(KeyError, match="terminated"):
        as_ted_dataset(partial)
    with pytest.raises(TypeError, match="TED TensorDict"):
        as_ted_dataset([1, 2, 3])
    bad = _data()
    bad["next", "reward"][0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        as_ted_dataset(bad)
    huge = _data().apply(lambda x: x.double() if x.is_floating_point() else x)
    huge["next", "reward"][0] = 1e40  # finite in float64, inf in float32
    with pytest.raises(ValueError, match="float32"):
        as_ted_dataset(huge)


def test_raw_scores_are_returns(pendulum_task):
    assert normalized_score("test-pendulum", -120.5) == -120.5
