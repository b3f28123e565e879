"""Self-training runs side by side on the same held-out items (`selfcorrect train-compare`):
the base and each run's last round, every evaluated strategy with its interval, the two
attempts of the revising ones with their flips, and paired tests between the models on one
strategy. The runs must have measured the very same held-out items (the same task, limit,
share and seed), or the comparison is refused."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

from selfcorrect.errors import ConfigError
from selfcorrect.stats import mcnemar, paired, wilson


def load(folder: Path) -> dict:
    path = folder / "report.json" if folder.is_dir() else folder
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no training report at {path}", "give the folder `selfcorrect train --out` wrote") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not a training report ({e})", "give the folder `selfcorrect train --out` wrote") from None
    held = report.get("rounds", [{}])[0].get("heldout", {})
    if "by_strategy" not in held:
        raise ConfigError(f"{path} keeps no verdict per item and strategy (written by an older selfcorrect)",
                          "run the training again to compare it")
    return report


def compare(reports: dict[str, dict], strategy: str | None = None) -> dict:
    """`reports`: label → report. Rows: the base (round 0, every strategy any run measured on
    it) and each run's last round. Pairwise tests on `strategy` (default: the first revising
    strategy every run measured, else the first strategy they share)."""
    if len(reports) < 2:
        raise ConfigError("comparing needs two training reports or more", "give several `train --out` folders")
    items = {label: set(r["rounds"][0]["heldout"]["correct"]) for label, r in reports.items()}
    first, *others = items
    for label in others:
        if items[label] != items[first]:
            raise ConfigError(f"{label} measured other held-out items than {first} "
                              f"({len(items[label] ^ items[first])} differ)",
                              "compare runs made with the same --task, --limit, --heldout and --seed")
    bases = {r["base"] for r in reports.values()}
    if len(bases) > 1:
        raise ConfigError(f"the runs start from different bases ({', '.join(sorted(bases))})",
                          "compare runs trained from the same base")
    rows: list[dict] = []
    base_seen: set[str] = set()
    for label, report in reports.items():
        for name, verdicts in report["rounds"][0]["heldout"]["by_strategy"].items():
            if name not in base_seen:
                base_seen.add(name)
                rows.append(_row("base", 0, name, verdicts, report["rounds"][0]["heldout"]))
    for label, report in reports.items():
        last = report["rounds"][-1]
        if last["round"] == 0:
            continue
        for name, verdicts in last["heldout"]["by_strategy"].items():
            rows.append(_row(f"{label} ({report['spec']['method']})", last["round"], name, verdicts, last["heldout"]))
    shared = set.intersection(*(set(r["rounds"][-1]["heldout"]["by_strategy"]) for r in reports.values()))
    revising = [n for n in reports[first]["rounds"][0]["heldout"].get("attempts", {}) if n in shared]
    chosen = strategy or (revising[0] if revising else next((n for n in reports[first]["spec"]["evaluate"] if n in shared), None))
    if chosen not in shared:
        raise ConfigError(f"no strategy measured by every run{f' called {chosen}' if chosen else ''}",
                          f"choose one of: {', '.join(sorted(shared)) or 'none shared'}")
    models = [r for r in rows if r["strategy"] == chosen]
    pairs = []
    for a, b in combinations(models, 2):
        pairs.append({"from": a["model"], "to": b["model"], **paired(a["verdicts"], b["verdicts"]).to_dict()})
    oracle = [label for label, r in reports.items() if r["spec"]["method"] == "star" and r["spec"]["labels"] == "gold"]
    return {"items": len(items[first]), "runs": {label: r["spec"] for label, r in reports.items()},
            "strategy": chosen, "rows": rows, "pairs": pairs, "oracle_derived": oracle}


def _row(model: str, round_number: int, strategy: str, verdicts: dict, heldout: dict) -> dict:
    n, right = len(verdicts), sum(verdicts.values())
    row = {"model": model, "round": round_number, "strategy": strategy, "accuracy": right / n,
           "interval": list(wilson(right, n)), "verdicts": verdicts}
    if attempts := heldout.get("attempts", {}).get(strategy):
        row["attempts"] = {k: v for k, v in attempts.items() if k not in ("first", "second")}
        row["attempts"]["intervals"] = [list(wilson(round(attempts[k] * n), n)) for k in ("attempt_1", "attempt_2")]
        row["attempts"]["p_value"] = mcnemar(attempts["wrong_to_right"], attempts["right_to_wrong"])
    return row


def render(comparison: dict) -> str:
    lines = [f"# Self-training runs compared on {comparison['items']} held-out items", "",
             *([f"> **ORACLE-derived training data** in {', '.join(comparison['oracle_derived'])}.", ""]
               if comparison["oracle_derived"] else []),
             "Runs: " + "; ".join(f"`{label}`: {spec['method']} ({spec['labels']} labels"
                                  + (f", {spec['traces']} traces" if spec["method"] == "correction" else "")
                                  + f", {spec['rounds']} round{'s' if spec['rounds'] > 1 else ''})"
                                  for label, spec in comparison["runs"].items()) + ".", "",
             "| model | round | strategy | accuracy (95% CI) | attempt 1 (95% CI) | attempt 2 (95% CI) | Δ (p) | "
             "wrong→right | right→wrong |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in comparison["rows"]:
        low, high = r["interval"]
        cells = [f"{r['model']}", str(r["round"]), f"`{r['strategy']}`",
                 f"{100 * r['accuracy']:.1f} ({100 * low:.1f}–{100 * high:.1f})"]
        if a := r.get("attempts"):
            (low1, high1), (low2, high2) = a["intervals"]
            cells += [f"{100 * a['attempt_1']:.1f} ({100 * low1:.1f}–{100 * high1:.1f})",
                      f"{100 * a['attempt_2']:.1f} ({100 * low2:.1f}–{100 * high2:.1f})",
                      f"{100 * (a['attempt_2'] - a['attempt_1']):+.1f} ({a['p_value']:.2g})",
                      str(a["wrong_to_right"]), str(a["right_to_wrong"])]
        else:
            cells += ["—"] * 5
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Δ's p: McNemar's exact test of attempt 2 against attempt 1 on the same items (the flips).",
              "", f"Paired tests on `{comparison['strategy']}` (the returned answers; wrong→right counts items the "
              "second model gets right and the first wrong; McNemar's exact test):", "",
              "| from | to | wrong→right | right→wrong | difference | p |", "|---|---|---|---|---|---|"]
    lines += [f"| {p['from']} | {p['to']} | {p['wrong_to_right']} | {p['right_to_wrong']} | "
              f"{100 * p['difference']:+.1f} | {p['p_value']:.3g} |" for p in comparison["pairs"]]
    return "\n".join(lines) + "\n"


def write(comparison: dict, out: Path) -> str:
    from selfcorrect.report import plots
    from selfcorrect.report.html import markdown_page

    out.mkdir(parents=True, exist_ok=True)
    markdown = render(comparison)
    (out / "compare.json").write_text(json.dumps(comparison, indent=2))
    (out / "compare.md").write_text(markdown)
    (out / "compare.html").write_text(markdown_page(
        "selfcorrect: self-training runs compared", markdown,
        [("Held-out accuracy per model and strategy; the dot is attempt 1 of a revising strategy",
          plots.training_compared(comparison))]))
    return markdown
