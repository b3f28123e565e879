"""Third-party parts register through entry points: a plugin package installed beside
selfcorrect (here: a distribution put on the path, as pip would) adds a strategy, a task and
a backend, which the listings show and an evaluation runs end to end."""

import json
import os
from pathlib import Path

import pytest

from tests.cli import selfcorrect

PLUGIN = Path(__file__).parent.parent / "plugin_example"


@pytest.fixture
def installed(tmp_path):
    """The plugin's distribution metadata on the path, as `pip install` would leave it."""
    site = tmp_path / "site"
    info = site / "selfcorrect_example_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: selfcorrect-example-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[selfcorrect.strategies]\nshorter-of-two = selfcorrect_example_plugin:FirstOfTwo\n\n"
        "[selfcorrect.tasks]\ndoubling = selfcorrect_example_plugin:Doubling\n\n"
        "[selfcorrect.backends]\necho = selfcorrect_example_plugin:echo_backend\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(PLUGIN)])}


def run(env, *args, cwd):
    import subprocess

    from tests.cli import EXE

    return subprocess.run([str(EXE), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_plugins_are_listed_with_their_package(installed, tmp_path):
    strategies = run(installed, "strategies", cwd=tmp_path)
    assert "shorter-of-two" in strategies.stdout and "selfcorrect-example-plugin" in strategies.stdout
    tasks = run(installed, "tasks", cwd=tmp_path)
    assert "doubling" in tasks.stdout and "n=3" in tasks.stdout
    models = run(installed, "--model", "echo:6", "models", cwd=tmp_path)
    assert "echo" in models.stdout and "ok" in models.stdout


def test_a_plugin_strategy_task_and_backend_run_an_evaluation(installed, tmp_path):
    done = run(installed, "--model", "echo:4", "eval", "--task", "doubling:n=4",
               "--strategy", "single,shorter-of-two:n=3", "--no-reference", "--out", "report", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["run"]["config"]["model"] == "echo:4"
    assert report["strategies"]["shorter-of-two:n=3"]["correct"] == 1  # 2 * 2 = 4, and only that


def test_plugin_options_are_checked_like_built_in_ones(installed, tmp_path):
    done = run(installed, "--model", "echo:4", "eval", "--task", "doubling", "--strategy", "shorter-of-two:n=9",
               cwd=tmp_path)
    assert done.returncode == 1 and "shorter-of-two:n=9 is outside 2 to 8" in done.stderr


def test_without_the_plugin_its_parts_are_unknown(tmp_path):
    done = selfcorrect("eval", "--strategy", "shorter-of-two", cwd=tmp_path)
    assert done.returncode == 1 and "unknown strategy 'shorter-of-two'" in done.stderr
