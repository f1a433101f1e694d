"""Training on any Minari dataset on disk: ``dataset=<minari id>`` in the trainer and recipes.

The datasets are written here by Minari itself (``minari.create_dataset_from_buffers``, the
writer under ``DataCollector.create_dataset``; the collector's own ``step`` needs jax, which
this package does not install), tiny, into a temporary datasets folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
import pytest
from minari.data_collector import EpisodeBuffer

from torchrl_o3f.data import DatasetNotFoundError, dataset_task, normalized_score
from torchrl_o3f.data.scores import SCORE_LABELS
from torchrl_o3f.envs import Task, get_task, register_task
from torchrl_o3f.errors import ConfigError
from torchrl_o3f.trainers import BUDGETS, OfflineOnlineTrainer, TrainerConfig
from torchrl_o3f.trainers.record import config_from_record

ROOT = Path(__file__).resolve().parents[1]
WITH_REFS, NO_REFS = "test/pendulum/tiny-v0", "test/pendulum/norefs-v0"
REF_MIN, REF_MAX = -1500.0, -150.0


def _write(root: Path, dataset_id: str, refs: bool) -> None:
    env = gym.make("Pendulum-v1", max_episode_steps=50)
    rng = np.random.default_rng(0)
    buffers = []
    for ep in range(6):
        obs, _ = env.reset(seed=ep)
        o, a, r, te, tr = [obs], [], [], [], []
        while True:
            act = rng.uniform(-2, 2, size=1).astype(np.float32)
            obs, rew, term, trunc, _ = env.step(act)
            o.append(obs), a.append(act), r.append(rew), te.append(term), tr.append(trunc)
            if term or trunc:
                break
        buffers.append(
            EpisodeBuffer(
                id=ep,
                seed=ep,
                observations=np.stack(o),
                actions=np.stack(a),
                rewards=np.asarray(r, dtype=np.float64),
                terminations=np.asarray(te),
                truncations=np.asarray(tr),
            )
        )
    refs = {"ref_min_score": REF_MIN, "ref_max_score": REF_MAX} if refs else {}
    with warnings.catch_warnings():  # minari's author / permalink notices
        warnings.simplefilter("ignore", UserWarning)
        minari.create_dataset_from_buffers(
            dataset_id,
            buffers,
            env=env.spec,
            eval_env=env.spec,
            algorithm_name="uniform random",
            **refs,
        )


@pytest.fixture(scope="module")
def minari_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("minari")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root))
        _write(root, WITH_REFS, refs=True)
        _write(root, NO_REFS, refs=False)
    return root


def _cfg(out, root, **kw) -> TrainerConfig:
    cfg = TrainerConfig(
        algo="iql",
        budget=dataclasses.replace(BUDGETS["smoke"], max_episode_steps=None),
        output_dir=str(out),
        dataset_root=str(root),
        progress=False,
        device="cpu",
        **kw,
    )
    cfg.algo.num_cells, cfg.algo.batch_size = 16, 32
    cfg.exploration.num_candidates = 8
    return cfg.validate()


def test_a_dataset_names_its_task_from_its_own_record(minari_root):
    task = dataset_task(WITH_REFS, root=minari_root)
    assert task.name == "test-pendulum-tiny-v0" and get_task(task.name) == task
    assert (task.env_id, task.max_episode_steps, task.family) == ("Pendulum-v1", 50, "pendulum")
    assert (task.score, task.ref_min_score, task.ref_max_score) == ("return", REF_MIN, REF_MAX)
    assert dataset_task(WITH_REFS, root=minari_root) is get_task(task.name)  # idempotent
    raw = dataset_task(NO_REFS, root=minari_root)
    assert raw.score == "raw" and raw.ref_min_score is None
    assert SCORE_LABELS[raw.score] == "episode return (no reference returns)"


def test_a_run_on_a_minari_id_trains_acts_in_its_env_and_scores_on_its_references(
    tmp_path, minari_root
):
    cfg = _cfg(tmp_path, minari_root, dataset=WITH_REFS)
    assert cfg.task == "test-pendulum-tiny-v0"
    summary = OfflineOnlineTrainer(cfg).train()
    for phase in ("offline", "online"):
        expected = normalized_score(cfg.task, summary[f"return_after_{phase}"])
        # the mean of per-episode scores of a linear map is the map of the mean return
        assert summary[f"score_after_{phase}"] == pytest.approx(expected)
        lo, hi = REF_MIN, REF_MAX
        assert expected == pytest.approx(100 * (summary[f"return_after_{phase}"] - lo) / (hi - lo))
    record = json.loads(json.dumps(config_from_record(tmp_path / "config.yaml").dataset))
    assert record == WITH_REFS
    text = (tmp_path / "config.yaml").read_text()
    assert "dataset: test/pendulum/tiny-v0" in text and "task: test-pendulum-tiny-v0" in text
    assert "dataset_id: test/pendulum/tiny-v0" in text and "env: Pendulum-v1" in text


def test_a_recorded_run_on_a_minari_id_rebuilds_in_a_fresh_process(tmp_path, minari_root):
    """A resumed or reloaded run registers the dataset's task again from the record alone."""
    cfg = _cfg(tmp_path, minari_root, dataset=NO_REFS)
    cfg.budget.online_frames = 0
    OfflineOnlineTrainer(cfg).train()
    code = (
        "from torchrl_o3f.trainers.record import config_from_record; import sys; "
        "c = config_from_record(sys.argv[1]).validate(); print(c.task, c.dataset)"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "config.yaml")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert res.stdout.split() == ["test-pendulum-norefs-v0", NO_REFS]


