import dataclasses
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

from torchrl_o3f.envs import UnknownTaskError
from torchrl_o3f.objectives import UnknownAlgorithmError, algo_config
from torchrl_o3f.trainers import (
    BUDGETS,
    AnnealConfig,
    CheckpointError,
    ConfigError,
    ExplorationConfig,
    OfflineOnlineTrainer,
    TrainerConfig,
    load_checkpoint,
)
from torchrl_o3f.trainers.checkpoint import EXIT_RESUMABLE

ROOT = Path(__file__).resolve().parents[1]
TASK = "hopper-random"  # buildable without a behavior policy, cheap env


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("datasets"))


def _cfg(out, dataset_root, algo="iql", **kw) -> TrainerConfig:
    return smoke_config(out, dataset_root, algo, **kw)


def _final_params(out) -> dict:
    state = load_checkpoint(Path(out) / "checkpoints" / "final.pt")
    return state["agent"]["loss"]


@pytest.mark.parametrize(
    "algo,mode", [("iql", "o3f"), ("iql", "gaussian"), ("iql", "none"), ("lapo", "o3f")]
)
def test_smoke_run_every_mode(tmp_path, dataset_root, algo, mode):
    cfg = _cfg(tmp_path, dataset_root, algo=algo, **{"exploration.mode": mode})
    summary = OfflineOnlineTrainer(cfg).train()
    assert summary["offline_steps"] == cfg.budget.offline_steps
    assert summary["online_frames"] == cfg.budget.online_frames
    for name in ("summary.json", "learning_curve.png", "evaluations.csv", "metrics.jsonl"):
        assert (tmp_path / name).exists(), name
    for name in ("offline.pt", "final.pt", "latest.pt"):
        assert (tmp_path / "checkpoints" / name).exists(), name
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    keys = set().union(*rows)
    assert "eval/score" in keys and "train/updates_per_s" in keys
    if mode == "o3f":
        assert "online/score_gain" in keys
    state = load_checkpoint(tmp_path / "checkpoints" / "final.pt")
    # every online transition is kept, in TED layout
    online = state["online_data"]
    assert online.shape[0] == cfg.budget.online_frames
    assert online["next", "reward"].shape == (cfg.budget.online_frames, 1)
    assert json.loads((tmp_path / "summary.json").read_text())["task"] == TASK
    if algo == "iql" and mode == "o3f":  # the run's report (docs/results/default_run)
        from torchrl_o3f.analysis import RUN_RECORD, report_run

        report_run(tmp_path, tmp_path / "report")
        text = (tmp_path / "report" / "run.md").read_text()
        label = "D4RL-normalised score (0 random, 100 expert)"  # hopper-random: a "return" task
        assert f"{label}: **{summary['score_after_offline']:.1f} +- " in text
        assert f"-> {summary['score_after_online']:.1f} +- " in text
        rows = (tmp_path / "evaluations.csv").read_text().splitlines()
        assert text.count("\n| offline |") + text.count("\n| online |") == len(rows) - 1
        for name in RUN_RECORD:
            assert (tmp_path / "report" / name).read_bytes() == (tmp_path / name).read_bytes()


def test_online_uses_the_trained_ensemble_and_spec(tmp_path, dataset_root):
    cfg = _cfg(tmp_path, dataset_root)
    trainer = OfflineOnlineTrainer(cfg)
    trainer.train()
    assert trainer.exploration.qvalue_network is trainer.agent.loss.qvalue_network
    actions = load_checkpoint(tmp_path / "checkpoints" / "final.pt")["online_data"]["action"]
    low, high = trainer.action_spec.space.low, trainer.action_spec.space.high
    assert bool(((actions >= low) & (actions <= high)).all())


def test_balanced_sampling_and_annealing(tmp_path, dataset_root):
    cfg = _cfg(
        tmp_path,
        dataset_root,
        offline_fraction=0.5,
        anneal=AnnealConfig(mode="linear", frames=60),  # IQL's yaml: expectile -> 0.85
    )
    trainer = OfflineOnlineTrainer(cfg)
    trainer.train()
    assert float(trainer.agent.loss.expectile) == pytest.approx(0.85)
    assert trainer.anneal_start["expectile"] == pytest.approx(0.7)


