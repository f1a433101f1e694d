"""Eager against compiled updates of every algorithm, and the recipe end to end, compile on/off.

Section ``updates``: for each registered algorithm, the trainer's ``Agent`` with its yaml's
networks (HalfCheetah shapes: 17 observations, 6 actions) updated eagerly (torch's fused Adam),
through the captured step compiled with ``torch.compile`` and, on CUDA, also replayed as a CUDA
graph; the peer is torchrl's own ``IQLLoss`` (5 critics) in torchrl's sota-implementations
style (the update function compiled, then ``CudaGraphModule`` on CUDA). LAPO's UTD-20 online
step is 20 critic-only updates and one actor update. Variants are timed in interleaved rounds
(medians); the first calls (compilation, graph capture) are timed apart as the warm-up.

Section ``recipe``: the default recipe (O3F-IQL; ``exploration.mode=none`` beside it) through
the trainer at a short budget, compile off and on: offline updates/s and online frames/s as the
trainer logs them (medians of its log windows after the first, which holds the compilation).

It prints one markdown table (``--out FILE`` writes it too), ending with a paper-budget
projection (1M offline updates + 1M online frames; O3F-LAPO at 20 critic updates per frame).

    python benchmarks/bench_compile.py                        # CPU, both sections
    python benchmarks/bench_compile.py --device cuda          # adds compile + cudagraphs
    python benchmarks/bench_compile.py --quick                # a smoke run of the script
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from tensordict import TensorDict
from tensordict.nn import CudaGraphModule
from torch import nn
from torchrl.data import Bounded
from torchrl.modules import MLP, ValueOperator
from torchrl.objectives import IQLLoss, SoftUpdate

from torchrl_o3f.modules.actors import make_iql_actor, make_value_network
from torchrl_o3f.objectives import algo_config, list_algorithms
from torchrl_o3f.trainers import BUDGETS, OfflineOnlineTrainer, TrainerConfig
from torchrl_o3f.trainers.agents import build_agent

OBS, ACT = 17, 6
TASK = "halfcheetah-medium"


def make_batches(n: int, batch_size: int, device) -> list[TensorDict]:
    """``n`` random TED batches on ``device`` (the update's cost does not depend on values)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        term = torch.rand(batch_size, 1, generator=g) < 0.01
        td = TensorDict(
            {
                "observation": torch.randn(batch_size, OBS, generator=g),
                "action": torch.rand(batch_size, ACT, generator=g) * 2 - 1,
                "next": {
                    "observation": torch.randn(batch_size, OBS, generator=g),
                    "reward": torch.randn(batch_size, 1, generator=g),
                    "done": term.clone(),
                    "terminated": term,
                },
            },
            batch_size=[batch_size],
        )
        out.append(td.to(device))
    return out


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def variants(device) -> dict[str, dict]:
    out = {"eager": {}, "compile": {"compile": True}}
    if torch.device(device).type == "cuda":
        out["compile + cudagraphs"] = {"compile": True, "cudagraphs": True}
    return out


def agent_step(algo: str, device, batches, *, utd: int = 1, **capture):
    """A function doing one UTD step of ``algo`` (``utd`` updates, the last with the actor)."""
    cfg = algo_config(algo, task=TASK)
    data = torch.cat(batches).cpu()
    agent = build_agent(
        cfg,
        Bounded(-1.0, 1.0, shape=(ACT,)),
        observation_dim=OBS,
        data=data,
        device=device,
        **capture,
    )

    def step(td):
        for u in range(utd):
            agent.update(td, update_actor=u == utd - 1)

    return step


def torchrl_iql_step(device, *, compile: bool, cudagraphs: bool):
    """torchrl's IQLLoss (5 critics) updated as torchrl's sota-implementations do."""
    spec = Bounded(-1.0, 1.0, shape=(ACT,), device=device)
    actor = make_iql_actor(OBS, spec, num_cells=256)
    value = make_value_network(OBS, num_cells=256)
    q = ValueOperator(
        MLP(in_features=OBS + ACT, out_features=1, num_cells=[256, 256], activation_class=nn.ReLU),
        in_keys=["observation", "action"],
    )
    loss = IQLLoss(actor, q, value, num_qvalue_nets=5, loss_function="l2").to(device)
    loss.make_value_estimator(gamma=0.99)
    updater = SoftUpdate(loss, tau=0.005)
    capturable = cudagraphs and not compile
    lr = torch.tensor(3e-4, device=device) if cudagraphs else 3e-4
    opt = torch.optim.Adam(loss.parameters(), lr=lr, capturable=capturable)

    def update(td):
        opt.zero_grad(set_to_none=True)
        out = loss(td)
        (out["loss_actor"] + out["loss_qvalue"] + out["loss_value"]).backward()
        opt.step()
        updater.step()
        return out.detach()

    fn = update
    if compile:
        fn = torch.compile(fn)
    if cudagraphs:
        fn = CudaGraphModule(fn, in_keys=[], out_keys=[], warmup=5)
    return fn


def time_rounds(fns: dict, batches, *, rounds: int, steps: int, device) -> dict[str, dict]:
    """Warm-up (first ``5`` calls) then interleaved rounds of ``steps`` calls: seconds per call."""
    res = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        for td in batches[:5]:
            fn(td.copy())  # a fresh (shallow) batch per call, as sampling gives: losses write
            # diagnostics into their input, and a batch seen again would look new to dynamo
        sync(device)
        res[name] = {"warmup_s": time.perf_counter() - t0, "times": []}
    for r in range(rounds):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            for i in range(steps):
                fn(batches[(r * steps + i) % len(batches)].copy())
            sync(device)
            res[name]["times"].append((time.perf_counter() - t0) / steps)
    for v in res.values():
        v["s_per_call"] = statistics.median(v["times"])
    return res


Row = tuple[str, str, str, str, str, str]  # measure, variant, rate, time, vs eager, warm-up


def rows_of(measure: str, res: dict, unit: str, ms_unit: str) -> tuple[list[Row], dict]:
    """Table rows of one timed group (the first variant is the baseline) and its rates."""
    base = next(iter(res.values()))["s_per_call"]
    rows, rates = [], {}
    for name, r in res.items():
        t = r["s_per_call"]
        rates[name] = 1 / t
        rows.append(
            (
                measure,
                name,
                f"{1 / t:.1f} {unit}",
                f"{1000 * t:.2f} {ms_unit}",
                f"{base / t:.2f}x",
                f"{r['warmup_s']:.1f}",
            )
        )
    return rows, rates


def section_updates(args) -> tuple[list[Row], dict]:
    rows, rates = [], {}
    cuda = torch.device(args.device).type == "cuda"
    for algo in args.algos.split(","):
        cfg = algo_config(algo, task=TASK)
        batches = make_batches(8, cfg.batch_size, args.device)
        fns = {
            k: agent_step(algo, args.device, batches, **v) for k, v in variants(args.device).items()
        }
        if algo == "iql":
            fns["torchrl IQLLoss, compile"] = torchrl_iql_step(
                args.device, compile=True, cudagraphs=False
            )
            if cuda:
                fns["torchrl IQLLoss, compile + cudagraphs"] = torchrl_iql_step(
                    args.device, compile=True, cudagraphs=True
                )
        res = time_rounds(fns, batches, rounds=args.rounds, steps=args.steps, device=args.device)
        got, r = rows_of(f"{algo} update", res, "updates/s", "ms")
        rows += got
        rates.update({(algo, k): v for k, v in r.items()})
    if "lapo" not in args.algos.split(","):
        return rows, rates
    # LAPO's online step: 20 critic updates and one actor update per frame
    cfg = algo_config("lapo", task=TASK)
    batches = make_batches(8, cfg.batch_size, args.device)
    fns = {
        k: agent_step("lapo", args.device, batches, utd=20, **v)
        for k, v in variants(args.device).items()
    }
    res = time_rounds(
        fns, batches, rounds=args.rounds, steps=max(1, args.steps // 10), device=args.device
    )
    got, r = rows_of("LAPO UTD-20 online step", res, "steps/s", "ms")
    rows += got
    rates.update({("lapo_utd20", k): v for k, v in r.items()})
    return rows, rates


def recipe_rates(out: Path, args, *, mode: str, compile: bool) -> dict[str, float]:
    """Offline updates/s and online frames/s of a short O3F-IQL run (the trainer's own logs)."""
    budget = dataclasses.replace(
        BUDGETS["smoke"],
        offline_steps=args.recipe_steps,
        online_frames=args.recipe_steps,
        eval_every=10 * args.recipe_steps,
        checkpoint_every=10 * args.recipe_steps,
        log_every=max(10, args.recipe_steps // 6),
        dataset_size=20_000,
        max_episode_steps=1000,
    )
    cfg = TrainerConfig(
        task=TASK,
        algo="iql",
        budget=budget,
        output_dir=str(out),
        progress=False,
        device=args.device,
        dataset_root=args.dataset_root,
    )
    cfg.exploration.mode = mode
    cfg.compile.compile = compile
    cfg.compile.cudagraphs = compile and torch.device(args.device).type == "cuda"
    cfg.logger.backend = "csv"
    OfflineOnlineTrainer(cfg).train()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    offline = [
        r["train/updates_per_s"]
        for r in rows
        if "online/frames_per_s" not in r and "train/updates_per_s" in r
    ]
    online = [r["online/frames_per_s"] for r in rows if "online/frames_per_s" in r]
    return {
        "offline_updates_per_s": statistics.median(offline[1:] or offline),
        "online_frames_per_s": statistics.median(online[1:] or online),
    }


def section_recipe(args) -> tuple[list[Row], dict]:
    """Compile off and on, alternated ``--recipe-repeats`` times (medians: the machine drifts)."""
    rows, rates = [], {}
    keys = ("offline_updates_per_s", "online_frames_per_s")
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("o3f", "none"):
            runs = {False: [], True: []}
            for rep in range(args.recipe_repeats):
                order = (False, True) if rep % 2 == 0 else (True, False)
                for compile in order:
                    out = Path(tmp) / f"{mode}-{compile}-{rep}"
                    runs[compile].append(recipe_rates(out, args, mode=mode, compile=compile))
            for compile, got in runs.items():
                rates[(mode, compile)] = {k: statistics.median(r[k] for r in got) for k in keys}
            off, on = rates[(mode, False)], rates[(mode, True)]
            for key, what, unit in zip(
                keys, ("offline phase", "online phase"), ("updates/s", "frames/s")
            ):
                for compile, r in (("compile off", off), ("compile on", on)):
                    rows.append(
                        (
                            f"recipe {what}, exploration.mode={mode}",
                            compile,
                            f"{r[key]:.1f} {unit}",
                            f"{1000 / r[key]:.2f} ms",
                            f"{r[key] / off[key]:.2f}x",
                            "-",
                        )
                    )
    return rows, rates


def projection(updates: dict, recipe: dict, device) -> list[Row]:
    """Hours of a paper-budget run from the measured rates (1M updates + 1M frames)."""
    best = "compile + cudagraphs" if torch.device(device).type == "cuda" else "compile"
    rows: list[Row] = []
    if recipe:
        r = recipe[("o3f", True)]
        hours = (1e6 / r["offline_updates_per_s"] + 1e6 / r["online_frames_per_s"]) / 3600
        rows.append(
            ("paper-budget O3F-IQL run (projected)", "compile on", f"{hours:.1f} h", "-", "-", "-")
        )
    if ("lapo", best) in updates and ("iql", best) in updates and recipe:
        r = recipe[("o3f", True)]
        # acting per frame: the recipe's online frame time less its one IQL update
        acting = max(0.0, 1 / r["online_frames_per_s"] - 1 / updates[("iql", best)])
        frame = 1 / updates[("lapo_utd20", best)] + acting
        hours = (1e6 / updates[("lapo", best)] + 1e6 * frame) / 3600
        rows.append(
            ("paper-budget O3F-LAPO run, UTD 20 (projected)", best, f"{hours:.1f} h", "-", "-", "-")
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sections", default="updates,recipe")
    parser.add_argument(
        "--algos", default=",".join(a.name for a in list_algorithms()), help="comma-separated"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="updates per variant per round")
    parser.add_argument("--recipe-steps", type=int, default=600)
    parser.add_argument("--recipe-repeats", type=int, default=2, help="runs per arm, alternated")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--dataset-root", default=None, help="where datasets are built")
    parser.add_argument("--quick", action="store_true", help="a smoke run of the script")
    parser.add_argument("--out", default=None, help="also write the table to this file")
    parser.add_argument("--tests", default="", help="a first row: the CUDA tests' summary")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.steps, args.recipe_steps, args.recipe_repeats = 1, 2, 60, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    sections = args.sections.split(",")
    name = torch.cuda.get_device_name() if torch.device(args.device).type == "cuda" else "CPU"
    rows: list[Row] = []
    if args.tests:
        rows.append(("CUDA-marked tests", "-", args.tests, "-", "-", "-"))
    updates, recipe = {}, {}
    if "updates" in sections:
        got, updates = section_updates(args)
        rows += got
    if "recipe" in sections:
        got, recipe = section_recipe(args)
        rows += got
    rows += projection(updates, recipe, args.device)
    text = [
        f"{name}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"{args.rounds} rounds of {args.steps} updates; recipe: {args.recipe_steps} updates + "
        f"{args.recipe_steps} frames, halfcheetah-medium",
        "",
        "| measure | variant | rate | time | vs first variant | warm-up s |",
        "|---|---|---|---|---|---|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]
    print("\n".join(text))
    if args.out:
        Path(args.out).write_text("\n".join(text) + "\n")


if __name__ == "__main__":
    main()
