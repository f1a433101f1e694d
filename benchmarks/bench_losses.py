"""Speed of one offline update: IQL, LAPO, CQL and AWAC against their peers.

IQL: ours vs torchrl's IQLLoss vs a CORL-style PyTorch IQL; LAPO updates/s and the cost of one
UTD-20 online step (20 critic updates + one VAE and one actor update); CQL: ours vs torchrl's
CQLLoss; AWAC: ours vs a CORL-style PyTorch AWAC (torchrl has none). All peers of an algorithm
get the same networks (copied weights), the same batches, 2 threads, and are timed in
interleaved rounds in one process (this machine's speed drifts); medians.

Before timing, the peers of each algorithm are loaded with the same parameters and their losses
compared on one batch (they must agree to float tolerance; the random draws of CQL and AWAC are
made in the same order).

    python benchmarks/bench_losses.py                          # full run (several minutes)
    python benchmarks/bench_losses.py --sections cql,awac      # only some algorithms
    python benchmarks/bench_losses.py --quick                  # smoke run
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch import nn
from torchrl.data import Bounded
from torchrl.modules import MLP, ValueOperator
from torchrl.objectives import CQLLoss as TorchRLCQLLoss
from torchrl.objectives import IQLLoss as TorchRLIQLLoss
from torchrl.objectives import SoftUpdate

from torchrl_o3f.objectives import make_awac_loss, make_cql_loss, make_iql_loss, make_lapo_loss

OBS, ACT, M, CELLS, DEPTH = 17, 6, 5, 256, 2
GAMMA, TAU, EXPECTILE, TEMPERATURE = 0.99, 0.005, 0.7, 3.0


def make_data(n: int, seed: int = 0) -> TensorDict:
    g = torch.Generator().manual_seed(seed)
    term = torch.rand(n, 1, generator=g) < 0.01
    return TensorDict(
        {
            "observation": torch.randn(n, OBS, generator=g),
            "action": torch.rand(n, ACT, generator=g) * 2 - 1,
            "next": {
                "observation": torch.randn(n, OBS, generator=g),
                "reward": torch.randn(n, 1, generator=g),
                "done": term.clone(),
                "terminated": term,
            },
        },
        batch_size=[n],
    )


def copy_ensemble(ours, theirs) -> None:
    """Copy a QEnsemble (and its targets) into a torchrl loss's stacked ``MLP`` critic params.

    Ours holds ``[m, in, out]`` weights and ``[m, 1, out]`` biases, torchrl ``[m, out, in]`` and
    ``[m, out]``; the member counts must match.
    """
    ens, tgt = ours.qvalue_network, ours.target_qvalue_network_params
    with torch.no_grad():
        for name in ("qvalue_network_params", "target_qvalue_network_params"):
            params = getattr(theirs, name)
            for i in range(ens.depth + 1):
                w = ens.weights[i] if name == "qvalue_network_params" else tgt["weights", str(i)]
                b = ens.biases[i] if name == "qvalue_network_params" else tgt["biases", str(i)]
                params["module", str(2 * i), "weight"].data.copy_(w.transpose(1, 2))
                params["module", str(2 * i), "bias"].data.copy_(b.squeeze(1))


def torchrl_critic(depth: int = DEPTH) -> ValueOperator:
    """torchrl's critic template for an ensemble of ``depth x CELLS`` ReLU MLPs."""
    return ValueOperator(
        MLP(
            in_features=OBS + ACT,
            out_features=1,
            num_cells=[CELLS] * depth,
            activation_class=nn.ReLU,
        ),
        in_keys=["observation", "action"],
    )


# --------------------------------------------------------------------------- peers
class _Peer:
    """One update of a peer: its losses (``keys``), one backward, every optimiser, soft update."""

    keys = ("loss_actor", "loss_qvalue", "loss_value")

    def losses(self, td):
        out = self.loss(td)
        return tuple(out[k] for k in self.keys)

    def step(self, td):
        total = sum(self.losses(td))
        for o in self.opts:
            o.zero_grad(set_to_none=True)
        total.backward()
        for o in self.opts:
            o.step()
        self.updater.step()


class Ours(_Peer):
    name = "torchrl_o3f IQLLoss"

    def __init__(self):
        self.loss = make_iql_loss(OBS, Bounded(-1.0, 1.0, shape=(ACT,)), num_qvalue=M)
        self.loss.make_value_estimator(gamma=GAMMA)
        self.updater = SoftUpdate(self.loss, tau=TAU)
        self.opts = [torch.optim.Adam(p, 3e-4) for p in self.loss.parameter_groups().values()]


