"""O3F on IQL: offline IQL pre-training, then online fine-tuning with optimistic actions.

    python recipes/o3f_iql.py                               # default task, cpu budget
    python recipes/o3f_iql.py task=hopper-medium budget=smoke
    python recipes/o3f_iql.py exploration.mode=gaussian     # the paper's ablation
    python recipes/o3f_iql.py resume=outputs/<run dir>      # continue a stopped run
"""

import hydra

from torchrl_o3f.trainers.recipe import register_configs, run_recipe

register_configs()


@hydra.main(version_base="1.3", config_path="config", config_name="o3f_iql")
def main(cfg) -> None:
    run_recipe(cfg)


if __name__ == "__main__":
    main()
