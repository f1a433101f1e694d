"""The study analysis on synthetic studies: measures, power, Figure 2's rows, claims.md."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from torchrl_o3f.analysis import (
    CLAIMS,
    METRICS,
    Claim,
    RunRecord,
    analyse,
    analyse_all,
    collect_runs,
    detectable_effect,
    online_mean,
    seeds_needed,
)

HC = "halfcheetah-medium"
Z = 1.959964 + 0.841621  # z(0.975) + z(0.8): a two-sided 5% test at 80% power


def _run(study, task, method, seed, offline, online, ratios=(), algo="iql"):
    """A finished run as a sweep writes it: one offline score, online scores every 1000 frames
    and, per online episode, the critic's over-estimation ratio."""
    run = study / task / method / f"seed{seed}"
    run.mkdir(parents=True)
    checkpoint = f"s/offline/{task}/{algo}-abc/seed{seed}/checkpoints/offline.pt"
    (run / "config.yaml").write_text(
        f"task: {task}\nseed: {seed}\nmethod: {method}\noffline_checkpoint: {checkpoint}\n"
    )
    rows = ["phase,step,frames,return,score", f"offline,5,0,1.0,{offline}"]
    rows += [f"online,5,{1000 * (i + 1)},1.0,{s}" for i, s in enumerate(online)]
    (run / "evaluations.csv").write_text("\n".join(rows) + "\n")
    episodes = [
        {"step": 5 + 1000 * (i + 1), "online/episode_return": 1.0, "online/q_overestimation": r}
        for i, r in enumerate(ratios)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))
    (run / "summary.json").write_text("{}")


def _row(table: str, text: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith(f"| {text}"))
    return [cell.strip() for cell in line.split("|")[1:-1]]


def test_the_mean_online_score_is_the_area_under_the_online_curve():
    evaluations = [{"phase": "offline", "step": "5", "frames": "0", "score": "90"}] + [
        {"phase": "online", "step": "5", "frames": str(f), "score": str(s)}
        for f, s in ((0, 90.0), (1000, 10.0), (2000, 20.0), (3000, 30.0), (4000, 60.0))
    ]
    run = RunRecord("t/m/seed0", "t", "m", 0, evaluations, [], True)
    # the frame-0 evaluation (the offline policy) is not the online phase's
    assert online_mean(run) == 30.0
    assert METRICS["final"].of_run(run) == 60.0
    assert METRICS["switch_change"].of_run(run) == 10.0 - 90.0


def test_both_measures_and_their_disagreement_are_in_claims_md(tmp_path):
    study = tmp_path / "study"
    for seed in range(3):
        # O3F ends higher on every seed, yet gets there later: its curve lies below omega1's
        _run(study, HC, "o3f_iql", seed, 10.0, [0.0, 0.0, 0.0, 0.0, 40.0 + seed])
        _run(study, HC, "o3f_iql_omega1", seed, 10.0, [30.0, 30.0, 30.0, 30.0, 30.0 + seed])
    claims = analyse_all(study, tmp_path / "out", reps=200)
    omega = next(c for c in claims if c["experiment"] == "fig6_omega")
    assert omega["means"] == pytest.approx((41.0, 31.0)) and omega["verdict"] == "reproduced"
    second = omega["secondary"]
    assert second["metric"] == "online_mean"
    assert second["means"] == pytest.approx((8.2, 30.2))  # (4 * 0 + 41) / 5 and (4 * 30 + 31) / 5
    assert second["p"] == 0.0 and second["verdict"] == "not reproduced (the other way round)"
    assert omega["disagree"] is True
    table = (tmp_path / "out" / "claims.md").read_text()
    row = _row(table, "omega = 1 hurts")
    assert row[3:12] == [
        "3 / 3",
        "final score",
        "41.0 / 31.0",
        "1.00 [1.00, 1.00]",
        "reproduced",
        "8.2 / 30.2",
        "0.00 [0.00, 0.00]",
        "not reproduced (the other way round)",
        "**yes**",
    ]
    summary = (tmp_path / "out" / "fig6_omega" / "summary.md").read_text()
    assert "| mean online score | 8.2 / 30.2 | 0.00 | [0.00, 0.00] |" in summary


