"""The paper's baselines: offline pre-training, then fine-tuning with a registered algorithm.

    python recipes/finetune.py algo=cql                      # CQL, then CQL fine-tuning
    python recipes/finetune.py algo=cql online_algo=sac      # the objective switch (Figure 2)
    python recipes/finetune.py algo=awac anneal.mode=linear  # loosening AWAC's lambda (Figure 3)
    python recipes/finetune.py algo=iql exploration.mode=o3f # the same trainer as o3f_iql.py
    python -m torchrl_o3f algorithms                         # what algo= accepts
"""

import hydra

from torchrl_o3f.trainers.recipe import register_configs, run_recipe

register_configs()


@hydra.main(version_base="1.3", config_path="config", config_name="finetune")
def main(cfg) -> None:
    run_recipe(cfg)


if __name__ == "__main__":
    main()
