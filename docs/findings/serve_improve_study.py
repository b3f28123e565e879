"""Issue 36's study: a server that improves itself from its traffic (`serve --improve`).

Arithmetic requests in three wordings stream to `selfcorrect serve --improve` serving `single`
on the embedded model; a client sends feedback (its verdict and the right answer) on a share of
them, chosen by a hash of the request's number. Nothing else about the answers reaches the
server: the gold answers below score the served answers for this report only (an oracle
measurement of a label-free loop). Every `--every` answered requests the server runs an improve
cycle on its traffic in the background; a cycle's recipe goes on trial in the shadow of
`--canary` of the requests, and is promoted only on the gate's evidence.

Then the adversarial arm: a recipe whose checkpoint was trained on shuffled labels (the control
arm of the first cycle that trained one, `--control shuffled`) is offered as the candidate, and
more requests stream: it must be rolled back, or at least never answer a client.

    .venv/bin/python docs/findings/serve_improve_study.py --requests 1200 --every 300
writes docs/findings/serve-improve/{report.md,report.json,requests.jsonl.gz} (the cycles' own reports
stay in --folder; the committed study copied cycle 1's and cycle.json beside them).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gzip
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from selfcorrect.models.recipe import read_recipe, write_recipe  # noqa: E402
from selfcorrect.stats import Paired, wilson  # noqa: E402
from selfcorrect.tasks.arithmetic import Arithmetic  # noqa: E402
from selfcorrect.verify.answers import answers_match, read_answer  # noqa: E402

# the arithmetic task's own two worked examples, in a system message: a request is one user turn
# (a run on traffic leaves out requests with earlier assistant turns: tasks/served.py)
SHOTS = [{"role": "system", "content": "Answer in one line, like this.\nQ: What is 12 + 5?\nA: 12 + 5 = 17. The answer "
                                       "is 17.\nQ: What is 8 * 6?\nA: 8 * 6 = 48. The answer is 48."}]
WORDINGS = ["What is {e}?", "Compute {e}.", "How much is {e}?"]


def requests(n: int, seed: int) -> list[dict]:
    """n requests: n/3 questions, each in the three wordings, in a seeded order."""
    import random

    task = Arithmetic(n=(n + 2) // 3, seed=seed)
    out = [{"question": w.format(e=item.view.question[len("What is "):-1]), "gold": item.answer, "item": item.id}
           for item in task.items() for w in WORDINGS][:n]
    random.Random(seed).shuffle(out)
    return out


def gives_feedback(k: int, share: float) -> bool:
    return int.from_bytes(hashlib.sha256(f"feedback:{k}".encode()).digest()[:8], "big") / 2**64 < share


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1200)
    ap.add_argument("--every", type=int, default=300)
    ap.add_argument("--canary", type=float, default=0.5)
    ap.add_argument("--feedback", type=float, default=0.2)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--window", type=int, default=200)
    ap.add_argument("--pause", type=float, default=0.0, help="seconds between a client's requests")
    ap.add_argument("--after", type=int, default=600, help="requests streamed after the stream while a cycle runs "
                                                           "or a candidate is on trial, at most")
    ap.add_argument("--adversarial", type=int, default=300, help="requests streamed with the shuffled-label candidate")
    ap.add_argument("--adversarial-feedback", type=float, default=None,
                    help="the feedback share in the adversarial arm (default: --feedback)")
    ap.add_argument("--control-from", type=Path, default=None,
                    help="the folder of an earlier run whose first control is the adversarial candidate (default: --folder)")
    ap.add_argument("--burst", type=int, default=0, help="the first this many requests are sent without --pause")
    ap.add_argument("--pause-while-cycling", action="store_true",
                    help="--pause only while a cycle runs (a day's traffic compressed: the hours a cycle takes elsewhere)")
    ap.add_argument("--adversary-epochs", type=float, default=None,
                    help="train the adversarial candidate again: the first cycle's round-1 examples with their replies "
                         "shuffled, this many epochs (default: the cycle's own --control shuffled arm)")
    ap.add_argument("--adversary-learning-rate", type=float, default=2e-4)
    ap.add_argument("--improve-threads", type=int, default=1)
    ap.add_argument("--offer", type=Path, default=None,
                    help="an earlier run's --folder: its first offered cycle's recipe goes on trial when the server starts, "
                         "with its base named as improve now names it (recipe.measured_against)")
    ap.add_argument("--improve-args", default="--chains 4 --student-samples 4 --confirmation 0.15 --control shuffled")
    ap.add_argument("--folder", type=Path, default=ROOT / ".selfcorrect" / "serve-improve")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "findings" / "serve-improve")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--rescore", action="store_true", help="only write --out's report again from its report.json, "
                                                          "its requests and --folder's store (after a change to the report)")
    args = ap.parse_args()
    if args.rescore:
        report = json.loads((args.out / "report.json").read_text())
        with gzip.open(args.out / "requests.jsonl.gz", "rt") as f:
            report["shadow_scores"] = shadow_scores(args.folder / "server.sqlite", [json.loads(line) for line in f])
        report["seeded_replay"] = seeded_replay(args.folder)
        (args.out / "report.json").write_text(json.dumps(report, indent=2))
        (args.out / "report.md").write_text(render(report))
        return

    if args.folder.exists():
        shutil.rmtree(args.folder)  # a study starts from nothing: no traffic, no cycle
    args.folder.mkdir(parents=True)
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "selfcorrect.cli", "--store", str(args.folder / "server.sqlite"), "--threads", "1",
               "serve", "--port", str(port), "--strategy", "single", "--improve", str(args.folder),
               "--improve-every", str(args.every), "--canary", str(args.canary), "--improve-threads", str(args.improve_threads),
               f"--improve-args={args.improve_args}"]
    log = (args.folder / "server.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    started = time.time()
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.time() - started > 600:
            raise SystemExit(f"the server did not start: see {args.folder / 'server.log'}")
        time.sleep(1)

    if args.offer is not None:  # an earlier run's cycle offered at once, as its recipe on trial
        (args.folder / "serving").mkdir(parents=True, exist_ok=True)
        write_recipe(_offered(args.offer), args.folder / "serving")
    health_log: list[dict] = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            try:
                h = httpx.get(f"{url}/health", timeout=10).json()
                health_log.append({"at": time.time() - started, "model": h["model"], "improve": h["improve"],
                                   "candidate": (h["recipe"] or {}).get("candidate")})
            except httpx.HTTPError:
                pass
            stop.wait(5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    rows: list[dict] = []
    lock = threading.Lock()

    def ask(k: int, req: dict, phase: str) -> None:
        body = {"model": "default", "kind": "math", "messages": [*SHOTS, {"role": "user", "content": req["question"]}]}
        t0 = time.perf_counter()
        try:
            reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=600)
            status, data = reply.status_code, reply.json()
        except httpx.HTTPError as e:
            status, data = 0, {"error": str(e)}
        seconds = time.perf_counter() - t0
        row = {"k": k, "phase": phase, "status": status, "seconds": round(seconds, 3), **req,
               "training": bool(health_log and health_log[-1]["improve"] and health_log[-1]["improve"]["running"])}
        if status == 200:
            text = data["choices"][0]["message"]["content"]
            answer = read_answer(text).answer
            row.update(answer=answer, correct=answer is not None and answers_match(answer, req["gold"]),
                       checkpoint=data["selfcorrect"]["checkpoint"], id=data["id"])
            share = args.adversarial_feedback if phase == "adversarial" and args.adversarial_feedback is not None else args.feedback
            if gives_feedback(k, share):
                sent = httpx.post(f"{url}/v1/feedback", timeout=60, json={
                    "completion_id": data["id"], "correct": row["correct"], "answer": req["gold"]})
                row["feedback"] = sent.status_code
        with lock:
            rows.append(row)
        cycling = bool(health_log and health_log[-1]["improve"] and health_log[-1]["improve"]["running"])
        if args.pause and k >= args.burst and (cycling or not args.pause_while_cycling):
            time.sleep(args.pause)

    stream = requests(args.requests + args.after + args.adversarial, args.seed)
    with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
        list(pool.map(lambda kr: ask(kr[0], kr[1], "stream"), enumerate(stream[: args.requests])))
    # the stream goes on ("after") while a cycle runs or its candidate is on trial, up to --after more
    k = args.requests
    with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
        while k < args.requests + args.after and _busy(url):
            list(pool.map(lambda j: ask(j, stream[j], "after"), range(k, k + 2 * args.clients)))
            k += 2 * args.clients
    adversarial = (_adversary(args.control_from or args.folder, args.adversary_epochs, args.adversary_learning_rate)
                   if args.adversary_epochs else _adversarial_recipe(args.control_from or args.folder))
    if adversarial is not None:
        serving = args.folder / "serving"
        serving.mkdir(parents=True, exist_ok=True)
        write_recipe(adversarial, serving)
        extra = stream[k: k + args.adversarial]
        with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(lambda kr: ask(k + kr[0], kr[1], "adversarial"), enumerate(extra)))
    time.sleep(6)
    stop.set()
    watcher.join()
    final = httpx.get(f"{url}/health", timeout=10).json()
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    server.terminate()
    server.wait(60)
    report = summarise(rows, final, health_log, metrics, args, adversarial)
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    with gzip.open(args.out / "requests.jsonl.gz", "wt") as f:  # every request: its answer, latency, checkpoint
        f.writelines(json.dumps(r) + "\n" for r in sorted(rows, key=lambda r: r["k"]))
    (args.out / "report.md").write_text(render(report))
    print(render(report))


def _busy(url: str) -> bool:
    """A cycle running, or a candidate on trial."""
    h = httpx.get(f"{url}/health", timeout=10).json()
    return bool(h["improve"]["running"] or ((h["recipe"] or {}).get("candidate") or {}).get("candidate"))


def _adversarial_recipe(folder: Path):
    """A recipe serving the shuffled-label control of the first cycle that trained one."""
    for cycle in sorted((folder / "cycles").glob("*"), key=lambda p: int(p.name)):
        report = cycle / "report.json"
        if not report.is_file():
            continue
        rounds = json.loads(report.read_text())["rounds"]
        control = next((r["control"] for r in rounds if r.get("control")), None)
        if control is None:
            continue
        recipe = read_recipe(cycle)
        from selfcorrect.models.lineage import Lineage

        lineage = Lineage(folder / "improve.sqlite")
        checkpoint = lineage.get(control["checkpoint"])
        lineage.close()
        from selfcorrect.models.recipe import checkpoint_identity

        weights, gguf = checkpoint_identity(checkpoint)
        return recipe.model_copy(update={"checkpoint": checkpoint, "round": 1, "weights": weights, "gguf": gguf,
                                         "evidence": None, "task": recipe.task + " (shuffled-label control)"})
    return None


def _offered(folder: Path):
    """The first cycle of an earlier run that offered a round: its recipe, its evidence's base
    named by recipe.measured_against (a recipe written before c666c6e lacks the tensors hash)."""
    from selfcorrect.models.lineage import Lineage
    from selfcorrect.models.recipe import measured_against

    cycle = next(c for c in sorted((folder / "cycles").glob("*"), key=lambda p: int(p.name))
                 if (c / "recipe.json").is_file() and read_recipe(c).round >= 1)
    recipe = read_recipe(cycle)
    lineage = Lineage(folder / "improve.sqlite")
    try:
        against = measured_against(lineage.get("base"))
    finally:
        lineage.close()
    return recipe.model_copy(update={"evidence": {**recipe.evidence, "against": against}})


def _adversary(folder: Path, epochs: float, learning_rate: float):
    """A recipe serving a checkpoint trained here, `epochs` epochs on the first trained cycle's
    round-1 examples with their replies shuffled across items (train/data.shuffled_labels: the
    control's data, trained harder than its one epoch, to a model that has learned wrong answers)."""
    from selfcorrect.models.lineage import Lineage
    from selfcorrect.models.recipe import checkpoint_identity
    from selfcorrect.train.cycle import register_round
    from selfcorrect.train.data import read_jsonl, shuffled_labels
    from selfcorrect.train.sft import SFTSettings, fit
    from selfcorrect.train.to_gguf import write_checkpoint_gguf

    cycle = next((c for c in sorted((folder / "cycles").glob("*"), key=lambda p: int(p.name))
                  if (c / "round-1" / "data.jsonl").is_file()), None)
    if cycle is None:
        return None
    lineage = Lineage(folder / "improve.sqlite")
    try:
        real = lineage.get(f"{cycle.name}/round-1")
        shuffled, _ = shuffled_labels(read_jsonl(cycle / "round-1" / "data.jsonl"), seed=0)
        out = folder / "adversary"
        print(f"training the adversary: {len(shuffled)} shuffled examples, {epochs:g} epochs", flush=True)
        metrics = fit(Path(real.path), shuffled, out / "round-1",
                      SFTSettings(epochs=epochs, learning_rate=learning_rate, seed=0))
        checkpoint = register_round(lineage, out, 1, parent=real.parent, method="control", start_path=Path(real.path),
                                    folder=out / "round-1", lora=True, examples=shuffled, metrics=metrics, arm="control")
        checkpoint = lineage.register(checkpoint.model_copy(update={"gguf": write_checkpoint_gguf(checkpoint)["path"]}))
    finally:
        lineage.close()
    weights, gguf = checkpoint_identity(checkpoint)
    recipe = read_recipe(cycle)
    return recipe.model_copy(update={"checkpoint": checkpoint, "round": 1, "weights": weights, "gguf": gguf, "evidence": None,
                                     "task": recipe.task + f" (shuffled labels, {epochs:g} epochs)"})


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def summarise(rows, final, health_log, metrics, args, adversarial) -> dict:
    ordered = sorted(rows, key=lambda r: r["k"])
    stream = [r for r in ordered if r["phase"] in ("stream", "after")]
    windows = []
    for start in range(0, len(stream), args.window):
        part = stream[start: start + args.window]
        right = sum(r.get("correct", False) for r in part)
        windows.append({"requests": f"{start + 1}-{start + len(part)}", "accuracy": right / len(part),
                        "interval": list(wilson(right, len(part))), "checkpoints": sorted({r.get("checkpoint") for r in part} - {None})})
    latency = {name: {"p50": _quantile([r["seconds"] for r in group], 0.5), "p99": _quantile([r["seconds"] for r in group], 0.99),
                      "requests": len(group)}
               for name, group in (("while a cycle ran", [r for r in ordered if r["training"]]),
                                   ("otherwise", [r for r in ordered if not r["training"]]))}
    adversarial_rows = [r for r in ordered if r["phase"] == "adversarial"]
    candidate = (final.get("recipe") or {}).get("candidate") or {}
    return {"requests": len(stream), "after": sum(r["phase"] == "after" for r in ordered), "every": args.every, "canary": args.canary, "feedback": args.feedback,
            "clients": args.clients, "windows": windows, "latency": latency,
            "failed": sum(r["status"] != 200 for r in ordered), "feedback_sent": sum("feedback" in r for r in ordered),
            "cycles": final["improve"], "cycle_state": json.loads((args.folder / "cycle.json").read_text())
            if (args.folder / "cycle.json").is_file() else {"cycles": []},
            "decisions": candidate.get("decisions", []), "swaps": (final.get("recipe") or {}).get("swaps"),
            "adversarial": {"offered": adversarial is not None, "requests": len(adversarial_rows),
                            "feedback": args.adversarial_feedback if args.adversarial_feedback is not None else args.feedback,
                            "epochs": args.adversary_epochs, "learning_rate": args.adversary_learning_rate,
                            "trials": (candidate.get("decisions") or [{}])[-1].get("evidence", {}).get("pairs")
                            if candidate.get("decisions") else None,
                            "answered_by_it": sum(r.get("checkpoint") == (candidate.get("candidate") or {}).get("identity")
                                                  for r in adversarial_rows) if adversarial is not None else None,
                            "still_on_trial": candidate.get("candidate")},
            "shadowed": _metric(metrics, "selfcorrect_canary_shadowed_total"),
            "shadow_scores": shadow_scores(args.folder / "server.sqlite", ordered),
            "seeded_replay": seeded_replay(args.folder),
            "machine": _machine(), "command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d")}


