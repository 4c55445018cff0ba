"""The direction of imports (DESIGN.md): the certify library at the bottom, encoders above it, the
commands on top, no circles.

- the library (certify/ outside certify/cli/) never imports certify.cli or encoders;
- encoders/ (models, data, training) may import the certify library, never its commands;
- no module imports one that imports it back, directly or through others;
- scripts, benchmarks and notebooks call the library and the runner, never a command module.

Every import counts, those inside functions too.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
PACKAGES = ("certify", "encoders")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPOSITORY).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path
            for package in PACKAGES for path in sorted((REPOSITORY / package).rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The project modules that ``path`` imports (``from a import b`` counts a.b when it is a
    module, else a)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in known else node.module)
    return {name for name in found if name in known}


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(path, known) - {name} for name, path in found.items()}


def is_library(name: str) -> bool:
    """certify/ but its commands (certify.cli and the ``python -m certify`` entry point)."""
    return name.split(".")[0] == "certify" and not is_command(name)


def is_command(name: str) -> bool:
    """certify.cli and the ``python -m certify`` entry point."""
    return name.startswith(("certify.cli", "certify.__main__"))


def wrong_edges(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """The imports (importer, imported) that go against the direction: the library importing
    encoders or a command, or encoders importing a command."""
    wrong = []
    for name, targets in sorted(graph.items()):
        for target in sorted(targets):
            if is_library(name) and (target.startswith("encoders") or is_command(target)):
                wrong.append((name, target))
            elif name.startswith("encoders") and is_command(target):
                wrong.append((name, target))
    return wrong


def test_imports_run_one_way():
    assert wrong_edges(import_graph()) == []


def test_the_checker_sees_a_wrong_import():
    """Not vacuous: an import that goes the wrong way, put back, is found, while encoders may use
    the library."""
    graph = import_graph()
    graph["encoders.recipes"] = graph["encoders.recipes"] | {"certify.attacks.smoothadv"}
    graph["certify.smoothing"] = graph["certify.smoothing"] | {"encoders.checkpoint"}
    graph["encoders.finetune"] = graph["encoders.finetune"] | {"certify.cli.common"}
    assert wrong_edges(graph) == [("certify.smoothing", "encoders.checkpoint"),
                                  ("encoders.finetune", "certify.cli.common")]


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """A circle of imports in ``graph`` as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for target in sorted(graph[name]):
            if name.startswith(target + "."):  # a module importing its own package's API
                continue
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (circle := visit(target)):
                return circle
        state[name] = 2
        path.pop()
        return None

    for name in sorted(graph):
        if name not in state and (circle := visit(name)):
            return circle
    return None


def test_no_circle_of_imports():
    circle = find_circle(import_graph())
    assert circle is None, " -> ".join(circle or [])


def test_the_checker_sees_a_circle():
    """Not vacuous: the circle smoothing <-> sequential that the layout removed is found when put
    back."""
    graph = import_graph()
    assert "certify.sequential" in graph["certify.smoothing"]
    graph["certify.sequential"] = graph["certify.sequential"] | {"certify.smoothing"}
    assert find_circle(graph) in (["certify.sequential", "certify.smoothing", "certify.sequential"],
                                  ["certify.smoothing", "certify.sequential", "certify.smoothing"])


CALLERS = ("scripts", "benchmarks", "notebooks")
"""The folders whose code calls the packages from outside: never through a command module."""


def code_of(path: Path) -> str:
    """A Python file's text, or a notebook's code cells (shell and magic lines left out)."""
    if path.suffix != ".ipynb":
        return path.read_text(encoding="utf-8")
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    lines = [line for cell in cells if cell["cell_type"] == "code"
             for line in "".join(cell["source"]).splitlines()]
    return "\n".join(line for line in lines if not line.lstrip().startswith(("!", "%")))


def command_imports(paths: list[Path]) -> list[tuple[str, str]]:
    """(file, module) for every import of a command module (certify.cli or ``python -m
    certify``'s entry point) in ``paths``, imports inside functions too."""
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(code_of(path))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module
                     else [])
            for name in names:
                if is_command(name) or (name == "certify" and isinstance(node, ast.ImportFrom)
                                        and any(alias.name in ("cli", "__main__")
                                                for alias in node.names)):
                    found.append((path.name, name))
    return found


def caller_files() -> list[Path]:
    return [path for folder in CALLERS for pattern in ("*.py", "*.ipynb")
            for path in sorted((REPOSITORY / folder).rglob(pattern))]


def test_scripts_benchmarks_and_notebooks_never_import_a_command():
    files = caller_files()
    assert {path.parent.name for path in files} >= {"scripts", "benchmarks", "notebooks"}
    assert command_imports(files) == []


def test_the_checker_sees_a_script_importing_a_command(tmp_path):
    """Not vacuous: imports of a command, at the top or inside a function, are found, imports of
    the library are not."""
    planted = tmp_path / "planted.py"
    planted.write_text("from certify.runner import run\nimport certify.selection\n"
                       "from certify.cli.attack import main\n"
                       "def helper():\n    import certify.cli.loading as loading\n"
                       "    from certify import cli\n")
    assert command_imports([planted]) == [("planted.py", "certify.cli.attack"),
                                          ("planted.py", "certify.cli.loading"),
                                          ("planted.py", "certify")]
