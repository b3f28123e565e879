"""The self-training report: report.md (tables, alarms, notes), report.json (everything) and
report.html (the Markdown with the round curves), written after every round."""

from __future__ import annotations

import json
import math
from pathlib import Path

from selfcorrect.stats import mcnemar


def split_note(split: dict | None) -> str:
    """How many train items the split by question dropped (runs from before it: nothing)."""
    if not split:
        return ""
    dropped = split.get("dropped_for_a_shared_prompt", 0) + split.get("dropped_for_a_probe_prompt", 0)
    return f"; then by question: {dropped} train items dropped for asking what a measured item asks"


def phases_table(rounds: list[dict]) -> list[str]:
    """Where each round's time went (report.json's `phases`): seconds per phase, and tokens/s
    where tokens were made (export: opening the checkpoint on its engine, GGUF write-back or
    servers included). Empty for runs from before it was recorded."""
    timed = [r for r in rounds if r.get("phases")]
    if not timed:
        return []
    phases = ("sample", "label", "train", "export", "measure")

    def cell(p: dict | None) -> str:
        if not p:
            return "—"
        figures = [f"{p['tokens_per_s']:.0f} tok/s"] if p.get("tokens_per_s") else []
        figures += [f"CPU share {100 * p['cpu_share']:.0f}%"] if p.get("cpu_share") is not None else []
        return f"{p['seconds']:.0f}" + (f" ({', '.join(figures)})" if figures else "")

    return ["", "Where the time went (seconds, tokens/s where tokens were made; the training's CPU share: its "
                "CPU time over its threads' wall time, well below 100% when other jobs share the cores):", "",
            "| round | " + " | ".join(phases) + " | all |", "|---|" + "---|" * (len(phases) + 1),
            *(f"| {r['round']} | " + " | ".join(cell(r["phases"].get(p)) for p in phases)
              + f" | {r.get('seconds', 0):.0f} |" for r in timed)]


def write(report: dict, out: Path) -> None:
    from selfcorrect.report.html import render_training

    markdown = render(report)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown)
    (out / "report.html").write_text(render_training(report, markdown))


