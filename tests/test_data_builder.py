"""The local dataset builder, ensure_dataset and normalised scores."""

import json

import minari
import numpy as np
import pytest

from torchrl_o3f.data import (
    DEFAULT_SIZE,
    DatasetMismatchError,
    DatasetNotFoundError,
    WaypointController,
    build_dataset,
    dataset_id_for,
    dataset_path,
    ensure_dataset,
    list_policies,
    load_behavior_policy,
    load_offline_dataset,
    minari_root,
    normalized_score,
    read_metadata,
)
from torchrl_o3f.envs import get_task, make_gym_env

FAST = {"progress": False, "num_reference_episodes": 1}


def test_dataset_ids_encode_size_and_seed():
    assert dataset_id_for("hopper-medium") == "o3f/hopper/medium-v0"
    assert dataset_id_for("hopper-medium", size=DEFAULT_SIZE) == "o3f/hopper/medium-v0"
    assert dataset_id_for("hopper-medium", size=10) == "o3f/hopper/medium-n10-v0"
    assert dataset_id_for("hopper-medium", seed=2) == "o3f/hopper/medium-seed2-v0"


def test_build_is_deterministic_per_seed(tmp_path):
    a = load_offline_dataset(
        build_dataset("hopper-random", size=200, seed=5, root=tmp_path / "a", **FAST),
        root=tmp_path / "a",
    )
    b = load_offline_dataset(
        build_dataset("hopper-random", size=200, seed=5, root=tmp_path / "b", **FAST),
        root=tmp_path / "b",
    )
    c = load_offline_dataset(
        build_dataset("hopper-random", size=200, seed=6, root=tmp_path / "c", **FAST),
        root=tmp_path / "c",
    )
    assert (a == b).all()
    assert not (a["action"] == c["action"]).all()


def test_random_actions_are_uniform_in_bounds(tmp_path):
    td = load_offline_dataset(
        build_dataset("halfcheetah-random", size=1000, root=tmp_path, **FAST), root=tmp_path
    )
    act = td["action"]
    assert act.min() >= -1 and act.max() <= 1
    assert abs(float(act.mean())) < 0.05 and abs(float(act.std()) - 1 / np.sqrt(3)) < 0.02
    # halfcheetah never terminates: one full 1000-step episode, truncated by the time limit
    assert td["next", "truncated"][:, 0].nonzero().flatten().tolist() == [999]
    assert not td["next", "terminated"].any()


def test_metadata_references_and_minari_normalisation(tmp_path):
    dataset_id = build_dataset("pointmaze-umaze", size=300, seed=2, root=tmp_path, **FAST)
    meta = read_metadata(dataset_id, root=tmp_path)
    record = meta["o3f_build"]
    assert record["task"] == "pointmaze-umaze" and record["size"] == 300 and record["seed"] == 2
    assert meta["ref_min_score"] == record["ref_min_score"]
    assert meta["ref_max_score"] == record["ref_max_score"] > meta["ref_min_score"]
    with minari_root(tmp_path):
        ds = minari.load_dataset(dataset_id)
        env = ds.recover_environment(eval_env=True)
        assert env.spec.max_episode_steps == get_task("pointmaze-umaze").max_episode_steps
        returns = np.array([meta["ref_min_score"], meta["ref_max_score"], 50.0])
        expected = 100 * minari.get_normalized_score(ds, returns)
    got = normalized_score(
        "pointmaze-umaze", returns, scale="minari", root=tmp_path, dataset_id=dataset_id
    )
    np.testing.assert_allclose(got, expected)
    np.testing.assert_allclose(got[:2], [0.0, 100.0])


def test_waypoint_controller_reaches_the_goal():
    env = make_gym_env("pointmaze-medium").env  # the dict-observation env
    ctrl = WaypointController.from_env(env, noise=0.0)
    obs, _ = env.reset(seed=0)
    total = 0.0
    for _ in range(600):
        obs, reward, *_ = env.step(ctrl.act(obs))
        total += reward
    assert total > 100  # it got to the goal and stayed there
    # random actions get (almost) nowhere from the same start
    obs, _ = env.reset(seed=0)
    env.action_space.seed(0)
    rand = sum(env.step(env.action_space.sample())[1] for _ in range(600))
    assert rand < total


