"""Issue 23's quality check: the held-out `single` accuracy of one RFT round trained in fp32 and
one trained in bf16, paired on the same items, from the store both runs wrote.

Made by (docs/FINDINGS.md, section 8):
    selfcorrect --store S models export --out BASE
    selfcorrect --store S --precision fp32 train --task arithmetic:n=600 --limit 600 --heldout 0.5 \\
        --sample self-consistency:n=6 --evaluate single --rounds 1 --method rft --labels gold --out OUT-fp32
    (the same with --precision bf16, --out OUT-bf16; each stopped once its round-1 held-out run was stored)
    python docs/findings/precision_heldout.py --store S --out docs/findings/precision-rft
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from selfcorrect.stats import mcnemar, wilson
from selfcorrect.models.lineage import Lineage
from selfcorrect.runner import results_by_strategy
from selfcorrect.store import Store


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    store = Store(args.store, read_only=True)
    held = sorted((r for r in store.runs() if r.status == "complete" and r.config.get("items") == 314),
                  key=lambda r: r.created_at)  # the held-out side's runs (the train side has 286 items)
    lineage = Lineage(args.store)
    rounds = sorted((c for c in lineage.all() if c.round == 1), key=lambda c: c.created_at)
    lineage.close()
    report = {"runs": {}, "paired": {}}
    for run in held:
        # a run measures the checkpoint registered last before it (round 0's: the base)
        before = [c for c in rounds if c.created_at < run.created_at]
        label = before[-1].name if before else "base"
        if label in report["runs"]:
            continue  # the base measured again by the second training, from the cache
        [rows] = results_by_strategy(store, run).values()
        correct = {r.item: r.final.correct for r in rows}
        right, n = sum(correct.values()), len(correct)
        report["runs"][label] = {"run": run.run_id, "model": run.config["model"], "items": n, "accuracy": right / n,
                                 "interval": list(wilson(right, n)), "correct": correct}
    keys = list(report["runs"])
    for a, b in ((x, y) for i, x in enumerate(keys) for y in keys[i + 1:]):
        first, second = report["runs"][a]["correct"], report["runs"][b]["correct"]
        up = sum(not first[i] and second[i] for i in first)
        down = sum(first[i] and not second[i] for i in first)
        report["paired"][f"{a} -> {b}"] = {"wrong_to_right": up, "right_to_wrong": down, "p_value": mcnemar(up, down),
                                          "difference": (up - down) / len(first)}
    report["training"] = {c.name: c.metrics for c in rounds}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    lines = ["# One RFT round in fp32 and in bf16: held-out `single`, paired", "",
             "| model | held-out `single` (95% CI) | run |", "|---|---|---|"]
    for label, r in report["runs"].items():
        lines.append(f"| {label} | {100 * r['accuracy']:.1f}% ({100 * r['interval'][0]:.1f}–{100 * r['interval'][1]:.1f}) "
                     f"| {r['run']} |")
    lines += ["", "| pair | w→r | r→w | McNemar p | difference |", "|---|---|---|---|---|"]
    for pair, p in report["paired"].items():
        lines.append(f"| {pair} | {p['wrong_to_right']} | {p['right_to_wrong']} | {p['p_value']:.3g} | "
                     f"{100 * p['difference']:+.1f} points |")
    lines += ["", "| checkpoint | precision | seconds | tokens | loss |", "|---|---|---|---|---|"]
    for name, m in report["training"].items():
        lines.append(f"| {name} | {m.get('precision')} | {m.get('seconds')} | {m.get('tokens')} | {m.get('loss', 0):.4f} |")
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
