"""Speed of O3F action selection and of the online phase it runs in, against peers, in one run.

Part 1, selection latency per environment step (sample N candidates around the policy action,
clamp them onto the spec, score them with an m-member ensemble of 2x256 critics, take the
argmax; HalfCheetah shapes: observation 17, action 6), for each cell ``N x m x env batch``
(default ``100x5x1``, the paper's setting with one env):

* ``o3f``: ``O3FActionSelector(QEnsemble)``, its ``forward`` on a tensordict after the policy
  wrote its action, as a collector calls it;
* ``o3f from_loss``: ``O3FActionSelector.from_loss(IQLLoss)``, the selector on torchrl's
  ``IQLLoss(num_qvalue_nets=m)`` critic through its stacked params (``StackedCritic``);
* ``torchrl IQLLoss vmap``: what a torchrl user writes by hand: that critic evaluated over its
  stacked params with ``torch.vmap`` + ``TensorDict.to_module``;
* ``naive loop``: a Python loop over candidates and members, each member an ``nn.Sequential``.

All hold the same weights and the script checks that they pick the same candidate from the
same draws before timing. Calls run in rounds of one call per method in a fresh random order,
so that machine drift hits all alike; a run of a cell gives each method the median over its
calls, and the cell is each method's fastest of ``--repeats`` runs (other processes' load
slows a run, never speeds it up).

Part 2, the recipe's online phase (O3F-IQL on halfcheetah-medium, the default recipe's
networks: 2x256, m = 5, N = 100, batch 256, one update per frame): online frames/s including
the updates, from ``OfflineOnlineTrainer`` runs (a short offline phase first), alternating
``exploration.mode=o3f`` and ``exploration.mode=none`` in one process; each run's rate is read
from its ``metrics.jsonl`` (``online/frames_per_s``, the first logged window left out as
warm-up).

Run (2 threads, as everywhere in the project)::

    python benchmarks/bench_selector.py                     # both parts, ~2 minutes on 2 cores
    python benchmarks/bench_selector.py --cells 10x5x1 100x5x1 1000x5x1 100x5x16 --skip-online
    python benchmarks/bench_selector.py --device cuda
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
from tensordict import TensorDict
from tensordict.nn import NormalParamExtractor, TensorDictModule
from torch import nn
from torchrl.data import Bounded
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.modules import MLP, ProbabilisticActor, TanhNormal, ValueOperator
from torchrl.objectives import IQLLoss

from torchrl_o3f.modules import O3FActionSelector, QEnsemble, make_mlp

OBS, ACT, CELLS = 17, 6, 256


def naive_members(q: QEnsemble) -> list[nn.Sequential]:
    """The ensemble's members as plain nn.Sequential MLPs (same weights)."""
    members = []
    for i in range(q.num_members):
        layers = []
        for j, (w, b) in enumerate(zip(q.weights, q.biases)):
            lin = nn.Linear(w.shape[1], w.shape[2], device=w.device)
            with torch.no_grad():
                lin.weight.copy_(w[i].T)
                lin.bias.copy_(b[i, 0])
            layers.append(lin)
            if j < len(q.weights) - 1:
                layers.append(nn.ReLU())
        members.append(nn.Sequential(*layers))
    return members


def naive_select(members, obs, action, sigma, num_candidates, low, high, generator):
    """A Python loop over candidates and members (batched over envs only)."""
    noise = torch.randn((num_candidates, *action.shape), generator=generator, device=action.device)
    best_score = torch.full(action.shape[:-1], -float("inf"), device=action.device)
    best = action.clone()
    for c in range(num_candidates):
        cand = torch.clamp(action + sigma * noise[c], low, high)
        x = torch.cat([obs, cand], -1)
        score = sum(member(x) for member in members).squeeze(-1) / len(members)
        better = score > best_score
        best_score = torch.where(better, score, best_score)
        best = torch.where(better.unsqueeze(-1), cand, best)
    return best


