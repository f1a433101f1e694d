"""Deterministic evaluation over whole episodes."""

from __future__ import annotations

import numpy as np
import torch
from tensordict.nn import TensorDictModuleBase
from torchrl.envs import EnvBase, ExplorationType, set_exploration_type

from torchrl_o3f.data import normalized_score
from torchrl_o3f.envs import Task, get_task

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(
    policy: TensorDictModuleBase,
    env: EnvBase,
    task: Task | str,
    *,
    num_episodes: int = 5,
    max_steps: int | None = None,
    dataset_id: str | None = None,
    dataset_root: str | None = None,
) -> dict[str, float]:
    """Run ``num_episodes`` full episodes with the deterministic policy.

    Episodes run one after another on a single env, each to its own end (termination or
    the episode cap), so no episode is cut short because another finished. The policy runs
    under ``ExplorationType.DETERMINISTIC``: a post-policy exploration module (O3F selector,
    Gaussian noise) in the policy passes the action through.

    Returns:
        ``return`` (mean raw return), ``return_std``, ``score`` (mean normalised score on the
        D4RL scale, see :func:`~torchrl_o3f.data.normalized_score`), ``score_std`` (population
        std over the episodes), ``eval_episodes`` (their number), ``length`` (mean episode
        length); ``score_minari`` (the dataset's own reference scale)
        when ``dataset_id`` is given and the dataset stores references; for success-scored
        tasks, ``success`` (fraction of episodes that reached the goal).
    """
    task = get_task(task)
    max_steps = max_steps or task.max_episode_steps
    returns, lengths = [], []
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        for _ in range(num_episodes):
            traj = env.rollout(
                max_steps, policy, break_when_any_done=True, auto_cast_to_device=True
            )
            returns.append(float(traj["next", "reward"].sum()))
            lengths.append(traj.shape[-1])
    returns = np.asarray(returns)
    scores = np.asarray(normalized_score(task, returns))
    out = {
        "return": float(returns.mean()),
        "return_std": float(returns.std()),
        "score": float(scores.mean()),
        "score_std": float(scores.std()),
        "length": float(np.mean(lengths)),
        "eval_episodes": int(num_episodes),
    }
    if dataset_id is not None and task.score == "return":
        try:
            minari = normalized_score(
                task, returns, scale="minari", dataset_id=dataset_id, root=dataset_root
            )
            out["score_minari"] = float(np.mean(minari))
        except (ValueError, FileNotFoundError):
            pass  # a dataset without its own references: the D4RL scale only
    if task.score == "success":
        out["success"] = float((returns > 0).mean())
    return out
