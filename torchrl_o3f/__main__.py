"""Command line: ``python -m torchrl_o3f tasks`` / ``algorithms`` list what is registered."""

from __future__ import annotations

import argparse
import sys

from torchrl_o3f.errors import run_cli


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
    args = parser.parse_args(argv)
    if args.command == "tasks":
        print(format_tasks(args.family))
    elif args.command == "algorithms":
        print(format_algorithms(args.task))
    return 0


if __name__ == "__main__":
    sys.exit(main())
