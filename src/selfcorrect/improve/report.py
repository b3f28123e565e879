"""The `improve` report: report.md (every round: each strategy held out with its interval and
tokens, the paired test against the accepted round, the probe, the data, what was rejected
and why, the alarms), report.json (everything) and report.html (the Markdown and the curves),
written after every round."""

from __future__ import annotations

import json
from pathlib import Path

from selfcorrect.train.report import phases_table, split_note


def served_round(rounds: list[dict]) -> dict | None:
    """The accepted round the recipe serves: the one whose best strategy measured most accurate
    held out, the cheaper on a tie, the later on both. Not simply the last accepted: a round
    not significantly worse is accepted, and the loop goes on from it, but it may be worse."""
    measured = [r for r in rounds if r["accepted"] and r.get("heldout")]
    return max(measured, key=lambda r: (r["heldout"][r["best"]]["accuracy"], -r["heldout"][r["best"]]["tokens_per_item"],
                                        r["round"]), default=None)


def write(report: dict, out: Path) -> None:
    from selfcorrect.report.html import markdown_page
    from selfcorrect.report.plots import improvement_rounds

    markdown = render(report)
    tmp = out / "report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(out / "report.json")  # the file a resumed run trusts: never half written
    (out / "report.md").write_text(markdown)
    title = f"selfcorrect improve: {report['spec']['task']}, labels {report['spec']['labels']}"
    (out / "report.html").write_text(markdown_page(title, markdown, improvement_rounds(report)))


def _machine(machine: dict) -> str:
    flags = ", ".join(machine.get("bf16_flags") or []) or "no bf16 units"
    return f"{machine.get('cpu')} ({flags})" + (f", GPU {machine['gpu']}" if machine.get("gpu") else "")


def _cell(m: dict | None) -> str:
    if not m:
        return "—"
    low, high = m["interval"]
    return f"{100 * m['accuracy']:.1f} ({100 * low:.1f}–{100 * high:.1f}), {m['tokens_per_item']:.0f} tok"


def _versus(v: dict | None) -> str:
    return f"{v['wrong_to_right']} / {v['right_to_wrong']}, p={v['p_value']:.2g}" if v else "—"


