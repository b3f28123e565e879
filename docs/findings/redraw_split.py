"""Issue 34, item 1: the train studies of FINDINGS sections 5-8 on held-out items no trained
question reaches.

Those studies split arithmetic:n=600 by item id, and the generator asks some questions under
two ids, so a few held-out items ask word for word what a train item asks (and what the
training data may answer). Their models are not retrained here: every committed report keeps
each held-out item's verdict, so this script drops the held-out items whose question (the
normalised first user turn, `first_prompt`, as the split now compares them) is also asked on
the side the model learned from, and recomputes every accuracy, interval and paired test on the
rest. What it drops, and how many of the committed training rows ask a held-out question, is
in its report.

    .venv/bin/python docs/findings/redraw_split.py --out docs/findings/split-redraw
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

from selfcorrect.stats import paired, wilson
from selfcorrect.tasks import parse_task
from selfcorrect.train.data import first_prompt

HERE = Path(__file__).parent
TRAIN_STUDIES = ["train-rft-gold", "train-star-program", "train-dpo-gold", "train-dpo-judge", "train-grpo",
                 "train-score", "train-correction"]


def prompts_of(task_spec: str, data: str | None) -> dict[str, str]:
    return {item.id: first_prompt(item.view.messages) for item in parse_task(task_spec, data).items()}


def data_rows(study: Path) -> list[dict]:
    rows = []
    for path in sorted(study.glob("round-*/data.jsonl*")):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt") as handle:
            rows += [json.loads(line) for line in handle if line.strip()]
    return rows


def measure(verdicts: dict[str, bool], keep: set[str]) -> dict:
    """Accuracy and its interval on all the items, and on the kept ones."""
    kept = {i: v for i, v in verdicts.items() if i in keep}
    out = {}
    for name, side in (("all", verdicts), ("clean", kept)):
        right = sum(side.values())
        low, high = wilson(right, len(side))
        out[name] = {"items": len(side), "accuracy": right / len(side) if side else 0.0, "interval": [low, high]}
    return out


def _versus(before: dict[str, bool], after: dict[str, bool], held: set[str], keep: set[str]) -> dict:
    """The paired comparison on every held-out item and on the kept ones."""
    return {side: paired({i: v for i, v in before.items() if i in items},
                         {i: v for i, v in after.items() if i in items}).to_dict()
            for side, items in (("all", held), ("clean", keep))}


def leaked(held: list[str], learned_from: list[str], prompt: dict[str, str]) -> list[str]:
    asked = {prompt[i] for i in learned_from}
    return sorted(i for i in held if prompt[i] in asked)


def train_study(name: str, prompt: dict[str, str]) -> dict:
    report = json.loads((HERE / name / "report.json").read_text())
    base = report["rounds"][0]["heldout"]
    held = list(base["correct"])
    train = [i for i in prompt if i not in set(held)]
    assert len(train) == report["train_items"], (name, len(train), report["train_items"])
    dropped = leaked(held, train, prompt)
    keep = set(held) - set(dropped)
    held_prompts = {prompt[i] for i in held}
    rows = data_rows(HERE / name)
    result = {"study": name, "heldout": len(held), "dropped": dropped,
              "data_rows": len(rows), "data_rows_asking_a_heldout_question":
                  sum(first_prompt(r["prompt"]) in held_prompts for r in rows if isinstance(r.get("prompt"), list)),
              "rounds": []}
    base_verdicts = {s: v for s, v in (base.get("by_strategy") or {base["strategy"]: base["correct"]}).items()}
    for entry in report["rounds"]:
        side = entry.get("heldout") or {}
        by_strategy = side.get("by_strategy") or ({side["strategy"]: side["correct"]} if side.get("correct") else {})
        cells = {}
        for strategy, verdicts in by_strategy.items():
            cells[strategy] = measure(verdicts, keep)
            if entry["round"] > 0 and strategy in base_verdicts:
                cells[strategy]["versus_base"] = _versus(base_verdicts[strategy], verdicts, set(held), keep)
        result["rounds"].append({"round": entry["round"], "checkpoint": entry.get("checkpoint"), "strategies": cells})
    return result


def precision_study(prompt: dict[str, str]) -> dict:
    report = json.loads((HERE / "precision-rft" / "report.json").read_text())
    held = list(report["runs"]["base"]["correct"])
    train = [i for i in prompt if i not in set(held)]
    dropped = leaked(held, train, prompt)
    keep = set(held) - set(dropped)
    runs = {name: measure(run["correct"], keep) for name, run in report["runs"].items()}
    verdicts = {name: run["correct"] for name, run in report["runs"].items()}
    for name in verdicts:
        if name != "base":
            runs[name]["versus_base"] = _versus(verdicts["base"], verdicts[name], set(held), keep)
    fp32, bf16 = (verdicts[f"train-rft-gold-{p}/round-1"] for p in ("fp32", "bf16"))
    runs["bf16_versus_fp32"] = _versus(fp32, bf16, set(held), keep)
    return {"study": "precision-rft", "heldout": len(held), "dropped": dropped, "runs": runs}


def search_study(prompt: dict[str, str]) -> dict:
    """Section 7: the PRM learned from its train items' rollouts; search ran on items 400-449."""
    trained_on = sorted({json.loads(line)["item_id"] for line in
                         (HERE / "verifier-prm" / "labels-train.jsonl").read_text().splitlines() if line.strip()})
    report = json.loads((HERE / "search-prm" / "report.json").read_text())
    by_strategy: dict[str, dict[str, bool]] = {}
    for row in report["items"]:
        by_strategy.setdefault(row["strategy"], {})[row["item"]] = bool(row["correct"])
    held = sorted({row["item"] for row in report["items"]})
    dropped = leaked(held, trained_on, prompt)
    keep = set(held) - set(dropped)
    return {"study": "search-prm", "heldout": len(held), "prm_train_items": len(trained_on), "dropped": dropped,
            "strategies": {s: measure(v, keep) for s, v in by_strategy.items()}}


