"""Substituting a declared kernel for calls of its reference function."""

import jax
import jax.numpy as jnp
import numpy as np

import tljax
import tljax.transforms as T
from tljax.core import iter_eqns, kernel, kernel_contracts

SHIFT = 1e-6


def dense(x, w):
    return jnp.tanh(x @ w)


def shifted(x, w):  # a CPU "implementation" that is deliberately SHIFT away from the reference
    return jnp.tanh(x @ w) + jnp.float32(SHIFT)


def test_substituted_kernel_keeps_meaning_and_runs_the_implementation():
    w1 = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    w2 = np.linspace(-0.5, 0.5, 6, dtype=np.float32).reshape(3, 2)
    call = jax.jit(dense)

    def model(x):
        return call(call(x, w1), w2) * 2.0

    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    g = tljax.trace(model, x)
    k = kernel(dense, implementations={"cpu": shifted}, tolerance=1e-5)
    out = T.substitute_kernels(g, k)
    prims = [e.primitive.name for e in iter_eqns(out.jaxpr)]
    assert prims.count("kernel") == 2 and "jit" not in [e.primitive.name for e in out.jaxpr.eqns]
    rec = T.provenance(out).passes[-1]
    assert rec.stats["substituted"] == 2 and rec.stats["same_reference"] and rec.claim.exact
    v = T.validate(g, out, certify=False)
    assert v.ok, str(v)
    assert v.stages[0].max_deviation < 1e-30  # exact semantics walks the reference (tanh balls)
    assert 0 < v.stages[1].max_deviation < 1e-5  # execution runs the shifted implementation
    assert [c.name for c in kernel_contracts(out)] == ["dense"]


def test_calls_of_other_functions_are_left_to_inlining():
    k = kernel(dense, tolerance=1e-5)
    g = tljax.trace(lambda x: jax.jit(jnp.sin)(x), np.ones(3, np.float32))
    out = T.substitute_kernels(g, [k])
    assert T.provenance(out).passes[-1].stats["substituted"] == 0
    assert [e.primitive.name for e in out.jaxpr.eqns] == ["sin"]