def render(report: dict) -> str:
    spec, rounds = report["spec"], report["rounds"]
    strategies = report["evaluated"]
    lines = [f"# Self-improvement: {spec['task']}, labels {spec['labels']}", ""]
    if report["oracle"]:
        lines += ["> **ORACLE run**: the training data was verified with the task's gold check (labels gold). "
                  "The held-out side is untouched; a user without labels could not make this data.", ""]
    if report.get("feedback_labelled"):
        lines += ["> **FEEDBACK-LABELLED run**: where clients' feedback gave an item's answer, the training data "
                  "was verified against it (labels feedback); elsewhere by the checks alone.", ""]
    if report.get("traffic"):
        lines += [traffic_note(report["traffic"]), ""]
    lines += [f"{report['train_items']} train items, {report['heldout_items']} held-out items (split by item id, seed "
              f"{spec['seed']}{split_note(report.get('split'))})" + (f", probe `{spec['probe']}` ({report['probe_items']} items, never trained on)"
                                    if spec.get("probe") else "")
              + (f", curriculum {', '.join(f'`{c}` ({n} items)' for c, n in zip(spec['curriculum'], report['curriculum_items']))}"
                 if spec.get("curriculum") else "") + ".",
              f"Teacher `{report['teacher']}` in {spec['chains']} independent chains"
              + ("" if spec["labels"] != "none" else " (a label is a program that passes every visible test and reads its inputs)"
                 if report.get("kind") == "code" else f" (a label needs {spec['agree']} agreeing)")
              + f"; students {', '.join(f'`{s}`' for s in spec['students'])} ({spec['student_samples']} samples each); "
              f"training from the {'base each round' if spec['restart'] == 'base' else 'accepted checkpoint'}, "
              f"{'LoRA' if spec['lora'] else 'full'}, {spec['epochs']} epochs, lr {spec['learning_rate']}; held out "
              f"measured at temperature 0.3; engine {report['engine']}, torch in {report['precision']}; {_machine(report['machine'])}.", "",
              "Held-out accuracy % (95% CI) and tokens per item:", "",
              "| round | accepted | " + " | ".join(f"`{s}`" for s in strategies) + " | vs accepted (w→r / r→w, p) | seconds |",
              "|---|---|" + "---|" * len(strategies) + "---|---|"]
    for r in rounds:
        held = r.get("heldout") or {}
        versus = "; ".join(f"{s}: {_versus(v)}" for s, v in (r.get("versus_accepted") or {}).items()) or "—"
        lines.append(f"| {r['round']} | {'yes' if r['accepted'] else '**rejected**'} | "
                     + " | ".join(_cell(held.get(s)) for s in strategies) + f" | {versus} | {r['seconds']:.0f} |")
    if any(r.get("probe") for r in rounds):
        lines += ["", f"The probe `{spec['probe']}` (never trained on):", "",
                  "| round | " + " | ".join(f"`{s}`" for s in strategies) + " | vs base |", "|---|" + "---|" * len(strategies) + "---|"]
        for r in rounds:
            if r.get("probe"):
                versus = "; ".join(f"{s}: {_versus(v)}" for s, v in (r.get("probe_versus_base") or {}).items()) or "—"
                lines.append(f"| {r['round']} | " + " | ".join(_cell(r["probe"].get(s)) for s in strategies) + f" | {versus} |")
    trained = [r for r in rounds if r.get("train")]
    if trained:
        code = report.get("kind") == "code"  # hard-coded programs are refused on code only
        lines += ["", "The data (sampled by the accepted model; labels measured against gold afterwards, never used):", "",
                  "| round | sampled by | temperature | train items | labelled | labels right | "
                  + ("hard-coded programs refused | " if code else "") + "examples | by format | "
                  "written | students' distinct answers | loss |", "|---|---|---|---|---|---|" + ("---|" if code else "")
                  + "---|---|---|---|---|"]
        for r in trained:
            t = r["train"]
            lines.append(f"| {r['round']} | {r['sampled_by']} | {r['temperature']:.1f} | {t['items']} | {t['labelled']} | "
                         + (f"{100 * t['labels_right']:.1f}%" if t["labels_right"] is not None else "—")
                         + (f" | {t.get('hard_coded', 0)}" if code else "")
                         + f" | {r['examples']} | " + ", ".join(f"{k} {v}" for k, v in r["formats"].items())
                         + f" | {r['written']} | " + ", ".join(f"{s} {d:.2f}" if d is not None else f"{s} —"
                                                       for s, d in t["diversity"].items())
                         + " | " + (f"{r['loss']:.3f}" if r.get("loss") is not None else "—") + " |")
    lines += ["", "Decisions:", ""] + [f"- round {r['round']}: {'accepted' if r['accepted'] else 'rejected'}: {r['why']}"
                                       for r in rounds]
    alarms = [f"- round {r['round']}: {a}" for r in rounds for a in r.get("alarms", [])]
    lines += ["", "Alarms and steering:", "", *(alarms or ["- none"])]
    lines += phases_table(rounds)
    control = next((r["control"] for r in rounds if r.get("control")), None)
    if control:
        lines += ["", f"Control (round 1, {control['examples']} examples with their replies shuffled across items: "
                      "the same format, wrong labels; it decides nothing): "
                  + "; ".join(f"`{s}` real {100 * rounds[1]['heldout'][s]['accuracy']:.1f}% against control "
                              f"{100 * control['heldout'][s]['accuracy']:.1f}%, real minus control "
                              f"{100 * v['difference']:+.1f} points ({_versus(v)})"
                              for s, v in control["real_minus_control"].items()) + "."]
    accepted = served_round(rounds)
    if accepted:
        served, base = accepted["best"], rounds[0]["best"]
        lines += ["", f"Recipe (recipe.json): round {accepted['round']} served with `{served}`: "
                  f"{_cell(accepted['heldout'][served])}; the base's best, `{base}`: {_cell(rounds[0]['heldout'][base])}."]
        confirmed = report.get("confirmation")
        if confirmed and (confirmed["round"], confirmed["strategy"]) == (accepted["round"], served):
            v = confirmed["versus_base"]
            lines += ["", f"Confirmation ({confirmed['items']} items set aside, nothing chosen on them, measured once "
                          f"when the run ended): `{served}` {_cell(confirmed)}"
                          f" ({'inside' if confirmed['inside_heldout_interval'] else 'OUTSIDE'} its held-out interval); "
                          f"the base's `{confirmed['base']['strategy']}` {_cell(confirmed['base'])}; "
                          f"paired {v['wrong_to_right']} / {v['right_to_wrong']}, p={v['p_value']:.2g}."]
    if report.get("stopped"):
        lines += ["", f"Stopped: {report['stopped']}."]
    return "\n".join(lines) + "\n"


def traffic_note(traffic: dict) -> str:
    """Where a served-traffic run's measured sides got their references, and how the check
    compared with the clients' feedback."""
    sides = "; ".join(f"{side}: " + ", ".join(f"{n} by {source}" for source, n in sorted(counts.items()))
                      for side, counts in traffic["references"].items() if counts)
    agreement = traffic.get("check_vs_feedback")
    agreed = (f" Where clients gave feedback, the check labelled {agreement['check_labelled']} of "
              f"{agreement['feedback_items']} items and agreed with the feedback on {agreement['agreed']}."
              if agreement and agreement["feedback_items"] else "")
    return (f"Served traffic: {traffic['requests']} requests, {traffic['items']} questions, no gold. The measured "
            f"sides are scored by the clients' feedback, else the request's check, else the base teacher's label "
            f"('check'); 'none' were left unmeasured ({sides}).{agreed}")