def test_offline_checkpoint_seeds_several_online_runs(tmp_path, dataset_root):
    base = tmp_path / "base"
    OfflineOnlineTrainer(_cfg(base, dataset_root)).train()
    ckpt = base / "checkpoints" / "offline.pt"
    outs = {}
    for mode in ("o3f", "gaussian"):
        out = tmp_path / mode
        cfg = _cfg(out, dataset_root, offline_checkpoint=str(ckpt), **{"exploration.mode": mode})
        summary = OfflineOnlineTrainer(cfg).train()
        outs[mode] = summary
        assert summary["offline_steps"] == BUDGETS["smoke"].offline_steps
    # both start from the same offline evaluation
    assert outs["o3f"]["score_after_offline"] == outs["gaussian"]["score_after_offline"]


def test_bad_configs_fail_before_training(tmp_path, dataset_root):
    with pytest.raises(UnknownTaskError, match="hopper-random"):
        _cfg(tmp_path, dataset_root, task="hoper-random").validate()
    with pytest.raises(ConfigError, match="exploration.mode"):
        _cfg(tmp_path, dataset_root, **{"exploration.mode": "ucb"}).validate()
    with pytest.raises(ConfigError, match="algo.utd_ratio"):
        _cfg(tmp_path, dataset_root, **{"algo.utd_ratio": 0}).validate()
    with pytest.raises(UnknownAlgorithmError, match="nope"):
        _cfg(tmp_path, dataset_root, algo="nope")
    # a resume directory from another task or algorithm
    run = tmp_path / "run"
    OfflineOnlineTrainer(_cfg(run, dataset_root)).train()
    with pytest.raises(CheckpointError, match="task"):
        OfflineOnlineTrainer(
            _cfg(tmp_path / "x", dataset_root, task="hopper-medium", resume=str(run))
        )
    with pytest.raises(CheckpointError, match="algo"):
        OfflineOnlineTrainer(_cfg(tmp_path / "y", dataset_root, resume=str(run), algo="lapo"))
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable"):
        OfflineOnlineTrainer(_cfg(tmp_path / "z", dataset_root, resume=str(bad)))


def _online_only(out, **kw) -> TrainerConfig:
    budget = dataclasses.replace(
        BUDGETS["smoke"], offline_steps=0, online_frames=80, warmup_frames=30, eval_every=40
    )
    cfg = TrainerConfig(
        task=TASK,
        algo="sac",
        offline_data=False,
        budget=budget,
        output_dir=str(out),
        progress=False,
        device="cpu",
        **kw,
    )
    cfg.algo.num_cells, cfg.algo.batch_size = 16, 16
    return cfg


def test_an_online_only_run_starts_from_scratch_with_a_random_warm_up(tmp_path, one_thread):
    rows, episodes = [], []
    trainer = OfflineOnlineTrainer(
        _online_only(tmp_path, **{"exploration": ExplorationConfig(mode="o3f")})
    )
    trainer.register_hook("post_evaluation", lambda t, row: rows.append(row))
    trainer.register_hook("post_episode", lambda t, row: episodes.append(row))
    summary = trainer.train()
    assert len(episodes) == trainer.counters["episodes"] >= 1
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    returns = [r["online/episode_return"] for r in logged if "online/episode_return" in r]
    assert [e["online/episode_return"] for e in episodes] == returns
    assert {"online/q_mean", "online/mc_return", "online/q_overestimation"} <= set(episodes[0])
    assert summary["offline_steps"] == 0 and summary["online_frames"] == 80
    assert not list(tmp_path.glob("**/*.hdf5")) and trainer.num_offline == 0
    # one evaluation before any update, then every eval_every frames and at the end
    assert [(r["phase"], r["frames"]) for r in rows] == [
        ("offline", 0),
        ("online", 40),
        ("online", 80),
    ]
    # no update in the warm-up, one per frame after it; the buffer holds the online data only
    assert trainer.agent.num_updates == 80 - 30 and len(trainer.buffer) == 80
    record = json.loads(json.dumps(trainer.config_record))
    assert record["offline_data"] is False and record["budget"]["warmup_frames"] == 30
    assert record["derived"]["dataset_id"] == "none"


