"""What `import tljax`, the first bound and `tljax --help` load, checked in fresh processes.

Structural checks, not timings (those are in bench/first_call.py): a heavy library that comes
back into one of these paths fails here with its name.
"""

from __future__ import annotations

import ast
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

# Libraries that `import tljax` and a first bound must leave for the code that needs them: each
# costs from 0.05 s (jaxtyping) to 2 s (flax with its IPython/rich dependencies) to import.
HEAVY = (
    "sympy",
    "mpmath",
    "onnx",
    "sklearn",
    "scipy",
    "torch",
    "optax",
    "flax",
    "equinox",
    "chex",
    "beartype",
    "jaxtyping",
)
# tljax's own modules that a bound does not need (the exact, float and symbolic semantics).
NOT_FOR_A_BOUND = (
    "tljax.interpret._compare",
    "tljax.interpret._exact",
    "tljax.interpret._float",
    "tljax.interpret._symbolic",
    "tljax.bounds._sharding",
    "tljax.core._typed",
    "tljax.io",
    "tljax.verify",
    "tljax.proofs",
)


def _loaded(code: str, *args: str) -> set[str]:
    """The top-level and tljax module names in sys.modules after running `code` afresh."""
    script = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    names = json.loads(proc.stdout.splitlines()[-1])
    return {n.split(".")[0] for n in names} | {n for n in names if n.startswith("tljax.")}


def test_import_tljax_loads_neither_jax_nor_any_heavy_library():
    loaded = _loaded("import tljax")
    assert not loaded & {"jax", "jaxlib", "numpy", *HEAVY}, sorted(loaded)


def test_a_first_bound_loads_only_what_a_bound_needs():
    loaded = _loaded(
        "import jax.numpy as jnp\n"
        "import tljax\n"
        "x = jnp.ones(3)\n"
        "for method in ('ibp', 'crown'):\n"
        "    tljax.bound(lambda x, w: jnp.tanh(w @ x), tljax.Box.linf(x, 0.1), jnp.ones((2, 3)),\n"
        "                method=method)\n"
    )
    assert "tljax.bounds" in loaded
    assert not loaded & {*HEAVY, *NOT_FOR_A_BOUND}, sorted(loaded & {*HEAVY, *NOT_FOR_A_BOUND})


@pytest.mark.parametrize(
    "code",
    [
        "from tljax._cli import main; main(['--help'])",  # the console script's entry
        "import runpy, sys; sys.argv = ['tljax', '--help']\n"
        "try:\n    runpy.run_module('tljax', run_name='__main__')\nexcept SystemExit:\n    pass",
    ],
    ids=["tljax", "python-m-tljax"],
)
def test_help_imports_neither_jax_nor_the_subpackages(code):
    loaded = _loaded(code + "\n")
    assert not loaded & {"jax", "numpy", *HEAVY}, sorted(loaded)
    assert not {n for n in loaded if n.startswith("tljax.")} - {"tljax._cli", "tljax.__main__"}


def test_the_console_script_is_the_light_entry_point():
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert 'tljax = "tljax._cli:main"' in text


def test_the_written_out_usage_matches_the_commands_parsers():
    from tljax import _cli

    parsers = _cli._parsers()
    for cmd, args, _ in _cli.COMMANDS:
        expected = _cli.parser_args(parsers[cmd]) if cmd in parsers else ""
        assert args == expected, f"update _cli.COMMANDS for `tljax {cmd}`:\n{expected}"


def _type_checking_names(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            return {a.asname or a.name for n in node.body for a in n.names}
    return set()


def test_every_lazy_name_resolves_and_is_declared_for_type_checkers():
    import tljax
    import tljax.bounds
    import tljax.core
    import tljax.interpret

    assert set(tljax._EXPORTS) == _type_checking_names(REPO / "tljax" / "__init__.py")
    for name in tljax._EXPORTS:
        assert getattr(tljax, name) is not None, name
    for pkg in (tljax.bounds, tljax.core, tljax.interpret):
        for name in dir(pkg):
            if not name.startswith("_"):
                assert getattr(pkg, name) is not None, (pkg.__name__, name)
    for pkg in ("bounds", "interpret"):
        declared = _type_checking_names(REPO / "tljax" / pkg / "__init__.py")
        assert declared == set(getattr(tljax, pkg)._LAZY), pkg
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tljax.interpret.nope  # noqa: B018