class OursAgent(Ours):
    """The same loss driven by the trainer's Agent (fused Adam, one optimiser per group)."""

    name = "torchrl_o3f Agent (trainer)"

    def __init__(self, ours: Ours):
        from torchrl_o3f.trainers.agents import Agent

        super().__init__()
        self.loss.load_state_dict(ours.loss.state_dict())
        self.agent = Agent(self.loss, lr=3e-4, tau=TAU)

    def step(self, td):
        self.agent.update(td)


class TorchRL(_Peer):
    """torchrl's IQLLoss(num_qvalue_nets=5) with the same actor, value and Q weights."""

    name = "torchrl IQLLoss"

    def __init__(self, ours: Ours):
        actor = copy.deepcopy(ours.loss.actor_network)
        value = copy.deepcopy(ours.loss.value_network)
        q = torchrl_critic()
        self.loss = TorchRLIQLLoss(
            actor,
            q,
            value,
            num_qvalue_nets=M,
            loss_function="l2",
            expectile=EXPECTILE,
            temperature=TEMPERATURE,
        )
        self.loss.make_value_estimator(gamma=GAMMA)
        self.updater = SoftUpdate(self.loss, tau=TAU)
        copy_ensemble(ours.loss, self.loss)
        groups = [
            list(self.loss.actor_network_params.flatten_keys().values()),
            list(self.loss.qvalue_network_params.flatten_keys().values()),
            list(self.loss.value_network_params.flatten_keys().values()),
        ]
        self.opts = [torch.optim.Adam(g, 3e-4) for g in groups]

    def losses(self, td):
        # torchrl's loss writes into its input: give it a shallow copy
        return super().losses(td.clone(False))


class GaussianPolicy(nn.Module):
    """CORL's IQL/AWAC policy: tanh-squashed mean, state-independent log std, a Normal."""

    def __init__(self, depth=DEPTH, log_std_min=-5.0, log_std_max=2.0):
        super().__init__()
        self.net = mlp(OBS, ACT, depth)
        self.log_std = nn.Parameter(torch.zeros(ACT))
        self.log_std_range = (log_std_min, log_std_max)

    def dist(self, obs):
        mean = torch.tanh(self.net(obs))
        std = self.log_std.clamp(*self.log_std_range).exp()
        return torch.distributions.Normal(mean, std)

    def log_prob(self, obs, act):
        return self.dist(obs).log_prob(act).sum(-1, keepdim=True)

    def load_from(self, actor) -> None:
        """Copy the weights of a ``make_iql_actor`` actor (its ``TanhMeanGaussianNet``)."""
        head = actor.module[0].module
        with torch.no_grad():
            self.net.load_state_dict(head.net.state_dict())
            self.log_std.copy_(head.log_std)


def mlp(in_features, out_features=1, depth=DEPTH):
    layers = []
    for i in range(depth):
        layers += [nn.Linear(in_features if i == 0 else CELLS, CELLS), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(CELLS, out_features))


def copy_critics(ours, critics, targets) -> None:
    """Copy a QEnsemble and its targets into per-member ``mlp`` critics (CORL's layout)."""
    ens, tgt = ours.qvalue_network, ours.target_qvalue_network_params
    with torch.no_grad():
        for j in range(ens.num_members):
            for i in range(ens.depth + 1):
                critics[j][2 * i].weight.copy_(ens.weights[i][j].T)
                critics[j][2 * i].bias.copy_(ens.biases[i][j, 0])
                targets[j][2 * i].weight.copy_(tgt["weights", str(i)][j].T)
                targets[j][2 * i].bias.copy_(tgt["biases", str(i)][j, 0])