def test_power_has_its_closed_form():
    assert detectable_effect(2.0, 2.0, 3, 3) == pytest.approx(Z * math.sqrt(8 / 3), rel=1e-6)
    assert detectable_effect(1.0, 3.0, 4, 9) == pytest.approx(Z * math.sqrt(1 / 4 + 1), rel=1e-6)
    # n = Z^2 (sd_x^2 + sd_y^2) / d^2 = 7.849 * 800 / 11.6^2 = 46.7, rounded up
    assert seeds_needed(11.6, 20.0, 20.0) == 47
    assert seeds_needed(100.0, 1.0, 1.0) == 3  # never below the seeds a verdict needs
    assert seeds_needed(0.0, 1.0, 1.0) is None


def test_each_claim_states_its_power_and_the_seeds_for_the_papers_effect(tmp_path):
    study = tmp_path / "study"
    for seed in range(3):  # per-seed sd 20 on both sides, LAPO with noise at 20 on average
        _run(study, HC, "o3f_lapo", seed, 5.0, [10.0 + 20 * seed], algo="lapo")
        _run(study, HC, "gaussian_lapo", seed, 5.0, [20 * seed], algo="lapo")
        # two tasks: a seed's mean over them has sd sqrt(10^2 + 20^2) / 2 on each side
        for task, step in ((HC, 10.0), ("hopper-medium", 20.0)):
            _run(study, task, "o3f_iql", seed, 5.0, [step * seed])
            _run(study, task, "gaussian_iql", seed, 5.0, [step * seed + 1.0])
    claims = analyse_all(study, tmp_path / "out", reps=100)
    lapo = next(c for c in claims if c["experiment"] == "fig5_lapo")
    assert lapo["claim"].paper_gain == 0.58
    assert lapo["power"]["detectable"] == pytest.approx(Z * math.sqrt(800 / 3), rel=1e-6)
    assert lapo["power"]["paper_effect"] == pytest.approx(0.58 * 20.0)
    assert lapo["power"]["needed"] == 47
    table = (tmp_path / "out" / "claims.md").read_text()
    assert _row(table, "O3F-LAPO beats")[12:14] == ["45.7 (229% of Y)", "47 (effect 11.6)"]
    # an equality claim: the paper gives no effect, so no seeds; over tasks, sd = sqrt(500) / 2
    equal = next(c for c in claims if c["experiment"] == "fig5_exploration")
    sd = math.sqrt(500) / 2
    assert equal["power"]["detectable"] == pytest.approx(Z * sd * math.sqrt(2 / 3), rel=1e-6)
    assert equal["power"]["needed"] is None
    assert _row(table, "O3F-IQL equals")[13] == "-"
    # one online evaluation: the final score is the mean online score, and the verdicts agree
    assert equal["secondary"]["means"] == pytest.approx(equal["means"])
    assert equal["disagree"] is False and _row(table, "O3F-IQL equals")[11] == "no"


def test_figure_2_is_three_claim_rows_with_the_papers_40x(tmp_path):
    study = tmp_path / "study"
    for seed in range(3):
        # CQL -> SAC: a peak of 38, 40, 42 and 30 on average over the first 3 episodes; its score
        # collapses from 50 to 10 at the switch, CQL's goes on to 55
        sac = [20.0, 38.0 + 2 * seed, 32.0 - 2 * seed, 2.0, 1.0]
        _run(study, HC, "cql_sac", seed, 50.0, [10.0, 30.0, 60.0], sac, algo="cql")
        cql = [float("nan"), 0.5, 0.6, 0.4, 0.5]  # a zero Monte-Carlo return logs NaN
        _run(study, HC, "cql", seed, 50.0, [55.0, 55.0, 55.0 + seed], cql, algo="cql")
    claims = analyse(study, tmp_path / "out", experiment="fig2_switch", reps=200)["claims"]
    by_metric = {c["claim"].metric: c for c in claims}
    assert set(by_metric) == {"final", "q_peak", "q_early", "switch_change"}
    peak, early, drop = by_metric["q_peak"], by_metric["q_early"], by_metric["switch_change"]
    assert (peak["claim"].better, peak["claim"].paper_value) == ("cql_sac", 40.0)
    assert peak["means"] == pytest.approx((40.0, 0.6))
    assert peak["verdict"].startswith("reproduced; cql_sac's mean 40.00 [")
    assert peak["verdict"].endswith("the paper's 40 is inside the interval")
    assert early["means"] == pytest.approx((30.0, 0.55))  # CQL's NaN first episode left out
    assert early["verdict"].endswith("the paper's 40 is above the interval")
    assert peak["power"]["paper_effect"] == pytest.approx(40.0 - 0.6)
    assert drop["means"] == pytest.approx((5.0, -40.0)) and drop["verdict"] == "reproduced"
    assert drop["secondary"] is None and drop["disagree"] is None
    assert drop["power"]["needed"] is None  # the paper gives no size for the drop
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| peak mean Q / MC return | 40.00 / 0.60 | 1.00 | [1.00, 1.00] | reproduced;" in summary
    assert "| +5.0 / -40.0 | 1.00 | [1.00, 1.00] | reproduced |" in summary
    assert (tmp_path / "out" / "overestimation.png").exists()


