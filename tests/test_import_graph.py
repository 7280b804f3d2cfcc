"""The house's shape: no import cycles in jaxdl, nothing reaching up (issue 21).

Every ``import`` of a jaxdl module, at the top of a file or inside a function, is an edge;
function-level imports count too, since they are how a cycle gets hidden. Two graphs must
be acyclic: the modules', and the parts' (``jaxdl.training``, ``jaxdl.checkpoint``,
``jaxdl.mesh``, ``jaxdl.distributed``... each sub-package or top-level module is one node; the
package ``jaxdl`` itself, which re-exports the parts, is left out).
"""

from __future__ import annotations

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jaxdl"


def module_names() -> dict[str, pathlib.Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imported(name: str, path: pathlib.Path, known: dict) -> set[str]:
    """The jaxdl modules that module ``name`` imports (its own package's ``__init__`` left out)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found.update(target for target in targets if target.startswith("jaxdl") and target != name)
    return {target for target in found if target in known}


def graph(part_of=lambda name: name) -> dict[str, set[str]]:
    known = module_names()
    edges: dict[str, set[str]] = {}
    for name, path in known.items():
        source = part_of(name)
        if source is None:
            continue
        targets = {part_of(target) for target in imported(name, path, known)}
        edges.setdefault(source, set()).update(target for target in targets if target not in (None, source))
    return edges


def part(name: str) -> str | None:
    parts = name.split(".")
    return None if len(parts) == 1 else ".".join(parts[:2])


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of nodes, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_module_imports_itself_through_others():
    assert cycle(graph()) is None, " -> ".join(cycle(graph()))


def test_no_part_imports_itself_through_others():
    parts = graph(part)
    assert cycle(parts) is None, " -> ".join(cycle(parts))


def test_the_mesh_package_is_at_the_bottom():
    # Devices and meshes import nothing of jaxdl's above them (issue 21's layering).
    assert graph(part).get("jaxdl.mesh", set()) == set()
    assert graph(part)["jaxdl.distributed"] == {"jaxdl.mesh"}


def test_the_cycle_finder_finds_a_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def message_strings(path: pathlib.Path):
    """(line, text) of every string literal of a module that is not a docstring (f-strings' parts included)."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def scripts_options() -> set[str]:
    options = set()
    for script in (ROOT / "scripts").glob("*.py"):
        for _, text in message_strings(script):
            options.update(re.findall(r"^(--[a-z][a-z-]+)$", text))
    return options - {"--help"}


def test_library_code_prints_no_command_line_options_of_the_scripts():
    # The scripts phrase advice ("restart with --resume"); the library raises the facts.
    # (Docstrings may mention the scripts: they are documentation, not messages.)
    options = scripts_options()
    assert {"--resume", "--output-dir", "--coordinator"} <= options
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "recipes" / "cli.py":  # the scripts' shared command-line module: their words
            continue
        for line, text in message_strings(path):
            offenders += [f"{path.relative_to(ROOT)}:{line}: {option}" for option in options
                          if re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text)]
    assert not offenders, "\n".join(sorted(offenders))


def test_docstrings_state_errors_in_raises_sections():
    # The API reference renders Google-style "Raises:" sections; an "Errors:" paragraph is not.
    offenders = [f"{path.relative_to(ROOT)}:{number}" for path in PACKAGE.rglob("*.py")
                 for number, line in enumerate(path.read_text().splitlines(), 1) if line.strip().startswith("Errors:")]
    assert not offenders, offenders
