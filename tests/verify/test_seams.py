"""verify reaches `tljax.bounds` through its public seam only (`tljax.bounds.prepare` and the
names of `tljax/bounds/__init__.py`), and that seam computes what `tljax.bound` computes."""

from __future__ import annotations

import ast
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

import tljax
from tljax.bounds import Box, prepare, relu_shapes

VERIFY = pathlib.Path(tljax.__file__).parent / "verify"


def _imports(path):
    """(module, names) of every import in `path`, relative ones resolved against tljax.verify."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = ["tljax", "verify"][: 2 - (node.level - 1)]
                base = ".".join([*parent, base] if base else parent)
            out.append((base, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out.extend((a.name, []) for a in node.names)
    return out


def test_verify_imports_no_private_bounds_module():
    found = []
    for path in sorted(VERIFY.glob("*.py")):
        for module, names in _imports(path):
            private = module.startswith("tljax.bounds._") or (
                module == "tljax.bounds" and any(n.startswith("_") for n in names)
            )
            if private:
                found.append(f"{path.name}: from {module} import {', '.join(names)}")
    assert not found, found
    public = set(dir(tljax.bounds))
    used = {
        n
        for p in VERIFY.glob("*.py")
        for m, names in _imports(p)
        if m == "tljax.bounds"
        for n in names
    }
    assert used and used <= public, used - public


def _mlp(x, params):
    w1, b1, w2, b2 = params
    return jax.nn.relu(x @ w1 + b1) @ w2 + b2


def test_prepared_problem_bounds_like_tljax_bound():
    rng = np.random.default_rng(0)
    shapes = ((4, 16), (16,), (16, 3), (3,))
    params = tuple(jnp.asarray(rng.normal(size=s), jnp.float32) for s in shapes)
    box = Box(-0.3 * jnp.ones(4, jnp.float32), 0.3 * jnp.ones(4, jnp.float32))
    p = prepare(_mlp, box, params)
    assert p.relu_shapes() == [tuple(s) for s in relu_shapes(_mlp, box, params)] == [(16,)]
    ((lo, hi),) = p.bounds("crown")
    ref = tljax.bound(_mlp, box, params, method="crown", jit=False)
    np.testing.assert_array_equal(np.asarray(lo), np.asarray(ref.lower))
    np.testing.assert_array_equal(np.asarray(hi), np.asarray(ref.upper))
    # the ReLU input bounds of the box contain the sampled pre-activations
    ((rlo, rhi),) = p.root_relu_bounds(iters=5, lr=0.1)
    xs = rng.uniform(-0.3, 0.3, (5000, 4)).astype(np.float32)
    z = xs @ np.asarray(params[0]) + np.asarray(params[1])
    assert np.all(z >= np.asarray(rlo)) and np.all(z <= np.asarray(rhi))
