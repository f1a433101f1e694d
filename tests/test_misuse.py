"""Misuse through the interfaces a user touches: nothing silently wrong, nothing in a traceback.

The Python API as the tutorials write it, the recipes and the sweep through their command lines,
the package's command lines and the deployed policy (docs/reliability.md, "Misuse: what the user
sees"). Command-line checks run in a subprocess only where the command line itself is what is
tested; the rest run in-process.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from loss_harness import ted_batch

from torchrl_o3f.envs import Task, UnknownTaskError, register_task
from torchrl_o3f.errors import ConfigError, O3FError, UnknownKeyError, reported
from torchrl_o3f.trainers import BUDGETS, OfflineOnlineTrainer, TrainerConfig, load_policy
from torchrl_o3f.trainers.deploy import ObservationError
from torchrl_o3f.trainers.guard import NonFiniteError

ROOT = Path(__file__).resolve().parents[1]
TASK = "hopper-random"


# ------------------------------------------------------------------ helpers
def _run(args: list[str], *, cwd, env: dict | None = None, timeout: int = 300):
    environ = {**os.environ, "OMP_NUM_THREADS": "1"}
    environ.pop("HYDRA_FULL_ERROR", None)
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environ,
        timeout=timeout,
    )


def _assert_one_line_error(res, *needles: str) -> str:
    """Status 1, no traceback, and one ``error:`` line naming every needle."""
    assert res.returncode == 1, (res.returncode, res.stdout[-2000:], res.stderr[-3000:])
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, res.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def pendulum():
    """A user's own task and data, as the own-data tutorial registers them."""
    register_task(
        Task(
            name="misuse-pendulum",
            family="generic",
            quality="custom",
            env_id="Pendulum-v1",
            max_episode_steps=200,
            dataset_id="misuse-pendulum",
            sigma=0.2,
            buildable=False,
            score="raw",
        ),
        overwrite=True,
    )
    data = ted_batch(300, 3, 1, low=-2.0, high=2.0, generator=torch.Generator().manual_seed(0))
    data["next", "done"][49::50] = True
    return data


def _pendulum_cfg(out, **budget) -> TrainerConfig:
    cfg = TrainerConfig(
        task="misuse-pendulum",
        algo="iql",
        budget=BUDGETS["smoke"],
        output_dir=str(out),
        progress=False,
        device="cpu",
    )
    cfg.algo.num_cells, cfg.algo.batch_size = 16, 32
    cfg.algo.reward_normalization = "none"
    cfg.exploration.num_candidates = 8
    for key, value in budget.items():
        setattr(cfg.budget, key, value)
    return cfg


@pytest.fixture(scope="module")
def env_run(tmp_path_factory, pendulum):
    """A smoke run on an injected env id (the smoke budget caps episodes at 30 steps)."""
    out = tmp_path_factory.mktemp("env_run")
    trainer = OfflineOnlineTrainer(_pendulum_cfg(out), dataset=pendulum, env="Pendulum-v1")
    trainer.train()
    return out


# ------------------------------------------------------------------ the Python API
def test_a_misspelt_attribute_is_refused_as_the_command_line_refuses_it():
    cfg = TrainerConfig(task=TASK, budget=BUDGETS["smoke"])
    with pytest.raises(UnknownKeyError, match="no field 'num_cell'; did you mean 'num_cells'"):
        cfg.algo.num_cell = 64
    with pytest.raises(UnknownKeyError, match="did you mean 'offline_steps'"):
        cfg.budget.ofline_steps = 5
    with pytest.raises(UnknownKeyError, match="TrainerConfig has no field 'sead'"):
        cfg.sead = 1
    with pytest.raises(AttributeError):  # what Python code expects of an unknown attribute
        cfg.exploration.sigmaa = 0.1
    cfg.algo.num_cells = 64  # the fields themselves still change
    assert cfg.validate().algo.num_cells == 64


def test_budget_presets_are_copied_never_shared():
    cfg = TrainerConfig(budget=BUDGETS["smoke"])
    cfg.budget.offline_steps = 99
    assert BUDGETS["smoke"].offline_steps == 40
    assert TrainerConfig(budget=BUDGETS["smoke"]).budget.offline_steps == 40
    assert BUDGETS["smoke"] is not BUDGETS["smoke"]