class PlainCORL:
    """IQL written the way CORL writes it (one nn.Module per critic, a Python loop), m=5.

    CORL averages the critics' MSEs; here they are summed, as torchrl does, so the three
    implementations compute the same numbers.
    """

    name = "plain PyTorch (CORL-style)"

    def __init__(self, ours: Ours):
        self.critics = nn.ModuleList(mlp(OBS + ACT) for _ in range(M))
        self.targets = copy.deepcopy(self.critics)
        self.value = mlp(OBS)
        self.policy = GaussianPolicy()
        copy_critics(ours.loss, self.critics, self.targets)
        with torch.no_grad():
            self.value.load_state_dict(
                {k: v for k, v in ours.loss.value_network.module.state_dict().items()}
            )
        self.policy.load_from(ours.loss.actor_network)
        for p in self.targets.parameters():
            p.requires_grad_(False)
        self.opt_q = torch.optim.Adam(self.critics.parameters(), 3e-4)
        self.opt_v = torch.optim.Adam(self.value.parameters(), 3e-4)
        self.opt_pi = torch.optim.Adam(self.policy.parameters(), 3e-4)

    def losses(self, td):
        s, a = td["observation"], td["action"]
        r, s2 = td["next", "reward"], td["next", "observation"]
        not_done = 1.0 - td["next", "terminated"].float()
        sa = torch.cat([s, a], -1)
        with torch.no_grad():
            target_q = torch.stack([t(sa) for t in self.targets]).min(0).values
            next_v = self.value(s2)
        v = self.value(s)
        adv = target_q - v
        value_loss = (torch.abs(EXPECTILE - (adv < 0).float()) * adv**2).mean()
        targets = r + not_done * GAMMA * next_v
        qs = [c(sa) for c in self.critics]
        q_loss = sum(F.mse_loss(q, targets) for q in qs)
        exp_adv = torch.exp(TEMPERATURE * adv.detach()).clamp(max=100.0)
        policy_loss = -(exp_adv * self.policy.log_prob(s, a)).mean()
        return policy_loss, q_loss, value_loss

    def step(self, td):
        policy_loss, q_loss, value_loss = self.losses(td)
        self.opt_v.zero_grad(set_to_none=True)
        value_loss.backward()
        self.opt_v.step()
        self.opt_q.zero_grad(set_to_none=True)
        q_loss.backward()
        self.opt_q.step()
        self.opt_pi.zero_grad(set_to_none=True)
        policy_loss.backward()
        self.opt_pi.step()
        with torch.no_grad():
            for p, t in zip(self.critics.parameters(), self.targets.parameters()):
                t.lerp_(p, TAU)


# --------------------------------------------------------------------------- LAPO
class LAPOFull:
    """One offline LAPO update: critic, VAE and actor losses, three Adam steps, soft update."""

    def __init__(self, data, batch_size, cells=CELLS, depth=3):
        self.name = f"LAPO update (batch {batch_size}, {depth}x{cells})"
        self.loss = make_lapo_loss(
            OBS,
            Bounded(-1.0, 1.0, shape=(ACT,)),
            data=data,
            num_cells=cells,
            depth=depth,
        )
        self.updater = SoftUpdate(self.loss, tau=TAU)
        self.opts = {k: torch.optim.Adam(v, 2e-4) for k, v in self.loss.parameter_groups().items()}

    def step(self, td):
        out = self.loss(td)
        for o in self.opts.values():
            o.zero_grad(set_to_none=True)
        sum(v for k, v in out.items() if k.startswith("loss_")).backward()
        for o in self.opts.values():
            o.step()
        self.updater.step()

    def critic_step(self, td):
        out = self.loss.critic_loss(td)
        self.opts["critic"].zero_grad(set_to_none=True)
        (out["loss_qvalue"] + out["loss_value"]).backward()
        self.opts["critic"].step()
        self.updater.step()

    def policy_step(self, td):
        vae = self.loss.vae_loss(td)["loss_vae"]
        actor = self.loss.actor_loss(td)["loss_actor"]
        for k in ("vae", "actor"):
            self.opts[k].zero_grad(set_to_none=True)
        (vae + actor).backward()
        self.opts["vae"].step()
        self.opts["actor"].step()


# --------------------------------------------------------------------------- CQL
CQL_M, CQL_DEPTH, CQL_SAMPLES, CQL_WEIGHT, ALPHA_INIT = 2, 3, 10, 5.0, 0.5
SPEC = Bounded(-1.0, 1.0, shape=(ACT,))