def test_task_says_otherwise_the_dataset_gives_the_data_only(tmp_path, minari_root):
    register_task(
        Task(
            name="test-pendulum-own",
            family="generic",
            quality="custom",
            env_id="Pendulum-v1",
            max_episode_steps=30,
            dataset_id="test-pendulum-own",
            sigma=0.1,
            buildable=False,
            score="raw",
        ),
        overwrite=True,
    )
    cfg = _cfg(tmp_path, minari_root, dataset=WITH_REFS, task="test-pendulum-own")
    trainer = OfflineOnlineTrainer(cfg)
    summary = trainer.train()
    assert trainer.task.name == "test-pendulum-own" and trainer.dataset_id == WITH_REFS
    assert summary["score_after_online"] == pytest.approx(summary["return_after_online"])
    assert trainer.config_record["exploration"]["sigma"] == 0.1


def test_a_missing_dataset_or_two_datasets_are_refused_in_one_line(tmp_path, minari_root):
    with pytest.raises(DatasetNotFoundError, match="minari download mujoco/hopper/medium-v0"):
        _cfg(tmp_path, minari_root, dataset="mujoco/hopper/medium-v0")
    with pytest.raises(ConfigError, match="give the dataset once"):
        OfflineOnlineTrainer(_cfg(tmp_path, minari_root, dataset=WITH_REFS), dataset=WITH_REFS)
    with pytest.raises(ConfigError, match="dataset=.* and offline_data=false"):
        _cfg(tmp_path, minari_root, dataset=WITH_REFS, offline_data=False)


@pytest.mark.slow
def test_the_recipe_takes_a_minari_id(tmp_path, minari_root):
    res = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "o3f_iql.py"), f"dataset={WITH_REFS}"]
        + [f"dataset_root={minari_root}", "budget=smoke", "budget.max_episode_steps=null"]
        + ["device=cpu", "progress=false", "algo.num_cells=16", "exploration.num_candidates=8"]
        + [f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "[test-pendulum-tiny-v0] O3F-IQL: normalised score" in res.stdout
    assert "exploration:\n  mode: o3f" in (tmp_path / "config.yaml").read_text()


def test_the_hint_for_a_hub_only_task_names_a_command_that_trains_on_it(tmp_path):
    from torchrl_o3f.data import ensure_dataset

    with pytest.raises(DatasetNotFoundError) as err:
        ensure_dataset("hopper-expert", root=tmp_path)
    message = str(err.value)
    assert "`minari download mujoco/hopper/expert-v0`" in message
    assert "`python recipes/o3f_iql.py task=hopper-expert` trains on it" in message


@pytest.mark.slow
def test_a_sweep_takes_a_minari_id(tmp_path, minari_root):
    res = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "sweep.py"), "-m", f"dataset={WITH_REFS}"]
        + ["method=o3f_iql", "seed=0", "budget=smoke", f"study_root={tmp_path}"]
        + [f"dataset_root={minari_root}", "hydra.launcher.n_jobs=1", "algo.num_cells=16"]
        + ["exploration.num_candidates=8"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert res.returncode == 0, res.stderr[-2000:]
    run = tmp_path / "smoke" / "test-pendulum-tiny-v0" / "o3f_iql" / "seed0"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "test-pendulum-tiny-v0"
    assert f"dataset: {WITH_REFS}" in (run / "config.yaml").read_text()