def torchrl_iql_loss(q: QEnsemble) -> IQLLoss:
    """IQLLoss(num_qvalue_nets=m) with the QEnsemble's weights copied into its stacked params."""
    actor = ProbabilisticActor(
        TensorDictModule(
            nn.Sequential(make_mlp(OBS, 2 * ACT, num_cells=32), NormalParamExtractor()),
            in_keys=["observation"],
            out_keys=["loc", "scale"],
        ),
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
    )
    qnet = ValueOperator(
        MLP(OBS + ACT, 1, num_cells=[CELLS, CELLS], activation_class=nn.ReLU),
        in_keys=["observation", "action"],
    )
    value = ValueOperator(MLP(OBS, 1, num_cells=[32, 32]), in_keys=["observation"])
    loss = IQLLoss(actor, qnet, value, num_qvalue_nets=q.num_members).to(q.device)
    params = loss.qvalue_network_params
    linear_keys = sorted(
        {k[:-1] for k in params.keys(True, True) if k[-1] == "weight"}, key=lambda k: int(k[-1])
    )
    with torch.no_grad():
        for key, w, b in zip(linear_keys, q.weights, q.biases):
            params[(*key, "weight")].copy_(w.mT)
            params[(*key, "bias")].copy_(b.squeeze(1))
    return loss


def torchrl_select(loss, obs, action, sigma, num_candidates, low, high, generator):
    """What a torchrl user writes: vmap the loss's critic over its stacked params."""
    noise = torch.randn((num_candidates, *action.shape), generator=generator, device=action.device)
    cands = torch.clamp(action + sigma * noise, low, high)
    batch = cands.shape[:-1]
    td = TensorDict({"observation": obs.expand(*batch, OBS), "action": cands}, batch)
    net = loss.qvalue_network

    def call(p, td):
        with p.to_module(net):
            return net(td.copy())["state_action_value"]

    values = torch.vmap(call, (0, None))(loss.qvalue_network_params.data, td)
    index = values.mean(0).squeeze(-1).argmax(0)
    return cands.gather(0, index[None, ..., None].expand(1, *action.shape)).squeeze(0)


def interleaved(fns: dict, budget_s: float, sync=None) -> dict:
    """Rounds of one call per method in a fresh random order each round; each method gets
    calls until its time budget (5 to 300); medians in ms and the number of calls."""
    for f in fns.values():  # warm-up
        f()
        f()
    calls = {}
    for k, f in fns.items():
        t0 = time.perf_counter()
        f()
        calls[k] = int(min(300, max(5, budget_s / max(time.perf_counter() - t0, 1e-6))))
    times = {k: [] for k in fns}
    order, names = random.Random(0), list(fns)
    for r in range(max(calls.values())):
        order.shuffle(names)
        for k in names:
            if r < calls[k]:
                t0 = time.perf_counter()
                fns[k]()
                if sync is not None:
                    sync()
                times[k].append(time.perf_counter() - t0)
    return {k: (statistics.median(v) * 1e3, len(v)) for k, v in times.items()}


def measure_cell(n: int, m: int, b: int, device, budget_s: float) -> dict:
    """One latency cell: every method on the same weights, checked, then interleaved."""
    spec = Bounded(-1.0, 1.0, shape=(ACT,), device=device)
    low, high = spec.space.low, spec.space.high
    shape = (b,) if b > 1 else ()
    torch.manual_seed(0)
    q = QEnsemble(OBS, ACT, num_members=m, num_cells=CELLS, device=device)
    obs = torch.randn(*shape, OBS, device=device)
    action = torch.rand(*shape, ACT, device=device) * 2 - 1
    loss = torchrl_iql_loss(q)
    kwargs = {"num_candidates": n, "sigma": 0.2}
    sel = O3FActionSelector(q, spec, generator=torch.Generator(device), **kwargs)
    sel_loss = O3FActionSelector.from_loss(loss, spec, generator=torch.Generator(device), **kwargs)
    members = naive_members(q)
    td = TensorDict({"observation": obs, "action": action}, shape)
    g = torch.Generator(device)

    def policy_then(selector):
        td.set("action", action)  # the policy writes its action, the selector overwrites it
        return selector(td)["action"]

    fns = {
        "o3f": lambda: policy_then(sel),
        "o3f from_loss": lambda: policy_then(sel_loss),
        "torchrl IQLLoss vmap": lambda: torchrl_select(loss, obs, action, 0.2, n, low, high, g),
        "naive loop": lambda: naive_select(members, obs, action, 0.2, n, low, high, g),
    }
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        outs = []
        for f in fns.values():  # same draws -> the same candidate
            for gen in (sel.generator, sel_loss.generator, g):
                gen.manual_seed(1)
            outs.append(f())
        for o in outs[1:]:
            torch.testing.assert_close(o, outs[0], atol=1e-5, rtol=1e-5)
        sync = torch.cuda.synchronize if device.type == "cuda" else None
        return interleaved(fns, budget_s, sync)


