"""Speed of O3F action selection, against peers measured interleaved in the same run.

Latency per environment step of choosing one action (sample N candidates around the policy
action, project them, score them with a m-member ensemble of 2x256 critics, take the argmax) for
HalfCheetah shapes (observation 17, action 6), for every N in {10, 100, 1000}, m in {2, 5, 10}
and env batch in {1, 16}:

* ``o3f``: ``O3FActionSelector(QEnsemble)``, the full ``forward`` on a tensordict;
* ``o3f_torch``: the same selector with ``QEnsemble``'s compiled kernel off, so that
  ``QEnsemble.candidate_values`` runs its torch operations (what a machine without a C
  compiler gets);
* ``o3f_dense``: the same selector scoring every candidate densely (``QEnsemble.values``), to
  measure ``QEnsemble.candidate_values`` (the default), which sends only the hidden units the
  candidates' offsets flip through the second layer;
* ``bmm``: a hand-written batched-matmul ensemble (observation and candidate concatenated, one
  ``baddbmm`` per layer over the stacked weights), the reference of the 0.8 ms goal;
* ``o3f_generic``: the selector reading torchrl's ``IQLLoss`` critic through
  ``qvalue_params=loss.qvalue_network_params`` (its generic, vmap path);
* ``torchrl_iql``: what a torchrl user writes by hand: ``IQLLoss(num_qvalue_nets=m)``'s critic
  evaluated over its stacked params with ``torch.vmap`` + ``TensorDict.to_module``;
* ``naive``: a Python loop over candidates and members, each member a plain ``nn.Sequential``.

All hold the same weights (copied from the QEnsemble) and the script checks they pick the
same candidate before timing. The calls run in rounds of one call per method, in a fresh random
order each round, so that machine drift and cache effects hit all alike; each cell is the
median over its calls. A freshly initialised critic is not what O3F scores with: pass
``--checkpoint`` (a trainer checkpoint, e.g. the default recipe's ``final.pt``) to use its
trained critic and actor, observations from its dataset and the actor's actions as the
anchors (cells with m = 5 only).

A second part measures a ``torchrl.collectors.Collector`` on HalfCheetah with the policy
alone, with policy + selector, with policy + selector in torch operations (kernel off), with
policy + selector scoring densely and with policy + selector given a free score (what the
selector costs besides scoring; N=100, m=5), in alternating rounds; a third compares the spec
projection (clamp against buffers vs ``TensorSpec.project``), and a fourth counts the page
faults of scoring 16 envs at once.

Run (2 threads, as everywhere in the project)::

    python benchmarks/bench_selector.py            # full table, ~3 minutes on 2 CPU cores
    python benchmarks/bench_selector.py --quick    # N=100, m=5 only
    python benchmarks/bench_selector.py --device cuda
    python benchmarks/bench_selector.py --quick --checkpoint outputs/<run>/checkpoints/final.pt
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import sys
import time

import torch
from tensordict import TensorDict
from tensordict.nn import NormalParamExtractor, TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.data import Bounded
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.modules import MLP, ProbabilisticActor, TanhNormal, ValueOperator
from torchrl.objectives import IQLLoss

from torchrl_o3f.modules import O3FActionSelector, QEnsemble, build_mlp

OBS, ACT, CELLS = 17, 6, 256


@contextlib.contextmanager
def kernel_off(q: QEnsemble):
    """``q`` scores with torch operations only (its compiled kernel off) inside the block."""
    old, q.use_kernel = q.use_kernel, False
    try:
        yield q
    finally:
        q.use_kernel = old


class TorchScoring(O3FActionSelector):
    """The selector with the ensemble's compiled kernel off (``candidate_values`` in torch
    operations, the fallback where no C compiler is found)."""

    def member_values(self, observation, candidates, anchor=None):  # noqa: D102
        with kernel_off(self.qvalue_network):
            return super().member_values(observation, candidates, anchor)


class DenseScoring(O3FActionSelector):
    """The selector scoring every candidate densely (``QEnsemble.values``, no anchor)."""

    def member_values(self, observation, candidates, anchor=None):  # noqa: D102
        return super().member_values(observation, candidates)


class FreeScoring(O3FActionSelector):
    """The selector with a free score (the sum of the candidate's entries, no critic): what its
    sampling, projection, argmax and tensordict work cost a collector without the scoring."""

    def member_values(self, observation, candidates, anchor=None):  # noqa: D102
        return candidates.sum(-1, keepdim=True).unsqueeze(0)


def load_trained(path: str, device) -> dict:
    """A trainer checkpoint's critic (normalisation folded into its first layer, so every
    peer holds the same plain weights), its actor and its dataset's observations."""
    from torchrl_o3f.data import load_offline_dataset
    from torchrl_o3f.modules.actors import make_iql_actor
    from torchrl_o3f.trainers.checkpoint import load_checkpoint

    state = load_checkpoint(path)
    loss = state["agent"]["loss"]
    qs = {k.removeprefix("qvalue_network."): v for k, v in loss.items() if k.startswith("qvalue_")}
    m, _, cells = qs["weights.0"].shape
    q = QEnsemble(OBS, ACT, num_members=m, num_cells=cells)
    q.load_state_dict(qs)
    with torch.no_grad():
        # (x - loc) / scale @ W + b == x @ (W / scale) + (b - (loc / scale) @ W)
        loc = torch.cat([q.observation_loc, q.action_loc])
        scale = torch.cat([q.observation_scale, q.action_scale])
        q.biases[0].sub_(((loc / scale) @ q.weights[0]).unsqueeze(1))
        q.weights[0].div_(scale[:, None])
    q.set_input_normalization()  # identity: folded into the first layer
    q = q.to(device)
    spec = Bounded(-1.0, 1.0, shape=(ACT,), device=device)
    actor = make_iql_actor(OBS, spec, num_cells=CELLS).to(device)
    actor.load_state_dict(
        {k.removeprefix("actor_network."): v for k, v in loss.items() if k.startswith("actor_")}
    )
    data = load_offline_dataset(state["meta"]["dataset_id"])
    return {"q": q, "actor": actor, "observations": data["observation"].to(device)}


