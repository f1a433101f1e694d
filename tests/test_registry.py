"""The algorithm registry, the resolved run record, config validation and resume binding."""

from __future__ import annotations

import dataclasses
import inspect
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue
from run_harness import smoke_config

from torchrl_o3f.envs import UnknownTaskError, make_env
from torchrl_o3f.objectives import (
    UnknownAlgorithmError,
    algo_config,
    get_algorithm,
    list_algorithms,
)
from torchrl_o3f.objectives.registry import structured_config, yaml_defaults
from torchrl_o3f.trainers import (
    BUDGETS,
    AnnealConfig,
    ConfigError,
    OfflineOnlineTrainer,
    TrainerConfig,
    build_agent,
    load_checkpoint,
)
from torchrl_o3f.trainers import record as record_module
from torchrl_o3f.trainers.record import (
    config_from_record,
    provenance,
    resume_conflicts,
    static_record,
)

ROOT = Path(__file__).resolve().parents[1]
TASK = "hopper-random"


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("datasets"))


def _cfg(out, dataset_root, algo="iql", **kw) -> TrainerConfig:
    return smoke_config(out, dataset_root, algo, **kw)


# ------------------------------------------------------------------------------ registry
def test_registered_algorithms_resolve_for_every_family():
    names = {a.name for a in list_algorithms()}
    assert {"iql", "lapo"} <= names
    for name in names:
        for task in ("halfcheetah-medium", "pointmaze-umaze", "antmaze-umaze", "kitchen-mixed"):
            cfg = algo_config(name, task=task)
            assert isinstance(cfg, get_algorithm(name).config_class)
            record = dataclasses.asdict(cfg)
            assert None not in OmegaConf.create(record).values()
    iql_am = algo_config("iql", task="antmaze-umaze")
    iql_hc = algo_config("iql", task="hopper-medium")
    assert (iql_am.expectile, iql_am.temperature, iql_am.reward_shift) == (0.9, 10.0, -1.0)
    assert (iql_hc.expectile, iql_hc.temperature, iql_hc.reward_shift) == (0.7, 3.0, 0.0)
    assert iql_hc.reward_normalization == "returns_range"
    assert algo_config("iql", task="kitchen-mixed").temperature == 0.5
    assert algo_config("lapo", task="antmaze-umaze").q_min_weight == 0.7


def test_unknown_names_and_keys_are_clear_errors():
    with pytest.raises(UnknownAlgorithmError, match="iqll.*iql"):
        get_algorithm("iqll")
    with pytest.raises(UnknownTaskError, match="hoper"):
        algo_config("iql", task="hoper-medium")
    with pytest.raises(ConfigKeyError, match="expectil"):
        algo_config("iql", overrides={"expectil": 0.8})
    # the yaml is the only source of numbers: a field left out is an error, not a default
    values = OmegaConf.to_container(OmegaConf.load(ROOT / "torchrl_o3f/config/algo/iql.yaml"))
    values.pop("defaults")
    values.pop("expectile")
    with pytest.raises(MissingMandatoryValue, match="expectile"):
        OmegaConf.to_object(structured_config("iql", {**values, "temperature": 3.0}))


