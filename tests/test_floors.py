"""Enforced floors: the import order, lint, and the public/private boundary between packages.

The order (pyproject.toml, `[tool.importlinter]`): core <- interpret <- bounds <- verify, io,
transforms, objectives <- proofs; layers, rl and diffusion build on core only. These tests run
the tools the developers run, so a floor broken in a commit fails here with the tool's own words.
"""

from __future__ import annotations

import ast
import collections
import importlib.util
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TLJAX = REPO / "tljax"


def _tool(module: str, command: str) -> list[str]:
    """The command line of an installed tool (next to this Python first), or skip the test."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed: pip install -e '.[test]'")
    exe = shutil.which(command, path=str(pathlib.Path(sys.executable).parent)) or shutil.which(
        command
    )
    if exe is None:
        pytest.skip(f"{module} is installed but its `{command}` command is not on PATH")
    return [exe]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_import_order_has_no_broken_contract():
    proc = _run([*_tool("importlinter", "lint-imports"), "--no-cache"])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and " 0 broken" in out, out


def test_ruff_is_clean():
    proc = _run([*_tool("ruff", "ruff"), "check", "--no-cache", "tljax", "tests", "bench"])
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------------------
# Imports between packages, read from the source (no import needed).


def _package(path: pathlib.Path) -> str:
    rel = path.relative_to(TLJAX)
    return rel.parts[0] if len(rel.parts) > 1 else "<root>"


def _module_parts(path: pathlib.Path) -> list[str]:
    parts = ["tljax", *path.relative_to(TLJAX).with_suffix("").parts]
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imports(path: pathlib.Path):
    """(node, inside a function, [imported dotted names]) for every import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = _module_parts(path)
    is_pkg = path.name == "__init__.py"

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                yield child, in_function, [a.name.split(".") for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = here[: len(here) - child.level + is_pkg] if child.level else []
                mod = base + (child.module.split(".") if child.module else [])
                yield child, in_function, [[*mod, a.name] for a in child.names]
            yield from visit(child, inner)

    yield from visit(tree, False)


def private_cross_package_imports() -> list[tuple[str, int, str]]:
    """(file, line, name) for each import of another tljax package's private module or name."""
    found = []
    for path in sorted(TLJAX.rglob("*.py")):
        pkg = _package(path)
        for node, _, names in _imports(path):
            for name in names:
                if len(name) < 3 or name[0] != "tljax" or name[1] == pkg:
                    continue
                if any(part.startswith("_") for part in name[2:]):
                    rel = str(path.relative_to(REPO))
                    found.append((rel, node.lineno, ".".join(name)))
    return found


def function_local_imports() -> collections.Counter:
    """Imports inside functions, per package (`<root>` for tljax/*.py)."""
    counts: collections.Counter = collections.Counter()
    for path in sorted(TLJAX.rglob("*.py")):
        counts[_package(path)] += sum(local for _, local, _ in _imports(path))
    return counts


# file -> (at most this many private imports, why). Debt, not design: an entry names a file that
# still reaches into another package's private module; the counts only go down, and an entry
# whose file is clean fails the test so that the list shrinks with the code. Empty: every package
# is used through its public __init__.
ALLOWED_PRIVATE: dict[str, tuple[int, str]] = {}

# Function-local imports per package: hidden dependencies that import-linter sees but readers
# do not. A ceiling per package; lower it when a package drops one.
LOCAL_IMPORT_CEILING = {
    "<root>": 8,  # the command line loads each command's package when that command runs
    "bounds": 6,  # optax, flax, checkify, shard_map, multihost: optional or slow to import
    "core": 1,  # flax, optional at this level
    "diffusion": 1,  # scikit-learn, slow to import and used for toy data only
    "interpret": 10,  # scipy.special (erf, lgamma rules of the numpy semantics): slow to import
    "io": 6,
    "layers": 0,
    "objectives": 2,
    "proofs": 0,
    "rl": 0,
    "transforms": 4,
    "verify": 36,
}


def test_private_imports_across_packages_stay_within_the_allow_list():
    by_file = collections.defaultdict(list)
    for path, line, name in private_cross_package_imports():
        by_file[path].append(f"{path}:{line}: {name}")
    new = [hit for f, hits in by_file.items() if f not in ALLOWED_PRIVATE for hit in hits]
    grown = [
        f"{f}: {len(hits)} > {ALLOWED_PRIVATE[f][0]} allowed\n    " + "\n    ".join(hits)
        for f, hits in by_file.items()
        if f in ALLOWED_PRIVATE and len(hits) > ALLOWED_PRIVATE[f][0]
    ]
    stale = [f for f in ALLOWED_PRIVATE if f not in by_file]
    assert not new, (
        "imports of another package's private module; import the public name from the "
        "package instead (e.g. `from ..core import InputError`):\n  " + "\n  ".join(new)
    )
    assert not grown, "more private imports than allowed:\n  " + "\n  ".join(grown)
    assert not stale, f"these files are clean now: remove them from ALLOWED_PRIVATE: {stale}"


def test_the_census_sees_private_and_local_imports(tmp_path, monkeypatch):
    # The census itself must find what it claims to find (else the two tests above prove nothing).
    pkg = tmp_path / "tljax"
    (pkg / "verify").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "verify" / "__init__.py").write_text("")
    (pkg / "verify" / "_x.py").write_text(
        "from ..bounds._crown import split\n"
        "from ..bounds import Box\n"
        "from . import _y\n"
        "def f():\n    import tljax.interpret._exact\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "TLJAX", pkg)
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    hits = private_cross_package_imports()
    assert [(f, n) for f, _, n in hits] == [
        ("tljax/verify/_x.py", "tljax.bounds._crown.split"),
        ("tljax/verify/_x.py", "tljax.interpret._exact"),
    ]
    assert function_local_imports() == collections.Counter({"verify": 1, "<root>": 0})


def test_function_local_imports_stay_under_their_ceilings():
    counts = function_local_imports()
    over = {
        p: (n, LOCAL_IMPORT_CEILING.get(p, 0))
        for p, n in counts.items()
        if n > LOCAL_IMPORT_CEILING.get(p, 0)
    }
    assert not over, (
        f"function-local imports (package: (found, ceiling)): {over}; import at module level, "
        "where the import order allows it (see pyproject.toml [tool.importlinter])"
    )
