"""O3FActionSelector: optimistic action selection over a Q ensemble (the paper's section 5)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from tensordict import NestedKey, TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.data import Bounded, Composite, TensorSpec, Unbounded
from torchrl.envs.utils import ExplorationType, exploration_type

from torchrl_o3f.modules.actors import _env_row
from torchrl_o3f.modules.ensemble import QEnsemble

__all__ = ["O3FActionSelector"]

Schedule = Callable[[int], "float | torch.Tensor"] | Sequence[float]


def _linear_schedule(start: float, end: float, frames: int) -> Callable[[int], float]:
    """``start`` at frame 0, linearly to ``end`` at ``frames``, then constant."""

    def schedule(t: int) -> float:
        return end + (start - end) * max(0.0, 1.0 - t / frames)

    return schedule


def _as_schedule(name: str, schedule) -> Callable[[int], float | torch.Tensor] | None:
    if schedule is None or callable(schedule):
        return schedule
    if isinstance(schedule, Sequence) and len(schedule) == 3:
        start, end, frames = schedule
        if not (isinstance(frames, int) and frames >= 1):
            raise ValueError(
                f"{name}=(start, end, frames) needs an integer frames >= 1, got {frames!r}"
            )
        return _linear_schedule(float(start), float(end), frames)
    raise TypeError(
        f"{name} must be a callable frames -> value or a (start, end, frames) tuple for a "
        f"linear anneal, got {schedule!r}"
    )


class O3FActionSelector(TensorDictModuleBase):
    r"""Optimistic action selection (O3F) over an ensemble of Q-functions.

    A post-policy module, in the family of torchrl's
    :class:`~torchrl.modules.AdditiveGaussianModule`: chain it after a policy with
    ``TensorDictSequential(policy, selector)``. For the policy's action :math:`a` at
    observation :math:`s` it

    1. samples ``num_candidates`` candidates :math:`c_i \sim \mathcal{N}(a, \sigma^2)`
       (tensor of shape ``[num_candidates, *batch, action_dim]``, candidate dimension leading),
    2. projects them onto the action spec (a clamp to its bounds),
    3. scores each with the paper's equation 2,
       :math:`f(s, c) = \mathrm{mean}_j Q_j(s, c) + \omega\, \mathrm{std}_j Q_j(s, c)`
       (population std, :math:`1/m`; with :math:`\omega = 0` the std is not computed),
    4. writes the best candidate to the action key.

    It acts only when the exploration type is RANDOM or unset (a collector's default) and
    passes the action through unchanged under DETERMINISTIC, MODE or MEAN, so an evaluation
    rollout run under ``set_exploration_type(ExplorationType.DETERMINISTIC)`` is the plain
    policy. Tensordicts without a batch dimension (a single-env collector) and with any batch
    shape (parallel or serial envs) are handled.

    The selector reads the Q parameters, it never owns them: they are not registered as
    sub-modules (``selector.parameters()`` is empty, its state dict holds only ``sigma``,
    ``omega``, the bounds and the frame counter), so a loss training the ensemble in place is
    what the selector scores with, and an optimiser built over a policy that contains the
    selector never sees the critics.

    Args:
        qvalue_network: the Q ensemble. One of

            * a :class:`~torchrl_o3f.modules.QEnsemble` (fast path: all members in one batched
              product per layer, no vmap; on CPU the exact sparse second layer of
              :meth:`~torchrl_o3f.modules.QEnsemble.candidate_values` in its compiled
              kernel);
            * a :class:`~tensordict.nn.TensorDictModuleBase` reading ``observation_key`` and
              ``action_key`` and writing ``value_key``. With ``qvalue_params`` (parameters
              stacked along a leading member dimension, e.g. a torchrl loss's
              ``qvalue_network_params``) each member is evaluated with ``torch.vmap`` over
              those parameters; without, the module must itself return values with a leading
              member dimension ``[m, num_candidates, *batch, 1]`` (a single critic's
              ``[num_candidates, *batch, 1]`` is read as ``m = 1``);
            * any callable ``(observation, action) -> values`` taking tensors of batch shape
              ``[num_candidates, *batch]`` and returning ``[m, num_candidates, *batch, 1]``.
        action_spec: the env's action spec (a :class:`~torchrl.data.Bounded` or
            :class:`~torchrl.data.Unbounded` continuous spec, or a :class:`Composite`
            holding ``action_key``). Required: candidates are projected onto its bounds.

    Keyword Args:
        num_candidates: N, the number of candidates per step (paper: 100).
        sigma: standard deviation of the candidates around the policy action, a float or a
            per-dimension tensor of size ``action_dim`` (paper: 0.2 on locomotion, 0.05 on
            antmaze and kitchen). It is in the units of the env's actions: scale it if your
            actions are not in ``[-1, 1]``.
        omega: optimism weight on the ensemble's std (paper: 0; 1 in its ablation).
        include_policy_action: also keep the policy action itself as a candidate (off in the
            paper).
        observation_key: key of the observation the critics read.
        action_key: key of the action, read and overwritten.
        value_key: output key of a TensorDictModule ``qvalue_network``
            (default ``"state_action_value"``, torchrl's).
        qvalue_params: stacked member parameters for a TensorDictModule ``qvalue_network``,
            shaped like ``TensorDict.from_module(qvalue_network)`` with a leading member
            dimension. Held by reference: in-place updates (an optimiser step) are seen.
        diagnostics: also write ``policy_action`` (the policy's own action, as it was
            proposed), ``o3f_score`` (score of the executed action, ``[*batch, 1]``) and
            ``o3f_score_gain`` (that score minus the score of the policy action projected onto
            the spec, ``[*batch, 1]``; >= 0 when ``include_policy_action``).
        sigma_schedule: optional schedule for sigma, advanced by :meth:`step`: a callable
            ``frames -> value`` (frames seen so far) or a ``(start, end, frames)`` tuple for a
            linear anneal from ``start`` to ``end`` over ``frames`` frames. When given, it
            sets sigma from frame 0 on (overriding ``sigma``).
        omega_schedule: the same for omega.
        generator: a :class:`torch.Generator` (on the ensemble's device) for the candidates:
            with a seeded one the selection is reproducible.

    Attributes:
        sigma, omega: the current values (buffers, saved in the state dict).
        frames: the frame count :meth:`step` has reached (a buffer).

    Example:
        >>> import torch
        >>> from tensordict.nn import TensorDictModule, TensorDictSequential
        >>> from torchrl.collectors import Collector
        >>> from torchrl.envs import GymEnv
        >>> from torchrl_o3f.modules import QEnsemble, build_mlp
        >>> env = GymEnv("Pendulum-v1")
        >>> obs_dim, act_dim = 3, 1
        >>> actor = TensorDictModule(
        ...     torch.nn.Sequential(build_mlp(obs_dim, act_dim, num_cells=32), torch.nn.Tanh()),
        ...     in_keys=["observation"], out_keys=["action"])
        >>> q = QEnsemble(obs_dim, act_dim, num_members=5, num_cells=32)
        >>> selector = O3FActionSelector(q, env.action_spec, num_candidates=100, sigma=0.4,
        ...                              diagnostics=True)
        >>> policy = TensorDictSequential(actor, selector)
        >>> collector = Collector(env, policy, frames_per_batch=50, total_frames=100,
        ...                       auto_register_policy_transforms=False)
        >>> for batch in collector:
        ...     selector.step(batch.numel())
        >>> collector.shutdown()
        >>> batch["o3f_score_gain"].shape, int(selector.frames)
        (torch.Size([50, 1]), 100)
        >>> bool((batch["action"].abs() <= 2.0).all())  # projected onto Pendulum's [-2, 2]
        True
    """

    def __init__(
        self,
        qvalue_network: QEnsemble | TensorDictModuleBase | Callable,
        action_spec: TensorSpec | None,
        *,
        num_candidates: int = 100,
        sigma: float | torch.Tensor = 0.2,
        omega: float = 0.0,
        include_policy_action: bool = False,
        observation_key: NestedKey = "observation",
        action_key: NestedKey = "action",
        value_key: NestedKey = "state_action_value",
        qvalue_params: TensorDictBase | None = None,
        diagnostics: bool = False,
        sigma_schedule: Schedule | None = None,
        omega_schedule: Schedule | None = None,
        generator: torch.Generator | None = None,
    ):
        if not callable(qvalue_network):
            raise TypeError(
                "qvalue_network must be a QEnsemble, a TensorDictModule or a callable "
                f"(observation, action) -> per-member values, got {type(qvalue_network)}"
            )
        if isinstance(qvalue_network, QEnsemble) and qvalue_params is not None:
            raise ValueError(
                "qvalue_params is for TensorDictModule critics; a QEnsemble already holds its "
                "stacked parameters (pass the QEnsemble alone)"
            )
        if qvalue_params is not None and not isinstance(qvalue_network, TensorDictModuleBase):
            raise TypeError(
                "qvalue_params needs a TensorDictModule qvalue_network (the module the "
                f"parameters are loaded into), got {type(qvalue_network)}"
            )
        if qvalue_params is not None and (
            not isinstance(qvalue_params, TensorDictBase) or qvalue_params.ndim < 1
        ):
            raise ValueError(
                "qvalue_params must be a tensordict of parameters stacked along a leading "
                "member dimension (e.g. a torchrl loss's qvalue_network_params)"
            )
        if not (isinstance(num_candidates, int) and num_candidates >= 1):
            raise ValueError(f"num_candidates must be an integer >= 1, got {num_candidates!r}")
        action_spec = self._action_leaf_spec(action_spec, action_key)
        action_dim = action_spec.shape[-1] if len(action_spec.shape) else 1
        q_dim = getattr(qvalue_network, "action_dim", None)
        if isinstance(q_dim, int) and q_dim != action_dim:
            raise ValueError(
                f"the action spec has {action_dim} action dimensions but the Q ensemble takes "
                f"actions of size {q_dim}: pass the spec of the env the ensemble was built for"
            )

        self.observation_key = observation_key
        self.action_key = action_key
        self.value_key = value_key
        self.diagnostics = bool(diagnostics)
        self.in_keys = [observation_key, action_key]
        self.out_keys = [action_key]
        if self.diagnostics:
            self.out_keys += ["policy_action", "o3f_score", "o3f_score_gain"]
        super().__init__()

        # held by reference, never registered: the selector reads the critics, it does not own
        # them (no duplicate parameters in optimisers or state dicts, no stale copies)
        self._critic = (qvalue_network, qvalue_params)
        self.num_candidates = num_candidates
        self.include_policy_action = bool(include_policy_action)
        self.action_dim = action_dim
        self.action_spec = action_spec
        self.generator = generator
        device = self._critic_device()
        if device is None:
            device = action_spec.device or torch.device("cpu")
        if generator is not None and torch.device(generator.device).type != device.type:
            raise ValueError(
                f"the generator is on {generator.device} but the Q ensemble is on {device}: "
                "create it with torch.Generator(device=...) on the ensemble's device"
            )

        self.sigma_schedule = _as_schedule("sigma_schedule", sigma_schedule)
        self.omega_schedule = _as_schedule("omega_schedule", omega_schedule)
        if self.sigma_schedule is not None:
            sigma = self.sigma_schedule(0)
        if self.omega_schedule is not None:
            omega = self.omega_schedule(0)
        self.register_buffer("sigma", self._check_sigma(sigma, device))
        self.register_buffer("omega", self._check_omega(omega, device))
        self.register_buffer("frames", torch.zeros((), dtype=torch.long, device=device))
        if isinstance(action_spec, Bounded):
            low, high = action_spec.space.low, action_spec.space.high
            # a batched env's spec repeats the same bounds per env: keep one row so the
            # selector serves tensordicts with and without the env batch dimension (envs
            # with different bounds keep theirs)
            low, high = _env_row(low, high) or (low, high)
            self.register_buffer("low", low.to(device=device, dtype=torch.float32).clone())
            self.register_buffer("high", high.to(device=device, dtype=torch.float32).clone())
        else:
            self.low = self.high = None

    # ----------------------------------------------------------------------------- checks
    @staticmethod
    def _action_leaf_spec(spec, action_key) -> TensorSpec:
        if spec is None:
            raise ValueError(
                "O3FActionSelector needs the action spec (pass env.action_spec): candidates "
                "are projected onto its bounds"
            )
        if isinstance(spec, Composite):
            if action_key not in spec.keys(True, True):
                raise KeyError(
                    f"the Composite action spec has no entry {action_key!r} "
                    f"(keys: {list(spec.keys(True, True))}); pass action_key= or the leaf spec"
                )
            spec = spec[action_key]
        if not isinstance(spec, (Bounded, Unbounded)) or not spec.dtype.is_floating_point:
            raise TypeError(
                "O3FActionSelector samples Gaussian candidates, so the action spec must be a "
                f"continuous Bounded or Unbounded spec, got {type(spec).__name__} of dtype "
                f"{spec.dtype}"
            )
        return spec

    def _check_sigma(self, sigma, device) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32).to(device)
        if sigma.ndim > 1 or (sigma.ndim == 1 and sigma.numel() not in (1, self.action_dim)):
            raise ValueError(
                f"sigma must be a float or a tensor of {self.action_dim} entries (one per "
                f"action dimension), got shape {tuple(sigma.shape)}"
            )
        if not bool(torch.isfinite(sigma).all()) or bool((sigma < 0).any()):
            raise ValueError(f"sigma must be finite and >= 0, got {sigma.tolist()}")
        return sigma.clone()

    @staticmethod
    def _check_omega(omega, device) -> torch.Tensor:
        omega = torch.as_tensor(omega, dtype=torch.float32).to(device)
        if omega.numel() != 1 or not math.isfinite(float(omega)):
            raise ValueError(f"omega must be one finite number, got {omega.tolist()}")
        return omega.reshape(()).clone()

    # --------------------------------------------------------------------------- critics
    @property
    def qvalue_network(self):
        """The Q ensemble the selector scores with (held by reference)."""
        return self._critic[0]

    @property
    def qvalue_params(self) -> TensorDictBase | None:
        """The stacked member parameters for a TensorDictModule critic, if any."""
        return self._critic[1]

    def _critic_device(self) -> torch.device | None:
        net, params = self._critic
        if isinstance(net, QEnsemble):
            return net.device
        if params is not None:
            for leaf in params.values(True, True):
                return leaf.device
        if isinstance(net, torch.nn.Module):
            for p in net.parameters():
                if p.device.type != "meta":
                    return p.device
        return None

    def member_values(
        self,
        observation: torch.Tensor,
        candidates: torch.Tensor,
        anchor: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-member values of candidates, shape ``[m, num_candidates, *batch, 1]``.

        Args:
            observation: ``[*batch, observation_dim]``.
            candidates: ``[num_candidates, *batch, action_dim]``.
            anchor: the action the candidates were drawn around, ``[*batch, action_dim]``.
                With a :class:`~torchrl_o3f.modules.QEnsemble` it enables its exact fast path
                for nearby candidates (:meth:`~torchrl_o3f.modules.QEnsemble.candidate_values`);
                the values are the same with or without it.
        """
        net, params = self._critic
        if isinstance(net, QEnsemble):
            if anchor is not None:
                return net.candidate_values(observation, candidates, anchor)
            return net.values(observation, candidates)
        n_batch = candidates.shape[:-1]
        obs = observation.expand(*n_batch, observation.shape[-1])
        if isinstance(net, TensorDictModuleBase):

            def call(p, obs, act):
                td = TensorDict({self.observation_key: obs, self.action_key: act}, n_batch)
                if p is None:
                    return net(td).get(self.value_key)
                with p.to_module(net):
                    return net(td).get(self.value_key)

            if params is None:
                values = call(None, obs, candidates)
            else:
                values = torch.vmap(call, (0, None, None), randomness="different")(
                    params.detach(), obs, candidates
                )
        else:
            values = net(obs, candidates)
        if values.shape == n_batch + (1,):  # a single critic
            values = values.unsqueeze(0)
        elif values.shape[1:] == n_batch:
            values = values.unsqueeze(-1)
        if values.shape[1:] != n_batch + (1,):
            raise ValueError(
                f"the Q ensemble returned values of shape {tuple(values.shape)} for "
                f"{n_batch[0]} candidates of batch {tuple(n_batch[1:])}: expected "
                f"[m, {', '.join(str(s) for s in n_batch)}, 1] (member dimension leading)"
            )
        return values

    # ------------------------------------------------------------------------- selection
    def sample_candidates(self, action: torch.Tensor) -> torch.Tensor:
        """Draw ``num_candidates`` candidates from N(action, sigma^2), before projection.

        Args:
            action: the policy's action, ``[*batch, action_dim]``.

        Returns:
            Candidates of shape ``[num_candidates, *batch, action_dim]``.
        """
        noise = torch.randn(
            (self.num_candidates, *action.shape),
            generator=self.generator,
            device=action.device,
            dtype=action.dtype,
        )
        return torch.addcmul(action, noise, self.sigma.to(action.dtype))

    def project(self, action: torch.Tensor) -> torch.Tensor:
        """Clamp actions onto the spec's bounds (identity for an unbounded spec).

        A plain clamp against buffers: ``TensorSpec.project`` does the same with several
        times the overhead per call (see the benchmark).
        """
        if self.low is None:
            return action
        return torch.clamp(action, self.low, self.high)

    def score(
        self,
        observation: torch.Tensor,
        candidates: torch.Tensor,
        anchor: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The paper's equation 2, f = mean_j Q_j + omega * std_j Q_j, shape ``[N, *batch]``.

        Args:
            observation: ``[*batch, observation_dim]``.
            candidates: ``[N, *batch, action_dim]`` (any N).
            anchor: optional action the candidates lie around (see :meth:`member_values`).
        """
        values = self.member_values(observation, candidates, anchor).squeeze(-1)
        omega = float(self.omega)
        if omega == 0.0:
            return values.mean(0)
        return values.mean(0) + omega * values.std(0, correction=0)

    @torch.no_grad()
    def select(
        self, observation: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Choose the action to execute.

        Args:
            observation: ``[*batch, observation_dim]``.
            action: the policy's action, ``[*batch, action_dim]``.

        Returns:
            ``(chosen action [*batch, action_dim], chosen score [*batch] or None,
            policy-action score [*batch] or None)``; scores are returned when
            ``diagnostics`` is on.
        """
        candidates = self.project(self.sample_candidates(action))
        extra = self.include_policy_action or self.diagnostics
        if extra:
            candidates = torch.cat([candidates, self.project(action).unsqueeze(0)], 0)
        scores = self.score(observation, candidates, anchor=action)
        ranked = scores if self.include_policy_action or not extra else scores[:-1]
        best, index = ranked.max(0)
        if action.dim() == 1:  # unbatched (a single-env collector): plain indexing is cheaper
            chosen = candidates[index]
        else:
            chosen = candidates.gather(0, index[None, ..., None].expand(1, *action.shape))[0]
        if not self.diagnostics:
            return chosen, None, None
        return chosen, best, scores[-1]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Replace the policy action by the best-scoring candidate (RANDOM exploration only)."""
        expl = exploration_type()
        if expl is not None and expl is not ExplorationType.RANDOM:
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
        device = self._critic_device()
        if device is not None and self.sigma.device != device:
            self.to(device)  # buffers follow the ensemble
        out_device = action.device
        if device is not None and out_device != device:
            obs, action = obs.to(device), action.to(device)
        chosen, score, policy_score = self.select(obs, action)
        tensordict.set(self.action_key, chosen.to(out_device))
        if self.diagnostics:
            tensordict.set("policy_action", action.to(out_device))
            tensordict.set("o3f_score", score.unsqueeze(-1).to(out_device))
            gain = (score - policy_score).unsqueeze(-1)
            tensordict.set("o3f_score_gain", gain.to(out_device))
        return tensordict

    # ------------------------------------------------------------------------- schedules
    def step(self, frames: int = 1) -> None:
        """Advance the schedules by ``frames`` frames (no-op on values without a schedule).

        Args:
            frames: number of frames collected since the last call.
        """
        if frames < 0:
            raise ValueError(f"frames must be >= 0, got {frames}")
        self.frames += frames
        t = int(self.frames)
        if self.sigma_schedule is not None:
            self.sigma = self._check_sigma(self.sigma_schedule(t), self.sigma.device)
        if self.omega_schedule is not None:
            self.omega = self._check_omega(self.omega_schedule(t), self.omega.device)

    def extra_repr(self) -> str:  # noqa: D102
        return (
            f"num_candidates={self.num_candidates}, sigma={self.sigma.tolist()}, "
            f"omega={float(self.omega)}, include_policy_action={self.include_policy_action}, "
            f"action_dim={self.action_dim}"
        )