def test_a_claim_names_a_known_measure():
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        Claim("x", "a", "b", metric="auc")
    with pytest.raises(ValueError, match="kind"):
        Claim("x", "a", "b", kind="worse")
    assert all(c.metric in METRICS for claims in CLAIMS.values() for c in claims)


def _notes(fig) -> list[str]:
    return [t.get_text() for t in fig.texts if t.get_text() != fig.get_suptitle()]


def test_figures_label_each_method_once_and_note_cells_with_few_seeds(tmp_path):
    from torchrl_o3f.analysis.figures import FORMATS, SCORE_LABEL, method_colors

    study = tmp_path / "study"
    methods = ["o3f_iql", "iql", "cql", "awac"]  # fig4_baselines' order
    for seed in range(3):
        for k, method in enumerate(methods):
            if method == "awac" and seed == 2:
                continue  # awac has 2 seeds: a note, not a silent cell
            ratios = [5.0 - k, 2.0, 1.0]
            _run(study, HC, method, seed, 10.0, [20.0 + 10 * k + seed, 30.0 + 10 * k], ratios)
    out = tmp_path / "out"
    res = analyse(study, out, experiment="fig4_baselines", reps=100)
    assert res["methods"] == methods
    for name in ("curves", "aggregates", "profiles", "overestimation"):
        for suffix in FORMATS:
            assert (out / name).with_suffix(suffix).stat().st_size > 1000, (name, suffix)
    from torchrl_o3f.analysis import figures

    colors = method_colors(methods)
    fig = figures.plot_profiles(
        {m: np.full((3, 1), 0.2 * (i + 1)) for i, m in enumerate(methods)},
        tmp_path / "profiles.png",
        reps=100,
        seed=0,
        methods=methods,
    )
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == methods  # was the bands' order
    assert [h.get_color() for h in legend.legend_handles] == [colors[m] for m in methods]
    (ax,) = fig.axes
    assert ax.get_xlim()[1] >= 100 and SCORE_LABEL in ax.get_xlabel()  # the 0-100 scale
    assert _notes(fig) == []  # 3 seeds everywhere: no note

    runs = [r for r in collect_runs(study) if not (r.method == "awac" and r.seed == 1)]
    fig = figures.plot_curves(runs, methods, [HC], tmp_path / "curves.png", reps=100, seed=0)
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == methods
    (note,) = _notes(fig)
    assert note.startswith("Fewer than 3 seeds") and f"awac on {HC} (1)" in note.replace("\n", " ")
    summary = (out / "summary.md").read_text()
    assert "| awac | 60.0 (2) † |" in summary and f"awac on {HC} (2)" in summary


def test_every_pair_of_methods_has_its_probability_of_improvement(tmp_path):
    study = tmp_path / "study"
    methods = ["o3f_iql", "iql", "cql", "awac"]
    for seed in range(3):
        for k, method in enumerate(methods):
            _run(study, HC, method, seed, 10.0, [10.0 * k + seed])
    res = analyse(study, tmp_path / "out", experiment="fig4_baselines", reps=100)
    pairs = res["pairwise"]
    assert len(pairs) == len(methods) * (len(methods) - 1) // 2
    assert [(p["x"], p["y"]) for p in pairs] == [
        (x, y) for i, x in enumerate(methods) for y in methods[i + 1 :]
    ]
    for p in pairs:
        assert 0 <= p["ci"][0] <= p["p"] <= p["ci"][1] <= 1
        # each method's seeds all lie above the earlier ones': the later one always wins
        assert p["p"] == 0.0 and p["seeds"] == (3, 3)
    summary = (tmp_path / "out" / "summary.md").read_text()
    lines = summary.splitlines()
    start = lines.index("| X | Y | seeds X / Y | P(X > Y) | 95% CI |") + 2
    rows = lines[start : lines.index("", start)]
    assert len(rows) == 6 and rows[0] == "| o3f_iql | iql | 3 / 3 | 0.00 | [0.00, 0.00] |"