class OursCQL(_Peer):
    """make_cql_loss with CQL's networks (2 critics, 3 x 256), torchrl CQLLoss's backup."""

    name = "torchrl_o3f CQLLoss"
    keys = ("loss_qvalue", "loss_cql", "loss_actor", "loss_alpha")

    def __init__(self):
        self.loss = make_cql_loss(
            OBS,
            SPEC,
            num_qvalue=CQL_M,
            depth=CQL_DEPTH,
            backup="sampled",  # torchrl's deterministic_backup=True: a' ~ pi, no entropy bonus
            cql_weight=CQL_WEIGHT,
            n_action_samples=CQL_SAMPLES,
            alpha_init=ALPHA_INIT,
        )
        self.loss.make_value_estimator(gamma=GAMMA)
        self.updater = SoftUpdate(self.loss, tau=TAU)
        self.opts = [torch.optim.Adam(p, 3e-4) for p in self.loss.parameter_groups().values()]


class TorchRLCQL(_Peer):
    """torchrl's CQLLoss (2 critics, fixed weight) with the same actor and critic weights."""

    name = "torchrl CQLLoss"
    keys = OursCQL.keys

    def __init__(self, ours: OursCQL):
        self.loss = TorchRLCQLLoss(
            copy.deepcopy(ours.loss.actor_network),
            torchrl_critic(CQL_DEPTH),
            loss_function="l2",
            action_spec=SPEC,
            alpha_init=ALPHA_INIT,
            min_q_weight=CQL_WEIGHT,
            num_random=CQL_SAMPLES,
            deterministic_backup=True,
        )
        self.loss.make_value_estimator(gamma=GAMMA)
        self.updater = SoftUpdate(self.loss, tau=TAU)
        copy_ensemble(ours.loss, self.loss)
        groups = [
            list(self.loss.actor_network_params.flatten_keys().values()),
            list(self.loss.qvalue_network_params.flatten_keys().values()),
            [self.loss.log_alpha],
        ]
        self.opts = [torch.optim.Adam(g, 3e-4) for g in groups]

    def losses(self, td):
        return super().losses(td.clone(False))


def cql_agreement(ours: OursCQL, theirs: TorchRLCQL, td):
    """Both CQLs' four losses on one batch, the random draws made in the same order.

    Where the maths is the same: torchrl's CQLLoss takes the logsumexp over the 3 sources of
    each sampled action and averages over the ``n`` samples, CQL (and this package) over all
    ``3 n`` actions of a state: the two agree for ``n = 1``, which the check uses. And torchrl
    scores the actions drawn at s' with Q(s', .), CQL with Q(s, .): the batch's next
    observation is set to its observation, where the two are the same.
    Returns ``(ours, theirs)``: ``[loss_qvalue, loss_cql, loss_actor, loss_alpha]`` each.
    """
    td = td.clone()
    td["next", "observation"] = td["observation"].clone()
    samples = ours.loss.n_action_samples, theirs.loss.num_random
    ours.loss.n_action_samples = theirs.loss.num_random = 1
    torch.manual_seed(0)
    critic = ours.loss.critic_loss(td.clone())
    torch.manual_seed(1)
    actor = ours.loss.actor_loss(td.clone())
    torch.manual_seed(0)
    q_td = td.clone()
    q_loss, _ = theirs.loss.q_loss(q_td)
    cql_loss, _ = theirs.loss.cql_loss(q_td)
    torch.manual_seed(1)
    actor_loss, meta = theirs.loss.actor_loss(td.clone())
    alpha_loss, _ = theirs.loss.alpha_loss(meta)
    ours.loss.n_action_samples, theirs.loss.num_random = samples
    ref = [critic["loss_qvalue"], critic["loss_cql"], actor["loss_actor"], actor["loss_alpha"]]
    got = [q_loss, cql_loss, actor_loss, alpha_loss]
    return [x.item() for x in ref], [x.item() for x in got]


# --------------------------------------------------------------------------- AWAC
AWAC_M, AWAC_ACTOR_DEPTH, LAM = 2, 4, 1.0


class OursAWAC(_Peer):
    """make_awac_loss with AWAC's networks (2 critics 2 x 256, a 4 x 256 Gaussian policy)."""

    name = "torchrl_o3f AWACLoss"
    keys = ("loss_actor", "loss_qvalue")

    def __init__(self):
        self.loss = make_awac_loss(
            OBS, SPEC, num_qvalue=AWAC_M, actor_depth=AWAC_ACTOR_DEPTH, lam=LAM
        )
        self.loss.make_value_estimator(gamma=GAMMA)
        self.updater = SoftUpdate(self.loss, tau=TAU)
        self.opts = [torch.optim.Adam(p, 3e-4) for p in self.loss.parameter_groups().values()]


