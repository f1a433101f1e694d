"""Command line of the dataset tools: ``python -m torchrl_o3f.data {build,train-behavior,...}``."""

from __future__ import annotations

import argparse
import sys

from omegaconf.errors import OmegaConfBaseException

from torchrl_o3f.errors import run_cli


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m torchrl_o3f.data``.

    The package's own errors (a dataset that exists or disagrees, a damaged file, a full disk,
    a task that cannot be built, a bad value) end with their one-line message on stderr and
    status 1, not a traceback (``--debug``: the traceback too); the messages carry the exact
    command to run next.
    """
    return run_cli(_run, argv, also=(FileExistsError, OmegaConfBaseException))


def _run(argv: list[str] | None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the traceback of an error")
    parser = argparse.ArgumentParser(
        prog="python -m torchrl_o3f.data", description=__doc__, parents=[common]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser(
        "build", help="build a task's dataset locally (Minari format)", parents=[common]
    )
    b.add_argument("task", help="a buildable task, e.g. halfcheetah-medium (see `tasks`)")
    b.add_argument("--size", type=int, default=None, help="transitions (default 1000000)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--root", default=None, help="Minari datasets folder (default: Minari's)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    b.add_argument("--no-progress", action="store_true")
    b.add_argument("--threads", type=int, default=1, help="torch threads of the rollout")
    ip = sub.add_parser(
        "install-policy", help="measure a training checkpoint and ship it", parents=[common]
    )
    ip.add_argument(
        "checkpoint", help="a snapshot of train-behavior (<run-dir>/behavior/<name>-step<N>)"
    )
    ip.add_argument("--name", default=None, help="installed name (default: the checkpoint's)")
    ip.add_argument("--episodes", type=int, default=10)
    ip.add_argument("--out-dir", default=None, help="default: the package's policies folder")
    tb = sub.add_parser(
        "train-behavior",
        parents=[common],
        help="train a SAC behavior policy (e.g. medium) with the trainer",
        description="Trains the registered SAC online from scratch and keeps the actor whose "
        "evaluation return is closest to the target. Writes <out-dir>/<family>-<quality>.pt; "
        "the shipped policies are only replaced with --overwrite.",
    )
    tb.add_argument("family", help="halfcheetah, hopper or walker2d")
    tb.add_argument("--quality", default="medium")
    tb.add_argument("--target-return", type=float, default=None)
    tb.add_argument("--tolerance", type=float, default=0.1)
    tb.add_argument("--max-steps", type=int, default=150_000)
    tb.add_argument("--eval-every", type=int, default=5_000)
    tb.add_argument("--eval-episodes", type=int, default=5)
    tb.add_argument("--final-episodes", type=int, default=10)
    tb.add_argument("--warmup-steps", type=int, default=5_000)
    tb.add_argument("--seed", type=int, default=0)
    tb.add_argument(
        "--out-dir",
        default=None,
        help="where to write the policy (required unless --overwrite replaces a shipped one)",
    )
    tb.add_argument("--overwrite", action="store_true", help="replace an existing policy")
    tb.add_argument(
        "--run-dir", default=None, help="the trainer's run (default runs/behavior/<name>-seed<k>)"
    )
    tb.add_argument(
        "--sac",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change the SAC config (its yaml's keys), e.g. --sac num_cells=64",
    )
    tb.add_argument("--threads", type=int, default=1, help="torch threads (1: best on a busy CPU)")
    args = parser.parse_args(argv)
    if args.command == "build":
        import time

        import torch

        from torchrl_o3f.data import build_dataset, read_metadata

        torch.set_num_threads(args.threads)
        start = time.time()
        dataset_id = build_dataset(
            args.task,
            size=args.size,
            seed=args.seed,
            root=args.root,
            progress=not args.no_progress,
            overwrite=args.overwrite,
        )
        record = read_metadata(dataset_id, root=args.root)["o3f_build"]
        print(
            f"built {dataset_id}: {record['size']} steps, {record['episodes']} episodes, "
            f"return {record['return_mean']:.1f} +- {record['return_std']:.1f} "
            f"(refs: random {record['ref_min_score']:.1f}, best {record['ref_max_score']}) "
            f"in {time.time() - start:.0f}s"
        )
    elif args.command == "install-policy":
        import torch

        from torchrl_o3f.data.behavior import install_policy, load_behavior_policy

        torch.set_num_threads(1)
        pt = install_policy(
            args.checkpoint, name=args.name, num_episodes=args.episodes, out_dir=args.out_dir
        )
        info = load_behavior_policy(pt.stem, pt.parent).info
        print(f"installed {pt} (step {info.train_steps}): {info.returns}")
    elif args.command == "train-behavior":
        import yaml

        from torchrl_o3f.trainers.behavior import train_behavior
        from torchrl_o3f.trainers.checkpoint import EXIT_RESUMABLE

        overrides = {}
        for item in args.sac:
            key, sep, value = item.partition("=")
            if not sep or not key:
                parser.error(f"--sac {item!r}: expected KEY=VALUE, e.g. --sac num_cells=64")
            overrides[key] = yaml.safe_load(value)
        path = train_behavior(
            args.family,
            quality=args.quality,
            target_return=args.target_return,
            tolerance=args.tolerance,
            max_steps=args.max_steps,
            eval_every=args.eval_every,
            eval_episodes=args.eval_episodes,
            final_episodes=args.final_episodes,
            warmup_steps=args.warmup_steps,
            seed=args.seed,
            out_dir=args.out_dir,
            overwrite=args.overwrite,
            run_dir=args.run_dir,
            algo_overrides=overrides,
            threads=args.threads,
            log=lambda s: print(s, flush=True),
        )
        if path is None:
            return EXIT_RESUMABLE
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
