"""The layering the architecture fixes, checked on the source: ``reduction`` never imports ``hpc``;
``hpc`` reaches ``reduction`` only through the step contract, the error types and the demo writer;
no module imports itself back through others (no import cycles, lazy imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: What hpc may import from reduction (``reduction`` itself only for ``__version__``).
HPC_MAY_IMPORT = {"reduction.step", "reduction.errors", "reduction.demo.bliss_writer"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, tuple[str, ...], int]]:
    """(module, names, line) of every import in the file, relative ones resolved."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, (), node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                prefix = ".".join(parts[:len(parts) - node.level + 1])
                base = f"{prefix}.{base}" if base else prefix
            found.append((base, tuple(alias.name for alias in node.names), node.lineno))
    return found


def _sources(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (REPO / package).rglob("*.py"))


MODULES = {_module_name(p): p for p in _sources("hpc", "reduction")}


def _targets(module: str, names: tuple[str, ...]) -> list[str]:
    """The project modules an import statement loads: ``from a import b`` loads a.b when it is a module."""
    submodules = [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
    return submodules or ([module] if module in MODULES else [])


@pytest.mark.parametrize("path", _sources("reduction"), ids=lambda p: _module_name(p))
def test_reduction_never_imports_hpc(path: Path) -> None:
    bad = [f"line {line}: {module}" for module, _, line in _imports(path) if module.split(".")[0] == "hpc"]
    assert not bad, f"{path.relative_to(REPO)} imports hpc: {bad}"


@pytest.mark.parametrize("path", _sources("hpc"), ids=lambda p: _module_name(p))
def test_hpc_imports_only_the_contract_from_reduction(path: Path) -> None:
    bad = []
    for module, names, line in _imports(path):
        if module.split(".")[0] != "reduction":
            continue
        if module == "reduction" and set(names) <= {"__version__"}:
            continue
        targets = _targets(module, names) or [module]
        bad += [f"line {line}: {target}" for target in targets if target not in HPC_MAY_IMPORT]
    assert not bad, (f"{path.relative_to(REPO)} imports {bad} from reduction; hpc may import only "
                     f"{sorted(HPC_MAY_IMPORT)} (reach a kind through reduction.step)")


def _graph() -> dict[str, set[str]]:
    return {name: {t for module, names, _ in _imports(path) for t in _targets(module, names) if t != name}
            for name, path in MODULES.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path of modules), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_the_cycle_finder_finds_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
