"""FlashAttention as a `tljax.kernel`: tiled reference for tljax semantics, fused attention to
run."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tljax
from tljax.core import Tolerance, check_kernel
from tljax.layers import attention_kernel, flash_attention, flash_attention_kernel


@pytest.fixture
def qkv():
    ks = jax.random.split(jax.random.key(1), 3)
    q = jax.random.normal(ks[0], (1, 6, 2, 4))
    k = jax.random.normal(ks[1], (1, 5, 2, 4))
    v = jax.random.normal(ks[2], (1, 5, 2, 4))
    return q, k, v


def test_flash_attention_kernel_compiles_its_tiled_reference_on_cpu(qkv):
    if any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("a GPU is present: the fused implementation runs")
    fk = attention_kernel(block_q=4, block_k=2, is_causal=True)
    want = jax.jit(lambda q, k, v: flash_attention(q, k, v, block_q=4, block_k=2, is_causal=True))(
        *qkv
    )
    np.testing.assert_array_equal(np.asarray(jax.jit(fk)(*qkv)), np.asarray(want))
    assert flash_attention_kernel.implementations.keys() == {"gpu"}


def test_fused_attention_on_cpu_meets_the_float32_contract(qkv):
    fk = attention_kernel(block_q=4, block_k=2, is_causal=True, platforms=("cpu",))
    fused = jax.jit(
        lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="xla")
    )
    np.testing.assert_array_equal(np.asarray(jax.jit(fk)(*qkv)), np.asarray(fused(*qkv)))
    report = check_kernel(fk, *qkv)
    assert report.passed and report.evidence[0].max_abs_error < 1e-5


def test_fused_attention_on_cpu_meets_the_bfloat16_contract():
    ks = jax.random.split(jax.random.key(2), 3)
    q, k, v = (jax.random.normal(kk, (1, 16, 2, 8), jnp.bfloat16) for kk in ks)
    fk = attention_kernel(block_q=8, block_k=4, platforms=("cpu",))
    report = check_kernel(fk, q, k, v, n_random=2)
    assert report.passed and report.evidence[0].tolerance == Tolerance(2e-2, 2e-2)
    # The reference accumulates in float32 and rounds once, like fused kernels.
    want = flash_attention(*(a.astype(jnp.float32) for a in (q, k, v)), block_q=8, block_k=4)
    np.testing.assert_array_equal(
        np.asarray(fk.reference(q, k, v)), np.asarray(want.astype(jnp.bfloat16))
    )


def test_flash_attention_kernel_semantics_see_the_tiled_reference(qkv):
    fk = attention_kernel(block_q=4, block_k=2, is_causal=True, platforms=("cpu",))

    def ref(q, k, v):
        return flash_attention(q, k, v, block_q=4, block_k=2, is_causal=True)

    e_k = tljax.evaluate(fk, *qkv, semantics="exact")
    e_r = tljax.evaluate(ref, *qkv, semantics="exact")
    np.testing.assert_array_equal(tljax.exact_to_float(e_k), tljax.exact_to_float(e_r))
    g_k = jax.grad(lambda q: fk(q, *qkv[1:]).sum())(qkv[0])
    g_r = jax.grad(lambda q: ref(q, *qkv[1:]).sum())(qkv[0])
    np.testing.assert_allclose(np.asarray(g_k), np.asarray(g_r), rtol=1e-6, atol=1e-7)


# GPU (skipped without one).


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_gpu_flash_attention_kernel_meets_its_contract(dtype):
    ks = jax.random.split(jax.random.key(0), 3)
    q, k, v = (jax.random.normal(kk, (2, 128, 4, 64), dtype) for kk in ks)
    fk = attention_kernel(is_causal=True)
    out = jax.jit(fk)(q, k, v)
    assert out.dtype == dtype and out.shape == (2, 128, 4, 64)
    # Moderate scales only: at x1000 the scores have near-ties that any two correct float
    # implementations may break differently.
    report = check_kernel(
        fk, q, k, v, n_random=2, edge_cases=False, cases=[("x8", (8 * q, 8 * k, 8 * v))]
    )
    assert report.passed, str(report)
    assert report.evidence[0].platform == "gpu" and report.evidence[0].implementation == "gpu"


@pytest.mark.gpu
def test_gpu_flash_attention_kernel_uses_cudnn_for_bf16():
    ks = jax.random.split(jax.random.key(0), 3)
    q, k, v = (jax.random.normal(kk, (2, 128, 4, 64), jnp.bfloat16) for kk in ks)
    hlo = jax.jit(flash_attention_kernel).lower(q, k, v).compile().as_text()
    assert "cudnn" in hlo.lower()
