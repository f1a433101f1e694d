"""Studies: the paper's experiments as hydra sweeps, on one machine or a cluster.

    python recipes/sweep.py experiment=fig5_exploration                 # joblib, 2 parallel runs
    python recipes/sweep.py experiment=fig4_baselines hydra.launcher.n_jobs=4
    python recipes/sweep.py experiment=fig2_switch hydra/launcher=submitit_slurm \\
        hydra.launcher.partition=<partition> budget=paper
    python -m torchrl_o3f.analysis studies/study --experiment fig5_exploration

Each run's folder is named by what it is (<study_root>/<budget>/<task>/<method>/seed<k>):
running the same sweep again skips finished runs and resumes interrupted ones. The online
variants of one algorithm share one offline phase per (task, algorithm, seed).
"""

import os

# Several runs share the cores: OpenMP threads that spin while waiting steal them from the other
# runs (platform-notes: 4-7x slower); set before torch starts its thread pool in any worker.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hydra  # noqa: E402

from torchrl_o3f.trainers.recipe import register_configs, run_sweep  # noqa: E402

register_configs()


@hydra.main(version_base="1.3", config_path="config", config_name="sweep")
def main(cfg) -> None:
    run_sweep(cfg)


if __name__ == "__main__":
    main()