def test_ensure_dataset_builds_once_and_checks_the_record(tmp_path):
    first = ensure_dataset("hopper-random", size=120, root=tmp_path, progress=False)
    assert first == "o3f/hopper/random-n120-v0"
    stamp = (dataset_path(first, tmp_path) / "data" / "main_data.hdf5").stat().st_mtime_ns
    assert ensure_dataset("hopper-random", size=120, root=tmp_path, progress=False) == first
    assert (dataset_path(first, tmp_path) / "data" / "main_data.hdf5").stat().st_mtime_ns == stamp
    # another size is another dataset
    other = ensure_dataset("hopper-random", size=130, root=tmp_path, progress=False)
    assert other != first and len(load_offline_dataset(other, root=tmp_path)) == 130
    # a record that disagrees with the id is refused, not silently reused
    meta_file = dataset_path(first, tmp_path) / "data" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["o3f_build"]["size"] = 999
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(DatasetMismatchError, match="built with .*'size': 999.*--overwrite"):
        ensure_dataset("hopper-random", size=120, root=tmp_path, progress=False)
    del meta["o3f_build"]
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(DatasetMismatchError, match="not built by this package"):
        ensure_dataset("hopper-random", size=120, root=tmp_path, progress=False)


def test_a_relative_datasets_folder_builds_and_loads(tmp_path, monkeypatch):
    """A relative root (``dataset_root=datasets``) is the folder under the working directory."""
    monkeypatch.chdir(tmp_path)
    dataset_id = ensure_dataset("hopper-random", size=120, root="datasets", progress=False)
    assert (tmp_path / "datasets" / dataset_id / "data" / "metadata.json").exists()
    assert load_offline_dataset(dataset_id, root="datasets").shape[0] == 120


def test_ensure_dataset_non_buildable(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="cannot be built locally.*download=True"):
        ensure_dataset("antmaze-umaze", root=tmp_path)


def test_build_errors(tmp_path):
    with pytest.raises(ValueError, match="cannot be built locally"):
        build_dataset("kitchen-mixed", root=tmp_path)
    with pytest.raises(ValueError, match="medium-replay"):
        build_dataset("hopper-medium-replay", size=10, root=tmp_path, **FAST)
    with pytest.raises(ValueError, match="positive"):
        build_dataset("hopper-random", size=0, root=tmp_path)
    build_dataset("hopper-random", size=10, root=tmp_path, **FAST)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        build_dataset("hopper-random", size=10, root=tmp_path, **FAST)
    build_dataset("hopper-random", size=10, root=tmp_path, overwrite=True, **FAST)


@pytest.mark.parametrize("where", ["write", "rename"])
def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch, where):
    import torchrl_o3f.data.builder as builder

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    if where == "write":
        real = minari.create_dataset_from_buffers

        def half(dataset_id, buffers, **kwargs):  # the data is written, then the build stops
            real(dataset_id, buffers[:1], **kwargs)
            boom()

        monkeypatch.setattr(minari, "create_dataset_from_buffers", half)
    else:
        monkeypatch.setattr(builder.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        build_dataset("hopper-random", size=50, root=tmp_path, **FAST)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".o3f-build")] == []
    with pytest.raises(DatasetNotFoundError):
        load_offline_dataset("o3f/hopper/random-n50-v0", root=tmp_path)


def test_custom_policy(tmp_path):
    dataset_id = build_dataset(
        "hopper-random", size=40, root=tmp_path, policy=lambda obs: np.zeros(3, np.float32), **FAST
    )
    td = load_offline_dataset(dataset_id, root=tmp_path)
    assert (td["action"] == 0).all()
    assert read_metadata(dataset_id, root=tmp_path)["o3f_build"]["custom_policy"]


