"""StackedCritic: a torchrl critic evaluated over the stacked parameters its loss trains."""

from __future__ import annotations

import torch
from tensordict import NestedKey, TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase

__all__ = ["StackedCritic"]


class StackedCritic:
    """Per-member values of a TensorDictModule critic over stacked parameters (``torch.vmap``).

    torchrl losses with several Q networks (``SACLoss``, ``TD3Loss``, ``REDQLoss``,
    ``CQLLoss``, ``IQLLoss``) train copies of the critic's weights, stacked along a leading
    member dimension in ``loss.qvalue_network_params``; the module itself
    (``loss.qvalue_network``, the module handed to the loss) keeps its initial weights. This
    adapter evaluates the module once per member with those stacked parameters, held by
    reference, so an optimiser step on the loss changes what it returns. It is one form of
    the critic protocol :class:`~torchrl_o3f.modules.O3FActionSelector` reads: a callable
    ``(observation, action) -> [m, *batch, 1]``.

    Args:
        module: the critic, reading ``observation_key`` and ``action_key`` and writing
            ``value_key`` (one value per row, ``[*batch, 1]``).
        params: the member parameters, shaped like ``TensorDict.from_module(module)`` with a
            leading member dimension of size m.

    Keyword Args:
        observation_key: the key the module reads the observation from.
        action_key: the key the module reads the action from.
        value_key: the key the module writes its value to.

    Raises:
        TypeError: when ``module`` is not a TensorDictModule.
        ValueError: when ``params`` is not a tensordict with a leading member dimension.

    Example:
        >>> import torch
        >>> from torchrl.modules import MLP, ValueOperator
        >>> critic = ValueOperator(MLP(4 + 2, 1, num_cells=[16]), in_keys=["observation", "action"])
        >>> params = TensorDict.from_modules(*[
        ...     ValueOperator(MLP(4 + 2, 1, num_cells=[16]), in_keys=["observation", "action"])
        ...     for _ in range(3)])   # 3 members, as a torchrl loss stacks them
        >>> q = StackedCritic(critic, params)
        >>> q(torch.randn(4), torch.rand(100, 2)).shape   # 100 candidates for one observation
        torch.Size([3, 100, 1])
    """

    def __init__(
        self,
        module: TensorDictModuleBase,
        params: TensorDictBase,
        *,
        observation_key: NestedKey = "observation",
        action_key: NestedKey = "action",
        value_key: NestedKey = "state_action_value",
    ):
        if not isinstance(module, TensorDictModuleBase):
            raise TypeError(f"module must be a TensorDictModule critic, got {type(module)}")
        if not isinstance(params, TensorDictBase) or params.ndim < 1:
            raise ValueError(
                "params must be a tensordict of parameters stacked along a leading member "
                "dimension (e.g. a torchrl loss's qvalue_network_params), got "
                f"{type(params).__name__}"
            )
        self.module, self.params = module, params
        self.observation_key, self.action_key, self.value_key = (
            observation_key,
            action_key,
            value_key,
        )

    @classmethod
    def from_loss(cls, loss, *, observation_key: NestedKey = "observation") -> StackedCritic:
        """The critic a torchrl loss trains: ``loss.qvalue_network`` over its stacked params.

        The action and value keys are the loss's (``loss.tensor_keys``).

        Raises:
            TypeError: when the loss has no ``qvalue_network`` and ``qvalue_network_params``.
        """
        module = getattr(loss, "qvalue_network", None)
        params = getattr(loss, "qvalue_network_params", None)
        if module is None or params is None:
            raise TypeError(
                f"{type(loss).__name__} has no qvalue_network and qvalue_network_params: "
                "from_loss reads a torchrl loss with Q networks (SAC, TD3, REDQ, CQL, IQL)"
            )
        keys = loss.tensor_keys
        return cls(
            module,
            params,
            observation_key=observation_key,
            action_key=keys.action,
            value_key=getattr(keys, "state_action_value", "state_action_value"),
        )

    @property
    def device(self) -> torch.device:
        """The device of the member parameters."""
        return next(iter(self.params.values(True, True))).device

    def __call__(self, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Per-member values ``[m, *batch, 1]``; ``batch`` broadcasts both batch shapes."""
        batch = torch.broadcast_shapes(observation.shape[:-1], action.shape[:-1])
        obs = observation.expand(*batch, observation.shape[-1])
        act = action.expand(*batch, action.shape[-1])

        def member(params, obs, act):
            td = TensorDict({self.observation_key: obs, self.action_key: act}, batch)
            with params.to_module(self.module):
                return self.module(td).get(self.value_key)

        return torch.vmap(member, (0, None, None), randomness="different")(
            self.params.detach(), obs, act
        )