def test_algorithms_command_lists_key_defaults():
    from torchrl_o3f.__main__ import main

    out = subprocess.run(
        [sys.executable, "-m", "torchrl_o3f", "algorithms", "--task", "antmaze-umaze"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "expectile=0.9" in out.stdout and "lapo" in out.stdout
    assert main(["algorithms"]) == 0


def test_cfg_job_shows_the_resolved_numbers():
    res = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "o3f_iql.py"), "task=antmaze-umaze"]
        + ["--cfg", "job", "--resolve"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    cfg = OmegaConf.create(res.stdout)
    assert cfg.algo.expectile == 0.9 and cfg.algo.lr.actor == 3e-4
    assert cfg.exploration.sigma == 0.05 and cfg.algo.batch_size == 256


# ------------------------------------------------------------------------------ agent
def test_agent_lr_groups_schedules_and_actor_delay():
    env = make_env("hopper-medium")
    cfg = algo_config("iql", overrides={"num_cells": 16, "reward_normalization": "none"})
    agent = build_agent(cfg, env.action_spec, observation_dim=11)

    def lr(name):
        return float(agent.optimizers[name].param_groups[0]["lr"])

    agent.set_offline_progress(0, 100)
    assert lr("actor") == pytest.approx(3e-4) and lr("qvalue") == pytest.approx(3e-4)
    agent.set_offline_progress(50, 100)
    assert lr("actor") == pytest.approx(1.5e-4) and lr("qvalue") == pytest.approx(3e-4)
    agent.set_offline_progress(100, 100)
    assert lr("actor") == pytest.approx(0.0, abs=1e-12)
    agent.set_offline_progress(None, 100)  # online: the base rate
    assert lr("actor") == pytest.approx(3e-4)

    bad = dataclasses.replace(cfg, lr={"actor": 1e-3, "qvalue": 1e-3})
    with pytest.raises(ValueError, match="value"):
        build_agent(bad, env.action_spec, observation_dim=11)

    from loss_harness import ted_batch

    delayed = build_agent(
        dataclasses.replace(cfg, actor_delay=2), env.action_spec, observation_dim=11
    )
    actor = delayed.loss.actor_network
    moved = []
    for _ in range(4):
        before = [p.detach().clone() for p in actor.parameters()]
        delayed.update(ted_batch(32, 11, 3))
        moved.append(any(not torch.equal(a, p) for a, p in zip(before, actor.parameters())))
    assert moved == [True, False, True, False]


# ------------------------------------------------------------------------------ validation
BAD_VALUES = [
    ("seed", -5),
    ("dataset_seed", -1),
    ("budget.max_episode_steps", -1),
    ("budget.max_episode_steps", 0),
    ("budget.offline_steps", -1),
    ("budget.online_frames", 1.5),
    ("budget.eval_every", 0),
    ("budget.eval_episodes", 0),
    ("budget.checkpoint_every", 0),
    ("budget.log_every", 0),
    ("budget.dataset_size", 0),
    ("exploration.num_candidates", 0),
    ("exploration.sigma", -0.1),
    ("exploration.sigma", math.nan),
    ("exploration.omega", math.nan),
    ("exploration.mode", "ucb"),
    ("offline_fraction", 1.5),
    ("algo.num_qvalue", 0),
    ("algo.num_cells", 0),
    ("algo.depth", 0),
    ("algo.batch_size", 0),
    ("algo.utd_ratio", 0),
    ("algo.actor_utd_ratio", 3),
    ("algo.actor_delay", 0),
    ("algo.gamma", 1.5),
    ("algo.tau", 0.0),
    ("algo.expectile", math.inf),
    ("anneal.mode", "cosine"),
    ("anneal.frames", 0),
    ("logger.backend", "mlflow"),
]


@pytest.mark.parametrize("key,value", BAD_VALUES, ids=[f"{k}={v}" for k, v in BAD_VALUES])
def test_every_numeric_field_is_validated_naming_its_key(tmp_path, key, value):
    cfg = _cfg(tmp_path, None, **{key: value})
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        cfg.validate()


def test_bad_learning_rates_and_anneal_targets(tmp_path):
    cfg = _cfg(tmp_path, None)
    cfg.algo.lr["actor"] = -1.0
    with pytest.raises(ConfigError, match=r"algo\.lr\.actor"):
        cfg.validate()
    cfg = _cfg(tmp_path, None, algo="lapo", anneal=AnnealConfig(mode="abrupt"))
    with pytest.raises(ConfigError, match="loosening"):
        cfg.validate()  # LAPO's yaml names no loosening hyper-parameter
    with pytest.raises(ConfigError, match="online_overrides"):
        _cfg(tmp_path, None, online_overrides={"batch_size": 32}).validate()


def test_an_anneal_typo_fails_before_the_offline_phase(tmp_path, dataset_root):
    cfg = _cfg(tmp_path, dataset_root, anneal=AnnealConfig(mode="abrupt", param="expectle", end=1))
    trainer = OfflineOnlineTrainer(cfg)
    with pytest.raises(ConfigError, match="expectle"):
        trainer.train()
    assert not (tmp_path / "checkpoints").exists()


# ------------------------------------------------------------------------------ the record
# the commit and dirty flag are unknown (null) where the package is not in a git checkout
ALLOWED_NULLS = {
    "resume",
    "offline_checkpoint",
    "offline_fraction",
    "dataset",  # no Minari id given: the task's own dataset (derived.dataset_id names it)
    "compile.mode",  # torch.compile's default mode
    "provenance.git_commit",
    "provenance.dirty",
}


def _nulls(record, prefix=""):
    out = []
    for k, v in record.items():
        if isinstance(v, dict):
            out += _nulls(v, f"{prefix}{k}.")
        elif v is None:
            out.append(f"{prefix}{k}")
    return out


def test_config_yaml_has_every_number_and_rebuilds_the_same_run(tmp_path, dataset_root):
    first = tmp_path / "first"
    OfflineOnlineTrainer(_cfg(first, dataset_root)).train()
    record = OmegaConf.to_container(OmegaConf.load(first / "config.yaml"))
    assert set(_nulls(record)) <= ALLOWED_NULLS, _nulls(record)
    assert record["algo"]["lr"] == {"actor": 3e-4, "qvalue": 3e-4, "value": 3e-4}
    assert record["exploration"]["sigma"] == 0.2 and record["budget"]["max_episode_steps"] == 30
    assert record["derived"]["loss.reward_scale"] > 0 and "torch" in record["versions"]
    # the same record is in every checkpoint
    ckpt = load_checkpoint(first / "checkpoints" / "final.pt")
    assert ckpt["meta"]["config"]["algo"] == record["algo"]
    assert ckpt["meta"]["config"]["provenance"] == record["provenance"] == provenance()
    # read back, it rebuilds the same agent and so the same run
    cfg = config_from_record(first / "config.yaml")
    cfg.output_dir = str(tmp_path / "second")
    OfflineOnlineTrainer(cfg).train()
    a = load_checkpoint(first / "checkpoints" / "final.pt")["agent"]["loss"]
    b = load_checkpoint(tmp_path / "second" / "checkpoints" / "final.pt")["agent"]["loss"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


# ------------------------------------------------------------------------------ resume
def test_resume_refuses_another_run_and_extends_only_when_asked(
    tmp_path, dataset_root, monkeypatch
):
    run = tmp_path / "run"
    OfflineOnlineTrainer(_cfg(run, dataset_root)).train()

    def resumed(**kw):
        return OfflineOnlineTrainer(_cfg(run, dataset_root, resume=str(run), **kw))

    with pytest.raises(ConfigError, match="seed=3"):
        resumed(seed=3)
    with pytest.raises(ConfigError, match=r"algo\.lr\.actor"):
        cfg = _cfg(run, dataset_root, resume=str(run))
        cfg.algo.lr["actor"] = 1e-4
        OfflineOnlineTrainer(cfg)
    with pytest.raises(ConfigError, match="finished"):
        resumed()
    with pytest.raises(ConfigError, match="cannot shrink"):
        resumed(**{"budget.online_frames": 30, "extend": True})
    # safe keys may change, and so may the code that runs it (another commit, a dirty
    # checkout); a larger budget with extend=true continues the run
    other = {"version": "9.9.9", "git_commit": "f" * 40, "dirty": True}
    monkeypatch.setattr(record_module, "provenance", lambda: other)
    trainer = resumed(**{"budget.online_frames": 90, "extend": True, "logger.backend": "none"})
    summary = trainer.train()
    assert summary["online_frames"] == 90
    assert OmegaConf.load(run / "config.yaml").provenance == other  # this sitting's code


def test_resume_conflicts_ignore_safe_keys():
    cfg = TrainerConfig(task="hopper-medium", algo="iql")
    stored = static_record(cfg)
    cfg.progress, cfg.device, cfg.logger.backend = False, "cpu", "none"
    assert resume_conflicts(cfg, stored) == []
    cfg.budget.online_frames += 10
    assert [k for k, *_ in resume_conflicts(cfg, stored)] == ["budget.online_frames"]
    cfg.extend = True
    assert resume_conflicts(cfg, stored) == []


def test_the_record_names_the_code_that_ran_it():
    import torchrl_o3f

    root = Path(torchrl_o3f.__file__).resolve().parent.parent
    git = ["git", "-C", str(root)]
    try:
        top = subprocess.run([*git, "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    except OSError:
        pytest.skip("git is not installed")
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != root:
        pytest.skip("the package is not in a git checkout of its own")
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    status = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    ).stdout
    assert provenance() == {
        "version": torchrl_o3f.__version__,
        "git_commit": head.strip(),
        "dirty": bool(status.strip()),
    }


def test_without_git_the_commit_is_unknown_and_nothing_fails(monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(record_module.subprocess, "run", no_git)
    assert provenance()["git_commit"] is None and provenance()["dirty"] is None
    assert provenance()["version"]


def test_another_commit_is_the_same_run_to_resume():
    cfg = TrainerConfig(task="hopper-medium", algo="iql")
    stored = static_record(cfg) | {"provenance": {"git_commit": "0" * 40, "dirty": True}}
    assert resume_conflicts(cfg, stored) == []
    assert resume_conflicts(config_from_record(stored), stored) == []  # read back, the same


def test_a_record_from_before_a_key_existed_resumes_with_its_old_value():
    cfg = TrainerConfig(task="hopper-medium", algo="iql")
    stored = static_record(cfg)
    del stored["budget"]["warmup_frames"], stored["offline_data"]  # an older record
    assert resume_conflicts(cfg, stored) == []
    cfg.budget.warmup_frames = 10  # not what that run did
    assert [k for k, *_ in resume_conflicts(cfg, stored)] == ["budget.warmup_frames"]


@pytest.mark.slow
def test_recipe_resume_reloads_the_recorded_config(tmp_path, dataset_root):
    """`resume=<dir>` without repeating budget=smoke continues the smoke run, not a cpu run."""
    common = [
        f"task={TASK}",
        "device=cpu",
        "progress=false",
        "algo.num_cells=32",
        "algo.batch_size=64",
        "exploration.num_candidates=16",
        f"dataset_root={dataset_root}",
        f"hydra.run.dir={tmp_path}/hydra",
    ]
    recipe = str(ROOT / "recipes" / "o3f_iql.py")
    run = tmp_path / "run"
    first = [sys.executable, recipe, "budget=smoke", f"output_dir={run}", *common]
    res = subprocess.run(first, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    again = [sys.executable, recipe, f"resume={run}", "progress=false"]
    res = subprocess.run(again, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode != 0 and "finished" in res.stderr, res.stderr[-3000:]
    extend = [*again, "extend=true", "budget.online_frames=90"]
    res = subprocess.run(extend, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = load_checkpoint(run / "checkpoints" / "final.pt")["counters"]
    assert summary["frames"] == 90 and summary["step"] == BUDGETS["smoke"].offline_steps


# ------------------------------------------------------------------------------ one source
def _yaml_named_keywords(function) -> dict:
    params = inspect.signature(function).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


@pytest.mark.parametrize("name", sorted(a.name for a in list_algorithms()))
def test_loss_keyword_defaults_are_the_yaml_values(name):
    """No second set of numbers: every default named like a yaml key is the yaml's value."""
    import torchrl_o3f.objectives as objectives

    numbers = yaml_defaults(name)
    module = sys.modules[get_algorithm(name).loss_class.__module__]
    functions = [get_algorithm(name).loss_class.__init__, getattr(module, f"make_{name}_loss")]
    checked = 0
    for function in functions:
        for key, default in _yaml_named_keywords(function).items():
            if key in numbers and default is not None:
                assert default == numbers[key], f"{function.__qualname__}({key}={default})"
                checked += 1
    assert checked >= 3, name
    assert get_algorithm(name).loss_class._default_gamma == numbers["gamma"]
    assert get_algorithm(name) in objectives.BUILTIN_ALGORITHMS
    assert yaml_defaults("cql")["lagrange_threshold"] == 5.0  # the drift that started this


@pytest.mark.parametrize("name", sorted(a.name for a in list_algorithms()))
def test_every_yaml_extends_its_typed_schema_and_names_the_normalisation(name):
    node = OmegaConf.load(ROOT / f"torchrl_o3f/config/algo/{name}.yaml")
    assert list(node.defaults) == [f"{name}_schema", "_self_"]
    assert "normalize_observations" in node


def test_importing_a_loss_file_registers_nothing():
    import importlib

    from torchrl_o3f.objectives import iql, registry

    known = registry._ALGORITHMS.pop("iql")
    try:
        importlib.reload(iql)
        assert "iql" not in registry._ALGORITHMS
    finally:
        registry._ALGORITHMS["iql"] = known


def test_an_old_record_without_the_normalisation_key_rebuilds_its_run():
    for name, was in (("iql", False), ("lapo", True), ("sac", False)):
        cfg = TrainerConfig(task="hopper-medium", algo=name)
        stored = static_record(cfg)
        for key in ("algo", "online"):
            del stored[key]["normalize_observations"]  # a record from before the option
        assert config_from_record(stored).algo.normalize_observations is was
        assert resume_conflicts(cfg, stored) == []
        cfg.algo.normalize_observations = not was
        assert "algo.normalize_observations" in [k for k, *_ in resume_conflicts(cfg, stored)]


def test_an_online_only_run_refuses_normalisation_before_any_work(tmp_path):
    cfg = _cfg(tmp_path, None, "sac", offline_data=False)
    cfg.budget.offline_steps, cfg.budget.warmup_frames = 0, 10
    cfg.validate()
    cfg.algo.normalize_observations = True
    with pytest.raises(ConfigError, match="normalize_observations=true"):
        cfg.validate()


def test_a_lapo_record_from_before_the_rename_loads_and_resumes_as_the_same_run():
    """LAPO's min/max weight was recorded as ``lam`` (AWAC's temperature keeps that name)."""
    cfg = TrainerConfig(task="antmaze-umaze", algo="lapo")
    old = static_record(cfg)
    for key in ("algo", "online"):
        old[key] = {("lam" if k == "q_min_weight" else k): v for k, v in old[key].items()}
        old[key].pop("normalize_observations")  # recorded before that option existed too
    assert old["algo"]["lam"] == 0.7
    rebuilt = config_from_record(old)
    assert rebuilt.algo.q_min_weight == 0.7 and rebuilt.algo.normalize_observations is True
    assert resume_conflicts(cfg, old) == []
    cfg.algo.q_min_weight = 0.5
    assert ("algo.q_min_weight", 0.5, 0.7) in resume_conflicts(cfg, old)