def test_a_post_evaluation_hook_ends_an_online_run_as_finished(tmp_path, one_thread):
    trainer = OfflineOnlineTrainer(_online_only(tmp_path))
    trainer.register_hook("post_evaluation", lambda t, row: row["frames"] >= 40)
    summary = trainer.train()
    assert summary["online_frames"] == 40 and not summary.get("stopped")
    assert load_checkpoint(tmp_path / "checkpoints" / "final.pt")["counters"]["frames"] == 40
    assert (tmp_path / "policy.pt").exists()


def test_hooks_are_checked_and_the_old_on_evaluation_argument_still_works(tmp_path):
    trainer = OfflineOnlineTrainer(_online_only(tmp_path))
    with pytest.raises(ConfigError, match="unknown hook stage 'after_eval'; choose one of"):
        trainer.register_hook("after_eval", print)
    with pytest.warns(DeprecationWarning, match="register_hook"):
        old = OfflineOnlineTrainer(_online_only(tmp_path), on_evaluation=lambda t, row: None)
    assert len(old._hooks["post_evaluation"]) == 1


def test_online_only_configs_fail_before_training(tmp_path):
    with pytest.raises(ConfigError, match="budget.offline_steps=0"):
        cfg = _online_only(tmp_path)
        cfg.budget.offline_steps = 5
        cfg.validate()
    with pytest.raises(ConfigError, match="warmup_frames >= 1"):
        cfg = _online_only(tmp_path)
        cfg.budget.warmup_frames = 0
        cfg.validate()
    with pytest.raises(ConfigError, match="budget.warmup_frames"):
        cfg = _online_only(tmp_path)
        cfg.budget.warmup_frames = 81
        cfg.validate()
    budget = _online_only(tmp_path).budget
    with pytest.raises(ConfigError, match="algo=lapo needs offline data"):
        TrainerConfig(task=TASK, algo="lapo", offline_data=False, budget=budget).validate()
    with pytest.raises(ConfigError, match="offline_fraction"):
        _online_only(tmp_path, offline_fraction=0.5).validate()
    with pytest.raises(ConfigError, match="a dataset was given"):
        OfflineOnlineTrainer(_online_only(tmp_path), dataset="o3f/hopper/random-n1000-v0")
    assert not list(tmp_path.iterdir())


def test_hydra_rejects_misspelt_keys_and_unknown_presets():
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    from torchrl_o3f.trainers.recipe import config_from_hydra, register_configs

    register_configs()
    with initialize_config_dir(str(ROOT / "recipes" / "config"), version_base="1.3"):
        cfg = config_from_hydra(compose("o3f_iql", overrides=["budget=smoke"]))
        assert cfg.budget.offline_steps == BUDGETS["smoke"].offline_steps
        assert cfg.algo.name == "iql" and cfg.exploration.mode == "o3f"
        # the main job normalises observations (docs/results/obs_norm); IQL's yaml does not
        assert cfg.algo.normalize_observations is True
        assert algo_config("iql").normalize_observations is False
        lapo = config_from_hydra(compose("o3f_lapo"))
        assert lapo.algo.name == "lapo" and lapo.algo.utd_ratio == 20
        with pytest.raises(Exception, match="nmae"):
            compose("o3f_iql", overrides=["algo.nmae=3"])
        with pytest.raises(ConfigCompositionException):
            compose("o3f_iql", overrides=["budget=fast"])
        with pytest.raises(ConfigError, match="exploration.mode"):
            config_from_hydra(compose("o3f_iql", overrides=["exploration.mode=ucb"]))


def _recipe_cmd(recipe, out, dataset_root, *extra):
    return [
        sys.executable,
        str(ROOT / "recipes" / recipe),
        "budget=smoke",
        f"task={TASK}",
        "device=cpu",
        "progress=false",
        "algo.num_cells=32",
        "algo.batch_size=64",
        "algo.utd_ratio=2",
        "exploration.num_candidates=16",
        f"dataset_root={dataset_root}",
        f"output_dir={out}",
        f"hydra.run.dir={out}",
        *extra,
    ]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["o3f_iql.py", "o3f_lapo.py"])
