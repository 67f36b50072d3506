# Copyright 2026 The misconceptions authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""The package's layout: no import cycle between its modules, no module over MAX_LINES lines, `configs` a leaf, and
the generation path (what the vLLM environment imports) free of the training stack. Reads the source only, except
the last test, which imports two modules in a fresh interpreter."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO


PACKAGE = REPO / "src" / "misconceptions"
MAX_LINES = 450
# Imported by scripts/generate_synthetic.py and scripts/explain.py in the vLLM environment, which has neither.
LIGHT_MODULES = ("misconceptions.synthetic", "misconceptions.generation", "misconceptions.explanations")
TRAINING_STACK = ("sentence_transformers", "trl", "peft", "misconceptions.classifier", "misconceptions.retrieval")


def _module_level_statements(body: list[ast.stmt]):
    """Statements run when the module is imported: the body, into if/try/with blocks, never into a def or class."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        yield node
        for field in ("body", "orelse", "finalbody", "handlers"):
            children = getattr(node, field, None)
            if isinstance(children, list):
                yield from _module_level_statements(children)


def package_imports(folder: Path) -> dict[str, set[str]]:
    """module -> the package modules it imports at module level (`from .x import`, `from . import x`,
    `import misconceptions.x`, `from misconceptions.x import`)."""
    modules = {path.stem for path in folder.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in sorted(folder.glob("*.py")):
        found: set[str] = set()
        for node in _module_level_statements(ast.parse(path.read_text()).body):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1 or (node.module or "").split(".")[0] == "misconceptions":
                    parts = (node.module or "").split(".")
                    name = parts[0] if node.level == 1 else (parts[1] if len(parts) > 1 else "")
                    if name:
                        found.add(name)
                    else:  # `from . import x` / `from misconceptions import x`: x may be a module
                        found.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    if parts[0] == "misconceptions" and len(parts) > 1:
                        found.add(parts[1])
        graph[path.stem] = (found & modules) - {path.stem}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a list of modules, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_the_layout_check_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_between_package_modules():
    graph = package_imports(PACKAGE)
    assert graph["eedi"], "the import graph came out empty: the parser no longer sees the package's imports"
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle at module level: {' -> '.join(cycle)}"


def test_configs_is_a_leaf_of_the_package():
    assert package_imports(PACKAGE)["configs"] <= {"errors"}


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_module_length(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines (at most {MAX_LINES}): split it along the data"


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_generation_path_does_not_import_the_training_stack(module):
    code = f"import sys, {module}; print(' '.join(m for m in {TRAINING_STACK!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert proc.stdout.strip() == "", f"import {module} loaded {proc.stdout.strip()}"