def shadow_scores(store: Path, rows: list[dict]) -> list[dict]:
    """Each candidate's shadow answers, scored against gold here (for this report only: the server
    saw only the clients' feedback), beside the served answers to the same requests."""
    import sqlite3

    by_id = {r["id"]: r for r in rows if r.get("id")}
    scores: dict[str, dict] = {}
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        for completion_id, payload in db.execute("SELECT id, payload FROM completions"):
            trial, row = json.loads(payload).get("canary"), by_id.get(completion_id)
            if not trial or row is None:
                continue
            s = scores.setdefault(trial["identity"], {"candidate": trial["identity"], "shadow_answers": 0, "right": 0,
                                                      "served_right": 0})
            right = trial.get("answer") is not None and answers_match(trial["answer"], row["gold"])
            s["shadow_answers"] += 1
            s["right"] += right
            s["served_right"] += bool(row.get("correct"))
            s["helped"] = s.get("helped", 0) + (right and not row.get("correct"))
            s["hurt"] = s.get("hurt", 0) + (not right and bool(row.get("correct")))
    finally:
        db.close()
    return list(scores.values())


def seeded_replay(folder: Path, margin: float = 0.02, flip_cap: float = 0.15) -> list[dict]:
    """Each offered cycle's candidate, its shadow trials replayed in the order their feedback came
    through the gate (memory/gate.py) after the recipe's confirmation pairs: what the canary
    would have decided had it counted them first. A run before c666c6e did not: it took the
    server's Q8_0 of the embedded model for another model than improve's base of the same tensors."""
    import sqlite3
    import tempfile

    from selfcorrect.memory.gate import Gate
    from selfcorrect.serve.memory import shadow_verdict
    from selfcorrect.stats import evidence_not_worse

    out = []
    db = sqlite3.connect(f"file:{folder / 'server.sqlite'}?mode=ro", uri=True)
    trials: dict[str, list] = {}
    for payload, feedback in db.execute("SELECT payload, feedback FROM completions WHERE feedback IS NOT NULL"):
        payload, feedback = json.loads(payload), json.loads(feedback)
        if payload.get("canary"):
            right = shadow_verdict(payload["kind"], payload.get("answer"), payload["canary"]["answer"],
                                   feedback["correct"], feedback.get("answer"))
            if right is not None:
                trials.setdefault(payload["canary"]["identity"], []).append((feedback["at"], right, feedback["correct"]))
    db.close()
    for cycle in sorted((folder / "cycles").glob("*"), key=lambda p: int(p.name)):
        recipe = read_recipe(cycle) if (cycle / "recipe.json").is_file() else None
        if recipe is None or recipe.round < 1 or not recipe.evidence:
            continue
        identity = next((i for i in trials if recipe.gguf and i.endswith(recipe.gguf)), None)
        with tempfile.TemporaryDirectory() as tmp:
            gate = Gate(Path(tmp) / "gate.sqlite", explore=0.0, margin=margin, flip_cap=flip_cap, arms=None)
            e = recipe.evidence
            evidence = gate.seed("replay", "candidate", e["items"], e["wrong_to_right"], e["right_to_wrong"])
            row = {"cycle": int(cycle.name), "seed": {k: e[k] for k in ("items", "wrong_to_right", "right_to_wrong")},
                   "seed_not_worse": evidence_not_worse(evidence.helped, evidence.hurt, evidence.pairs, margin), "decision": evidence.status, "after_trials": 0}
            for k, (_, candidate_right, served_right) in enumerate(sorted(trials.get(identity, [])), 1):
                if evidence.status != "trial":
                    break
                evidence = gate.record("replay", "candidate", candidate_right, served_right)
                row.update(decision=evidence.status, after_trials=k)
            row.update(trials=len(trials.get(identity, [])), final={
                **{k: getattr(evidence, k) for k in ("pairs", "helped", "hurt")},
                "not_worse": evidence_not_worse(evidence.helped, evidence.hurt, evidence.pairs, margin)})
            gate.close()
        out.append(row)
    return out