def test_a_hyper_parameter_the_loss_refuses_is_a_config_error_naming_its_key():
    cfg = TrainerConfig(task=TASK)
    cfg.algo.expectile = 1.5
    with pytest.raises(ConfigError, match=r"algo\.expectile must be in \(0, 1\), got 1.5"):
        cfg.validate()


def test_an_injected_env_gets_the_runs_episode_cap_and_is_recorded(env_run):
    evaluations = (env_run / "evaluations.csv").read_text().splitlines()
    header = evaluations[0].split(",")
    lengths = {float(row.split(",")[header.index("length")]) for row in evaluations[1:]}
    assert lengths == {30.0}  # Pendulum-v1 runs 200 steps; the run's cap is 30
    config = (env_run / "config.yaml").read_text()
    assert "max_episode_steps: 30" in config
    assert "env: Pendulum-v1 (given as env=)" in config


def test_an_injected_env_factory_gets_the_cap_too(tmp_path, pendulum):
    from torchrl_o3f.envs import make_env_from_id

    cfg = _pendulum_cfg(tmp_path, offline_steps=0, online_frames=0)
    trainer = OfflineOnlineTrainer(
        cfg, dataset=pendulum, env=lambda: make_env_from_id("Pendulum-v1")
    )
    summary = trainer.train()
    assert summary["online_frames"] == 0
    rows = (tmp_path / "evaluations.csv").read_text().splitlines()
    assert float(rows[1].split(",")[rows[0].split(",").index("length")]) == 30.0
    assert "(given as env=)" in (tmp_path / "config.yaml").read_text()


def test_a_folder_holding_another_run_is_refused_unless_resumed_or_overwritten(
    env_run, pendulum, caplog
):
    again = _pendulum_cfg(env_run)
    with pytest.raises(ConfigError) as err:
        OfflineOnlineTrainer(again, dataset=pendulum, env="Pendulum-v1")
    message = str(err.value)
    assert f"output_dir={env_run} holds another run" in message
    assert f"resume={env_run}" in message and "overwrite=true" in message
    first = (env_run / "metrics.jsonl").read_text()
    assert first  # the first run's record is untouched
    # resuming it continues it, and logs the checkpoint it starts from
    resumed = _pendulum_cfg(env_run, online_frames=90)
    resumed.resume, resumed.extend = str(env_run), True
    with caplog.at_level(logging.INFO, logger="torchrl_o3f.trainers.trainer"):
        summary = OfflineOnlineTrainer(resumed, dataset=pendulum, env="Pendulum-v1").train()
    assert summary["online_frames"] == 90
    checkpoint = str(env_run / "checkpoints" / "latest.pt")
    assert any(f"resumed from {checkpoint}" in r.getMessage() for r in caplog.records)
    assert f"resumed_from: {checkpoint}" in (env_run / "config.yaml").read_text()


def test_overwrite_replaces_the_run_a_folder_holds(tmp_path, pendulum):
    cfg = _pendulum_cfg(tmp_path, offline_steps=0, online_frames=0)
    OfflineOnlineTrainer(cfg, dataset=pendulum, env="Pendulum-v1").train()
    (tmp_path / "notes.txt").write_text("the user's own file")
    replaced = _pendulum_cfg(tmp_path, offline_steps=0, online_frames=0)
    replaced.overwrite = True
    OfflineOnlineTrainer(replaced, dataset=pendulum, env="Pendulum-v1").train()
    rows = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len([r for r in rows if "eval/score" in r]) == 1  # the old run's rows are gone
    assert (tmp_path / "notes.txt").exists()  # only the trainer's own files are replaced
    with pytest.raises(ConfigError, match="overwrite=true with resume="):
        dataclasses.replace(replaced, resume=str(tmp_path)).validate()