def test_recipe_entry_points(tmp_path, dataset_root, recipe):
    # the run folder from hydra alone, as a user gives it: recorded relative to the cwd
    cmd = [a for a in _recipe_cmd(recipe, tmp_path, dataset_root) if "output_dir=" not in a]
    cmd = [a if not a.startswith("hydra.run.dir=") else "hydra.run.dir=outputs/run" for a in cmd]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "after offline" in res.stdout and "after online" in res.stdout
    run = tmp_path / "outputs" / "run"
    assert (run / "summary.json").exists()
    # the record names no path of the machine, only the folder the user asked for
    assert "output_dir: outputs/run\n" in (run / "config.yaml").read_text()
    assert "outputs in outputs/run)" in res.stdout


@pytest.mark.slow
def test_sigterm_after_offline_then_resume_matches_uninterrupted(tmp_path, dataset_root):
    extra = ["budget.online_frames=150", "budget.eval_every=1000"]
    # reference: uninterrupted
    ref = tmp_path / "ref"
    res = subprocess.run(
        _recipe_cmd("o3f_iql.py", ref, dataset_root, *extra),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    # interrupted after its offline phase
    run = tmp_path / "run"
    proc = subprocess.Popen(
        _recipe_cmd("o3f_iql.py", run, dataset_root, *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    boundary = run / "checkpoints" / "offline.pt"
    deadline = time.time() + 240
    while not boundary.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert boundary.exists(), "the offline phase never ended"
    os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == EXIT_RESUMABLE, err[-3000:]
    assert "resume with" in out
    assert not (run / "checkpoints" / "final.pt").exists()
    stopped = load_checkpoint(run / "checkpoints" / "latest.pt")["counters"]
    assert stopped["phase"] == "online" and stopped["frames"] < 150
    # resume
    res = subprocess.run(
        _recipe_cmd("o3f_iql.py", run, dataset_root, *extra, f"resume={run}"),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = _final_params(ref), _final_params(run)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{k} differs")
    ra = load_checkpoint(ref / "checkpoints" / "final.pt")["online_data"]
    rb = load_checkpoint(run / "checkpoints" / "final.pt")["online_data"]
    torch.testing.assert_close(ra["action"], rb["action"], rtol=0, atol=0)


@pytest.mark.slow
def test_short_offline_iql_on_a_locally_built_locomotion_dataset_improves_the_return(
    tmp_path, dataset_root
):
    # halfcheetah-medium built by the package from its shipped behavior policy (5k steps)
    import dataclasses

    budget = dataclasses.replace(
        BUDGETS["smoke"],
        offline_steps=1500,
        online_frames=0,
        eval_every=10_000,
        eval_episodes=2,
        dataset_size=5_000,
        max_episode_steps=200,
        log_every=500,
    )
    cfg = _cfg(tmp_path, dataset_root, task="halfcheetah-medium", budget=budget)
    cfg.algo.num_cells = 64
    cfg.algo.batch_size = 128
    trainer = OfflineOnlineTrainer(cfg)
    trainer.train()
    first, boundary = trainer.evaluations[0], trainer.evaluations[1]
    assert first["step"] == 0 and boundary["step"] == 1500
    # the behavior policy makes ~600 per 200 steps; an untrained policy about 0
    assert boundary["return"] > first["return"] + 200, (first["return"], boundary["return"])


def test_a_run_does_not_depend_on_whether_its_dataset_was_on_disk(tmp_path):
    """Building the dataset draws from the global generators; the run is seeded after it, so
    the run that builds its dataset and the next one, which finds it on disk, are the same."""
    root = str(tmp_path / "datasets")
    for run in ("builds", "reuses"):
        OfflineOnlineTrainer(_cfg(tmp_path / run, root)).train()
    first, second = _final_params(tmp_path / "builds"), _final_params(tmp_path / "reuses")
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(second[key], first[key], rtol=0, atol=0)
