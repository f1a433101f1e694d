"""Study analysis: the runs of a sweep into a tidy table, rliable statistics and figures.

    python -m torchrl_o3f.analysis studies/study --experiment fig5_exploration --out <dir>
    python -m torchrl_o3f.analysis studies/study --all --out <dir>   # every experiment, claims.md
    python -m torchrl_o3f.analysis <run dir> --run --out <dir>        # one run's record, run.md

reads every run under the study folder (its ``config.yaml``, ``evaluations.csv`` and
``metrics.jsonl``; the shared offline phases are skipped), and writes to ``--out``:

- ``tidy.csv``: one row per evaluation: run, task, method, seed, phase, step (offline
  gradient steps in the offline phase, online env frames in the online phase), score
  (D4RL-normalised: 0 random, 100 expert; mean over the evaluation episodes), its spread
  over those episodes (score_std), return, eval_episodes;
- ``final_scores.csv``: per run, the score after the offline phase and after the online one;
- ``summary.md``: per method and task the mean final score over seeds; across tasks the IQM and
  mean with stratified-bootstrap 95% confidence intervals, and the paper's claims that the
  experiment tests, each on its measure of :data:`METRICS` (the final score unless it names
  another) and on its pre-declared second measure (the mean online score), with the probability
  of improvement and the verdict its interval gives;
- ``summary.md`` also holds P(X > Y) between every two methods of the experiment
  (:func:`pairwise_improvement`) and marks each cell with fewer than :data:`MIN_SEEDS` seeds;
- figures (PNG, PDF and SVG of each): normalised-score curves over online frames per task (mean
  over seeds, each seed faintly behind it, 95% bootstrap band), the aggregate intervals,
  performance profiles and, where logged, the critic's over-estimation of the Monte-Carlo
  return per online episode (the paper's Figure 2); each method has one label (its name in the
  sweep) and one colour in all of them, scores are on the 0-100 scale, and a note under a
  figure names its cells with fewer than :data:`MIN_SEEDS` seeds.

With ``--all``, ``claims.md`` gathers every claim with both measures, a flag where their verdicts
differ, and its power: the smallest effect its seeds detect and the seeds per side the paper's
own effect needs (:func:`detectable_effect`, :func:`seeds_needed`).

With ``--run`` the folder is one finished run (e.g. the default recipe's ``outputs/...``):
:func:`report_run` copies its record next to a ``run.md`` table of its evaluations.

Every estimate and interval comes from ``rliable`` (stratified bootstrap, IQM, probability of
improvement, performance profiles); the power of a claim is the closed-form normal approximation
of a two-sample difference of means (:func:`detectable_effect`).
"""

from torchrl_o3f.analysis.claims import CLAIMS, PAPER_SCALE, Claim, paper_command
from torchrl_o3f.analysis.cli import main
from torchrl_o3f.analysis.measures import EARLY_EPISODES, METRICS, Metric, online_mean
from torchrl_o3f.analysis.report import RUN_RECORD, analyse, analyse_all, report_run
from torchrl_o3f.analysis.runs import RunRecord, collect_runs, experiment_grid, pairing, tidy_rows
from torchrl_o3f.analysis.stats import (
    ALPHA,
    MIN_SEEDS,
    POWER,
    detectable_effect,
    pairwise_improvement,
    score_matrix,
    seeds_needed,
)

__all__ = [
    "ALPHA",
    "CLAIMS",
    "EARLY_EPISODES",
    "METRICS",
    "MIN_SEEDS",
    "PAPER_SCALE",
    "POWER",
    "RUN_RECORD",
    "Claim",
    "Metric",
    "RunRecord",
    "analyse",
    "analyse_all",
    "collect_runs",
    "detectable_effect",
    "experiment_grid",
    "main",
    "online_mean",
    "pairing",
    "pairwise_improvement",
    "paper_command",
    "report_run",
    "score_matrix",
    "seeds_needed",
    "tidy_rows",
]