# ------------------------------------------------------------------ deployment
def test_a_deployed_policy_converts_observations_and_refuses_a_wrong_size(env_run):
    policy = load_policy(env_run)
    obs = np.array([1.0, 0.0, 0.5])  # float64 numpy, as gymnasium returns it
    action = policy.act(obs)
    assert action.dtype == torch.float32 and action.shape == (1,)
    assert torch.equal(action, policy.act(torch.tensor(obs, dtype=torch.float32)))
    assert policy.act([obs, obs]).shape == (2, 1)  # a batch, as a list
    with pytest.raises(ObservationError, match="size 17 .* observations of size 3"):
        policy.act(np.zeros(17))
    with pytest.raises(ObservationError, match="not an array of numbers"):
        policy.act("hopper")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_load_policy_on_a_missing_device_is_one_line(env_run):
    with pytest.raises(ConfigError, match="device=cuda but this machine has no CUDA"):
        load_policy(env_run, device="cuda")


# ------------------------------------------------------------------ how errors are shown
def test_the_package_errors_share_one_base_class():
    from torchrl_o3f._atomic import DiskFullError
    from torchrl_o3f.data import DatasetFormatError, DatasetMismatchError, DatasetNotFoundError
    from torchrl_o3f.envs import UnknownTaskError
    from torchrl_o3f.objectives.registry import UnknownAlgorithmError
    from torchrl_o3f.trainers import CheckpointError

    for cls in (
        ConfigError,
        UnknownTaskError,
        UnknownAlgorithmError,
        CheckpointError,
        NonFiniteError,
        DatasetFormatError,
        DatasetMismatchError,
        DatasetNotFoundError,
        DiskFullError,
        ObservationError,
    ):
        assert issubclass(cls, O3FError), cls


def test_an_error_is_one_line_on_stderr_and_hydra_full_error_shows_the_trace(capsys, monkeypatch):
    error = NonFiniteError("non-finite training at offline update 25: loss_qvalue is nan.\nLikely")
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as stop, reported():
        raise error
    assert stop.value.code == 1
    assert capsys.readouterr().err == (
        "error: non-finite training at offline update 25: loss_qvalue is nan. Likely\n"
    )
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(NonFiniteError), reported():
        raise error
    with pytest.raises(ZeroDivisionError), reported():  # a bug keeps its traceback
        _ = 1 / 0


