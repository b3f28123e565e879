"""The import graph of src/selfcorrect against the layers written in docs/architecture.md:
no upward or sideways import between packages, no cycle between modules. Every import
counts: at the top of a module, inside a function, under TYPE_CHECKING."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "selfcorrect"


def layers() -> dict[str, int]:
    """Each package or top-level module with its layer, from the table in the docs."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    ranks = {}
    for number, names in re.findall(r"^\| (\d+) \| ([^|]+) \|", text, re.M):
        for name in names.split(","):
            ranks[name.strip()] = int(number)
    return ranks


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The selfcorrect modules `name` imports (a `from package import name` of a submodule
    counts as importing the submodule)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        else:
            continue
        for target in targets:
            if target == "selfcorrect" or target.startswith("selfcorrect."):
                while target not in known and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target != name:
                    found.add(target)
    return found


def unit(module: str) -> str:
    """The package or top-level module a module belongs to ("selfcorrect" for the root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def test_every_package_has_a_layer():
    ranks = layers()
    assert len(ranks) > 10, "the layer table in docs/architecture.md was not found"
    missing = sorted({unit(m) for m in modules()} - set(ranks))
    assert not missing, f"give these a layer in docs/architecture.md: {missing}"
    stale = sorted(set(ranks) - {unit(m) for m in modules()})
    assert not stale, f"docs/architecture.md names packages that do not exist: {stale}"


def test_no_import_goes_up_or_sideways():
    ranks = layers()
    wrong = []
    for module, targets in graph().items():
        for target in targets:
            mine, theirs = unit(module), unit(target)
            if mine != theirs and ranks[theirs] >= ranks[mine]:
                wrong.append(f"{module} (layer {ranks[mine]}) imports {target} (layer {ranks[theirs]})")
    assert not wrong, "imports against docs/architecture.md:\n" + "\n".join(sorted(wrong))


def test_no_cycles_between_modules():
    edges = graph()
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                cycles.append(" -> ".join(path[path.index(target):] + [target]) if target in path else target)
            elif target not in state:
                visit(target, [*path, target])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_walk_sees_lazy_and_type_checking_imports(tmp_path):
    """The checker itself: an import inside a function and one under TYPE_CHECKING are found."""
    source = tmp_path / "probe.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from selfcorrect.runner import Evaluation\n"
                      "def f():\n    from selfcorrect.cli import main\n    from . import store\n")
    found = imports("selfcorrect.verify.probe", source,
                    {"selfcorrect.runner", "selfcorrect.cli", "selfcorrect.verify", "selfcorrect.verify.store"})
    assert found == {"selfcorrect.runner", "selfcorrect.cli", "selfcorrect.verify.store"}


def test_no_module_outgrows_its_file():
    """600 lines at most: a longer module holds more than one thing. The sandbox's zygote is
    one file on purpose (it is copied into the sandbox whole)."""
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text().splitlines())) > 600 and name != "selfcorrect.sandbox.zygote"}
    assert not long, f"split these: {long}"
