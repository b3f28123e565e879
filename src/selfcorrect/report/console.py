"""The comparison as a console table: compact enough for a terminal, never squeezed into a
pipe's 80 columns."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from selfcorrect.report.build import label


def console_table(report: dict, out: Console) -> None:
    """The comparison, compact enough for a terminal: percentages and points without units."""
    def number(value: float | None, sign: bool = False) -> str:
        return "—" if value is None else f"{100 * value:{'+' if sign else ''}.1f}"

    def sent(per_item: dict) -> str:
        return "—" if per_item.get("requests") is None else f"{per_item['requests']:.1f}/{per_item['tokens']:.0f}"

    title = f"{report['run']['config']['task']} · {report['run']['config']['items']} items"
    if report["run"]["oracle"]:
        title += " · includes ORACLE strategies (upper bounds)"
    table = Table(title=title, box=None, padding=(0, 1), pad_edge=False, caption=(
        f"acc: accuracy % (95% CI); none: no answer %; cut: truncated at the token cap %; no sig: % of "
        f"items where the selector or stop rule had nothing to act on; tok: tokens per item as if nothing "
        f"were cached (the equal-compute basis); sent: requests / tokens per item that reached the backend; vs base: "
        f"points against {report['baseline']} (McNemar p); vs pool: points against voting over plain "
        "samples at equal tokens (*: beyond the largest pool, not measured)"))
    table.add_column("strategy", no_wrap=True)
    for column in ("acc", "none", "cut", "no sig", "tok", "sent", "vs base", "vs pool"):
        table.add_column(column, justify="right", no_wrap=True)
    for s in report["strategies"].values():
        low, high = s["interval"]
        versus = s.get("versus_baseline") or {}
        matched = s["compute_matched"]
        table.add_row(escape(label(s)), f"{number(s['accuracy'])} ({number(low)}–{number(high)})",
                      number(s["parse_failure_rate"]), number(s["truncation_rate"]), number(s["no_signal_rate"]),
                      f"{s['tokens_per_item']:.0f}", sent(s.get("sent_per_item") or {}),
                      f"{number(versus['difference'], True)} ({versus['p_value']:.2g})" if versus else "—",
                      number(matched["gain"], True) + ("*" if matched["budget"] == "beyond" else ""))
    # a table of numbers is never squeezed into a pipe's default 80 columns
    (out if out.is_terminal else Console(width=112)).print(table)
    for pair in (report.get("online") or {}).get("pairs", []):
        for part in ("all", "train", "heldout"):
            cell = pair[part]
            if cell and cell["items"]:
                out.print(f"online {escape(pair['strategy'])} ({part}, {cell['items']} items): with memory "
                          f"{number(cell['memory'])}, without {number(cell['twin'])} (p={cell['p_value']:.2g}); "
                          + (f"memory shown on {number(pair['memory_shown_rate'])}% of items" if part == "all" else ""),
                          soft_wrap=True)
