"""report.html: one self-contained file (no network): the comparison, plots, flips, cost,
and a per-item browser of trajectories. Model text is untrusted: the page only ever sets it
as text, never as HTML."""

from __future__ import annotations

import html
import json

from selfcorrect.report import plots
from selfcorrect.report.build import label
from selfcorrect.report.markdown import (COST_NOTE, ORACLE_NOTE, STRATEGY_COLUMNS, equal_accuracy, pct,
                                        prompt_accounting, strategy_cells, versus_best_of)

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:1rem 2rem;color:#222}
h1{font-size:1.5rem}h2{margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left}
th{background:#f4f4f4}.oracle{background:#fff3cd;border:1px solid #e0b000;padding:.5rem 1rem}
.plots{display:flex;flex-wrap:wrap;gap:1rem}.plots figure{margin:0}
#browser{display:grid;grid-template-columns:300px 1fr;gap:1rem}
#items{list-style:none;padding:0;margin:0;max-height:70vh;overflow:auto;border:1px solid #ddd}
#items li{padding:.3rem .5rem;cursor:pointer;border-bottom:1px solid #eee;font-size:12px}
#items li.selected{background:#e8f0fe}.mark{font-family:monospace;margin-right:.15rem}
.right{color:#228833}.wrong{color:#cc3311}pre{background:#f7f7f7;padding:.5rem;white-space:pre-wrap;
word-break:break-word;margin:.3rem 0}.attempt{border:1px solid #ddd;margin:.4rem 0;padding:.4rem .6rem}
.attempt.final{border:2px solid #4477aa}.badge{display:inline-block;padding:0 .4rem;border-radius:.6rem;
font-size:11px;margin-right:.3rem;background:#eee}.kind-external{background:#cde}.kind-intrinsic{background:#eec}
.kind-critic{background:#dce}.kind-oracle{background:#fc9}.diff{font-family:monospace;font-size:12px}
"""

SCRIPT = r"""
const data = JSON.parse(document.getElementById('data').textContent);
const list = document.getElementById('items');
const detail = document.getElementById('detail');
const filter = document.getElementById('filter');
function el(tag, cls, text) { const e = document.createElement(tag); if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text; return e; }
function renderList() {
  list.replaceChildren();
  const want = filter.value;
  data.forEach((item, i) => {
    const strategies = item.strategies.filter(s => want === 'all' || s.strategy === want);
    if (!strategies.length) return;
    const li = el('li'); li.dataset.index = i;
    strategies.forEach(s => li.appendChild(el('span', 'mark ' + (s.correct ? 'right' : 'wrong'), s.correct ? '✓' : '✗')));
    li.appendChild(document.createTextNode(' ' + item.item));
    li.addEventListener('click', () => show(i, li));
    list.appendChild(li);
  });
}
function show(i, li) {
  list.querySelectorAll('li').forEach(x => x.classList.remove('selected'));
  li.classList.add('selected');
  const item = data[i];
  detail.replaceChildren(el('h3', '', item.item), el('pre', '', item.question), el('p', '', 'gold: ' + item.expected));
  item.strategies.forEach(s => {
    if (filter.value !== 'all' && s.strategy !== filter.value) return;
    const box = el('div');
    box.appendChild(el('h4', s.correct ? 'right' : 'wrong',
      s.strategy + (s.oracle ? ' [ORACLE]' : '') + ' — ' + (s.correct ? 'right' : 'wrong') + ' (stopped: ' + s.stop + ')'));
    s.attempts.forEach((a, k) => {
      const div = el('div', 'attempt' + (k === s.final ? ' final' : ''));
      const grade = s.grades[k];
      div.appendChild(el('div', '', '#' + a.index + ' ' + a.phase + ' · round ' + a.round + ' · chain ' + a.chain +
        ' · sample ' + a.sample + (k === s.final ? ' · SELECTED' : '') + ' · ' +
        (grade.correct ? 'right' : (grade.parse_failure ? 'no answer' : 'wrong')) + ' · ' + grade.detail));
      div.appendChild(el('pre', '', a.text));
      a.feedback.forEach(f => {
        const p = el('div');
        p.appendChild(el('span', 'badge kind-' + f.kind, f.kind));
        p.appendChild(el('span', 'badge', f.source));
        const verdict = (f.passed === null ? '' : (f.passed ? 'passed ' : 'failed ')) + (f.score === null ? '' : 'score ' + f.score.toFixed(2));
        p.appendChild(document.createTextNode(verdict));
        if (f.text) p.appendChild(el('pre', '', f.text));
        div.appendChild(p);
      });
      s.revisions.filter(r => r.after === a.index && r.diff).forEach(r => {
        div.appendChild(el('div', '', 'changes from #' + r.before + ':'));
        div.appendChild(el('pre', 'diff', r.diff));
      });
      box.appendChild(div);
    });
    detail.appendChild(box);
  });
}
filter.addEventListener('change', renderList);
renderList();
const first = list.querySelector('li');
if (first) first.click();
"""


def render(report: dict, browser: list[dict]) -> str:
    run, config = report["run"], report["run"]["config"]
    title = f"selfcorrect report: {config['task']} · run {run['id']}"
    e = html.escape
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>",
             f"<style>{STYLE}</style></head><body><h1>{e(title)}</h1>"]
    if run["oracle"]:
        parts.append(f"<p class='oracle'>{e(ORACLE_NOTE).replace('**ORACLE**', '<b>ORACLE</b>')}</p>")
    parts.append(f"<p>model <code>{e(config['model'])}</code> · {config['items']} items ({e(report['kind'])}) · "
                 f"run {e(run['status'])}, created {e(str(run['created']))} · code {e(run['code_version'])} · "
                 f"{e(prompt_accounting(config))}</p>")
    parts.append("<h2>Comparison</h2>" + comparison_table(report) + f"<p>{e(COST_NOTE).replace('*', '')}</p>")
    figures = [("Accuracy against tokens per item", plots.accuracy_vs_tokens(report)),
               ("Revision flips per round", plots.flips(report)),
               ("Tokens per item by phase", plots.cost(report)),
               ("Online: accuracy over the items, with memory and without", plots.online(report))]
    parts.append("<h2>Plots</h2><div class='plots'>" + "".join(
        f"<figure><figcaption>{e(caption)}</figcaption>{svg}</figure>" for caption, svg in figures if svg) + "</div>")
    parts.append("<h2>Revision flips</h2>" + flips_table(report))
    options = "".join(f"<option>{e(spec)}</option>" for spec in report["strategies"])
    payload = json.dumps(browser).replace("</", "<\\/")
    parts.append("<h2>Items</h2><p>Show <select id='filter'><option value='all'>all strategies</option>"
                 f"{options}</select> ✓ right, ✗ wrong (one mark per strategy)</p>"
                 "<div id='browser'><ul id='items'></ul><div id='detail'></div></div>"
                 f"<script type='application/json' id='data'>{payload}</script><script>{SCRIPT}</script>")
    parts.append("</body></html>")
    return "".join(parts)


def comparison_table(report: dict) -> str:
    e = html.escape
    best = report["curves"]["best_of"]
    best_header = f"<th>vs best-of-n by {e(best['verifier'])} at equal tokens</th>" if best["points"] else ""
    rows = ["<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in STRATEGY_COLUMNS)
            + f"<th>voting reaches this accuracy at</th>{best_header}</tr>"]
    for s in report["strategies"].values():
        rows.append("<tr>" + "".join(f"<td>{e(cell)}</td>" for cell in strategy_cells(s))
                    + f"<td>{e(equal_accuracy(s['compute_matched']))}</td>"
                    + (f"<td>{e(versus_best_of(s['compute_matched']))}</td>" if best["points"] else "") + "</tr>")
    return "".join(rows) + "</table>"


def flips_table(report: dict) -> str:
    e = html.escape
    rows = [(s, m) for s in report["strategies"].values() for m in s["flips"]]
    if not rows:
        return "<p>No strategy in this run revised an answer.</p>"
    out = ["<table><tr><th>strategy</th><th>round</th><th>revisions</th><th>right→right</th><th>right→wrong</th>"
           "<th>wrong→right</th><th>wrong→wrong</th><th>confidence</th><th>critique</th><th>net</th></tr>"]
    for s, m in rows:
        cells = "".join(f"<td>{sum(m['counts'][c].values())} ({m['counts'][c]['unchanged']} unchanged)</td>"
                        for c in ("right_right", "right_wrong", "wrong_right", "wrong_wrong"))
        out.append(f"<tr><td>{e(label(s))}</td><td>{m['round']}</td><td>{m['n']}</td>{cells}"
                   f"<td>{pct(m['confidence'])}</td><td>{pct(m['critique'])}</td><td>{m['net']:+d}</td></tr>")
    return "".join(out) + "</table>"


def render_training(report: dict, markdown_text: str) -> str:
    """A self-training report as one self-contained page: its Markdown (tables, alarms) and
    the round curves."""
    spec = report["spec"]
    return markdown_page(f"selfcorrect self-training: {spec['method']} on {spec['task']}, labels {spec['labels']}",
                         markdown_text, plots.training_rounds(report))


def markdown_page(title: str, markdown_text: str, figures: list[tuple[str, str]]) -> str:
    """Markdown (tables, notes) and captioned SVG figures as one self-contained page."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown_text)  # model text never becomes HTML
    shown = "".join(f"<figure><figcaption>{html.escape(caption)}</figcaption>{svg}</figure>" for caption, svg in figures)
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{body}<h2>Plots</h2><div class='plots'>{shown}</div></body></html>")
