"""The post-policy exploration module of a run, by mode: O3F's selector, Gaussian or none."""

from __future__ import annotations

from tensordict.nn import TensorDictModuleBase
from torchrl.modules import AdditiveGaussianModule
from torchrl.objectives import LossModule

from torchrl_o3f.errors import ConfigError
from torchrl_o3f.modules.selector import O3FActionSelector

__all__ = ["make_exploration"]


def make_exploration(
    mode: str,
    qvalue_network,
    action_spec,
    *,
    sigma: float,
    num_candidates: int = 100,
    omega: float = 0.0,
    include_policy_action: bool = False,
    device=None,
) -> TensorDictModuleBase | None:
    """The post-policy exploration module of an exploration mode.

    ``"o3f"``: :class:`~torchrl_o3f.modules.O3FActionSelector` (with diagnostics) on the
    trained critic: ``qvalue_network`` is a critic the selector accepts (a ``QEnsemble``, a
    ``StackedCritic``, a callable) or a torchrl loss, read through
    :meth:`~torchrl_o3f.modules.O3FActionSelector.from_loss`; ``"gaussian"``: torchrl's
    ``AdditiveGaussianModule`` with the same constant sigma, projected onto the action spec
    (the paper's ablation); ``"none"``: ``None`` (the policy's own sampling). The module is
    moved to ``device`` when given.

    Raises:
        ConfigError: for an unknown mode.
    """
    if mode == "o3f":
        kwargs = {
            "num_candidates": num_candidates,
            "sigma": sigma,
            "omega": omega,
            "include_policy_action": include_policy_action,
            "diagnostics": True,
        }
        if isinstance(qvalue_network, LossModule):
            selector = O3FActionSelector.from_loss(qvalue_network, action_spec, **kwargs)
        else:
            selector = O3FActionSelector(qvalue_network, action_spec, **kwargs)
        return selector if device is None else selector.to(device)
    if mode == "gaussian":
        return AdditiveGaussianModule(
            action_spec,
            sigma_init=sigma,
            sigma_end=sigma,
            annealing_num_steps=1,
            safe=True,
            device=device,
        )
    if mode == "none":
        return None
    raise ConfigError(f"unknown exploration mode {mode!r}; choose 'o3f', 'gaussian' or 'none'")
