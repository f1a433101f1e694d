"""Pieces shared by the package's losses: target parameters, fast module calls, data settings.

The data settings are what the builders derive from the offline data: episode returns,
observation statistics, LAPO's reward pre-processing.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn

from torchrl_o3f.modules.networks import make_target_params
from torchrl_o3f.objectives.registry import yaml_defaults

__all__ = [
    "call_on_tensor",
    "episode_returns",
    "expectile_loss",
    "lapo_reward_config",
    "make_target_params",
    "module_params",
    "observation_statistics",
    "read_tensors",
]


def expectile_loss(diff: torch.Tensor, expectile: float | torch.Tensor) -> torch.Tensor:
    """Asymmetric squared loss ``|tau - 1(diff < 0)| * diff**2`` (IQL's value loss), elementwise.

    Args:
        diff: ``target - prediction``.
        expectile: tau in (0, 1); 0.5 is the mean squared error / 2 weighting.

    Example:
        >>> import torch
        >>> expectile_loss(torch.tensor([1.0, -1.0]), 0.9)
        tensor([0.9000, 0.1000])
    """
    weight = torch.where(diff > 0, expectile, 1 - expectile)
    return weight * diff.square()


def episode_returns(data: TensorDictBase) -> torch.Tensor:
    """Undiscounted return of every episode in a TED dataset (episodes end at ``next/done``).

    The rows must be in time order, episode after episode (as the loader gives them); a last
    episode without a ``done`` flag counts as one. Returns a float64 tensor ``[num_episodes]``.

    Raises:
        KeyError: when ``("next", "reward")`` or ``("next", "done")`` is missing.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> td = TensorDict({"next": {"reward": torch.tensor([1.0, 2.0, 3.0]),
        ...                           "done": torch.tensor([False, True, False])}}, [3])
        >>> episode_returns(td)
        tensor([3., 3.], dtype=torch.float64)
    """
    reward, done = read_tensors(data, [("next", "reward"), ("next", "done")], "episode_returns")
    reward = reward.reshape(-1).double()
    done = done.reshape(-1).bool().clone()
    if done.numel():
        done[-1] = True
    ends = torch.nonzero(done).reshape(-1)
    totals = torch.cumsum(reward, 0)[ends]
    return torch.diff(totals, prepend=totals.new_zeros(1))


def module_params(module: nn.Module) -> TensorDictBase:
    """The parameters and buffers of ``module`` as a tensordict of the very same tensors.

    Used as the *source* of a soft update (``loss.<name>_params``): no copy is made, so the
    target follows what the optimiser trains.

    Example:
        >>> from torch import nn
        >>> lin = nn.Linear(2, 3)
        >>> module_params(lin)["weight"] is lin.weight
        True
    """
    return TensorDict.from_module(module)


def call_on_tensor(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run a one-input, one-output module on a plain tensor, skipping TensorDict plumbing.

    A :class:`~tensordict.nn.TensorDictModule` (e.g. a ``ValueOperator``) with one in_key and
    one out_key is called through its inner ``module``; a plain ``nn.Module`` directly.

    Raises:
        ValueError: for a tensordict module with several inputs or outputs.

    Example:
        >>> import torch
        >>> from torchrl.modules import ValueOperator
        >>> v = ValueOperator(torch.nn.Linear(3, 1), in_keys=["observation"])
        >>> call_on_tensor(v, torch.zeros(2, 3)).shape
        torch.Size([2, 1])
    """
    if isinstance(module, TensorDictModuleBase):
        inner = getattr(module, "module", None)
        if inner is None or len(module.in_keys) != 1 or len(module.out_keys) != 1:
            raise ValueError(
                "expected a TensorDictModule with exactly one in_key and one out_key "
                f"(e.g. a ValueOperator), got in_keys={module.in_keys}, "
                f"out_keys={module.out_keys}"
            )
        return inner(x)
    return module(x)


def read_tensors(td: TensorDictBase, keys: list, owner: str) -> list[torch.Tensor]:
    """``[td[k] for k in keys]``, raising a KeyError that names the fix when one is missing.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> td = TensorDict({"a": torch.zeros(2)}, [2])
        >>> [t.shape for t in read_tensors(td, ["a"], "MyLoss")]
        [torch.Size([2])]
    """
    out = []
    for key in keys:
        value = td.get(key, None)
        if value is None:
            raise KeyError(
                f"{owner} reads {keys} (change them with loss.set_keys(...)); {key!r} is "
                f"missing. The tensordict has {list(td.keys(True, True))}"
            )
        out.append(value)
    return out


def observation_statistics(data: TensorDictBase, eps: float = 1e-3) -> dict[str, torch.Tensor]:
    """``observation_loc`` and ``observation_scale``: the mean and std + ``eps`` of ``data``.

    The std is the population one (as the TD3+BC code's numpy ``std``); computed in float64,
    returned as float32 ``[observation_dim]`` tensors.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> data = TensorDict({"observation": torch.tensor([[0.0], [2.0]])}, [2])
        >>> stats = observation_statistics(data)
        >>> stats["observation_loc"], stats["observation_scale"]
        (tensor([1.]), tensor([1.0010]))
    """
    (obs,) = read_tensors(data, ["observation"], "observation_statistics (TED layout)")
    obs = obs.reshape(-1, obs.shape[-1]).double()
    loc, scale = obs.mean(0), obs.std(0, correction=0) + eps
    return {"observation_loc": loc.float(), "observation_scale": scale.float()}


_LAPO_DEFAULTS = yaml_defaults("lapo")  # lapo_reward_config's defaults: LAPO's yaml values


def lapo_reward_config(
    rewards: torch.Tensor,
    *,
    kind: str = _LAPO_DEFAULTS["reward_kind"],
    gamma: float = _LAPO_DEFAULTS["gamma"],
) -> dict[str, float]:
    """LAPO's reward pre-processing, computed from the dataset rewards.

    * ``"max"`` (locomotion, kitchen, anything else): ``r <- r / max|r|`` and V clipped to
      ``[min r, max r] / (1 - gamma)`` (scaled rewards). The reference code divides by
      ``max r``; the two agree whenever the largest reward is also the largest in magnitude
      (all D4RL locomotion sets), and ``max|r|`` keeps the sign of all-negative rewards.
    * ``"antmaze"``: ``r <- 100 r`` and V clipped to ``[0, 100]``.

    Args:
        rewards: the dataset rewards (any shape).
        kind: ``"max"`` or ``"antmaze"`` (``config/algo/lapo.yaml``'s ``reward_kind`` picks it
            per family).
        gamma: the discount of the value bounds.

    Returns:
        ``dict(reward_scale=..., reward_shift=0.0, value_min=..., value_max=...)``, the keyword
        arguments of :class:`~torchrl_o3f.objectives.LAPOLoss`.

    Example:
        >>> import torch
        >>> cfg = lapo_reward_config(torch.tensor([-1.0, 0.5, 2.0]), kind="max", gamma=0.9)
        >>> cfg["reward_scale"], round(cfg["value_min"], 3), round(cfg["value_max"], 3)
        (0.5, -5.0, 10.0)
    """
    # read once, when the loss is built (never in the update step): one copy to the host
    rewards = torch.as_tensor(rewards, dtype=torch.float64).reshape(-1).cpu()
    if rewards.numel() == 0 or not torch.isfinite(rewards).all():
        raise ValueError("rewards must be a non-empty tensor of finite values")
    if kind == "antmaze":
        return {"reward_scale": 100.0, "reward_shift": 0.0, "value_min": 0.0, "value_max": 100.0}
    if kind != "max":
        raise ValueError(f"kind must be 'max' or 'antmaze', got {kind!r}")
    peak = rewards.abs().max().item()
    scale = 1.0 / peak if peak > 0 else 1.0
    return {
        "reward_scale": scale,
        "reward_shift": 0.0,
        "value_min": rewards.min().item() * scale / (1 - gamma),
        "value_max": rewards.max().item() * scale / (1 - gamma),
    }
