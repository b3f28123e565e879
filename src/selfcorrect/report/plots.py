"""Plots as inline SVG (matplotlib), for the self-contained HTML report."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display: draw to files only
import matplotlib.pyplot as plt  # noqa: E402

from selfcorrect.report.build import label  # noqa: E402

PHASE_COLOURS = {"retrieve": "#aa3377", "generate": "#4477aa", "feedback": "#ccbb44", "revise": "#ee6677",
                 "rollout": "#228833"}
FLIP_COLOURS = {"right_right": "#228833", "right_wrong": "#ee6677", "wrong_right": "#66ccee", "wrong_wrong": "#bbbbbb"}


def _svg(figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def accuracy_vs_tokens(report: dict) -> str:
    figure, axes = plt.subplots(figsize=(7, 4.2))
    for name, curve in (("sampling + vote", report["curves"]["vote"]), ("best-of-n", report["curves"]["best_of"])):
        points = curve["points"]
        if points:
            axes.plot([p["tokens"] for p in points], [p["accuracy"] for p in points], "--o", alpha=0.6,
                      label=f"{name} (n = {', '.join(str(p['n']) for p in points)})")
    colours = plt.get_cmap("tab20").colors  # a colour and a marker each: runs hold more than 10 strategies
    for i, strategy in enumerate(report["strategies"].values()):
        low, high = strategy["interval"]
        accuracy = strategy["accuracy"] or 0
        # max(0, ...): a Wilson bound can sit a rounding error past the estimate itself
        axes.errorbar(strategy["tokens_per_item"], accuracy, yerr=[[max(0.0, accuracy - low)], [max(0.0, high - accuracy)]],
                      fmt="sD^vP*Xh<>"[i % 10], color=colours[(2 * i) % 20 + (i // 10) % 2], capsize=3,
                      label=label(strategy))
    axes.set_xlabel("tokens per item (prompt + completion)")
    axes.set_ylabel("accuracy (95% interval)")
    axes.set_ylim(-0.02, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    axes.set_title("Accuracy against compute")
    return _svg(figure)


def flips(report: dict) -> str | None:
    rows = [(label(s), m) for s in report["strategies"].values() for m in s["flips"]]
    if not rows:
        return None
    figure, axes = plt.subplots(figsize=(7, 0.5 + 0.45 * len(rows)))
    names = [f"{name} · round {m['round']}" for name, m in rows]
    left = [0] * len(rows)
    for cell, colour in FLIP_COLOURS.items():
        values = [sum(m["counts"][cell].values()) for _, m in rows]
        axes.barh(names, values, left=left, color=colour, label=cell.replace("_", " → "))
        left = [a + b for a, b in zip(left, values)]
    axes.invert_yaxis()
    axes.set_xlabel("revisions")
    axes.legend(fontsize=7, ncol=4, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    return _svg(figure)


def online(report: dict) -> str | None:
    """Accuracy over the items, in order: with memory and without, cumulative and windowed."""
    if not report.get("online"):
        return None
    figure, axes = plt.subplots(figsize=(7, 4.2))
    for i, pair in enumerate(report["online"]["pairs"]):
        for arm, style in (("memory", "-"), ("twin", "--")):
            name = pair["strategy"] if arm == "memory" else pair["twin"]
            xs = range(1, pair["items"] + 1)
            axes.plot(xs, pair["curve"]["cumulative"][arm], style, color=f"C{i}", label=f"{name} (cumulative)")
            axes.plot(xs, pair["curve"]["window"][arm], style, color=f"C{i}", alpha=0.35,
                      label=f"{name} (last {report['online']['window']})")
    train = report["online"]["train_items"]
    if report["online"]["heldout_items"]:
        axes.axvline(train + 0.5, color="grey", linewidth=1)
        axes.text(train + 1, 0.02, "held out", fontsize=7, color="grey")
    axes.set_xlabel("items, in order")
    axes.set_ylabel("accuracy")
    axes.set_ylim(-0.02, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    return _svg(figure)


def cost(report: dict) -> str:
    strategies = list(report["strategies"].values())
    figure, axes = plt.subplots(figsize=(7, 0.6 + 0.45 * len(strategies)))
    names = [label(s) for s in strategies]
    left = [0.0] * len(strategies)
    for phase, colour in PHASE_COLOURS.items():
        values = [s["cost_per_item"].get(phase, {}).get("prompt_tokens", 0)  # reports from before a phase existed
                  + s["cost_per_item"].get(phase, {}).get("completion_tokens", 0) for s in strategies]
        axes.barh(names, values, left=left, color=colour, label=phase)
        left = [a + b for a, b in zip(left, values)]
    axes.invert_yaxis()
    axes.set_xlabel("tokens per item")
    axes.legend(fontsize=7, ncol=3, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    return _svg(figure)


def training_rounds(report: dict) -> list[tuple[str, str]]:
    """A self-training report's curves: held-out accuracy with its interval, the train
    side's pass@1, pass@k and never-solved share, diversity, the tail, and each round's loss."""
    rounds = report["rounds"]
    xs = [r["round"] for r in rounds]
    figures = []

    figure, axes = plt.subplots(figsize=(5.5, 3.6))
    accuracy = [r["heldout"]["accuracy"] for r in rounds]
    low = [max(0.0, a - r["heldout"]["interval"][0]) for a, r in zip(accuracy, rounds)]
    high = [max(0.0, r["heldout"]["interval"][1] - a) for a, r in zip(accuracy, rounds)]
    axes.errorbar(xs, accuracy, yerr=[low, high], fmt="-o", capsize=4, label=f"held-out ({rounds[0]['heldout']['strategy']})")
    for key, style in (("pass_at_1", "--s"), ("pass_at_k", "--^"), ("never_solved", ":x")):
        axes.plot(xs, [r["train"][key] for r in rounds], style, alpha=0.7, label=f"train {key.replace('_', ' ')}")
    axes.set_xticks(xs)
    axes.set_xlabel("round")
    axes.set_ylim(-0.02, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figures.append(("Accuracy per round (95% intervals on the held-out side)", _svg(figure)))

    figure, (left, right) = plt.subplots(1, 2, figsize=(8, 3.4))
    left.plot(xs, [r["train"]["distinct_answers"] for r in rounds], "-o", label="distinct answers / item")
    left.plot(xs, [r["train"]["answer_entropy"] for r in rounds], "-s", label="answer entropy (bits)")
    left.set_xticks(xs)
    left.set_xlabel("round")
    left.grid(alpha=0.3)
    left.legend(fontsize=7)
    for group in rounds[0]["train"]["tail"]:
        right.plot(xs, [r["train"]["tail"][group]["solve_rate"] for r in rounds], "-o", label=group)
    right.set_xticks(xs)
    right.set_xlabel("round")
    right.set_ylabel("train solve rate")
    right.set_ylim(-0.02, 1.02)
    right.grid(alpha=0.3)
    right.legend(fontsize=7, title="items, by the base's solve rate", title_fontsize=7)
    figures.append(("Diversity and the tail (collapse shows as falling curves)", _svg(figure)))

    losses = [(r["round"], r["loss_log"]) for r in rounds if r.get("loss_log")]
    if losses:
        figure, axes = plt.subplots(figsize=(5.5, 3.4))
        for number, log in losses:
            axes.plot(range(1, len(log) + 1), log, label=f"round {number}")
        axes.set_xlabel("training step")
        axes.set_ylabel("loss")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
        figures.append(("Training loss", _svg(figure)))
    reinforced = [(r["round"], r["signals"]) for r in rounds if r.get("signals")]
    if reinforced:
        figure, axes = plt.subplots(figsize=(5.5, 3.4))
        for number, signals in reinforced:
            steps = [s["step"] for s in signals]
            axes.plot(steps, [s["reward"] for s in signals], label=f"round {number}: reward")
            axes.plot(steps, [s.get("frac_reward_zero_std") for s in signals], "--",
                      label=f"round {number}: groups with no reward variance")
            axes.plot(steps, [s.get("entropy") for s in signals], ":", label=f"round {number}: entropy")
            for key in ("attempt_1_accuracy", "attempt_2_accuracy"):
                if any(key in s for s in signals):
                    axes.plot(steps, [s.get(key) for s in signals], "-.", label=f"round {number}: {key.replace('_', ' ')}")
        axes.set_xlabel("GRPO step")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
        figures.append(("GRPO signals per step", _svg(figure)))
    return figures


def training_compared(comparison: dict) -> str:
    """Each model's accuracy on every strategy (95% intervals); for revising strategies, the
    first attempt beside the returned answer, so a self-correction gain shows as the step up."""
    rows = comparison["rows"]
    figure, axes = plt.subplots(figsize=(7, 0.8 + 0.42 * len(rows)))
    names = [f"{r['model']} · {r['strategy']}" for r in rows]
    accuracy = [r["accuracy"] for r in rows]
    low = [max(0.0, a - r["interval"][0]) for a, r in zip(accuracy, rows)]
    high = [max(0.0, r["interval"][1] - a) for a, r in zip(accuracy, rows)]
    axes.barh(names, accuracy, xerr=[low, high], color="#4477aa", capsize=3, label="returned answer")
    first = [(i, r["attempts"]["attempt_1"]) for i, r in enumerate(rows) if r.get("attempts")]
    if first:
        axes.plot([a for _, a in first], [i for i, _ in first], "o", color="#ee6677", label="attempt 1")
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    axes.set_xlabel("held-out accuracy (95% interval)")
    axes.grid(alpha=0.3, axis="x")
    axes.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2)
    return _svg(figure)


def improvement_rounds(report: dict) -> list[tuple[str, str]]:
    """An `improve` report's curves: each strategy's held-out (and probe) accuracy per round
    with its interval, rejected rounds hollow, and the students' diversity."""
    rounds = [r for r in report["rounds"] if r.get("heldout")]
    figures = []
    for side, caption in (("heldout", "Held-out accuracy per round (95% intervals; hollow: rejected)"),
                          ("probe", "The probe, never trained on (95% intervals; hollow: rejected)")):
        if not all(r.get(side) for r in rounds):
            continue
        figure, axes = plt.subplots(figsize=(6, 3.8))
        for strategy in rounds[0][side]:
            xs = [r["round"] for r in rounds if strategy in r[side]]
            ms = [r[side][strategy] for r in rounds if strategy in r[side]]
            ys = [m["accuracy"] for m in ms]
            line = axes.errorbar(xs, ys, yerr=[[max(0.0, y - m["interval"][0]) for y, m in zip(ys, ms)],
                                               [max(0.0, m["interval"][1] - y) for y, m in zip(ys, ms)]],
                                 fmt="-o", capsize=4, label=strategy)
            rejected = [(r["round"], r[side][strategy]["accuracy"]) for r in rounds
                        if not r["accepted"] and strategy in r[side]]
            if rejected:
                axes.plot(*zip(*rejected), "o", markersize=9, markerfacecolor="white",
                          markeredgecolor=line[0].get_color())
        axes.set_xticks([r["round"] for r in rounds])
        axes.set_xlabel("round")
        axes.set_ylim(-0.02, 1.02)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
        figures.append((caption, _svg(figure)))
    sampled = [r for r in report["rounds"] if r.get("train")]
    if sampled:
        figure, axes = plt.subplots(figsize=(5.5, 3.4))
        for student in sampled[0]["train"]["diversity"]:
            axes.plot([r["round"] for r in sampled], [_or_nan(r["train"]["diversity"].get(student)) for r in sampled], "-o",
                      label=f"{student}: distinct answers / item")
        axes.plot([r["round"] for r in sampled], [r["train"]["unlabelled_share"] for r in sampled], ":x",
                  label="train items left unlabelled (the tail)")
        axes.set_xticks([r["round"] for r in sampled])
        axes.set_xlabel("round (sampled by the accepted model)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
        figures.append(("Diversity and the tail", _svg(figure)))
    return figures


def _or_nan(value: float | None) -> float:
    """A point left out of a line (an adaptive round sampled no item in full: no diversity)."""
    return float("nan") if value is None else value
