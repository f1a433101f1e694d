"""Command line: ``python -m torchrl_o3f tasks`` lists the registered tasks."""

from __future__ import annotations

import argparse
import sys


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


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m torchrl_o3f`` and the ``torchrl-o3f`` script."""
    parser = argparse.ArgumentParser(prog="python -m torchrl_o3f", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    tasks = sub.add_parser("tasks", help="list the registered tasks")
    tasks.add_argument("--family", default=None, help="only this family (e.g. hopper)")
    args = parser.parse_args(argv)
    if args.command == "tasks":
        print(format_tasks(args.family))
    return 0


if __name__ == "__main__":
    sys.exit(main())