def test_the_data_and_package_command_lines_print_one_line(capsys, tmp_path):
    from torchrl_o3f.__main__ import main as package_main
    from torchrl_o3f.data.__main__ import main as data_main

    assert data_main(["build", TASK, "--size", "-5", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: size=-5") and "--size N" in err and err.count("\n") == 1
    assert data_main(["build", "hopper-expert", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "minari download mujoco/hopper/expert-v0" in err and err.count("\n") == 1
    with pytest.raises(ConfigError):
        data_main(["--debug", "build", TASK, "--size", "-5", "--root", str(tmp_path)])
    assert package_main(["algorithms", "--task", "hoper-medium"]) == 1
    err = capsys.readouterr().err
    assert "unknown task 'hoper-medium'" in err and "hopper-medium" in err


def test_a_hub_dataset_is_read_where_minari_download_puts_it(tmp_path):
    """hopper-expert's message names `minari download mujoco/hopper/expert-v0`: it is read."""
    from torchrl_o3f.data import ensure_dataset

    (tmp_path / "mujoco" / "hopper" / "expert-v0" / "data").mkdir(parents=True)
    assert ensure_dataset("hopper-expert", root=str(tmp_path)) == "mujoco/hopper/expert-v0"


# ------------------------------------------------------------------ the recipes' command lines
def _recipe(recipe: str, out: Path, *overrides: str) -> list[str]:
    return [
        str(ROOT / "recipes" / recipe),
        "budget=smoke",
        "device=cpu",
        "progress=false",
        "algo.num_cells=16",
        f"dataset_root={out / 'datasets'}",
        f"hydra.run.dir={out / 'run'}",
        *overrides,
    ]


def _recipe_in_process(capsys, tmp_path, *overrides: str) -> tuple[int, str]:
    """``recipes/o3f_iql.py <overrides>`` as its hydra ``main`` runs it, in this process.

    Returns the exit status and stderr; the command line itself is checked by the subprocess
    tests below (an objective switch, a sweep).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from torchrl_o3f.trainers.recipe import register_configs, run_recipe

    register_configs()
    args = _recipe("o3f_iql.py", tmp_path, f"task={TASK}", *overrides)[1:]
    with initialize_config_dir(str(ROOT / "recipes" / "config"), version_base="1.3"):
        cfg = compose("o3f_iql", overrides=args, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.output_dir = str(tmp_path / "run")
    with pytest.raises(SystemExit) as stop:
        run_recipe(cfg)
    return stop.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        (["task=hoper-medium"], ["task=hoper-medium", "'hopper-medium'", "torchrl_o3f tasks"]),
        (["budget.offline_steps=-5"], ["budget.offline_steps", "-5", ">= 0"]),
        (["algo.expectile=1.5"], ["algo.expectile", "1.5", "(0, 1)"]),
        (["resume=no/such/run"], ["resume=no/such/run", "give a run directory"]),
        (["task=antmaze-umaze"], ["D4RL/antmaze/umaze-v1", "minari download"]),
        (["device=cuda"], ["device=cuda", "no CUDA", "device=auto"]),
    ],
    ids=["task", "budget", "hyper-parameter", "resume", "dataset", "device"],
)
def test_a_recipe_prints_the_error_alone(capsys, tmp_path, monkeypatch, overrides, needles):
    if overrides == ["device=cuda"] and torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    code, err = _recipe_in_process(capsys, tmp_path, *overrides)
    assert code == 1 and err.count("\n") == 1 and err.startswith("error: "), err
    for needle in needles:
        assert needle in err, (needle, err)
    assert "full_key" not in err  # not an interpolation's key (the task typo named algo.*)
    assert not (tmp_path / "run" / "config.yaml").exists()  # refused before any work


def test_an_objective_switch_that_cannot_carry_the_policy_is_refused(tmp_path):
    args = _recipe("finetune.py", tmp_path, f"task={TASK}", "algo=iql", "online_algo=lapo")
    res = _run(args, cwd=tmp_path)
    _assert_one_line_error(res, "online_algo=lapo", "cvae.*", "switch_fresh=true")
    assert not (tmp_path / "run" / "switch.json").exists()


def test_hydra_full_error_shows_the_traceback(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(UnknownTaskError, match="task=hoper-medium"):
        _recipe_in_process(capsys, tmp_path, "task=hoper-medium")


def test_a_sweep_checks_its_whole_grid_before_the_first_job(tmp_path):
    res = _run(
        [
            str(ROOT / "recipes" / "sweep.py"),
            "experiment=smoke",
            "hydra.sweeper.params.task='hopper-random,hoper-medium'",
            f"study_root={tmp_path / 'study'}",
            f"dataset_root={tmp_path / 'datasets'}",
        ],
        cwd=tmp_path,
    )
    line = _assert_one_line_error(res, "4 of the sweep's 8 jobs cannot run", "task=hoper-medium")
    assert "none was started" in line
    assert not (tmp_path / "study").exists() and not (tmp_path / "datasets").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_failing_sweep_job_ends_the_sweep_with_one_line(tmp_path):
    """Where a job runs is checked by the job itself (a sweep may be launched from a login node)."""
    res = _run(
        [
            str(ROOT / "recipes" / "sweep.py"),
            "experiment=smoke",
            "hydra/launcher=basic",
            "hydra.sweeper.params.seed=0",
            "hydra.sweeper.params.method=o3f_iql",
            "device=cuda",
            f"study_root={tmp_path / 'study'}",
            f"dataset_root={tmp_path / 'datasets'}",
        ],
        cwd=tmp_path,
    )
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert "error: sweep job [" in res.stderr and "device=cuda but this machine has no CUDA" in (
        res.stderr
    )
    assert not (tmp_path / "datasets").exists()  # refused before any work


def test_a_sweep_job_restarts_a_run_stopped_before_its_first_checkpoint(tmp_path):
    """A folder with nothing to resume is the sweep's own to start again, not another run."""
    from run_harness import smoke_config

    from torchrl_o3f.trainers.sweep import run_sweep_job

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("task: hopper-random\n")  # killed before a checkpoint
    (out / "metrics.jsonl").write_text('{"step": 0}\n')
    cfg = smoke_config(out, str(tmp_path / "datasets"))
    cfg.budget.offline_steps, cfg.budget.online_frames = 0, 0
    with pytest.raises(ConfigError, match="holds another run"):
        OfflineOnlineTrainer(cfg)
    summary = run_sweep_job(cfg, study_root=None)
    assert summary["online_frames"] == 0
    assert '{"step": 0}' not in (out / "metrics.jsonl").read_text()
