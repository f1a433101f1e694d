"""Sweeps: the smoke experiment through joblib, submitit_local and Ray, resumption, the analysis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from torchrl_o3f.analysis import RunRecord, collect_runs, pairing
from torchrl_o3f.analysis.runs import _offline_phase
from torchrl_o3f.trainers import TrainerConfig
from torchrl_o3f.trainers.sweep import offline_key, offline_run_dir, threads_per_job

ROOT = Path(__file__).resolve().parents[1]
SWEEP = str(ROOT / "recipes" / "sweep.py")
RUNS = [f"hopper-random/{m}/seed{s}" for m in ("o3f_iql", "iql") for s in (0, 1)]


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("datasets"))


def _sweep(root, dataset_root, *extra, **popen):
    cmd = [
        sys.executable,
        SWEEP,
        "experiment=smoke",
        f"study_root={root}",
        f"dataset_root={dataset_root}",
        "algo.num_cells=32",
        "algo.batch_size=64",
        "exploration.num_candidates=16",
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if popen:
        return subprocess.Popen(cmd, env=env, cwd=root, text=True, **popen)
    return subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, timeout=600)


def test_rliable_imports():
    """arch 7 (rliable's bootstrap) fails to import under pandas 3: pyproject pins pandas<3."""
    from rliable import library, metrics  # noqa: F401


def test_threads_and_offline_keys():
    assert threads_per_job({"n_jobs": 2}, cores=2) == 1
    assert threads_per_job({"n_jobs": 4}, cores=16) == 4
    assert threads_per_job({"n_jobs": -1}, cores=8) == 1
    assert threads_per_job({"cpus_per_task": 3}, cores=64) == 3
    assert threads_per_job({"ray": {"remote": {"num_cpus": 4}}}, cores=64) == 4
    a = TrainerConfig(task="hopper-medium", algo="iql")
    b = TrainerConfig(task="hopper-medium", algo="iql", online_algo=None)
    b.exploration.omega, b.anneal.mode = 1.0, "linear"
    assert offline_key(a) == offline_key(b)  # online settings share the offline phase
    b.algo.expectile = 0.8
    assert offline_key(a) != offline_key(b)
    assert offline_run_dir(a, "root").parts[-1] == "seed0"


LAUNCHERS = {
    "joblib": ["hydra.launcher.n_jobs=2"],
    "submitit_local": ["hydra.launcher.cpus_per_task=1"],
    # a local Ray instance of 2 CPUs (the `ray` extra; skipped without it), one CPU per job
    "ray": [
        "+hydra.launcher.ray.init.num_cpus=2",
        "+hydra.launcher.ray.init.include_dashboard=false",
    ],
}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_smoke_sweep_then_analysis(tmp_path, dataset_root, launcher):
    if launcher == "ray":
        pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="the `ray` extra")
    extra = LAUNCHERS[launcher]
    res = _sweep(tmp_path, dataset_root, f"hydra/launcher={launcher}", *extra)
    assert res.returncode == 0, (res.stdout[-2000:], res.stderr[-3000:])
    study = tmp_path / "smoke"
    for run in RUNS:
        assert (study / run / "summary.json").exists(), run
        record = (study / run / "config.yaml").read_text()
        assert "threads: 1" in record
    # the online variants of one seed started from one shared offline phase
    o3f = json.loads((study / RUNS[0] / "summary.json").read_text())
    iql = json.loads((study / RUNS[2] / "summary.json").read_text())
    assert o3f["score_after_offline"] == iql["score_after_offline"]
    assert len(list((study / "offline" / "hopper-random").glob("iql-*/seed*/checkpoints"))) == 2
    out = tmp_path / "analysis"
    res = subprocess.run(
        [sys.executable, "-m", "torchrl_o3f.analysis", str(study)]
        + ["--experiment", str(ROOT / "recipes/config/experiment/smoke.yaml")]
        + ["--out", str(out), "--reps", "200"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    tidy = (out / "tidy.csv").read_text().splitlines()
    assert tidy[0].startswith("run,task,method,seed,phase,step,score")
    methods = {line.split(",")[2] for line in tidy[1:]}
    assert methods == {"o3f_iql", "iql"}
    summary = (out / "summary.md").read_text()
    assert "| o3f_iql |" in summary and "IQM" in summary
    # the analysis sees that both methods of a seed started from one offline phase
    assert pairing(collect_runs(study), "o3f_iql", "iql", ["hopper-random"]) == "shared (2 of 2)"
    for fig in ("curves.png", "aggregates.png", "profiles.png"):
        assert (out / fig).stat().st_size > 10_000, fig


@pytest.mark.slow
def test_an_interrupted_sweep_finishes_without_redoing_finished_runs(tmp_path, dataset_root):
    # one job at a time, so the kill lands between a finished run and an unfinished one
    proc = _sweep(
        tmp_path,
        dataset_root,
        "hydra/launcher=basic",
        "budget.online_frames=120",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    study = tmp_path / "smoke"
    first, second = study / RUNS[0], study / RUNS[1]
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (first / "summary.json").exists() and (second / "checkpoints" / "latest.pt").exists():
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert (first / "summary.json").exists()
    assert not (second / "summary.json").exists(), "the sweep ended before the kill"
    finished_at = (first / "summary.json").stat().st_mtime_ns
    res = _sweep(tmp_path, dataset_root, "hydra/launcher=basic", "budget.online_frames=120")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "finished before, skipped" in res.stdout
    assert (first / "summary.json").stat().st_mtime_ns == finished_at
    for run in RUNS:
        summary = json.loads((study / run / "summary.json").read_text())
        assert summary["online_frames"] == 120, run
    # the resumed run still records the shared offline phase it started from
    assert "offline/hopper-random/iql-" in (second / "config.yaml").read_text()


def test_pairing_tells_shared_offline_phases_from_unshared_ones():
    def run(method, seed, offline):
        return RunRecord(f"t/{method}/seed{seed}", "t", method, seed, [], [], True, offline)

    shared = [run(m, s, f"t/iql-aaa/seed{s}") for m in ("x", "y") for s in (0, 1)]
    assert pairing(shared, "x", "y", ["t"]) == "shared (2 of 2)"
    # the same algorithm, another offline phase for one seed (another thread count, say)
    drift = shared[:3] + [run("y", 1, "t/iql-bbb/seed1")]
    assert pairing(drift, "x", "y", ["t"]) == "NOT shared: 1 of 2"
    other = shared[:2] + [run("y", s, f"t/cql-ccc/seed{s}") for s in (0, 1)]
    assert pairing(other, "x", "y", ["t"]) == "different algorithms"
    assert pairing(shared, "x", "z", ["t"]) == "-"
    resumed = shared[:3] + [run("y", 1, "")]  # a resumed run records no offline checkpoint
    assert pairing(resumed, "x", "y", ["t"]) == "shared (1 of 1, 1 not recorded (resumed runs))"
    path = "studies/study/offline/t/iql-aaa/seed0/checkpoints/offline.pt"
    assert _offline_phase(path) == "t/iql-aaa/seed0" and _offline_phase(None) == ""


def _finished_run(study, task, method, seed, score, algo="iql"):
    """A finished run's records as a sweep writes them, with a final online score."""
    run = study / task / method / f"seed{seed}"
    run.mkdir(parents=True)
    offline = f"s/offline/{task}/{algo}-abc/seed{seed}/checkpoints/offline.pt"
    (run / "config.yaml").write_text(
        f"task: {task}\nseed: {seed}\nmethod: {method}\noffline_checkpoint: {offline}\n"
    )
    rows = ["phase,step,frames,return,score", "offline,5,0,1.0,10.0", f"online,5,5,2.0,{score}"]
    (run / "evaluations.csv").write_text("\n".join(rows) + "\n")
    (run / "summary.json").write_text("{}")


def test_analyse_all_puts_each_claim_next_to_what_was_measured(tmp_path):
    from torchrl_o3f.analysis import analyse_all

    study = tmp_path / "study"
    for method, bonus in (("o3f_iql", 0.0), ("o3f_iql_omega1", 20.0)):
        for seed in range(3):
            _finished_run(study, "halfcheetah-medium", method, seed, 10.0 + seed + bonus)
    claims = analyse_all(study, tmp_path / "out", reps=100)
    omega = next(c for c in claims if c["experiment"] == "fig6_omega")
    assert omega["p"] == 0.0 and omega["seeds"] == (3, 3) and omega["paired"] == "shared (3 of 3)"
    assert omega["verdict"] == "not reproduced (the other way round)"
    table = (tmp_path / "out" / "claims.md").read_text()
    row = next(line for line in table.splitlines() if "omega = 1" in line)
    assert "| 3 / 3 | final score | 11.0 / 31.0 | 0.00 [0.00, 0.00] |" in row
    assert "shared (3 of 3)" in row
    assert table.count("not run yet") == sum(c["p"] is None for c in claims) == len(claims) - 1
    assert (tmp_path / "out" / "fig6_omega" / "summary.md").exists()
    assert "| `fig6_omega` | 6 | 6 |" in table and "| `fig5_lapo` | 0 | 16 |" in table


def test_the_next_best_baseline_is_chosen_per_task(tmp_path):
    from torchrl_o3f.analysis import analyse

    study, hc, hop = tmp_path / "study", "halfcheetah-medium", "hopper-medium"
    scores = {  # (halfcheetah, hopper) final score of seed 0; seed k adds k
        ("o3f_iql", "iql"): (30.0, 20.0),
        ("iql", "iql"): (10.0, 25.0),
        ("cql", "cql"): (28.0, 5.0),
        ("awac", "awac"): (0.0, 0.0),
    }
    for (method, algo), (on_hc, on_hop) in scores.items():
        for seed in range(3):
            _finished_run(study, hc, method, seed, on_hc + seed, algo)
            _finished_run(study, hop, method, seed, on_hop + seed, algo)
    claims = analyse(study, tmp_path / "out", experiment="fig4_baselines", reps=200)["claims"]
    best = next(c for c in claims if c["claim"].against)
    assert best["best"] == {hc: "cql", hop: "iql"}
    # O3F's means 31 / 21 against cql's 29 and iql's 26: ahead on one task, -6% on average
    assert best["means"] == pytest.approx(((31 + 21) / 2, (29 + 26) / 2))
    assert "O3F >= the best baseline on 1 of 2 tasks, -6% over it on average" in best["verdict"]
    # rliable's P(X > Y): of 3 x 3 seed pairs per task, halfcheetah has 8 won and 1 tie (a
    # half), hopper none won
    assert best["p"] == pytest.approx((8.5 / 9 + 0) / 2)
    assert best["paired"] == f"{hc} vs cql: different algorithms; {hop} vs iql: shared (3 of 3)"
    # a baseline without runs leaves the claim open, and says which
    study2 = tmp_path / "study2"
    for seed in range(3):
        for method in ("o3f_iql", "iql", "awac"):
            _finished_run(study2, hc, method, seed, 10.0 + seed)
    claims = analyse(study2, tmp_path / "out2", experiment="fig4_baselines", reps=50)["claims"]
    assert next(c for c in claims if c["claim"].against)["verdict"] == "not run yet (cql missing)"


def test_the_analysis_is_reproducible_whatever_ran_before(tmp_path):
    """rliable's bootstraps read numpy's global generator: the analysis seeds it per estimate."""
    import numpy as np

    from torchrl_o3f.analysis import analyse

    study = tmp_path / "study"
    for method, bonus in (("o3f_iql", 0.0), ("o3f_iql_omega1", 1.0)):
        for seed in range(3):
            _finished_run(study, "halfcheetah-medium", method, seed, 10.0 + 3 * seed + bonus)
    tables = []
    for i, global_seed in enumerate((1, 2)):
        np.random.seed(global_seed)  # what else ran in the process
        analyse(study, tmp_path / f"out{i}", experiment="fig6_omega", reps=200)
        tables.append((tmp_path / f"out{i}" / "summary.md").read_text())
    assert tables[0] == tables[1]


def test_the_paper_scale_commands_run_the_papers_budget():
    from hydra import compose, initialize_config_dir

    from torchrl_o3f.analysis import CLAIMS, paper_command
    from torchrl_o3f.trainers.recipe import register_configs

    register_configs()
    with initialize_config_dir(str(ROOT / "recipes" / "config"), version_base="1.3"):
        for experiment in CLAIMS:
            overrides = [o for o in paper_command(experiment).split()[2:] if "launcher" not in o]
            cfg = compose("sweep", overrides=overrides)
            assert cfg.budget.offline_steps == 1_000_000, experiment
            assert cfg.budget.online_frames == 1_000_000, experiment
            assert cfg.device == "cuda"
            if experiment == "fig5_lapo":  # the paper's 20 critic updates per env step
                assert cfg.algo.utd_ratio == 20


def test_a_quoted_list_changes_an_experiments_grid():
    """The documented way to narrow a grid (recipes/study.sh does it): a quoted list."""
    cmd = [
        sys.executable,
        SWEEP,
        "experiment=fig3_loosening",
        "hydra.sweeper.params.method='iql,awac'",
        "hydra.sweeper.params.task='halfcheetah-medium,hopper-medium'",
        "--cfg",
        "hydra",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "method: iql,awac" in res.stdout
    assert "task: halfcheetah-medium,hopper-medium" in res.stdout


@pytest.mark.parametrize(
    "method", sorted(p.stem for p in (ROOT / "recipes" / "config" / "method").glob("*.yaml"))
)
def test_every_method_config_composes_and_resolves(method):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from torchrl_o3f.trainers.recipe import register_configs

    register_configs()
    with initialize_config_dir(str(ROOT / "recipes" / "config"), version_base="1.3"):
        cfg = compose("sweep", overrides=[f"method={method}"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["method"] == method
    if method.endswith(("_abrupt", "_linear")):
        assert resolved["anneal"]["mode"] == method.rsplit("_", 1)[1]
        assert resolved["anneal"]["frames"] == resolved["budget"]["online_frames"]


def test_a_run_report_names_what_is_missing(tmp_path, capsys):
    """``--run`` on an unfinished run: exit 2, naming the missing file and the fix, no output."""
    from torchrl_o3f.analysis import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("task: hopper-random\n")
    (run / "evaluations.csv").write_text("phase,step,frames,score,return\n")
    assert main([str(run), "--run", "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert "summary.json, learning_curve.png" in err and "resume=" in err
    assert not (tmp_path / "report").exists()
