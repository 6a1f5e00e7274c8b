"""The package's layering, read off the source: no import cycle (lazy imports inside functions count
too, so none can hide one), the library never imports the CLI, the model reaches the scan backends
only through the dispatcher, and every module imports on its own in a fresh interpreter."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

PACKAGE = "fusionmamba_cli"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(name: str) -> set[str]:
    """The package's modules that `name` imports anywhere in its source (top level or in a function)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` imports the submodule when there is one, else a name of pkg
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in MODULES and t != name)
    return found


GRAPH = {name: _imports(name) for name in MODULES}


def _cycle() -> list[str] | None:
    """One import cycle as a list of modules, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for dep in sorted(GRAPH[name]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[name] = 2
        return None

    for name in sorted(GRAPH):
        if name not in state and (found := visit(name)):
            return found
    return None


def test_no_import_cycle():
    assert _cycle() is None, " -> ".join(_cycle() or [])


def test_library_never_imports_the_cli():
    offenders = {name: sorted(d for d in deps if d.startswith(f"{PACKAGE}.cli"))
                 for name, deps in GRAPH.items() if not name.startswith((f"{PACKAGE}.cli", f"{PACKAGE}.__main__"))}
    assert not {k: v for k, v in offenders.items() if v}


def test_model_reaches_the_backends_only_through_the_dispatcher():
    backends = {name for name in MODULES if name.startswith(f"{PACKAGE}.ops.scan_")}
    for name, deps in GRAPH.items():
        if name.startswith(f"{PACKAGE}.model"):
            assert not deps & backends, (name, sorted(deps & backends))


def test_weights_layers_import_downwards_only():
    # manifest -> hub -> resolve -> files -> convert: each may import only those before it
    order = [f"{PACKAGE}.checkpoints.{m}" for m in ("manifest", "hub", "resolve", "files", "convert")]
    for i, name in enumerate(order):
        later = set(order[i + 1:]) | {f"{PACKAGE}.checkpoints", PACKAGE}
        assert not GRAPH[name] & later, (name, sorted(GRAPH[name] & later))


def test_every_module_imports_on_its_own():
    """Each module imported first in a fresh interpreter (one process for all, the package's modules
    forgotten before each: a process per module would cost a torch import each). The Triton
    backend's modules only where Triton is installed."""
    names = sorted(n for n in MODULES if ".scan_triton" not in n or importlib.util.find_spec("triton"))
    script = (
        "import importlib, sys\n"
        f"names = {names!r}\n"
        "base = set(sys.modules)\n"
        "for name in names:\n"
        "    for mod in [m for m in sys.modules if m not in base and m.startswith('fusionmamba_cli')]:\n"
        "        del sys.modules[mod]\n"
        "    importlib.import_module(name)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
