"""A help-desk stream through the server, with gold feedback (FINDINGS.md, section 10).

Arithmetic questions that recur and are reworded arrive at `selfcorrect serve` one after
another. Each is asked twice with the same seed: with the server's gated memory, and without
memory (the twin). The client then tells the server, through POST /v1/feedback, whether the
memory answer was right and what the correct answer is. The report pairs the two answers of
every request (McNemar), and shows accuracy over the stream, first sightings against
recurrences, tokens per request (the shadow trials included) and the gate's arms.

    python docs/findings/feedback_stream.py --out docs/findings/feedback-stream [--requests 150]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from selfcorrect.config import load_settings
from selfcorrect.stats import mcnemar, wilson
from selfcorrect.memory.gate import Gate
from selfcorrect.serve.app import ServeConfig, create_app
from selfcorrect.tasks import parse_task
from selfcorrect.tasks.items import ItemView
from selfcorrect.tasks.kinds import read
from selfcorrect.verify.answers import answers_match

FORMS = ["What is {a} {op} {b}?", "Compute {a} {op} {b}.", "Please work out {a} {op} {b} for me."]


def stream(n_items: int, requests: int, seed: int) -> list[dict]:
    """`requests` questions drawn from `n_items` arithmetic items, each in one of three wordings."""
    items = parse_task(f"arithmetic:n={n_items}").items()
    rng = random.Random(seed)
    out = []
    for n in range(requests):
        item = rng.choice(items)
        a, op, b = item.view.question.removeprefix("What is ").removesuffix("?").split()
        out.append({"n": n, "item": item.id, "question": rng.choice(FORMS).format(a=a, op=op, b=b),
                    "gold": item.answer})
    return out


@contextlib.contextmanager
def serving(settings, config):
    app = create_app(settings, config)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def right(text: str, gold: str, finish_reason: str) -> bool:
    reading = read(ItemView(id="x", task="stream", kind="math", question="", messages=()), text, finish_reason)
    return reading.answer is not None and answers_match(reading.answer, gold)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--store", type=Path, default=Path(".selfcorrect/stream.sqlite"))
    parser.add_argument("--items", type=int, default=30)
    parser.add_argument("--requests", type=int, default=150)
    parser.add_argument("--explore", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    namespace = f"stream-{args.seed}"
    settings = load_settings(store=args.store)
    gate = Gate(args.store)
    gate.reset(namespace)  # the study starts with no evidence (the store may hold an earlier one)
    gate.close()
    rows, seen = [], set()
    started = time.perf_counter()
    with serving(settings, ServeConfig(strategy="single", memory=namespace, memory_explore=args.explore)) as url:
        with httpx.Client(base_url=url, timeout=600) as client:
            for request in stream(args.items, args.requests, args.seed):
                row = dict(request, recurring=request["item"] in seen)
                seen.add(request["item"])
                for memory in (True, False):
                    reply = client.post("/v1/chat/completions", json={
                        "model": "smollm2", "kind": "math", "memory": memory, "seed": request["n"], "max_tokens": 96,
                        "messages": [{"role": "user", "content": request["question"]}]}).json()
                    text = reply["choices"][0]["message"]["content"]
                    key = "memory" if memory else "twin"
                    row[key] = right(text, request["gold"], reply["choices"][0]["finish_reason"])
                    row[f"{key}_tokens"] = reply["usage"]["total_tokens"]
                    row[f"{key}_text"] = text
                    if memory:
                        row["arm"] = reply["selfcorrect"]["memory_arm"]
                        row["shadow"] = reply["selfcorrect"]["memory_shadow"]
                        fed = client.post("/v1/feedback", json={"completion_id": reply["id"], "correct": row["memory"],
                                                                "answer": request["gold"]}).json()
                        row["pair"], row["example"] = fed.get("pair"), fed.get("example")
                        trace = client.get(f"/v1/selfcorrect/completions/{reply['id']}").json()
                        shadow = trace.get("shadow") or {}
                        row["shadow_tokens"] = shadow.get("tokens", 0)
                rows.append(row)
                if len(rows) % 25 == 0:
                    print(f"{len(rows)} requests: memory {sum(r['memory'] for r in rows)}, "
                          f"without {sum(r['twin'] for r in rows)}", flush=True)
    gate = Gate(args.store)
    report = summarize(rows, gate.report(namespace), args, time.perf_counter() - started)
    gate.close()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps({**report, "requests": rows}, indent=2))
    (args.out / "report.md").write_text(render(report))
    print(render(report))


def summarize(rows: list[dict], gate: dict, args, seconds: float) -> dict:
    n = len(rows)

    def part(selected: list[dict]) -> dict:
        k = len(selected)
        mem, twin = sum(r["memory"] for r in selected), sum(r["twin"] for r in selected)
        only_mem = sum(r["memory"] and not r["twin"] for r in selected)
        only_twin = sum(r["twin"] and not r["memory"] for r in selected)
        return {"requests": k, "memory": mem / k if k else None, "twin": twin / k if k else None,
                "memory_interval": list(wilson(mem, k)), "twin_interval": list(wilson(twin, k)),
                "only_memory": only_mem, "only_twin": only_twin, "p_value": mcnemar(only_mem, only_twin)}

    windows = [part(rows[i:i + 50]) | {"from": i} for i in range(0, n, 50)]
    return {"settings": {"items": args.items, "requests": args.requests, "explore": args.explore, "seed": args.seed,
                         "strategy": "single", "seconds": round(seconds)},
            "all": part(rows), "first_sightings": part([r for r in rows if not r["recurring"]]),
            "recurring": part([r for r in rows if r["recurring"]]), "windows": windows, "gate": gate,
            "tokens_per_request": {"memory": sum(r["memory_tokens"] for r in rows) / n,
                                   "shadow": sum(r["shadow_tokens"] for r in rows) / n,
                                   "twin": sum(r["twin_tokens"] for r in rows) / n},
            "served": {arm: sum(r["arm"] == arm for r in rows) for arm in {r["arm"] for r in rows}}}


def render(report: dict) -> str:
    s = report["settings"]

    def line(name: str, p: dict) -> str:
        return (f"| {name} | {p['requests']} | {100 * p['memory']:.1f} ({100 * p['memory_interval'][0]:.1f}–"
                f"{100 * p['memory_interval'][1]:.1f}) | {100 * p['twin']:.1f} ({100 * p['twin_interval'][0]:.1f}–"
                f"{100 * p['twin_interval'][1]:.1f}) | {p['only_memory']} | {p['only_twin']} | {p['p_value']:.2g} |")

    t = report["tokens_per_request"]
    lines = [f"# A help-desk stream with gold feedback: {s['requests']} requests over {s['items']} arithmetic items",
             "", f"Strategy `{s['strategy']}` through `selfcorrect serve`, gated memory (explore {s['explore']}), each "
             "request asked with memory and without (same seed); feedback with the correct answer after each. "
             f"{s['seconds']} s.", "",
             "| requests | n | with memory % (95% CI) | without % | only with | only without | McNemar p |",
             "|---|---|---|---|---|---|---|", line("all", report["all"]),
             line("first sightings", report["first_sightings"]), line("recurring", report["recurring"]),
             *[line(f"requests {w['from']}–{w['from'] + w['requests'] - 1}", w) for w in report["windows"]], "",
             f"Tokens per request: with memory {t['memory']:.0f} (+ {t['shadow']:.0f} in shadow trials), without "
             f"{t['twin']:.0f}. Served arms: " + ", ".join(f"{a} {c}" for a, c in sorted(report["served"].items())) + ".",
             "", f"The gate at the end: served **{report['gate']['served']}**.", "",
             "| arm | status | pairs | helped | hurt | bounds | shadow trials |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {arm} | {e['status']} | {e['pairs']} | {e['helped']} | {e['hurt']} | {e['bounds'][0]:.2f}–"
              f"{e['bounds'][1]:.2f} | {e['explored']} |" for arm, e in report["gate"]["arms"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
