"""report.md: the comparison, flips, cost and the compute-matched statement, as text."""

from __future__ import annotations

from selfcorrect.report.build import label

ORACLE_NOTE = ("**ORACLE** — this run includes strategies marked [ORACLE] that see the gold check; "
               "their numbers are upper bounds for studies, not results a user could get.")


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def signed(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:+.1f} pts"


def _resumes(config: dict) -> str:
    """What the run was resumed with: other code versions, another reference pool cap."""
    resumes = config.get("resumed_with", [])
    versions = list(dict.fromkeys(r["code_version"] for r in resumes if "code_version" in r))
    text = f"; resumed with {', '.join(versions)}" if versions else ""
    return text + "".join(f"; reference pool capped at {r['pool_cap']} samples (was {r['pool_cap_before']})"
                          for r in resumes if "pool_cap" in r)


def at_equal_tokens(matched: dict) -> str:
    """A strategy's gain over voting at its token budget; outside the pool's range, said so
    next to the number (beyond the largest pool the gain is not measured)."""
    note = {"within": "", "below": " (below the pool: vs one sample)",
            "beyond": " (beyond the pool: not measured)", "no pool": ""}[matched["budget"]]
    return signed(matched["gain"]) + note


def equal_accuracy(matched: dict) -> str:
    """What voting spends to first reach the strategy's accuracy."""
    needs = matched.get("sampling_for_equal_accuracy")
    if needs:
        return f"{needs['tokens']:.0f} tokens ({needs['samples']:.1f} samples)"
    return "not within the pool" if matched.get("equal_accuracy_budget") == "beyond" else "—"


def versus_best_of(matched: dict) -> str:
    """Against the run's best-of-n (its verifier) at the strategy's budget."""
    best = matched.get("best_of")
    if not best:
        return "—"
    return signed(best["gain"]) + (" (beyond its pool: not measured)" if best["budget"] == "beyond" else "")


COST_NOTE = ("*Tokens / item* is the notional cost: what the strategy asked for, as if no draw were served "
             "from the sample cache (the basis of every equal-compute comparison). *Sent / item* is what "
             "reached the backend: requests and their prompt plus completion tokens, as it reported them "
             "(draws from the cache, or shared with another strategy, send nothing).")


def sent_cell(summary: dict) -> str:
    """What reached the backend per item, or why it is not known."""
    sent = summary.get("sent_per_item") or {}
    if sent.get("requests") is None:
        return "not counted (recorded before sent cost)"
    return f"{sent['requests']:.1f} requests, {sent['tokens']:.0f} tokens"


def prompt_accounting(config: dict) -> str:
    reuse = config.get("prompt_reuse")
    if reuse is None:
        return "prompt tokens counted once per request (recorded before per-request accounting)"
    if reuse:
        return ("prompt tokens counted once per request of n samples: the backend evaluates a prompt "
                "once for all its samples")
    return "prompt tokens counted for every sample: the backend took a request per sample"


STRATEGY_COLUMNS = ("strategy", "accuracy (95% CI)", "parse failures", "truncated", "no signal", "tokens / item",
                    "sent / item", "vs baseline (p)", "vs sampling at equal tokens")


def strategy_cells(s: dict) -> list[str]:
    """A strategy's row of the summary table, as text (both reports show these columns)."""
    low, high = s["interval"]
    versus = s.get("versus_baseline")
    vs = "baseline" if versus is None else f"{signed(versus['difference'])} (p={versus['p_value']:.3g})"
    return [label(s), f"{pct(s['accuracy'])} ({pct(low)}–{pct(high)})", pct(s["parse_failure_rate"]),
            pct(s["truncation_rate"]), pct(s["no_signal_rate"]), f"{s['tokens_per_item']:.0f}", sent_cell(s), vs,
            at_equal_tokens(s["compute_matched"])]


