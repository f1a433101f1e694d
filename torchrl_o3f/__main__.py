"""Command line of the package.

``python -m torchrl_o3f tasks`` / ``algorithms`` list what is registered;
``python -m torchrl_o3f export RUN --format torchscript|export|onnx --out PATH`` writes a file
that acts without this package (:func:`~torchrl_o3f.trainers.export.export_policy`);
``python -m torchrl_o3f evaluate RUN [--episodes N] [--seed S] [--render-video PATH]`` prints
the run's normalised score as its trainer computes it
(:func:`~torchrl_o3f.trainers.deploy.evaluate_run`).

Each subcommand imports the layer it uses when it runs (``tasks`` needs the task registry only,
``export`` and ``evaluate`` the trainers): listing the tasks does not pay for loading torch's
training stack.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from torchrl_o3f.errors import O3FError, run_cli


def format_tasks(family: str | None = None) -> str:
    """The registered tasks as a plain-text table (name, env id, dataset ids, sigma, score).

    Example:
        >>> print(format_tasks("hopper").splitlines()[0].split()[:3])
        ['task', 'env_id', 'dataset_id']
    """
    from torchrl_o3f.envs import list_tasks

    rows = [("task", "env_id", "dataset_id", "hub_dataset_id", "sigma", "score", "buildable")]
    for t in list_tasks(family):
        rows.append(
            (
                t.name,
                t.env_id,
                t.dataset_id,
                t.hub_dataset_id or "-",
                f"{t.sigma:g}",
                t.score,
                "yes" if t.buildable else "no",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def format_algorithms(task: str | None = None) -> str:
    """The registered algorithms with their key defaults (for ``task``'s family) as a table.

    Example:
        >>> print(format_algorithms().splitlines()[0].split()[:3])
        ['algorithm', 'batch', 'lr']
    """
    from torchrl_o3f.objectives import algo_config, list_algorithms

    rows = [("algorithm", "batch", "lr", "nets", "m", "utd", "own hyper-parameters", "about")]
    for algo in list_algorithms():
        cfg = algo_config(algo.name, task=task)
        lrs = sorted(set(cfg.lr.values()))
        own = ", ".join(
            f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in cfg.hyperparameters().items()
            if isinstance(v, (int, float, str)) and not isinstance(v, bool)
        )
        rows.append(
            (
                algo.name,
                str(cfg.batch_size),
                "/".join(f"{v:g}" for v in lrs),
                f"{cfg.depth}x{cfg.num_cells}",
                str(cfg.num_qvalue),
                f"{cfg.utd_ratio}",
                own,
                algo.description,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for r in rows:
        cells = "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths))
        lines.append(f"{cells}  {r[-1]}".rstrip())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m torchrl_o3f`` and the ``torchrl-o3f`` script.

    The package's errors (an unknown task or family) end with their one-line message on stderr
    and status 1 (``--debug``: the traceback too).
    """
    return run_cli(_run, argv)


def _run(argv: list[str]) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the traceback of an error")
    parser = argparse.ArgumentParser(
        prog="python -m torchrl_o3f", description=__doc__, parents=[common]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    tasks = sub.add_parser("tasks", help="list the registered tasks", parents=[common])
    tasks.add_argument("--family", default=None, help="only this family (e.g. hopper)")
    algos = sub.add_parser("algorithms", help="list the registered algorithms", parents=[common])
    algos.add_argument("--task", default=None, help="values for this task's family")
    export = sub.add_parser(
        "export",
        help="write a run's policy as a file that acts without torchrl-o3f",
        parents=[common],
    )
    export.add_argument("run", help="a run directory, its policy.pt or a checkpoint")
    export.add_argument(
        "--format",
        default="torchscript",
        help="torchscript (.pt), export (torch.export .pt2) or onnx (.onnx); default torchscript",
    )
    export.add_argument("--out", required=True, help="the file to write (its folder must exist)")
    evaluate = sub.add_parser(
        "evaluate",
        help="the normalised score of a run's policy, as its trainer computes it",
        parents=[common],
    )
    evaluate.add_argument("run", help="a run directory, its policy.pt or a checkpoint")
    evaluate.add_argument(
        "--episodes", type=int, default=None, help="episodes (default: the run's eval_episodes)"
    )
    evaluate.add_argument(
        "--seed", type=int, default=None, help="env seed (default: the trainer's, seed + 10000)"
    )
    evaluate.add_argument(
        "--render-video", default=None, metavar="PATH", help="also film one episode (.mp4, .gif)"
    )
    args = parser.parse_args(argv)
    if args.command == "tasks":
        print(format_tasks(args.family))
    elif args.command == "algorithms":
        print(format_algorithms(args.task))
    elif args.command == "export":
        from torchrl_o3f.trainers.export import export_policy

        _check_run(args.run)
        path = export_policy(args.run, args.out, format=args.format)
        print(f"wrote {path} ({args.format})")
    elif args.command == "evaluate":
        print(format_evaluation(args.run, args.episodes, args.seed, args.render_video))
    return 0


def _check_run(run: str) -> None:
    if not Path(run).exists():
        raise O3FError(f"no run at {run}: give a run directory, its policy.pt or a checkpoint")


def format_evaluation(
    run: str, episodes: int | None = None, seed: int | None = None, video: str | None = None
) -> str:
    """What ``python -m torchrl_o3f evaluate`` prints: the normalised score (printed first).

    Args:
        run: a run directory, its ``policy.pt`` or a checkpoint.
        episodes: evaluation episodes (``None``: the run's ``budget.eval_episodes``).
        seed: the env seed (``None``: the trainer's evaluation seed).
        video: film one episode (with ``seed``) into this file as well; the score line is
            printed before the filming starts.

    Raises:
        O3FError: for a missing run, a run that cannot be rebuilt, or a video that cannot be
            written (the message names the package to install).

    Example:
        >>> print(format_evaluation("runs/my-iql", episodes=10))  # doctest: +SKIP
        normalised score 12.3 +- 0.4 (return 456.7 +- 8.9, mean length 120, 10 episodes)
    """
    from torchrl_o3f.trainers.deploy import evaluate_run, render_episode, video_writer

    _check_run(run)
    if video is not None:
        video_writer(video)  # a missing writer is refused before the episodes run
    res = evaluate_run(run, num_episodes=episodes, seed=seed)
    line = (
        f"normalised score {res['score']:.6g} +- {res['score_std']:.6g} (return "
        f"{res['return']:.6g} +- {res['return_std']:.6g}, mean length {res['length']:.6g}, "
        f"{res['eval_episodes']} episodes)"
    )
    if video is None:
        return line
    print(line, flush=True)  # the score stands even when the filming fails
    filmed = render_episode(run, video, seed=seed)
    return f"wrote {video}: one episode, return {filmed['return']:.6g}, {filmed['length']} steps"


if __name__ == "__main__":
    sys.exit(main())