@pytest.mark.skipif("halfcheetah-medium" not in list_policies(), reason="no shipped policy")
def test_medium_build_uses_the_shipped_policy(tmp_path):
    dataset_id = build_dataset("halfcheetah-medium", size=300, root=tmp_path, **FAST)
    td = load_offline_dataset(dataset_id, root=tmp_path)
    record = read_metadata(dataset_id, root=tmp_path)["o3f_build"]
    assert "halfcheetah-medium SAC actor" in record["policy"]
    # the best shipped policy of the family is the upper reference
    shipped = load_behavior_policy("halfcheetah-medium").info.returns["deterministic"]["mean"]
    assert record["ref_max_score"] == shipped
    # stochastic: actions are not a function of the observation alone
    assert td["action"].std(0).min() > 0.01


def test_d4rl_scores():
    lo, hi = get_task("hopper-medium").ref_min_score, get_task("hopper-medium").ref_max_score
    assert normalized_score("hopper-medium", lo) == pytest.approx(0.0)
    assert normalized_score("hopper-medium", hi) == pytest.approx(100.0)
    out = normalized_score("hopper-medium", np.array([lo, (lo + hi) / 2]))
    np.testing.assert_allclose(out, [0.0, 50.0])
    assert isinstance(normalized_score("hopper-medium", 10.0), float)


def test_success_and_tasks_scores():
    # antmaze: success = any positive reward, i.e. a positive return; scores average to a rate
    scores = normalized_score("antmaze-large-diverse", [0.0, 0.0, 12.0, 1.0])
    np.testing.assert_array_equal(scores, [0.0, 0.0, 100.0, 100.0])
    assert scores.mean() == 50.0
    assert normalized_score("kitchen-partial", [0.0, 4.0, 3.0]).tolist() == [0.0, 100.0, 75.0]
    # the same on both scales
    assert normalized_score("kitchen-partial", 1.0, scale="minari") == 25.0


def test_score_errors(tmp_path):
    with pytest.raises(ValueError, match="scale must be"):
        normalized_score("hopper-medium", 1.0, scale="D4RL")
    with pytest.raises(DatasetNotFoundError, match="build hopper-medium"):
        normalized_score("hopper-medium", 1.0, scale="minari", root=tmp_path)


def test_concurrent_build_keeps_the_first_finished(tmp_path, monkeypatch):
    """A build that finds the dataset finished by another process meanwhile keeps that one."""
    import torchrl_o3f.data.builder as builder

    first = build_dataset("hopper-random", size=20, root=tmp_path, **FAST)
    stamp = (dataset_path(first, tmp_path) / "data" / "main_data.hdf5").stat().st_mtime_ns
    real_exists = builder.Path.exists
    calls = {"n": 0}

    def exists(self):  # pretend the dataset was not there when this build started
        if self == dataset_path(first, tmp_path) and calls["n"] == 0:
            calls["n"] += 1
            return False
        return real_exists(self)

    monkeypatch.setattr(builder.Path, "exists", exists)
    assert build_dataset("hopper-random", size=20, root=tmp_path, **FAST) == first
    assert (dataset_path(first, tmp_path) / "data" / "main_data.hdf5").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".o3f-build")] == []


def test_command_line_build(tmp_path, capsys):
    from torchrl_o3f.data.__main__ import main

    argv = ["build", "hopper-random", "--size", "30", "--seed", "4", "--root", str(tmp_path)]
    assert main([*argv, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "built o3f/hopper/random-n30-seed4-v0: 30 steps" in out
    assert len(load_offline_dataset("o3f/hopper/random-n30-seed4-v0", root=tmp_path)) == 30
    # an existing dataset: one line with the exact command, no traceback
    assert main([*argv, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert f"build hopper-random --size 30 --seed 4 --root {tmp_path} --overwrite" in err
    assert main([*argv, "--no-progress", "--overwrite"]) == 0


def test_every_score_kind_has_one_label():
    """The learning curve and a run's report read one label per ``Task.score`` kind."""
    import typing

    from torchrl_o3f.data import SCORE_LABELS, score_label
    from torchrl_o3f.envs.tasks import ScoreKind

    assert set(SCORE_LABELS) == set(typing.get_args(ScoreKind))
    assert score_label("halfcheetah-medium").startswith("D4RL-normalised")
    assert score_label("kitchen-mixed") == "tasks completed (% of 4)"
