"""The direction of imports (DESIGN.md): commands above the library, no circles, encoders alone.

- encoders/ never imports certify/;
- the library (certify/ outside certify/cli/) never imports certify.cli or encoders;
- no module imports one that imports it back, directly or through others (imports inside
  functions count too).
"""

from __future__ import annotations

import ast
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
    return name.split(".")[0] == "certify" and not name.startswith(
        ("certify.cli", "certify.__main__"))


def test_encoders_never_imports_certify():
    graph = import_graph()
    offenders = {name: sorted(target for target in targets if target.startswith("certify"))
                 for name, targets in graph.items() if name.startswith("encoders")}
    assert not {name: targets for name, targets in offenders.items() if targets}


def test_the_library_never_imports_the_commands_or_encoders():
    graph = import_graph()
    offenders = {name: sorted(target for target in targets
                              if target.startswith(("certify.cli", "encoders")))
                 for name, targets in graph.items() if is_library(name)}
    assert not {name: targets for name, targets in offenders.items() if targets}


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
