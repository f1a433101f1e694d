"""The paper's claims as data, and the command that reruns each experiment at its scale."""

from __future__ import annotations

from dataclasses import dataclass

from torchrl_o3f.analysis.measures import METRICS


@dataclass(frozen=True)
class Claim:
    """A pairwise claim of the paper: ``better`` measures above ``worse`` (or ``equal``).

    Attributes:
        text: the claim as the paper makes it.
        better: the method claimed better (or one side of an equality).
        worse: the other method.
        kind: ``"better"`` or ``"equal"``.
        tasks: the tasks the claim is about (``None``: every task of the study).
        against: when given, ``worse`` is only a label and the other side is, on each task, the
            one of these methods with the highest mean of the measure tested over seeds (the
            paper's "next best" baseline). Choosing it on the same runs favours the baselines.
        metric: the measure of :data:`METRICS` the claim is about; its verdict is the claim's.
        secondary: a second measure, declared before any run, tested the same way; its verdict
            is shown next to the claim's, and where the two differ the claim is flagged
            (``None``: none).
        paper_gain: the paper's own effect, relative to ``worse`` (``0.58`` for +58%); it
            sets the effect the seeds needed are computed for.
        paper_value: the paper's own value of ``metric`` for ``better`` (``40.0`` for 40x
            over-estimation); the study's interval for ``better`` is set against it.

    Raises:
        ValueError: for an unknown ``kind``, ``metric`` or ``secondary``.

    Example:
        >>> Claim("O3F beats noise", "o3f_lapo", "gaussian_lapo").metric
        'final'
        >>> Claim("O3F beats the best", "o3f_iql", "best baseline", against=("iql", "cql")).against
        ('iql', 'cql')
        >>> Claim("SAC over-estimates", "cql_sac", "cql", metric="q_peak", secondary=None).metric
        'q_peak'
    """

    text: str
    better: str
    worse: str
    kind: str = "better"
    tasks: tuple[str, ...] | None = None
    against: tuple[str, ...] = ()
    metric: str = "final"
    secondary: str | None = "online_mean"
    paper_gain: float | None = None
    paper_value: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("better", "equal"):
            raise ValueError(f"kind must be 'better' or 'equal', not {self.kind!r}")
        for name in (self.metric, self.secondary):
            if name is not None and name not in METRICS:
                raise ValueError(f"unknown metric {name!r}: one of {', '.join(METRICS)}")


CLAIMS: dict[str, list[Claim]] = {
    "fig5_lapo": [
        Claim(
            "O3F-LAPO beats LAPO with Gaussian noise on halfcheetah-medium (+58%)",
            "o3f_lapo",
            "gaussian_lapo",
            tasks=("halfcheetah-medium",),
            paper_gain=0.58,
        )
    ],
    "fig5_exploration": [
        Claim(
            "O3F-IQL equals IQL with Gaussian noise on locomotion",
            "o3f_iql",
            "gaussian_iql",
            kind="equal",
            tasks=("halfcheetah-medium", "hopper-medium"),
        )
    ],
    "fig4_baselines": [
        Claim("O3F beats IQL fine-tuning", "o3f_iql", "iql", paper_gain=0.56),
        Claim("O3F beats CQL fine-tuning", "o3f_iql", "cql"),
        Claim("O3F beats AWAC fine-tuning", "o3f_iql", "awac"),
        Claim(
            "O3F >= every baseline on 11 of 12 tasks, +56% over the next best on average",
            "o3f_iql",
            "the best of iql, cql, awac per task",
            against=("iql", "cql", "awac"),
            paper_gain=0.56,
        ),
    ],
    "fig2_switch": [
        Claim("Switching CQL -> SAC at the boundary is worse than CQL", "cql", "cql_sac"),
        Claim(
            "Switching CQL -> SAC makes the critic over-estimate: its peak (the paper: ~40x)",
            "cql_sac",
            "cql",
            metric="q_peak",
            secondary=None,
            paper_value=40.0,
        ),
        Claim(
            "Switching CQL -> SAC makes the critic over-estimate from the start (the paper: ~40x "
            "for several thousand steps)",
            "cql_sac",
            "cql",
            metric="q_early",
            secondary=None,
            paper_value=40.0,
        ),
        Claim(
            "Switching CQL -> SAC drops the score right after the switch (the paper: it takes "
            "~15k steps to recover)",
            "cql",
            "cql_sac",
            metric="switch_change",
            secondary=None,
        ),
    ],
    "fig3_loosening": [
        Claim("Loosening CQL abruptly does not help", "cql", "cql_abrupt", kind="equal"),
        Claim("Loosening CQL linearly does not help", "cql", "cql_linear", kind="equal"),
        Claim("Loosening AWAC abruptly does not help", "awac", "awac_abrupt", kind="equal"),
        Claim("Loosening AWAC linearly does not help", "awac", "awac_linear", kind="equal"),
        Claim("Loosening IQL abruptly does not help", "iql", "iql_abrupt", kind="equal"),
        Claim("Loosening IQL linearly does not help", "iql", "iql_linear", kind="equal"),
    ],
    "fig6_omega": [
        Claim(
            "omega = 1 hurts on halfcheetah-medium",
            "o3f_iql",
            "o3f_iql_omega1",
            tasks=("halfcheetah-medium",),
        )
    ],
}
"""The paper's claims each experiment tests (see ``docs/results.md``)."""


PAPER_SCALE = (
    "python recipes/sweep.py experiment={experiment} budget=paper device=cuda "
    "hydra/launcher=submitit_slurm"
)
"""The command that reruns an experiment at the paper's scale (add the cluster's own
``hydra.launcher.*`` keys, see docs/sweeps.md)."""


PAPER_OVERRIDES: dict[str, str] = {
    # fig5_lapo.yaml sets budget.online_frames and algo.utd_ratio for a CPU: undo both
    "fig5_lapo": "budget.online_frames=1000000 algo.utd_ratio=20",
}
"""Extra overrides of :data:`PAPER_SCALE` where an experiment's yaml cuts the budget for a CPU."""


def paper_command(experiment: str) -> str:
    """The one command that reruns ``experiment`` at the paper's scale on a SLURM cluster.

    Example:
        >>> paper_command("fig5_lapo").split()[-1]
        'algo.utd_ratio=20'
    """
    extra = PAPER_OVERRIDES.get(experiment)
    command = PAPER_SCALE.format(experiment=experiment)
    return f"{command} {extra}" if extra else command