def _metric(text: str, name: str) -> float | None:
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


def _machine() -> str:
    from selfcorrect.precision import describe

    machine = describe()
    return f"{machine['cpu']} ({', '.join(machine['bf16_flags']) or 'no bf16'}), {os.cpu_count()} cores"


def render(report: dict) -> str:
    lines = ["# A server that improves itself from its traffic (serve --improve)", "",
             (f"{report['requests']} arithmetic requests in three wordings ({report['after']} of them after the first "
              f"{report['requests'] - report['after']}, while a cycle ran or a candidate was on trial), `single` on the embedded "
              f"model, {report['clients']} clients; feedback on {100 * report['feedback']:.0f}% ({report['feedback_sent']} "
              f"sent); a cycle every {report['every']} answered requests; " if report["requests"] else
              f"The adversarial arm alone, the base serving, {report['clients']} clients; ")
             + f"the canary on {100 * report['canary']:.0f}% of requests. Scored against gold by this script only. "
               f"{report['machine']}, {report['date']}.", "",
             f"Command: `{report['command']}`", "", "| requests | served accuracy | 95% interval | answered by |",
             "|---|---|---|---|"]
    for w in report["windows"]:
        lines.append(f"| {w['requests']} | {100 * w['accuracy']:.1f}% | {100 * w['interval'][0]:.1f}–{100 * w['interval'][1]:.1f}% "
                     f"| {', '.join(c.split(':')[-1][:12] for c in w['checkpoints'])} |")
    lines += ["", "Latency (seconds per request):", ""]
    for name, l in report["latency"].items():
        if l["requests"]:
            lines.append(f"- {name}: p50 {l['p50']:.2f}, p99 {l['p99']:.2f} ({l['requests']} requests)")
    lines += ["", f"Failed requests: {report['failed']}. Swaps: {report['swaps']}. Requests a candidate answered in "
              f"the shadow: {report['shadowed']}.", "", "Cycles:", ""]
    for c in report["cycle_state"]["cycles"]:
        lines.append(f"- cycle {c['cycle']} at {c['requests']} requests: {c['status']}"
                     + (f", round {c.get('round')}, held out {100 * c['heldout']:.1f}% against the base's "
                        f"{100 * c['base']:.1f}%" if c.get("heldout") is not None else "")
                     + (f" ({c.get('seconds')} s)" if c.get("seconds") else "") + (f": {c['error']}" if c.get("error") else ""))
    lines += ["", "Decisions:", ""]
    for d in report["decisions"] or [{"decision": "none"}]:
        e = d.get("evidence") or {}
        lines.append(f"- {d['decision']}" + (f" {d['candidate'].get('identity')}: {e.get('pairs')} trials, "
                                              f"{e.get('helped')} helped, {e.get('hurt')} hurt, not-worse e-value "
                                              f"{e.get('not_worse')}, harm e-value {(e.get('evidence') or [None, None])[1]}"
                                              if "candidate" in d else ""))
    if report.get("shadow_scores"):
        lines += ["", "Candidates' shadow answers, scored against gold by this script (never by the server):", "",
                  "| candidate | shadow answers | candidate right | served answer right (same requests) | w→r / r→w, p |",
                  "|---|---|---|---|---|"]
        for s in report["shadow_scores"]:
            n = s["shadow_answers"]
            lines.append(f"| {s['candidate'].split(':')[-1][:12]} | {n} | {s['right']} ({100 * s['right'] / n:.1f}%) "
                         f"| {s['served_right']} ({100 * s['served_right'] / n:.1f}%) | {s['helped']} / {s['hurt']}, "
                         f"p={Paired.of_counts(n, s['helped'], s['hurt']).p_value:.2g} |")
    for r in report.get("seeded_replay") or []:
        lines.append(f"\nCycle {r['cycle']}'s candidate replayed through the gate after its confirmation pairs "
                     f"({r['seed']['items']} pairs, {r['seed']['wrong_to_right']} helped, {r['seed']['right_to_wrong']} hurt: "
                     f"not-worse e-value {r['seed_not_worse']:.1f}), then its {r['trials']} shadow trials in feedback order: "
                     f"{r['decision']} after {r['after_trials']} ({r['final']['pairs']} pairs, {r['final']['helped']} helped, "
                     f"{r['final']['hurt']} hurt, not-worse e-value {r['final']['not_worse']:.1f}).")
    a = report["adversarial"]
    trained = (f"trained {a['epochs']:g} epochs at lr {a['learning_rate']:g} on the first cycle's examples with their "
               f"replies shuffled" if a.get("epochs") else "the first cycle's shuffled-label control")
    lines += ["", f"Adversarial arm ({trained}, offered as the candidate; feedback on {100 * a['feedback']:.0f}% of its "
              f"requests): offered {a['offered']}, {a['requests']} requests, "
              f"answered by it {a['answered_by_it']}, still on trial: {bool(a['still_on_trial'])}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
