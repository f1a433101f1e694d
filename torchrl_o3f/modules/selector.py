"""O3FActionSelector: optimistic action selection over a Q ensemble (the paper's section 5)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from tensordict import NestedKey, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.data import Bounded, Composite, TensorSpec, Unbounded
from torchrl.envs.utils import ExplorationType, exploration_type

from torchrl_o3f.modules.critics import StackedCritic
from torchrl_o3f.modules.ensemble import QEnsemble

__all__ = ["O3FActionSelector"]

Critic = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.compiler.disable
def _randn(shape: tuple, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    # dynamo cannot trace a Generator argument: a selector with its own generator draws its
    # candidates outside a compiled graph (one graph break); the global generator's are inside
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)


class O3FActionSelector(TensorDictModuleBase):
    r"""Optimistic action selection (O3F) over an ensemble of Q-functions.

    A post-policy module like torchrl's :class:`~torchrl.modules.AdditiveGaussianModule`:
    ``TensorDictSequential(policy, selector)``. Under RANDOM (or unset) exploration, for the
    policy's action :math:`a` at observation :math:`s` it draws ``num_candidates`` candidates
    :math:`c_i \sim \mathcal{N}(a, \sigma^2)` (``[N, *batch, a]``), clamps them onto the spec's
    bounds, scores them with the paper's equation 2, :math:`\mathrm{mean}_j Q_j(s, c) + \omega
    \, \mathrm{std}_j Q_j(s, c)` (population std over the m members), and writes the best to
    ``action_key``. Under DETERMINISTIC, MODE or MEAN it passes the tensordict through. Any
    batch shape is served, ``[]`` included (a single-env collector).

    The critic is read by reference, never owned (``parameters()`` is empty; the state dict
    holds ``sigma``, ``omega``, ``frames`` and the bounds), so a loss training it in place is
    what the selector scores with. Buffers are made on the critic's device (the spec's for a
    plain callable) and follow ``.to()``; ``forward`` moves nothing.

    Args:
        qvalue_network: the critic protocol: per-member values of ``(observation [*batch, d],
            candidates [N, *batch, a])`` as ``[m, N, *batch, 1]`` or ``[m, N, *batch]`` (a
            single critic's ``[N, *batch, 1]`` is ``m = 1``). A
            :class:`~torchrl_o3f.modules.QEnsemble`, a
            :class:`~torchrl_o3f.modules.StackedCritic` (see :meth:`from_loss`) or a callable.
        action_spec: a continuous ``Bounded`` or ``Unbounded`` spec, or a ``Composite``
            holding ``action_key``.

    Keyword Args:
        num_candidates: N, candidates per step (paper: 100).
        sigma: std of the candidates in action units, a float or one per action dimension
            (paper: 0.2 locomotion, 0.05 antmaze and kitchen).
        sigma_end, annealing_num_steps: :meth:`step` moves sigma linearly to ``sigma_end``
            over ``annealing_num_steps`` frames (default: constant). For other schedules write
            the ``sigma`` / ``omega`` buffers in place (``selector.omega.fill_(0.5)``).
        omega: optimism weight on the ensemble's std (paper: 0; 1 in its ablation).
        include_policy_action: keep the (projected) policy action as a candidate too.
        observation_key, action_key: the keys read; ``action_key`` is overwritten.
        diagnostics: also write ``policy_action`` (as proposed), ``o3f_score`` (the executed
            action's score) and ``o3f_score_gain`` (that minus the projected policy action's
            score), both ``[*batch, 1]``.
        generator: a :class:`torch.Generator` on the critic's device (reproducible draws).

    Raises:
        TypeError: for a bare TensorDictModule critic (its trained weights may live elsewhere:
            use :meth:`from_loss`), a non-callable critic or a discrete spec.
        ValueError: for a missing spec, action sizes that disagree, or invalid N, sigma, omega.
        KeyError: for a ``Composite`` spec without ``action_key``.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> q = QEnsemble(observation_dim=3, action_dim=1, num_members=5, num_cells=32)
        >>> selector = O3FActionSelector(q, Bounded(-2.0, 2.0, shape=(1,)), num_candidates=100,
        ...     sigma=0.4, sigma_end=0.1, annealing_num_steps=1000, diagnostics=True)
        >>> td = selector(TensorDict({"observation": torch.randn(8, 3),
        ...                           "action": torch.zeros(8, 1)}, batch_size=[8]))
        >>> td["action"].shape, td["o3f_score_gain"].shape, bool(td["action"].abs().max() <= 2)
        (torch.Size([8, 1]), torch.Size([8, 1]), True)
        >>> selector.step(500); round(float(selector.sigma), 2)
        0.25
    """

    def __init__(
        self,
        qvalue_network: QEnsemble | StackedCritic | Critic,
        action_spec: TensorSpec,
        *,
        num_candidates: int = 100,
        sigma: float | torch.Tensor = 0.2,
        sigma_end: float | torch.Tensor | None = None,
        annealing_num_steps: int = 1,
        omega: float = 0.0,
        include_policy_action: bool = False,
        observation_key: NestedKey = "observation",
        action_key: NestedKey = "action",
        diagnostics: bool = False,
        generator: torch.Generator | None = None,
    ):
        q = qvalue_network
        if isinstance(q, TensorDictModuleBase) and not isinstance(q, QEnsemble):
            raise TypeError(
                f"qvalue_network is a bare {type(q).__name__}: a torchrl loss trains stacked "
                "copies of its critic (loss.qvalue_network_params), not the module's weights. "
                "Use O3FActionSelector.from_loss(loss, action_spec), StackedCritic(module, "
                "params) or a callable (observation, action) -> values"
            )
        if not callable(q):
            raise TypeError(f"qvalue_network must be a QEnsemble or a callable, got {type(q)}")
        if isinstance(action_spec, Composite):
            if action_key not in action_spec.keys(True, True):
                raise KeyError(
                    f"the Composite action spec has no entry {action_key!r} (keys: "
                    f"{list(action_spec.keys(True, True))}); pass action_key= or the leaf spec"
                )
            action_spec = action_spec[action_key]
        if action_spec is None:
            raise ValueError("O3FActionSelector needs the action spec (pass env.action_spec)")
        if not (
            isinstance(action_spec, (Bounded, Unbounded)) and action_spec.dtype.is_floating_point
        ):
            raise TypeError(
                "O3FActionSelector samples Gaussian candidates: the action spec must be a "
                f"continuous Bounded or Unbounded spec, got {type(action_spec).__name__}"
            )
        self.action_dim = action_spec.shape[-1] if action_spec.ndim else 1
        if getattr(q, "action_dim", self.action_dim) != self.action_dim:
            raise ValueError(
                f"the action spec has {self.action_dim} action dimensions but the critic takes "
                f"actions of size {q.action_dim}: pass the spec of the env it was built for"
            )
        for name, n in (
            ("num_candidates", num_candidates),
            ("annealing_num_steps", annealing_num_steps),
        ):
            if not (isinstance(n, int) and n >= 1):
                raise ValueError(f"{name} must be an integer >= 1, got {n!r}")
        self.observation_key, self.action_key = observation_key, action_key
        self.in_keys, self.out_keys = [observation_key, action_key], [action_key]
        if diagnostics:
            self.out_keys += ["policy_action", "o3f_score", "o3f_score_gain"]
        super().__init__()
        self._critic = (q,)  # a tuple: the critic never becomes a sub-module of the selector
        self._values = q.values if isinstance(q, QEnsemble) else q
        self.num_candidates, self.annealing_num_steps = num_candidates, annealing_num_steps
        self.include_policy_action, self.diagnostics = include_policy_action, diagnostics
        self.generator = generator
        device = getattr(q, "device", None) or action_spec.device or torch.device("cpu")
        if generator is not None and torch.device(generator.device).type != device.type:
            raise ValueError(
                f"the generator is on {generator.device} but the critic is on {device}: "
                "create it with torch.Generator(device=...) on the critic's device"
            )
        sigma = self._check_sigma(sigma, device)
        end = sigma if sigma_end is None else self._check_sigma(sigma_end, device)
        sigma, end = (x.clone() for x in torch.broadcast_tensors(sigma, end))
        self.register_buffer("sigma", sigma)
        self.register_buffer("sigma_init", sigma.clone(), persistent=False)
        self.register_buffer("sigma_end", end, persistent=False)
        omega = torch.as_tensor(omega, dtype=torch.float32, device=device)
        if omega.numel() != 1 or not bool(torch.isfinite(omega)):
            raise ValueError(f"omega must be one finite number, got {omega.tolist()}")
        self.register_buffer("omega", omega.reshape(()).clone())
        self.register_buffer("frames", torch.zeros((), dtype=torch.long, device=device))
        if isinstance(action_spec, Bounded):
            self.register_buffer("low", action_spec.space.low.to(device, torch.float32).clone())
            self.register_buffer("high", action_spec.space.high.to(device, torch.float32).clone())
        else:
            self.low = self.high = None

    @property
    def qvalue_network(self) -> QEnsemble | StackedCritic | Critic:
        """The critic the selector scores with (held by reference)."""
        return self._critic[0]

    @classmethod
    def from_loss(cls, loss, action_spec: TensorSpec, **kwargs) -> O3FActionSelector:
        """A selector scoring with the critic a torchrl loss trains (SAC, TD3, REDQ, CQL, IQL).

        Reads ``loss.qvalue_network`` over ``loss.qvalue_network_params`` through
        :class:`~torchrl_o3f.modules.StackedCritic` (a :class:`QEnsemble` critic, as the
        package's losses train in place, directly); ``kwargs`` are the constructor's.

        Raises:
            TypeError: when the loss has no ``qvalue_network`` and ``qvalue_network_params``.
        """
        if isinstance(getattr(loss, "qvalue_network", None), QEnsemble):
            return cls(loss.qvalue_network, action_spec, **kwargs)
        obs_key = kwargs.get("observation_key", "observation")
        critic = StackedCritic.from_loss(loss, observation_key=obs_key)
        kwargs.setdefault("action_key", critic.action_key)
        return cls(critic, action_spec, **kwargs)

    def _check_sigma(self, sigma, device) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=device)
        if sigma.ndim > 1 or sigma.numel() not in (1, self.action_dim):
            raise ValueError(
                f"sigma must be a float or a tensor of {self.action_dim} entries (one per "
                f"action dimension), got shape {tuple(sigma.shape)}"
            )
        if not bool(torch.isfinite(sigma).all()) or bool((sigma < 0).any()):
            raise ValueError(f"sigma must be finite and >= 0, got {sigma.tolist()}")
        return sigma.clone()

    def sample_candidates(self, action: torch.Tensor) -> torch.Tensor:
        """``num_candidates`` draws from N(action, sigma^2): ``[N, *batch, a]``, unprojected."""
        shape = (self.num_candidates, *action.shape)
        if self.generator is None:  # the global generator: drawn inside a compiled graph
            noise = torch.randn(shape, device=action.device, dtype=action.dtype)
        else:
            noise = _randn(shape, self.generator, action)
        return torch.addcmul(action, noise, self.sigma.to(action.dtype))

    def project(self, action: torch.Tensor) -> torch.Tensor:
        """Clamp ``action`` onto the spec's bounds (identity for an unbounded spec)."""
        return action if self.low is None else torch.clamp(action, self.low, self.high)

    def score(self, observation: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Equation 2, mean_j Q_j + omega * std_j Q_j, of candidates ``[N, *batch, a]``.

        Returns the scores, ``[N, *batch]``.

        Raises:
            ValueError: when the critic's values are not ``[m, N, *batch(, 1)]``.
        """
        values = self._values(observation, candidates)
        n_batch = candidates.shape[:-1]
        if values.shape == (*n_batch, 1):  # a single critic
            values = values.unsqueeze(0)
        if values.shape[1:] == (*n_batch, 1):
            values = values.squeeze(-1)
        if values.shape[1:] != n_batch:
            raise ValueError(
                f"the critic returned values of shape {tuple(values.shape)} for candidates of "
                f"batch {tuple(n_batch)}: expected [m, {', '.join(map(str, n_batch))}(, 1)] "
                "(member dimension leading)"
            )
        # no branch on omega's value: a host read would stall the device and break capture
        # (omega = 0 adds exact zeros: the same scores as the mean alone)
        return values.mean(0) + self.omega * values.std(0, correction=0)

    @torch.no_grad()
    def select(self, observation: torch.Tensor, action: torch.Tensor) -> tuple:
        """``(chosen action [*batch, a], its score [*batch], policy-action score [*batch])``.

        The scores are ``None`` unless ``diagnostics`` is on.
        """
        candidates = self.project(self.sample_candidates(action))
        extra = self.include_policy_action or self.diagnostics
        if extra:
            candidates = torch.cat([candidates, self.project(action).unsqueeze(0)], 0)
        scores = self.score(observation, candidates)
        best, index = (scores if self.include_policy_action or not extra else scores[:-1]).max(0)
        chosen = candidates.gather(0, index[None, ..., None].expand(1, *action.shape))[0]
        return (chosen, best, scores[-1]) if self.diagnostics else (chosen, None, None)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Replace the policy action by the best-scoring candidate (RANDOM exploration only).

        Raises:
            KeyError: when the observation or the action is missing.
            ValueError: when the action's last dimension is not the spec's.
        """
        if exploration_type() not in (ExplorationType.RANDOM, None):
            return tensordict
        obs = tensordict.get(self.observation_key, None)
        action = tensordict.get(self.action_key, None)
        if obs is None or action is None:
            raise KeyError(
                f"O3FActionSelector reads {self.observation_key!r} and {self.action_key!r}; "
                f"the tensordict has {list(tensordict.keys(True, True))}. Put it after the "
                "policy, e.g. TensorDictSequential(policy, selector)"
            )
        if action.shape[-1:] != (self.action_dim,):
            raise ValueError(
                f"expected actions [..., {self.action_dim}] (the action spec), got "
                f"{tuple(action.shape)}"
            )
        chosen, score, policy_score = self.select(obs, action)
        tensordict.set(self.action_key, chosen)
        if self.diagnostics:
            tensordict.set("policy_action", action)
            tensordict.set("o3f_score", score.unsqueeze(-1))
            tensordict.set("o3f_score_gain", (score - policy_score).unsqueeze(-1))
        return tensordict

    def step(self, frames: int = 1) -> None:
        """Advance the frame count and the sigma anneal (if any) by ``frames`` frames.

        Without ``sigma_end`` sigma is left as it is (also when written in place).
        """
        if frames < 0:
            raise ValueError(f"frames must be >= 0, got {frames}")
        self.frames += frames
        if not torch.equal(self.sigma_init, self.sigma_end):
            done = min(1.0, int(self.frames) / self.annealing_num_steps)
            self.sigma.copy_(torch.lerp(self.sigma_init, self.sigma_end, done))

    def extra_repr(self) -> str:  # noqa: D102
        return (
            f"num_candidates={self.num_candidates}, sigma={self.sigma.tolist()}, "
            f"omega={float(self.omega)}, include_policy_action={self.include_policy_action}"
        )
