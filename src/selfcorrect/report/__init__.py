"""Reports of a run: report.json (every number, with the run's configuration), report.md
(the comparison in text), report.html (one self-contained page with plots and an item
browser)."""

from __future__ import annotations

import json
from pathlib import Path

from selfcorrect.store import Run, Store


def write_reports(store: Store, run: Run, kind: str, out: Path) -> dict[str, Path]:
    from selfcorrect.report import html, markdown
    from selfcorrect.report.build import browser_data, build_report

    out.mkdir(parents=True, exist_ok=True)
    report = build_report(store, run, kind)
    paths = {"json": out / "report.json", "md": out / "report.md", "html": out / "report.html"}
    paths["json"].write_text(json.dumps(report, indent=2))
    paths["md"].write_text(markdown.render(report))
    paths["html"].write_text(html.render(report, browser_data(store, run)))
    return paths