def render(report: dict) -> str:
    run, config = report["run"], report["run"]["config"]
    lines = [f"# selfcorrect report: {config['task']} · run {run['id']}", ""]
    if run["oracle"]:
        lines += [f"> {ORACLE_NOTE}", ""]
    params = config["params"]
    lines += [
        f"- model: `{config['model']}`" + (f"; critic: `{config['critic']}`" if config.get("critic") else ""),
        f"- items: {config['items']} ({report['kind']}); sampling: temperature {params['temperature']}, "
        f"top_p {params['top_p']}, top_k {params['top_k']}, max_tokens {params['max_tokens']}, seed {params['seed']}",
        f"- run {run['status']}, created {run['created']}; code {run['code_version']}" + _resumes(config),
        f"- cost: {prompt_accounting(config)}", "",
        "## Comparison", "",
        f"Paired tests are against `{report['baseline']}` on the same items (McNemar, exact). "
        "\"At equal tokens\" is the strategy's accuracy minus that of voting over plain samples "
        "with the same mean tokens per item.", "",
        "Parse failures count replies with no readable answer, truncated ones (cut at the token cap "
        "with no answer marker) included; *no signal* is the share of items where the strategy's "
        "selector or stop rule had nothing to act on (e.g. no critique with a readable score) and "
        "fell back to its default.", "",
        f"{COST_NOTE}", "",
        "| " + " | ".join(STRATEGY_COLUMNS) + " |",
        "|---" * len(STRATEGY_COLUMNS) + "|",
    ]
    for s in report["strategies"].values():
        lines.append("| " + " | ".join(strategy_cells(s)) + " |")
    lines += ["", *online_section(report), "", *compute_section(report), "", *flips_section(report), "",
              *cost_section(report)]
    return "\n".join(lines) + "\n"


def gate_rule(gate: dict) -> str:
    """The gate's rule as the report that recorded it ran it."""
    if "alpha" in gate:
        return (f"An arm is admitted when the e-value of its gain over its discordant pairs reaches "
                f"{1 / gate['alpha']:.0f} (alpha {gate['alpha']:g}, valid however often it is looked at), "
                "retired for good when the e-value of harm does.")
    return (f"An arm is admitted when the Wilson bound on its discordant pairs excludes harm "
            f"({gate['min_pairs']}+ pairs), retired when it shows harm.")