class PlainAWAC:
    """AWAC in plain PyTorch, CORL's layout (one nn.Module per critic, a Python loop).

    The maths of this package's AWACLoss: target ``r + gamma (1 - d) min_i Q'_i(s', a')`` with
    ``a' ~ pi(s')``; advantage ``min_i Q_i(s, a) - min_i Q_i(s, a_pi)``; weights normalised
    over the batch (``B softmax(A / lambda)``, d3rlpy's); critic MSEs summed over members.
    """

    name = "plain PyTorch (CORL-style)"

    def __init__(self, ours: OursAWAC):
        self.critics = nn.ModuleList(mlp(OBS + ACT) for _ in range(AWAC_M))
        self.targets = copy.deepcopy(self.critics)
        copy_critics(ours.loss, self.critics, self.targets)
        self.policy = GaussianPolicy(AWAC_ACTOR_DEPTH, -6.0, 0.0)
        self.policy.load_from(ours.loss.actor_network)
        for p in self.targets.parameters():
            p.requires_grad_(False)
        self.opt_q = torch.optim.Adam(self.critics.parameters(), 3e-4)
        self.opt_pi = torch.optim.Adam(self.policy.parameters(), 3e-4)

    def losses(self, td):
        s, a = td["observation"], td["action"]
        r, s2 = td["next", "reward"], td["next", "observation"]
        not_done = 1.0 - td["next", "terminated"].float()
        with torch.no_grad():
            a2 = self.policy.dist(s2).rsample().clamp(-1.0, 1.0)
            s2a2 = torch.cat([s2, a2], -1)
            target_q = torch.stack([t(s2a2) for t in self.targets]).min(0).values
            targets = r + not_done * GAMMA * target_q
        qs = [c(torch.cat([s, a], -1)) for c in self.critics]
        q_loss = sum(F.mse_loss(q, targets) for q in qs)
        with torch.no_grad():
            a_pi = self.policy.dist(s).rsample().clamp(-1.0, 1.0)
            s_api = torch.cat([s, a_pi], -1)
            v = torch.stack([c(s_api) for c in self.critics]).min(0).values
            adv = torch.stack([q.detach() for q in qs]).min(0).values - v
            weights = F.softmax(adv.view(-1) / LAM, dim=0).view(-1, 1) * adv.numel()
        policy_loss = -(weights * self.policy.log_prob(s, a)).mean()
        return policy_loss, q_loss

    def step(self, td):
        policy_loss, q_loss = self.losses(td)
        self.opt_q.zero_grad(set_to_none=True)
        q_loss.backward()
        self.opt_q.step()
        self.opt_pi.zero_grad(set_to_none=True)
        policy_loss.backward()
        self.opt_pi.step()
        with torch.no_grad():
            for p, t in zip(self.critics.parameters(), self.targets.parameters()):
                t.lerp_(p, TAU)


# --------------------------------------------------------------------------- runner
def agreement(ours, peers, td):
    torch.manual_seed(0)
    ref = [x.item() for x in ours.losses(td)]
    rows = []
    for p in peers:
        torch.manual_seed(0)  # the same random draws for every peer
        got = [x.item() for x in p.losses(td)]
        diff = max(abs(a - b) / max(1.0, abs(a)) for a, b in zip(ref, got))
        rows.append((p.name, got, diff))
    return ref, rows


def timed(fn, batches):
    t0 = time.perf_counter()
    for td in batches:
        fn(td)
    return (time.perf_counter() - t0) / len(batches)


def check(name, ref, rows):
    print(f"  {name:28s} {[round(x, 6) for x in ref]}")
    for peer, got, diff in rows:
        print(f"  {peer:28s} {[round(x, 6) for x in got]}  max rel. diff {diff:.1e}")
        assert diff < 1e-4, f"{peer} disagrees with {name}"


def rel_diff(ref, got):
    return max(abs(a - b) / max(1.0, abs(a)) for a, b in zip(ref, got))