def markdown(results: list[dict]) -> str:
    lines = ["# The train studies on held-out items no trained question reaches (issue 34)", "",
             "Made by `.venv/bin/python docs/findings/redraw_split.py`. `all`: every held-out item, as",
             "reported; `clean`: less the items whose question the training side also asks.", ""]
    for result in results:
        lines += [f"## {result['study']}", "",
                  f"{result['heldout']} held-out items, {len(result['dropped'])} dropped for a question the "
                  f"training side asks: {', '.join(result['dropped']) or 'none'}."]
        if "data_rows" in result:
            lines += [f"Committed training rows: {result['data_rows']}, of which "
                      f"{result['data_rows_asking_a_heldout_question']} ask a held-out question."]
        lines += ["", "| round | strategy | all | clean | vs base, all (p) | vs base, clean (p) |", "|---|---|---|---|---|---|"]
        cells = [(r["round"], s, c) for r in result.get("rounds", []) for s, c in r["strategies"].items()]
        cells += [("-", s, c) for s, c in (result.get("runs") or result.get("strategies") or {}).items()
                  if "accuracy" in c.get("all", {})]
        for round_, strategy, cell in cells:
            versus = cell.get("versus_base", {})
            fmt = lambda side: (f"{versus[side]['difference']:+.1%} ({versus[side]['p_value']:.3g})" if side in versus else "")  # noqa: E731
            lines.append(f"| {round_} | {strategy} | {cell['all']['accuracy']:.1%} ({cell['all']['items']}) | "
                         f"{cell['clean']['accuracy']:.1%} ({cell['clean']['items']}) | {fmt('all')} | {fmt('clean')} |")
        if "bf16_versus_fp32" in (result.get("runs") or {}):
            for side, p in result["runs"]["bf16_versus_fp32"].items():
                lines.append(f"\nbf16 minus fp32, {side}: {p['difference']:+.1%} (p = {p['p_value']:.3g}, "
                             f"{p['wrong_to_right']} up, {p['right_to_wrong']} down)")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=HERE / "split-redraw")
    parser.add_argument("--data", default=None, help="where the tasks' data are (arithmetic needs none)")
    args = parser.parse_args()
    prompt = prompts_of("arithmetic:n=600", args.data)
    results = [train_study(name, prompt) for name in TRAIN_STUDIES] + [precision_study(prompt), search_study(prompt)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "report.md").write_text(markdown(results))
    print((args.out / "report.md").read_text())


if __name__ == "__main__":
    main()
