"""The import structure reads one way: prompt -> engine -> sampler -> Result -> grader -> store -> report.

A lower layer never imports a higher one (static imports, read with ast, lazy ones inside functions included),
and only the command line (cli/) parses arguments.
"""

import ast
from pathlib import Path

import pytest

import powersample

PACKAGE = Path(powersample.__file__).resolve().parent

# layer -> the packages of powersample it must not import
FORBIDDEN = {
    "engine": {"samplers", "tasks", "evaluation", "gym", "cli", "api"},
    "samplers": {"tasks", "evaluation", "gym", "cli", "api"},
    "tasks": {"evaluation", "cli"},
    "evaluation": {"cli"},
}


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, relative imports resolved to absolute names."""
    module = ("powersample." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            parent = ".".join(base + ([node.module] if node.module else []))
            names.add(parent)
            names |= {f"{parent}.{a.name}" for a in node.names}  # `from .. import gym` imports a module too
    return names


def _library_files():
    return sorted(p for p in PACKAGE.rglob("*.py") if "cli" not in p.relative_to(PACKAGE).parts)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_layer_imports_a_higher_one(layer):
    bad = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "powersample" and len(parts) > 1 and parts[1] in FORBIDDEN[layer]:
                bad.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not bad, "\n".join(bad)


def test_only_the_cli_parses_arguments():
    bad = [str(p.relative_to(PACKAGE)) for p in _library_files() if "argparse" in _imports(p)]
    assert not bad, bad


def test_the_walk_sees_relative_and_lazy_imports():
    names = _imports(PACKAGE / "engine" / "loading.py")
    assert "powersample.errors" in names and "powersample.engine.hf" in names  # `from .hf import` in a function
    assert "powersample.registry.Registry" in _imports(PACKAGE / "engine" / "__init__.py")
