"""The layering docs/index.md describes, checked on the source: imports flow one way.

core ← synth ← train ← evaluate ← fewsam, with baseline (the U-Net, on core and train) between train
and evaluate, phantom (on core and synth's readers), pretrain
(on core and train) and suggest (on the pipeline packages) beside the pipeline. The graph is built from every import statement
of every module (also those inside functions), read with `ast`, so a lazy import cannot hide a
cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from core import streams

PACKAGES = (
    "core",
    "synth",
    "train",
    "baseline",
    "evaluate",
    "phantom",
    "pretrain",
    "suggest",
    "annotate",
    "fewsam",
)
# What each package may import (besides itself). The rest of the graph follows from this table.
ALLOWED = {
    "core": set(),
    "synth": {"core"},
    "phantom": {"core", "synth"},
    "train": {"core"},
    "pretrain": {"core", "train"},
    "baseline": {"core", "train"},
    # annotate's prompt engines answer the refiner's boxes (evaluate.refine).
    "evaluate": {"core", "synth", "train", "baseline", "annotate"},
    "suggest": {"core", "synth", "train", "evaluate"},
    "annotate": {"core", "synth", "train"},
    "fewsam": {
        "core",
        "synth",
        "train",
        "baseline",
        "evaluate",
        "phantom",
        "pretrain",
        "suggest",
        "annotate",
    },
}


def _is_typer_hook(node: ast.AST, path: Path) -> bool:
    """synth/__init__.py's PEP 562 `__getattr__`, which hands `typer synth run` the CLI app: the
    one upward import, lazy and reached only from that entry point."""
    return (
        path.name == "__init__.py"
        and isinstance(node, ast.FunctionDef)
        and node.name == "__getattr__"
    )


def imported_packages(path: Path) -> set[str]:
    """Top-level fewsam packages imported anywhere in the module at `path`, imports inside
    functions included; only `_is_typer_hook` is exempt."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if _is_typer_hook(node, path):
            skip.update(id(child) for child in ast.walk(node))
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        found.update(n.split(".")[0] for n in names if n.split(".")[0] in PACKAGES)
    return found


def package_graph(root: Path) -> dict[str, set[str]]:
    """Package -> the other packages its modules import."""
    graph: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            graph[package] |= imported_packages(path) - {package}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_sees_a_cycle_and_no_false_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_import_graph_catches_a_lazy_upward_import(tmp_path: Path) -> None:
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "core" / "x.py").write_text("def f():\n    from evaluate import metrics\n")
    (tmp_path / "evaluate" / "metrics.py").write_text("import core.x\n")
    graph = package_graph(tmp_path)
    assert graph["core"] == {"evaluate"}
    assert find_cycle(graph) == ["core", "evaluate", "core"]


def test_packages_import_one_way() -> None:
    graph = package_graph(REPO)
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph) or [])}"
    for package, imported in graph.items():
        assert imported <= ALLOWED[package], (
            f"{package} imports {sorted(imported - ALLOWED[package])}"
        )


def test_no_package_init_imports_a_cli() -> None:
    for package in PACKAGES:
        for init in (REPO / package).rglob("__init__.py"):
            for node in ast.walk(ast.parse(init.read_text())):
                if _is_typer_hook(node, init):
                    break
                if isinstance(node, ast.ImportFrom | ast.Import):
                    names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                    names += [a.name for a in node.names]
                    assert not any("cli" in n.split(".")[-1] for n in names), init


@pytest.mark.parametrize("module", ["core.errors", "core.params", "synth.datasets", "train.model"])
def test_importing_a_base_module_loads_no_cli(module: str) -> None:
    code = (
        f"import sys, {module}; "
        "bad = sorted(m for m in sys.modules if m == 'typer' or m.startswith('fewsam')); "
        "print(','.join(bad))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"{module} loaded {done.stdout.strip()}"


def test_the_command_line_app_starts_without_torch() -> None:
    """`fewsam --help`, `data check` and every refusal start in a fraction of a second: the app
    imports torch, SAM and peft only in the commands that use them."""
    code = (
        "import sys, fewsam.cli; "
        "heavy = ('torch', 'segment_anything', 'peft', 'monai'); "
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"fewsam.cli loaded {done.stdout.strip()[:200]}"


def test_typer_finds_the_synth_app_lazily() -> None:
    import synth

    assert "app" in dir(synth)
    names = {c.name for c in synth.app.registered_commands}
    assert {"extract", "run", "preview", "stats"} <= names


def test_cli_modules_raise_no_expected_error() -> None:
    """The CLI modules parse options; checking them (and refusing them) is the packages' work,
    so no `fewsam/cli*.py` names an expected error."""
    errors = {"FewsamError", "ParamsError", "InputError"}
    for path in sorted((REPO / "fewsam").glob("cli*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, ast.ImportFrom):
                names.update(alias.name for alias in node.names)
        assert not names & errors, f"{path.relative_to(REPO)} uses {sorted(names & errors)}"


def test_random_stream_keys_are_unique() -> None:
    # Top-level stream keys; the sub-keys under TRAIN live in their own namespace.
    keys = {
        name: value
        for name, value in vars(streams).items()
        if name.isupper() and not name.startswith("TRAIN_") and isinstance(value, int)
    }
    assert len(keys) >= 10
    duplicates = {v: [k for k, w in keys.items() if w == v] for v in keys.values()}
    assert all(len(names) == 1 for names in duplicates.values()), duplicates
    train_sub = {k: v for k, v in vars(streams).items() if k.startswith("TRAIN_")}
    assert len(set(train_sub.values())) == len(train_sub), train_sub


def test_no_stage_defines_its_own_stream_key() -> None:
    """Seeds come from the registry: a module-level `*_KEY = <int>` elsewhere would bypass it."""
    offenders = []
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            if path == REPO / "core" / "streams.py":
                continue
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                    for target in node.targets:
                        if isinstance(target, ast.Name) and target.id.endswith(("_KEY", "_STREAM")):
                            offenders.append(f"{path.relative_to(REPO)}: {target.id}")
    assert offenders == []