def online_frames_per_s(mode: str, frames: int, device: str, dataset_root, dataset_size) -> float:
    """One short O3F-IQL run of the default recipe's task and networks; its online frames/s
    (median over the logged windows of 100 frames after the first)."""
    from torchrl_o3f.trainers import BUDGETS, OfflineOnlineTrainer, TrainerConfig

    budget = dataclasses.replace(
        BUDGETS["cpu"],
        offline_steps=20,
        online_frames=frames,
        eval_every=10**9,
        eval_episodes=1,
        checkpoint_every=10**9,
        log_every=100,
        dataset_size=dataset_size,
    )
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainerConfig(
            task="halfcheetah-medium",
            budget=budget,
            output_dir=out,
            dataset_root=dataset_root,
            progress=False,
            device=device,
        )
        cfg.exploration.mode = mode
        cfg.logger.backend = "none"
        OfflineOnlineTrainer(cfg).train()
        rows = [json.loads(line) for line in open(Path(out) / "metrics.jsonl")]
    rates = [r["online/frames_per_s"] for r in rows if "online/frames_per_s" in r]
    return statistics.median(rates[1:] or rates)


def online_part(args) -> None:
    """Alternating o3f / none runs (ABBA order), medians and the ratio."""
    rates = {"o3f": [], "none": []}
    for r in range(args.rounds):
        for mode in ("o3f", "none") if r % 2 == 0 else ("none", "o3f"):
            fps = online_frames_per_s(
                mode, args.online_frames, args.device, args.dataset_root, args.dataset_size
            )
            rates[mode].append(fps)
            print(f"(round {r + 1}: {mode} {fps:.1f} frames/s)", flush=True)
    o3f, none = statistics.median(rates["o3f"]), statistics.median(rates["none"])
    print("\n### Online phase of O3F-IQL on halfcheetah-medium (frames/s incl. updates)\n")
    print("| exploration.mode=o3f | exploration.mode=none | o3f / none | runs per mode |")
    print("|---|---|---|---|")
    print(f"| {o3f:.1f} | {none:.1f} | {o3f / none:.2f} | {args.rounds} |")


def load_average() -> str:
    """The 1-minute load average (Linux), to tell an idle machine from a busy one."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "n/a"


def main():
    """Run the benchmark and print markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--cells", nargs="+", default=["100x5x1"], help="latency cells NxMxENVS, e.g. 100x5x16"
    )
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per method and cell")
    parser.add_argument(
        "--repeats", type=int, default=5, help="latency: each cell's fastest of this many runs"
    )
    parser.add_argument("--rounds", type=int, default=4, help="online runs per mode")
    parser.add_argument("--online-frames", type=int, default=400)
    parser.add_argument("--dataset-size", type=int, default=20_000)
    parser.add_argument("--dataset-root", default=None, help="Minari root (default: Minari's)")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-online", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"{datetime.date.today().isoformat()}: torch {torch.__version__}, "
        f"{args.threads} threads, device {device}, load average {load_average()}"
    )
    if not args.skip_latency:
        print("\n### Selection latency per env step (ms, median)\n")
        head = ["N", "m", "env batch", "o3f", "o3f from_loss", "torchrl IQLLoss vmap"]
        head += ["naive loop", "torchrl / o3f", "naive / o3f", "calls"]
        print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
        for cell in args.cells:
            n, m, b = (int(x) for x in cell.split("x"))
            runs = [measure_cell(n, m, b, device, args.budget) for _ in range(args.repeats)]
            ms = {k: min(r[k][0] for r in runs) for k in runs[0]}
            calls = [sum(r[k][1] for r in runs) for k in runs[0]]
            o3f, trl, naive = ms["o3f"], ms["torchrl IQLLoss vmap"], ms["naive loop"]
            print(
                f"| {n} | {m} | {b} | {o3f:.3f} | {ms['o3f from_loss']:.3f} | {trl:.3f} | "
                f"{naive:.2f} | {trl / o3f:.1f}x | {naive / o3f:.0f}x | "
                f"{min(calls)}-{max(calls)} |",
                flush=True,
            )
    if not args.skip_online:
        online_part(args)
    print(f"\nload average at the end: {load_average()}")


if __name__ == "__main__":
    main()
