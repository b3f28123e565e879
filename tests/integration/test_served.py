"""The rounds on served engines (models/served.py): real llama.cpp servers started for a
checkpoint, two replicas, measured against the embedded engine on the same items; a stand-in
`vllm` on PATH (tests/standin_vllm.py, forwarding to a real llama.cpp server) that records its
command line and the adapter loads of a whole `improve` run; a server that does not come up."""

import asyncio
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from selfcorrect.config import load_settings
from selfcorrect.errors import BackendUnavailableError
from selfcorrect.models.embedded import default_model_path
from selfcorrect.models.lineage import Checkpoint, Lineage
from selfcorrect.models.load import load_gguf
from selfcorrect.models.served import ServedEngines, Serving
from selfcorrect.stats import paired
from selfcorrect.tasks import Subset, parse_task
from selfcorrect.train.cycle import measure_side, opened
from tests.tinymodel import make_tiny_model

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_a_round_on_two_llama_server_replicas_measures_as_the_embedded_engine(tmp_path):
    """The base's GGUF on two llama.cpp servers (one thread each), greedy, against the embedded
    engine in process on the same 20 arithmetic items: the same answers on nearly every item
    (one llama.cpp under both), both replicas answered, and the servers stop with the round."""
    settings = load_settings(store=tmp_path / "store.sqlite", llama={"threads": 2, "n_ctx": 2048})
    checkpoint = Checkpoint(name="base", round=0, path=str(make_tiny_model(tmp_path / "tiny")),
                            gguf=str(default_model_path()))
    said = []
    engines = ServedEngines(settings, Serving("llama-server", replicas=2), tmp_path / "serving",
                            gguf_of=lambda c: c.gguf, merged_of=lambda c: Path(c.path), say=said.append)
    task = parse_task("arithmetic")
    side = Subset(task, {i.id for i in task.items()[:20]})

    async def both():
        async with opened(engines, checkpoint) as served:
            assert served.identity.startswith("llama-server:") and len(served.replicas) == 2
            group = served._on_close.__self__
            _, on_servers = await measure_side(settings, side, ["single"], served, 0, 0.0)
        assert all(p.poll() is not None for p in group.processes) or not group.processes  # stopped
        embedded = load_gguf(settings, checkpoint.gguf)
        try:
            _, in_process = await measure_side(settings, side, ["single"], embedded, 0, 0.0)
        finally:
            await embedded.aclose()
        return on_servers["single"], in_process["single"]

    on_servers, in_process = asyncio.run(both())
    answers = lambda rows: {r.item: r.final.answer for r in rows}  # noqa: E731
    a, b = answers(on_servers), answers(in_process)
    assert len(a) == len(b) == 20
    assert sum(a[i] == b[i] for i in a) >= 17, (a, b)
    comparison = paired({r.item: r.final.correct for r in in_process}, {r.item: r.final.correct for r in on_servers})
    assert comparison.p_value > 0.05 and abs(comparison.difference) <= 0.15, comparison
    logs = sorted((tmp_path / "serving").glob("base.server-*.log"))
    assert len(logs) == 2 and all("POST /v1/chat/completions" in log.read_text() for log in logs)
    assert said == ["starting 2 llama-server server(s) for base"]


@pytest.fixture
def standin_vllm(tmp_path, llama_server, monkeypatch):
    """`vllm` on PATH: tests/standin_vllm.py, forwarding to the session's llama.cpp server."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    vllm = bin_dir / "vllm"
    vllm.write_text(f"#!{sys.executable}\nimport runpy, sys\nsys.path.insert(0, {str(REPO)!r})\n"
                    "runpy.run_module('tests.standin_vllm', run_name='__main__')\n")
    vllm.chmod(vllm.stat().st_mode | stat.S_IEXEC)
    record = tmp_path / "vllm-record.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("STANDIN_RECORD", str(record))
    monkeypatch.setenv("STANDIN_UPSTREAM", llama_server)
    monkeypatch.setenv("STANDIN_UPSTREAM_MODEL", "smollm2")
    return record


@pytest.mark.timeout(900)
def test_improve_on_vllm_loads_each_round_s_adapter_into_one_server(tmp_path, standin_vllm):
    """A whole `improve` run with `--engine vllm --replicas 2`: one long-lived server per replica
    started with --enable-lora on the base (the --engine-args passed through), round 1's adapter
    loaded by name on both replicas and unloaded after, its draws answered by name; the logs in
    the run's serving/ folder, and nothing left running."""
    from selfcorrect.improve.loop import ImproveSpec, Improvement

    settings = load_settings(store=tmp_path / "store.sqlite", hf={"batch": 8}, sandbox_workers=1)
    lineage = Lineage(settings.store)
    lineage.register(Checkpoint(name="base", round=0, path=str(make_tiny_model(tmp_path / "tiny"))))
    lineage.close()
    spec = ImproveSpec(task="arithmetic", limit=12, heldout=0.5, rounds=1, chains=2, agree=1, student_samples=1,
                       epochs=1, learning_rate=1e-3, batch_size=8, confirmation=0.0, engine="vllm", replicas=2,
                       engine_args="--max-model-len 2048")
    out = tmp_path / "improve"
    stages = []
    report = asyncio.run(Improvement(settings, spec, out, on_stage=stages.append).run())

    assert report["engine"] == "vllm" and [r["round"] for r in report["rounds"]] == [0, 1]
    lines = [json.loads(line) for line in standin_vllm.read_text().splitlines()]
    starts = [line["argv"] for line in lines if "argv" in line]
    assert len(starts) == 2  # one server per replica for the whole run: no restart between rounds
    for argv in starts:
        assert argv[:2] == ["serve", str(tmp_path / "tiny")] and argv[-2:] == ["--max-model-len", "2048"]
        assert "--enable-lora" in argv and argv[argv.index("--served-model-name") + 1] == "base"
    loads = [line for line in lines if line.get("call") == "/v1/load_lora_adapter"]
    adapter = report["rounds"][1]["checkpoint"]
    assert {line["port"] for line in loads} == {int(a[a.index("--port") + 1]) for a in starts}
    assert all(line["body"]["lora_name"] == adapter and Path(line["body"]["lora_path"]).is_dir() for line in loads)
    assert sum(line.get("call") == "/v1/unload_lora_adapter" for line in lines) >= 2
    chats = [line for line in lines if line.get("call") == "chat"]
    assert {line["model"] for line in chats} == {"base", adapter}  # each round's draws from its own model
    assert len({line["port"] for line in chats}) == 2  # spread over both replicas
    assert sorted(p.name for p in (out / "serving").glob("*.log")) == ["vllm-lora.server-0.log", "vllm-lora.server-1.log"]
    assert any("--enable-lora" in s for s in stages)


def test_a_server_that_does_not_come_up_is_named_with_its_log(tmp_path):
    settings = load_settings(store=tmp_path / "store.sqlite")
    crash = f"{sys.executable} -c 'import sys; print(\"cannot load\", sys.argv[1]); sys.exit(3)' {{model}} {{port}}"
    engines = ServedEngines(settings, Serving("command", command=crash), tmp_path / "serving",
                            gguf_of=lambda c: c.gguf, merged_of=lambda c: Path(c.path), say=lambda s: None)
    checkpoint = Checkpoint(name="base", round=0, path=str(make_tiny_model(tmp_path / "tiny")))
    with pytest.raises(BackendUnavailableError, match=r"(?s)exited with status 3.*\ncannot load .*tiny") as failed:
        asyncio.run(engines(checkpoint))
    assert "base.server-0.log" in str(failed.value)