def online_section(report: dict) -> list[str]:
    online = report.get("online")
    if not online:
        return []
    lines = ["## Online: with memory against the same strategy without", "",
             f"Items in order; the memory learned from the first {online['train_items']} items (each item's "
             f"lessons available only from the next item on); the last {online['heldout_items']} items only "
             "read it. Paired exact McNemar tests.", "",
             "| strategy | items | with memory | without | only with | only without | p | shown memory | tokens / item (with, without) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for pair in online["pairs"]:
        for part in ("all", "train", "heldout"):
            cell = pair[part]
            if cell is None or not cell["items"]:
                continue
            lines.append(f"| `{pair['strategy']}` ({part}) | {cell['items']} | {pct(cell['memory'])} | {pct(cell['twin'])} | "
                         f"{cell['wrong_to_right']} | {cell['right_to_wrong']} | {cell['p_value']:.3g} | "
                         f"{pct(pair['memory_shown_rate']) if part == 'all' else ''} | "
                         f"{pair['tokens_per_item']['memory']:.0f}, {pair['tokens_per_item']['twin']:.0f} |")
    gate = online.get("gate")
    if gate:
        items = len(report["run"]["config"]["item_ids"])
        lines += ["", f"Memory shown through the gate: served **{gate['served']}** at the end; on "
                  f"{100 * gate['explore']:.0f}% of the learned items an arm on trial was also tried in the shadow "
                  f"(scored by the gold check of the item just answered, never returned): "
                  f"{online['shadow_tokens'] / items:.0f} more tokens per item. {gate_rule(gate)}", "",
                  "| arm | status | pairs | helped | hurt | bounds | items served | shadow trials |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {arm} | {e['status']} | {e['pairs']} | {e['helped']} | {e['hurt']} | "
                  f"{e['bounds'][0]:.2f}–{e['bounds'][1]:.2f} | {e['served']} | {e['explored']} |"
                  for arm, e in gate["arms"].items()]
    elif online.get("show"):
        lines += ["", f"Memory shown: `{online['show']}` on every item (no gate)."]
    return lines


def compute_section(report: dict) -> list[str]:
    lines = ["## Compute-matched comparison", ""]
    vote = report["curves"]["vote"]
    if not vote["points"]:
        return lines + ["No sampling pool in this run: add self-consistency to compare at equal compute."]
    lines += [f"Voting over the first n samples of `{vote['strategy']}` (no extra generation):", "",
              "| n | tokens / item | accuracy |", "|---|---|---|"]
    lines += [f"| {p['n']} | {p['tokens']:.0f} | {pct(p['accuracy'])} |" for p in vote["points"]]
    best = report["curves"]["best_of"]
    if best["points"]:
        lines += ["", f"Best-of-n by {best['verifier']} over the first n samples of `{best['strategy']}`:", "",
                  "| n | tokens / item | accuracy |", "|---|---|---|"]
        lines += [f"| {p['n']} | {p['tokens']:.0f} | {pct(p['accuracy'])} |" for p in best["points"]]
    lines.append("")
    for s in report["strategies"].values():
        matched = s["compute_matched"]
        if matched["sampling_accuracy"] is None:
            continue
        where = {"within": "", "below": " (below the pool's smallest budget: compared with one sample)",
                 "beyond": " (beyond the pool's largest budget: compared with its largest; the gain is "
                           "not measured, and overstated if sampling keeps improving)"}[matched["budget"]]
        reached = matched.get("equal_accuracy_budget")
        equal = (f" Voting first reaches {pct(s['accuracy'])} at {equal_accuracy(matched)}." if reached == "within"
                 else " Voting does not reach that accuracy within the pool." if reached == "beyond" else "")
        best = matched.get("best_of")
        versus_best = (f" Best-of-n by {best['verifier']} at that budget: {pct(best['accuracy'])}, "
                       f"{versus_best_of(matched)}." if best else "")
        lines.append(f"- {label(s)}: {pct(s['accuracy'])} at {s['tokens_per_item']:.0f} tokens per item; "
                     f"sampling with a vote reaches {pct(matched['sampling_accuracy'])} at that budget{where}: "
                     f"{signed(matched['gain'])}.{equal}{versus_best}")
    return lines


def flips_section(report: dict) -> list[str]:
    rows = [(s, m) for s in report["strategies"].values() for m in s["flips"]]
    lines = ["## Revision flips", ""]
    if not rows:
        return lines + ["No strategy in this run revised an answer."]
    lines += ["Each cell: revisions, and how many of them left the answer unchanged. Confidence is "
              "P(right after | right before); critique is P(right after | wrong before).", "",
              "| strategy | round | revisions | right→right | right→wrong | wrong→right | wrong→wrong | confidence | critique | net |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for s, m in rows:
        cells = [f"{sum(m['counts'][c].values())} ({m['counts'][c]['unchanged']} unchanged)"
                 for c in ("right_right", "right_wrong", "wrong_right", "wrong_wrong")]
        lines.append(f"| {label(s)} | {m['round']} | {m['n']} | " + " | ".join(cells)
                     + f" | {pct(m['confidence'])} | {pct(m['critique'])} | {m['net']:+d} |")
    return lines


def cost_section(report: dict) -> list[str]:
    lines = ["## Cost per item", "",
             "Notional (calls, prompt and completion tokens: as if nothing were cached) beside what was "
             "sent to the backend (requests, prompt and completion tokens).", "",
             "| strategy | phase | calls | prompt tokens | completion tokens | sent requests | sent prompt tokens "
             "| sent completion tokens | model seconds | sandbox runs | stops |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def number(value: float | None, digits: int) -> str:
        return "—" if value is None else f"{value:.{digits}f}"

    for s in report["strategies"].values():
        stops = ", ".join(f"{k} {v}" for k, v in sorted(s["stops"].items()))
        for i, (phase, cost) in enumerate(s["cost_per_item"].items()):
            if not cost["calls"] and not cost["sandbox_runs"] and not cost["seconds"]:
                continue
            lines.append(f"| {label(s)} | {phase} | {cost['calls']:.2f} | {cost['prompt_tokens']:.0f} | "
                         f"{cost['completion_tokens']:.0f} | {number(cost.get('sent_requests'), 2)} | "
                         f"{number(cost.get('sent_prompt_tokens'), 0)} | {number(cost.get('sent_completion_tokens'), 0)} | "
                         f"{cost['seconds']:.2f} | {cost['sandbox_runs']:.2f} | {stops if phase == 'generate' else ''} |")
    return lines