def table(title, times, base_name):
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med[base_name]
    print(f"\n{title}")
    print(f"| implementation | updates/s | ms/update | vs {base_name} |")
    print("|---|---|---|---|")
    for name, t in med.items():
        print(f"| {name} | {1 / t:.1f} | {1000 * t:.2f} | {base / t:.2f}x |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20, help="updates per peer per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sections", default="iql,lapo,cql,awac", help="comma-separated")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 3 steps")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.steps = 2, 3
    sections = set(args.sections.split(","))
    unknown = sections - {"iql", "lapo", "cql", "awac"}
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from iql, lapo, cql, awac")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = make_data(20_000)

    groups = {}  # section -> peers timed interleaved
    if "iql" in sections:
        ours = Ours()
        peers = [TorchRL(ours), PlainCORL(ours)]
        ref, rows = agreement(ours, peers, data[:256])
        print("IQL losses on one batch, same parameters (loss_actor, loss_qvalue, loss_value):")
        check(ours.name, ref, rows)
        groups["iql"] = [ours, OursAgent(ours), *peers]
    if "cql" in sections:
        ours_cql = OursCQL()
        torchrl_cql = TorchRLCQL(ours_cql)
        ref, got = cql_agreement(ours_cql, torchrl_cql, data[:256])
        print("CQL losses on one batch (loss_qvalue, loss_cql, loss_actor, loss_alpha):")
        check(ours_cql.name, ref, [(torchrl_cql.name, got, rel_diff(ref, got))])
        groups["cql"] = [ours_cql, torchrl_cql]
    if "awac" in sections:
        ours_awac = OursAWAC()
        ref, rows = agreement(ours_awac, [PlainAWAC(ours_awac)], data[:256])
        print("AWAC losses on one batch, same random draws (loss_actor, loss_qvalue):")
        check(ours_awac.name, ref, rows)
        groups["awac"] = [ours_awac, PlainAWAC(ours_awac)]
    if "lapo" in sections:
        lapo256 = LAPOFull(data, 256)
        lapo512 = LAPOFull(data, 512)
    times = {s: {p.name: [] for p in peers} for s, peers in groups.items()}
    extra = {k: [] for k in ("lapo256", "lapo512", "critic", "utd20")}
    g = torch.Generator().manual_seed(1)
    for r in range(args.rounds + 1):  # round 0 warms up
        batches = [
            data[torch.randint(0, len(data), (256,), generator=g)] for _ in range(args.steps)
        ]
        for section, peers in groups.items():
            for p in peers if r % 2 == 0 else peers[::-1]:
                t = timed(p.step, batches)
                if r:
                    times[section][p.name].append(t)
        if "lapo" in sections:
            big = [
                data[torch.randint(0, len(data), (512,), generator=g)] for _ in range(args.steps)
            ]
            t_lapo = timed(lapo256.step, batches)
            t_big = timed(lapo512.step, big)
            t_critic = timed(lapo256.critic_step, batches)
            t_policy = timed(lapo256.policy_step, batches)
            if r:
                extra["lapo256"].append(t_lapo)
                extra["lapo512"].append(t_big)
                extra["critic"].append(t_critic)
                extra["utd20"].append(20 * t_critic + t_policy)

    plan = f"{args.threads} threads; median of {args.rounds} rounds x {args.steps} updates"
    if "iql" in times:
        title = f"One IQL update, batch 256, m={M}, {DEPTH}x{CELLS}, obs {OBS}, act {ACT}, {plan}"
        table(title, times["iql"], TorchRL.name)
    if "cql" in times:
        title = (
            f"One CQL update, batch 256, m={CQL_M}, {CQL_DEPTH}x{CELLS}, "
            f"{CQL_SAMPLES} action samples per source, {plan}"
        )
        table(title, times["cql"], TorchRLCQL.name)
    if "awac" in times:
        title = (
            f"One AWAC update, batch 256, m={AWAC_M}, critics {DEPTH}x{CELLS}, "
            f"actor {AWAC_ACTOR_DEPTH}x{CELLS}, {plan}"
        )
        table(title, times["awac"], PlainAWAC.name)
    if "lapo" in sections:
        m = {k: statistics.median(v) for k, v in extra.items()}
        print("\n| LAPO (O3F critic: 5 Qs, REDQ subset of 2) | updates/s | ms |")
        print("|---|---|---|")
        for label, key in (
            ("full update, batch 256, 3x256", "lapo256"),
            ("full update, batch 512, 3x256", "lapo512"),
            ("critic-only update, batch 256", "critic"),
        ):
            print(f"| {label} | {1 / m[key]:.1f} | {1000 * m[key]:.1f} |")
        print(
            f"| UTD-20 online step (20 critic + 1 VAE/actor), batch 256 | {1 / m['utd20']:.2f} "
            f"| {1000 * m['utd20']:.0f} |"
        )


if __name__ == "__main__":
    main()