def render(report: dict) -> str:
    spec = report["spec"]
    lines = [f"# Self-training: {spec['method']} on {spec['task']}, labels {spec['labels']}", "",
             *(["> **ORACLE-derived training data**: star's rationales were hinted with gold answers of train "
                "items. The held-out side is untouched; the data is not what a user without labels could make.", ""]
               if spec["method"] == "star" and spec["labels"] == "gold" else []),
             f"{report['train_items']} train items, {report['heldout_items']} held-out items (split by item id, "
             f"seed {spec['seed']}{split_note(report.get('split'))}); sampling `{spec['sample']}` at temperature {spec['sample_temperature']}; "
             f"held-out measured with `{', '.join(spec['evaluate'])}`; training from the "
             f"{'base each round (ReST-EM)' if spec['restart'] == 'base' else 'previous round'}, "
             f"{'LoRA' if spec['lora'] else 'full fine-tuning'}, {spec['epochs']} epochs, lr {spec['learning_rate']}.", "",
             "| round | held-out accuracy (95% CI) | vs previous (w→r / r→w, p) | vs base (p) | train pass@1 | "
             "pass@k | never solved | distinct answers | entropy | examples | data right | loss | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rounds"]:
        held, train = r["heldout"], r["train"]
        low, high = held["interval"]
        previous = held.get("versus_previous")
        base = held.get("versus_base")
        loss = r.get("training", {}).get("loss")
        lines.append(
            f"| {r['round']} | {100 * held['accuracy']:.1f} ({100 * low:.1f}–{100 * high:.1f}) | "
            + (f"{previous['wrong_to_right']} / {previous['right_to_wrong']}, p={previous['p_value']:.3g}" if previous else "—")
            + " | " + (f"{100 * base['difference']:+.1f}, p={base['p_value']:.3g}" if base else "—")
            + f" | {100 * train['pass_at_1']:.1f} | {100 * train['pass_at_k']:.1f} | {100 * train['never_solved']:.1f} | "
            f"{train['distinct_answers']:.2f} | {train['answer_entropy']:.2f} | {r.get('examples', '—')} | "
            + (f"{100 * r['data_right']:.0f}%" if r.get("data_right") is not None else "—") + " | "
            + (f"{loss:.3f}" if loss is not None else "—") + f" | {r['seconds']:.0f} |")
    lines += ["", "Solve rate on the train side by how hard an item was for the base:", "",
              "| round | " + " | ".join(report["rounds"][0]["train"]["tail"]) + " |",
              "|---|" + "---|" * len(report["rounds"][0]["train"]["tail"])]
    for r in report["rounds"]:
        cells = [f"{100 * g['solve_rate']:.1f} ({g['items']})" if g["solve_rate"] is not None else "—"
                 for g in r["train"]["tail"].values()]
        lines.append(f"| {r['round']} | " + " | ".join(cells) + " |")
    hinted = [r for r in report["rounds"] if r.get("rationales")]
    if hinted:
        lines += ["", "Rationales (star: train items the round's model failed, asked again with "
                  + ("the gold answer as a hint: **oracle-derived training data**; the held-out side never sees it)"
                     if spec["labels"] == "gold" else "its own program-aided answer as a hint: no gold)") + ":", ""]
        lines += [f"- round {r['round']}'s model: {r['rationales']['items_hinted']} items hinted, "
                  f"{r['rationales']['items_rationalized']} rationalized, {r['rationales']['examples']} examples "
                  f"(trained on in round {r['round'] + 1})" for r in hinted]
    revisers = list(dict.fromkeys(name for r in report["rounds"] for name in r["heldout"].get("attempts", {})))
    if revisers:
        lines += ["", "Attempt 1 and attempt 2 on the held-out side, for each strategy whose second attempt revises "
                  "the first (Δ = attempt 2 − attempt 1):", "",
                  "| strategy | round | attempt 1 | attempt 2 | Δ (McNemar p) | wrong→right | right→wrong |",
                  "|---|---|---|---|---|---|---|"]
        for name in revisers:
            for r in report["rounds"]:
                if a := r["heldout"].get("attempts", {}).get(name):
                    lines.append(f"| `{name}` | {r['round']} | {100 * a['attempt_1']:.1f} | {100 * a['attempt_2']:.1f} | "
                                 f"{100 * (a['attempt_2'] - a['attempt_1']):+.1f} "
                                 f"({mcnemar(a['wrong_to_right'], a['right_to_wrong']):.2g}) | {a['wrong_to_right']} | "
                                 f"{a['right_to_wrong']} |")
    reinforced = [r for r in report["rounds"] if r.get("signals")]
    if reinforced:
        lines += ["", f"{'GRPO' if spec['method'] == 'grpo' else 'Two-attempt GRPO (Stage I, then II)'} (rewarded by "
                  "the task's check on train items; TRL's signals, first step → last):", "",
                  "| round | steps | reward | reward std | groups with no reward variance | entropy | completions/s |",
                  "|---|---|---|---|---|---|---|"]
        for r in reinforced:
            first, last = r["signals"][0], r["signals"][-1]
            zero = r["training"]["zero_variance_groups"]
            lines.append(f"| {r['round']} | {r['training']['steps']} | {first['reward']:.3f} → {last['reward']:.3f} | "
                         f"{first['reward_std']:.3f} → {last['reward_std']:.3f} | "
                         + (f"{100 * zero:.0f}%" if zero is not None else "—")
                         + f" | {first.get('entropy', math.nan):.3f} → {last.get('entropy', math.nan):.3f} | "
                         f"{r['training'].get('completions_per_s', '—')} |")
        if spec["method"] == "score":
            lines += ["", f"The review turn between the attempts: {reinforced[0]['training'].get('review', 'intrinsic: no word on whether attempt 1 was right')}.",
                      "", f"Note: {reinforced[0]['training']['kl_note']}."]
    judged = [r for r in report["rounds"] if r.get("judge")]
    if judged:
        lines += ["", "The model as judge of its own samples (self-rewarding pairs; intrinsic, no gold in the pairs), "
                  "measured afterwards against the task's check:", "",
                  "| round's model | judgments | no readable score | AUC right vs wrong (comparisons) | pairs | "
                  "ordered as the check | backwards | same verdict |", "|---|---|---|---|---|---|---|---|"]
        for r in judged:
            j = r["judge"]
            lines.append(f"| {r['round']} | {j['judgments']} | "
                         + (f"{100 * j['no_score']:.1f}%" if j["no_score"] is not None else "—") + " | "
                         + (f"{j['auc']:.3f} ({j['comparisons']})" if j["auc"] is not None else "—")
                         + f" | {j['pairs']} | {j['pairs_as_the_check']} | {j['pairs_backwards']} | "
                         f"{j['pairs_same_verdict']} |")
    labelled = [r for r in report["rounds"] if r.get("pseudo_labels")]
    if labelled:
        lines += ["", f"Pseudo-labels ({spec['labels']}, no gold in the data; their accuracy measured against gold "
                  "afterwards):", ""]
        lines += [f"- round {r['round']}: {r['pseudo_labels']['items_labelled']} items labelled, "
                  + (f"{100 * r['pseudo_labels']['accuracy_against_gold']:.1f}% right"
                     if r["pseudo_labels"]["accuracy_against_gold"] is not None else "none right to measure")
                  for r in labelled]
    alarms = [f"- round {r['round']}: {a}" for r in report["rounds"] for a in r["alarms"]]
    lines += ["", "Alarms:", "", *(alarms or ["- none"])]
    lines += phases_table(report["rounds"])
    if report.get("stopped"):
        lines += ["", f"Stopped: {report['stopped']}."]
    return "\n".join(lines) + "\n"