def bmm_select(q: QEnsemble, obs, action, sigma, num_candidates, low, high, generator):
    """The reference of the 0.8 ms goal: a hand-written batched-matmul ensemble (inputs
    concatenated, one ``baddbmm`` per layer over stacked weights), mean over members, argmax."""
    noise = torch.randn((num_candidates, *action.shape), generator=generator, device=action.device)
    cands = torch.clamp(action + sigma * noise, low, high)
    x = torch.cat([obs.expand(*cands.shape[:-1], OBS), cands], -1).reshape(1, -1, OBS + ACT)
    h = x.expand(q.num_members, -1, -1)
    for i, (w, b) in enumerate(zip(q.weights, q.biases)):
        h = torch.baddbmm(b, h, w)
        if i < len(q.weights) - 1:
            h = torch.relu(h)
    index = h.mean(0).view(cands.shape[:-1]).argmax(0)
    return cands.gather(0, index[None, ..., None].expand(1, *action.shape)).squeeze(0)


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


def torchrl_iql_critic(q: QEnsemble):
    """IQLLoss(num_qvalue_nets=m) with the QEnsemble's weights copied into its stacked params."""
    m = q.num_members
    actor = ProbabilisticActor(
        TensorDictModule(
            nn.Sequential(build_mlp(OBS, 2 * ACT, num_cells=32), NormalParamExtractor()),
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
    loss = IQLLoss(actor, qnet, value, num_qvalue_nets=m).to(q.device)
    params = loss.qvalue_network_params
    linear_keys = sorted(
        {k[:-1] for k in params.keys(True, True) if k[-1] == "weight"},
        key=lambda k: int(k[-1]),
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


def interleaved(fns: dict, budget_s: float, min_calls: int, max_calls: int) -> dict:
    """Rounds of one call per method, in a fresh random order each round (so that no method
    always runs right after the same one, e.g. with the caches the naive loop left); each method
    gets calls until its time budget; medians in ms."""
    times = {k: [] for k in fns}
    for f in fns.values():  # warm-up
        f()
        f()
    est = {}
    for k, f in fns.items():
        t0 = time.perf_counter()
        f()
        est[k] = time.perf_counter() - t0
    calls = {k: int(min(max_calls, max(min_calls, budget_s / max(est[k], 1e-6)))) for k in fns}
    order = random.Random(0)
    names = list(fns)
    for r in range(max(calls.values())):
        order.shuffle(names)
        for k in names:
            f = fns[k]
            if r < calls[k]:
                t0 = time.perf_counter()
                f()
                if device_sync is not None:
                    device_sync()
                times[k].append(time.perf_counter() - t0)
    return {k: (statistics.median(v) * 1e3, len(v)) for k, v in times.items()}


device_sync = None


def cell_inputs(m: int, shape: tuple, device, trained=None):
    """``(critic, observations, policy actions)`` of a cell: a fresh m-member critic with random
    inputs, or the checkpoint's critic, dataset observations and its actor's actions."""
    torch.manual_seed(0)
    if trained is None:
        q = QEnsemble(OBS, ACT, num_members=m, num_cells=CELLS, device=device)
        obs = torch.randn(*shape, OBS, device=device)
        return q, obs, torch.rand(*shape, ACT, device=device) * 2 - 1
    pool = trained["observations"]
    obs = pool[torch.randint(len(pool), shape, device=pool.device)]
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        action = trained["actor"](TensorDict({"observation": obs}, shape))["action"]
    return trained["q"], obs, action


def measure_cell(n: int, m: int, b: int, device, budget_s: float, trained=None) -> dict:
    """One cell of the grid: the methods on the same weights, interleaved."""
    spec = Bounded(-1.0, 1.0, shape=(ACT,), device=device)
    low, high = spec.space.low, spec.space.high
    shape = (b,) if b > 1 else ()
    q, obs, action = cell_inputs(m, shape, device, trained)
    sel = O3FActionSelector(
        q, spec, num_candidates=n, sigma=0.2, generator=torch.Generator(device).manual_seed(0)
    )
    sel_dense = DenseScoring(
        q, spec, num_candidates=n, sigma=0.2, generator=torch.Generator(device).manual_seed(0)
    )
    sel_torch = TorchScoring(
        q, spec, num_candidates=n, sigma=0.2, generator=torch.Generator(device).manual_seed(0)
    )
    loss = torchrl_iql_critic(q)
    sel_generic = O3FActionSelector(
        loss.qvalue_network,
        spec,
        num_candidates=n,
        sigma=0.2,
        qvalue_params=loss.qvalue_network_params,
        generator=torch.Generator(device).manual_seed(0),
    )
    members = naive_members(q)
    td = TensorDict({"observation": obs, "action": action}, shape)
    g = torch.Generator(device)

    def policy_then(selector):
        # what a collector does: the policy writes its action, the selector overwrites it
        td.set("action", action)
        return selector(td)["action"]

    fns = {
        "o3f": lambda: policy_then(sel),
        "o3f_torch": lambda: policy_then(sel_torch),
        "o3f_dense": lambda: policy_then(sel_dense),
        "o3f_generic": lambda: policy_then(sel_generic),
        "torchrl_iql": lambda: torchrl_select(loss, obs, action, 0.2, n, low, high, g),
        "bmm": lambda: bmm_select(q, obs, action, 0.2, n, low, high, g),
        "naive": lambda: naive_select(members, obs, action, 0.2, n, low, high, g),
    }
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        # same draws -> every method must pick the same candidate
        outs = []
        for f in fns.values():
            gens = (sel, sel_torch, sel_dense, sel_generic)
            for gen in (*(x.generator for x in gens), g):
                gen.manual_seed(1)
            outs.append(f())
        for o in outs[1:]:
            torch.testing.assert_close(o, outs[0], atol=1e-5, rtol=1e-5)
        return interleaved(fns, budget_s, min_calls=5, max_calls=300)


def latency_table(device, grid, budget_s, trained=None, repeats=1):
    """The per-step selection latency grid, printed as markdown rows.

    With ``repeats`` > 1 the whole grid runs that many times (so that a slow phase of the
    machine, which can last seconds, hits one repeat of a cell rather than all of it) and each
    method's cell is the median of its per-repeat medians."""
    runs = {cell: [] for cell in grid}
    for r in range(repeats):
        for cell in grid:
            runs[cell].append(measure_cell(*cell, device, budget_s, trained))
        if repeats > 1:
            print(f"(repeat {r + 1}/{repeats} done)", file=sys.stderr, flush=True)
    rows = []
    for (n, m, b), results in runs.items():
        res = {
            k: (statistics.median(r[k][0] for r in results), sum(r[k][1] for r in results))
            for k in results[0]
        }
        rows.append((n, m, b, res))
        o3f = res["o3f"][0]
        print(
            f"| {n} | {m} | {b} | {o3f:.3f} | {res['o3f_torch'][0]:.3f} | "
            f"{res['o3f_torch'][0] / o3f:.2f}x | {res['o3f_dense'][0]:.3f} | "
            f"{res['o3f_dense'][0] / o3f:.2f}x | {res['bmm'][0]:.3f} | "
            f"{res['o3f_generic'][0]:.3f} | "
            f"{res['torchrl_iql'][0]:.3f} | {res['naive'][0]:.2f} | "
            f"{res['torchrl_iql'][0] / o3f:.1f}x | {res['naive'][0] / o3f:.0f}x | "
            f"{min(c for _, c in res.values())}-{max(c for _, c in res.values())} |",
            flush=True,
        )
    return rows


def collector_throughput(rounds: int, frames: int, device, trained=None, num_envs: int = 1):
    """Frames/s of a Collector on HalfCheetah (``num_envs`` envs stepped as one batch): IQL
    actor alone vs actor + selector (default, torch operations, dense and free scoring), with
    the checkpoint's actor and critic when given."""
    from torchrl.collectors import Collector

    from torchrl_o3f.envs import make_env
    from torchrl_o3f.modules.actors import make_iql_actor

    def make(selector_cls):
        env = make_env("halfcheetah-medium", seed=0, num_envs=num_envs)
        # the policy O3F-IQL collects with: IQL's Gaussian actor, 2x256
        if trained is None:
            torch.manual_seed(0)
            actor = make_iql_actor(OBS, env.action_spec, num_cells=CELLS)
            q = QEnsemble(OBS, ACT, num_members=5, num_cells=CELLS)
        else:
            actor, q = trained["actor"], trained["q"]
        policy = actor
        if selector_cls is not None:
            selector = selector_cls(q, env.action_spec, num_candidates=100, sigma=0.2)
            policy = TensorDictSequential(actor, selector)
        return Collector(
            env,
            policy,
            frames_per_batch=frames,
            total_frames=-1,
            auto_register_policy_transforms=False,
        )

    collectors = {
        "policy": make(None),
        "policy+selector": make(O3FActionSelector),
        "policy+selector (torch ops)": make(TorchScoring),
        "policy+selector (dense)": make(DenseScoring),
        "policy+selector (free scoring)": make(FreeScoring),
    }
    iters = {k: iter(c) for k, c in collectors.items()}
    for it in iters.values():  # warm-up batch
        next(it)
    rates = {k: [] for k in collectors}
    for _ in range(rounds):
        for k, it in iters.items():
            t0 = time.perf_counter()
            next(it)
            rates[k].append(frames / (time.perf_counter() - t0))
    for c in collectors.values():
        c.shutdown()
    return {k: statistics.median(v) for k, v in rates.items()}


def projection(device, calls=2000):
    """Clamp against buffers vs TensorSpec.project on [100, 6] candidates."""
    spec = Bounded(-1.0, 1.0, shape=(ACT,), device=device)
    low, high = spec.space.low, spec.space.high
    x = torch.randn(100, ACT, device=device) * 2
    fns = {"clamp": lambda: torch.clamp(x, low, high), "spec.project": lambda: spec.project(x)}
    torch.testing.assert_close(fns["clamp"](), fns["spec.project"]())
    res = interleaved(fns, budget_s=calls * 1e-5, min_calls=calls, max_calls=calls)
    return {k: v[0] * 1e3 for k, v in res.items()}


def page_faults(device, n=100, m=5, b=16, calls=30) -> dict:
    """Median ms and minor page faults per call of one cell's scoring: the compiled kernel,
    the torch sparse layer and the dense product.

    With 16 envs the scoring makes temporaries of several MB; glibc returns such blocks to the
    system when they are freed and takes fresh (faulting) pages for the next call unless its
    thresholds are raised (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``)."""
    import resource

    q, obs, action = cell_inputs(m, (b,), device)
    cands = (action + 0.2 * torch.randn(n, b, ACT, device=device)).clamp(-1, 1)

    def torch_ops():
        with kernel_off(q):
            return q.candidate_values(obs, cands, action)

    fns = {
        "kernel": lambda: q.candidate_values(obs, cands, action),
        "sparse": torch_ops,
        "dense": lambda: q.values(obs, cands),
    }
    times = {k: [] for k in fns}
    faults = {k: [] for k in fns}
    with torch.no_grad():
        for f in fns.values():  # warm-up
            f()
        for _ in range(calls):  # interleaved, one call each
            for name, f in fns.items():
                before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                t0 = time.perf_counter()
                f()
                times[name].append(time.perf_counter() - t0)
                faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return {k: (statistics.median(times[k]) * 1e3, statistics.median(faults[k])) for k in fns}


def grouping(device, n=1000, m=5, b=16, calls=6, trained=None) -> dict:
    """``QEnsemble.candidate_values`` in torch operations scoring b observations in groups of
    ~4096 (member, candidate) rows (the default) against one pass over all of them, for the
    sparse layer (a ReLU critic, the checkpoint's when given, its compiled kernel off) and the
    dense product (the same critic with LayerNorm, which the sparse layer does not serve);
    medians in ms, interleaved. (The kernel needs no groups for two-layer critics.)"""
    relu, obs, action = cell_inputs(m, (b,), device, trained)
    norm = QEnsemble(OBS, ACT, num_members=m, num_cells=CELLS, layer_norm=True, device=device)
    cands = (action + 0.2 * torch.randn(n, b, ACT, device=device)).clamp(-1, 1)
    one_pass = n * b * m
    fns = {
        "sparse, groups": lambda: relu.candidate_values(obs, cands, action),
        "sparse, one pass": lambda: relu.candidate_values(obs, cands, action, chunk_rows=one_pass),
        "dense, groups": lambda: norm.candidate_values(obs, cands, action),
        "dense, one pass": lambda: norm.candidate_values(obs, cands, action, chunk_rows=one_pass),
    }
    with torch.no_grad(), kernel_off(relu):
        return interleaved(fns, budget_s=0.0, min_calls=calls, max_calls=calls)


def main():
    """Run the benchmark and print markdown tables."""
    global device_sync
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="only N=100, m=5, batch 1 and 16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, default=1.5, help="seconds per method and cell")
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs of the whole grid (median of the medians)"
    )
    parser.add_argument("--rounds", type=int, default=6, help="collector rounds")
    parser.add_argument("--frames", type=int, default=400, help="frames per collector round")
    parser.add_argument(
        "--collector-envs",
        type=int,
        nargs="+",
        default=[1],
        help="env batch sizes of the collector part (e.g. 1 16)",
    )
    parser.add_argument("--skip-collector", action="store_true")
    parser.add_argument("--collector-only", action="store_true")
    parser.add_argument(
        "--checkpoint", default=None, help="a trainer checkpoint: score with its trained critic"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        device_sync = torch.cuda.synchronize
    trained = load_trained(args.checkpoint, device) if args.checkpoint else None
    critic = f"trained critic from {args.checkpoint}" if trained else "freshly initialised critic"
    print(f"torch {torch.__version__}, {args.threads} threads, device {device}, {critic}")
    if not args.collector_only:
        latency_part(args, device, trained)
    if not args.skip_collector and device.type == "cpu":
        print("\n### Collector on HalfCheetah (frames/s, median of alternating rounds)\n")
        print(
            "| envs | policy alone | policy + selector (N=100, m=5) | ratio | "
            "policy + selector, torch ops | ratio | policy + selector, dense scoring | ratio | "
            "policy + selector, free scoring | ratio |\n|" + "---|" * 10
        )
        costs = []
        for num_envs in args.collector_envs:
            rates = collector_throughput(args.rounds, args.frames, device, trained, num_envs)
            alone = rates["policy"]
            row = [num_envs, alone]
            for k in ("", " (torch ops)", " (dense)", " (free scoring)"):
                row += [rates["policy+selector" + k], rates["policy+selector" + k] / alone]
            cells = (" {:.0f} | {:.2f} |" * 4).format(*row[2:])
            print("| {} | {:.0f} |".format(*row[:2]) + cells)
            # per-frame cost of the selector over the policy alone, and of its scoring alone
            per_frame = {k: 1e3 / v - 1e3 / alone for k, v in rates.items() if k != "policy"}
            costs.append(
                f"{num_envs} env(s): "
                + ", ".join(f"{k.removeprefix('policy+')} {v:.3f}" for k, v in per_frame.items())
                + f"; a 0.6 ratio allows {1e3 / alone * (1 / 0.6 - 1):.3f}"
            )
        print("\nper frame over the policy alone (ms):\n" + "\n".join(costs))


def latency_part(args, device, trained=None):
    """Projection and latency tables."""
    print("\n### Projection onto the spec, [100, 6] candidates (us per call)\n")
    proj = projection(device)
    print("| clamp | spec.project |\n|---|---|")
    print(f"| {proj['clamp']:.1f} | {proj['spec.project']:.1f} |")
    if device.type == "cpu" and sys.platform.startswith("linux"):
        faults = page_faults(device)
        print("\n### Allocator: N=100, m=5, 16 envs (ms and page faults per call, median)\n")
        print(
            "| kernel (candidate_values) | faults | torch sparse layer (kernel off) | faults | "
            "dense (values) | faults |\n|" + "---|" * 6
        )
        print("| " + " | ".join(f"{t:.2f} | {f:.0f}" for t, f in faults.values()) + " |")

    if device.type == "cpu":
        res = grouping(device, trained=trained)
        print("\n### Groups of observations: N=1000, m=5, 16 envs (ms per call, median)\n")
        print("| " + " | ".join(res) + " |\n|" + "---|" * len(res))
        print("| " + " | ".join(f"{t:.1f}" for t, _ in res.values()) + " |")

    grid = (
        [(100, 5, 1), (100, 5, 16)]
        if args.quick
        else [(n, m, b) for b in (1, 16) for n in (10, 100, 1000) for m in (2, 5, 10)]
    )
    if trained is not None:
        grid = [(n, m, b) for n, m, b in grid if m == trained["q"].num_members]
    print("\n### Selection latency per env step (ms, median)\n")
    print(
        "| N | m | env batch | o3f | o3f torch ops | torch ops / o3f | o3f dense scoring | "
        "dense / o3f | hand-written bmm | "
        "o3f generic (IQLLoss critic) | torchrl IQLLoss vmap | "
        "naive loop | torchrl / o3f | naive / o3f | calls |"
    )
    print("|" + "---|" * 15)
    latency_table(device, grid, args.budget, trained, args.repeats)


if __name__ == "__main__":
    main()
