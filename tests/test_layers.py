"""The import structure reads one way: prompt -> engine -> sampler -> Result -> grader -> store -> report.

A lower layer never imports a higher one (static imports, read with ast, lazy ones inside functions included),
and only the command line (cli/) parses arguments.
"""

import ast
import re
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


def test_the_readme_layout_names_every_module_and_nothing_else():
    root = PACKAGE.parents[1]
    text = (root / "README.md").read_text()
    layout = text[text.index("## Layout"):]
    layout = layout[: layout.index("```", layout.index("```") + 3)]
    words = set(re.findall(r"[\w.]+", layout))
    modules = [p for p in PACKAGE.rglob("*.py") if p.stem not in ("__init__", "__main__")]
    files = modules + list((root / "tests").glob("*.py")) + list((root / "bench").glob("*.py"))
    missing = sorted(str(p.relative_to(root)) for p in files
                     if p.stem != "conftest" and p.stem not in words and p.name not in words)
    assert not missing, f"README's layout does not name {missing}"
    existing = {p.name for p in PACKAGE.rglob("*.py")} | {p.name for p in files}
    stale = sorted(w for w in words if w.endswith(".py") and w not in existing)
    assert not stale, f"README's layout names files that do not exist: {stale}"
