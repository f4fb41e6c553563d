"""dot_product_attention, flash_attention, FlashAttention and MultiheadAttention."""

import itertools
import re
from fractions import Fraction

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tljax.layers as tl


def randn(seed, shape):
    """Standard normal test data from numpy (jax.random would compile a kernel per shape)."""
    if not isinstance(seed, int):  # a PRNG key: derive a seed from its bits
        seed = int(np.asarray(jax.random.key_data(seed)).sum())
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def randbool(seed, p, shape):
    return jnp.asarray(np.random.default_rng(seed).random(shape) < p)


def rand(seed, shape):
    return randn(seed, shape)


def qkv(B=2, T=6, S=6, N=4, K=4, H=8, seed=0):
    return rand(seed, (B, T, N, H)), rand(seed + 1, (B, S, K, H)), rand(seed + 2, (B, S, K, H))


# --- standard path vs jax.nn ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", ["plain", "bias", "mask", "causal", "gqa", "unbatched", "cross", "scale"]
)
def test_standard_matches_jax_nn(case):
    kw = {}
    T, S, K = 6, 6, 4
    if case == "cross":
        S = 9
    if case == "gqa":
        K = 2
    q, k, v = qkv(T=T, S=S, K=K)
    if case == "bias":
        kw["bias"] = rand(7, (2, 4, T, S))
    if case == "mask":
        m = randbool(8, 0.6, (2, 1, T, S))
        kw["mask"] = m.at[..., 0].set(True)  # no fully masked row (conventions differ there)
    if case == "causal":
        kw["is_causal"] = True
    if case == "scale":
        kw["scale"] = 0.3
    if case == "unbatched":
        q, k, v = q[0], k[0], v[0]
    ours, ref = jax.jit(
        lambda q, k, v: (
            tl.dot_product_attention(q, k, v, **kw),
            jax.nn.dot_product_attention(q, k, v, **kw),
        )
    )(q, k, v)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=2e-5, atol=2e-6)


def test_fully_masked_rows_are_zero_with_finite_gradients():
    q, k, v = qkv(T=5, S=7)
    mask = jnp.ones((2, 4, 5, 7), bool).at[0, 1, 2, :].set(False).at[1, :, 4, :].set(False)
    for fn in (
        tl.dot_product_attention,
        lambda *a, **kw: tl.flash_attention(*a, block_q=2, block_k=3, **kw),
    ):
        out = jax.jit(fn)(q, k, v, mask=mask)
        assert float(jnp.abs(out[0, 2, 1]).max()) == 0.0
        assert float(jnp.abs(out[1, 4]).max()) == 0.0
        assert float(jnp.abs(out[0, 1, 1]).max()) > 0.0
        grad_fn = jax.jit(
            jax.grad(lambda q, k, v, fn=fn: fn(q, k, v, mask=mask).sum(), argnums=(0, 1, 2))
        )
        grads = grad_fn(q, k, v)
        assert all(bool(jnp.isfinite(g).all()) for g in grads)
        assert float(jnp.abs(grads[0][0, 2, 1]).max()) == 0.0  # a masked row has no gradient


def test_shape_errors_explain():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="must be a multiple of key/value heads K=3"):
        tl.dot_product_attention(q, rand(1, (2, 6, 3, 8)), rand(2, (2, 6, 3, 8)))
    with pytest.raises(
        ValueError, match=re.escape("does not broadcast to (B, N, T, S) = (2, 4, 6, 6)")
    ):
        tl.dot_product_attention(q, k, v, bias=jnp.ones((3, 6)))
    with pytest.raises(TypeError, match="mask must be boolean"):
        tl.dot_product_attention(q, k, v, mask=jnp.ones((6, 6)))


# --- flash vs standard (float) -------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["plain", "causal", "mask_bias"])
def test_flash_matches_standard_for_dividing_and_non_dividing_blocks(variant):
    T, S = 8, 10
    q, k, v = qkv(T=T, S=S, K=2, seed=3)
    kw = {}
    if variant == "causal":
        kw["is_causal"] = True
    if variant == "mask_bias":
        kw["mask"] = randbool(4, 0.7, (2, 4, T, S))
        kw["bias"] = rand(5, (1, 4, T, S))
    std = tl.dot_product_attention(q, k, v, **kw)
    blocks = {
        "plain": [(2, 5)],
        "causal": [(4, 5), (128, 128)],
        "mask_bias": [(1, 1), (3, 7), (8, 10)],
    }
    for block_q, block_k in blocks[variant]:
        flash = jax.jit(
            lambda q, k, v, block_q=block_q, block_k=block_k: tl.flash_attention(
                q, k, v, block_q=block_q, block_k=block_k, **kw
            )
        )
        np.testing.assert_allclose(
            flash(q, k, v), std, rtol=1e-5, atol=2e-6, err_msg=str((block_q, block_k))
        )


@pytest.mark.slow
def test_flash_matches_standard_for_every_dividing_block_size():
    T, S = 8, 10
    q, k, v = qkv(T=T, S=S, K=2, seed=12)
    kw = dict(is_causal=True, mask=randbool(4, 0.8, (2, 4, T, S)))
    std = tl.dot_product_attention(q, k, v, **kw)
    for block_q, block_k in itertools.product([1, 2, 4, 8], [1, 2, 5, 10]):
        flash = tl.flash_attention(q, k, v, block_q=block_q, block_k=block_k, **kw)
        np.testing.assert_allclose(
            flash, std, rtol=1e-5, atol=2e-6, err_msg=str((block_q, block_k))
        )


def test_flash_gradients_match_standard():
    q, k, v = qkv(T=9, S=9, seed=11)

    def loss(fn, q, k, v):
        return jnp.sum(jnp.sin(fn(q, k, v, is_causal=True)))

    def flash(q, k, v, **kw):
        return tl.flash_attention(q, k, v, block_q=4, block_k=2, **kw)

    g_flash = jax.jit(jax.grad(lambda *a: loss(flash, *a), argnums=(0, 1, 2)))(q, k, v)
    g_std = jax.jit(jax.grad(lambda *a: loss(tl.dot_product_attention, *a), argnums=(0, 1, 2)))(
        q, k, v
    )
    for a, b in zip(g_flash, g_std, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_flash_graph_is_a_scan_without_infinities():
    q, k, v = qkv(T=8, S=8)

    def fn(q, k, v):
        return tl.flash_attention(q, k, v, block_q=4, block_k=4, is_causal=True)

    closed = jax.make_jaxpr(fn)(q, k, v)
    assert "scan" in {e.primitive.name for e in closed.eqns}

    def constants(jaxpr, consts):
        yield from consts
        for eqn in jaxpr.eqns:
            for var in eqn.invars:
                if hasattr(var, "val"):
                    yield var.val
            for param in eqn.params.values():
                for sub in param if isinstance(param, tuple) else (param,):
                    if hasattr(sub, "jaxpr") and hasattr(sub, "consts"):
                        yield from constants(sub.jaxpr, sub.consts)

    values = [np.asarray(c) for c in constants(closed.jaxpr, closed.consts)]
    assert values  # the walk did see constants
    assert all(np.isfinite(c).all() for c in values if np.issubdtype(c.dtype, np.floating))


# --- exactness with exp = 2**x on integer scores -------------------------------------------------


def _fraction_standard(s, valid, v):
    """softmax_2(s) @ v for one query row, as Fractions; 0 if no key is valid."""
    keys = [j for j in range(len(s)) if valid[j]]
    if not keys:
        return [Fraction(0)] * len(v[0])
    m = max(s[j] for j in keys)
    p = {j: Fraction(2) ** (s[j] - m) for j in keys}
    denom = sum(p.values())
    return [sum(p[j] * v[j][h] for j in keys) / denom for h in range(len(v[0]))]


def _fraction_flash(s, valid, v, block_k):
    """The online-softmax recurrence over key blocks, as Fractions (independent of the JAX code)."""
    m, denom, acc, seen = None, Fraction(0), [Fraction(0)] * len(v[0]), False
    for start in range(0, len(s), block_k):
        keys = [j for j in range(start, min(start + block_k, len(s))) if valid[j]]
        if not keys:
            continue
        m_new = max([s[j] for j in keys] + ([m] if seen else []))
        alpha = Fraction(2) ** (m - m_new) if seen else Fraction(0)
        p = {j: Fraction(2) ** (s[j] - m_new) for j in keys}
        denom = alpha * denom + sum(p.values())
        acc = [alpha * acc[h] + sum(p[j] * v[j][h] for j in keys) for h in range(len(acc))]
        m, seen = m_new, True
    return [a / denom for a in acc] if seen else [Fraction(0)] * len(acc)


def _assert_within_two_ulps(value, exact):
    """Everything before the final division is exact; XLA rewrites `x / broadcast(l)` as
    `x * broadcast(1 / l)` (two roundings), so the result is within 2 ulps, not half an ulp."""
    value = np.float32(value)
    if exact == 0:
        assert value == 0
        return
    ulp = Fraction(float(np.spacing(np.abs(value))))
    assert abs(Fraction(float(value)) - exact) <= 2 * ulp, (value, exact)


@pytest.mark.parametrize(
    "block_q, block_k, is_causal",
    [(1, 1, False), (2, 3, True), (3, 4, False), (7, 9, True), (4, 2, True)],
)
def test_flash_equals_standard_exactly_with_base_two_softmax(block_q, block_k, is_causal):
    rng = np.random.default_rng(block_q * 10 + block_k)
    B, T, S, N, H, Hv = 1, 7, 9, 2, 3, 2
    q = rng.integers(-1, 2, (B, T, N, H)).astype(np.float32)
    k = rng.integers(-1, 2, (B, S, N, H)).astype(np.float32)
    v = (rng.integers(-16, 17, (B, S, N, Hv)) / 8).astype(np.float32)
    bias = rng.integers(-2, 3, (B, N, T, S)).astype(np.float32)
    mask = rng.random((B, N, T, S)) < 0.7
    mask[0, 1, 3, :] = False  # a fully masked row

    def exp2(x):
        return 2.0**x

    kw = dict(bias=bias, mask=mask, is_causal=is_causal, scale=1.0, exp=exp2)
    flash = jax.jit(lambda *a: tl.flash_attention(*a, block_q=block_q, block_k=block_k, **kw))
    flash = np.asarray(flash(q, k, v))
    std = np.asarray(jax.jit(lambda *a: tl.dot_product_attention(*a, **kw))(q, k, v))
    np.testing.assert_array_equal(flash, std)  # bitwise: both are one rounding of the exact value

    checked = 0
    for n, t in itertools.product(range(N), range(T)):
        s = [int(q[0, t, n] @ k[0, j, n]) + int(bias[0, n, t, j]) for j in range(S)]
        valid = [bool(mask[0, n, t, j]) and (not is_causal or j <= t) for j in range(S)]
        vv = [[Fraction(float(x)) for x in v[0, j, n]] for j in range(S)]
        exact = _fraction_standard(s, valid, vv)
        assert _fraction_flash(s, valid, vv, block_k) == exact  # the algorithms agree exactly
        for h in range(Hv):
            _assert_within_two_ulps(flash[0, t, n, h], exact[h])
        checked += 1
    assert checked == N * T


# --- layers --------------------------------------------------------------------------------------


def test_flash_attention_layer_equals_function():
    q, k, v = qkv(B=1, T=5, S=5)
    layer = tl.FlashAttention(block_q=2, block_k=2, is_causal=True)
    run = jax.jit(
        lambda q, k, v: (
            layer(q, k, v),
            tl.flash_attention(q, k, v, block_q=2, block_k=2, is_causal=True),
        )
    )
    a, b = run(q, k, v)
    np.testing.assert_array_equal(a, b)


def _kernel_eqns(fn, *args):
    import tljax
    from tljax.core import _kernel

    g = tljax.trace(fn, *args)
    return [e for e in tljax.core.iter_eqns(g.jaxpr) if e.primitive is _kernel.kernel_p]


def test_flash_attention_layer_is_one_kernel_whose_semantics_see_the_tiled_reference():
    import tljax

    q, k, v = qkv(B=1, T=5, S=7, N=2, K=2, H=4)
    layer = tl.FlashAttention(block_q=2, block_k=3, is_causal=True)
    plain = tl.FlashAttention(block_q=2, block_k=3, is_causal=True, fused=False)
    assert len(_kernel_eqns(layer, q, k, v)) == 1
    assert _kernel_eqns(plain, q, k, v) == []
    [c] = tljax.kernel_contracts((layer, q, k, v))
    assert c.name == "FlashAttention" and c.implementations == ("gpu",)
    # On CPU the kernel lowers to its reference, the tiled algorithm.
    np.testing.assert_allclose(jax.jit(layer)(q, k, v), jax.jit(plain)(q, k, v), atol=1e-6)
    # Exact semantics walk the reference inside the kernel: the same rationals as without it.
    small = tuple(x[:, :3, :1, :2] for x in (q, k, v))
    ex_k = tljax.evaluate(layer, *small, semantics="exact")
    ex_p = tljax.evaluate(plain, *small, semantics="exact")
    np.testing.assert_array_equal(tljax.exact_to_float(ex_k), tljax.exact_to_float(ex_p))
    # A mask is not part of the kernel's signature: the layer then calls flash_attention.
    mask = jnp.ones((1, 2, 5, 7), bool)
    assert _kernel_eqns(lambda *a: layer(*a, mask=mask), q, k, v) == []


def test_bounds_through_the_flash_attention_kernel_contain_its_outputs():
    import tljax

    q, k, v = qkv(B=1, T=3, S=4, N=1, K=1, H=2, seed=5)
    layer = tl.FlashAttention(block_q=2, block_k=3)
    box = tljax.Box(q - 0.05, q + 0.05)
    b = tljax.bound(layer, box, k, v, method="crown")
    pts = np.random.default_rng(0).uniform(box.lower, box.upper, (2000, *q.shape))
    ys = np.asarray(jax.jit(jax.vmap(lambda x: layer(x, k, v)))(jnp.asarray(pts, jnp.float32)))
    assert np.all(np.asarray(b.lower) <= ys) and np.all(ys <= np.asarray(b.upper))
    w = np.asarray(b.upper - b.lower)
    assert w.max() < 1.0  # a real bound, not a vacuous one (outputs are O(1) averages of v)


@pytest.mark.gpu
def test_gpu_flash_attention_layer_compiles_to_cudnn_for_bf16():
    dev = jax.devices("gpu")[0]
    q, k, v = (jax.device_put(x.astype(jnp.bfloat16), dev) for x in qkv(B=2, T=128, S=128, H=64))
    layer = tl.FlashAttention(is_causal=True)
    hlo = jax.jit(layer).lower(q, k, v).compile().as_text()
    assert "cudnn" in hlo.lower()
    ref = tl.FlashAttention(is_causal=True, fused=False)
    got = jax.jit(layer)(q, k, v).astype(jnp.float32)
    want = jax.jit(ref)(*(x.astype(jnp.float32) for x in (q, k, v)))
    np.testing.assert_allclose(got, want, atol=2e-2, rtol=2e-2)


def _mha_pair():
    ours = tl.MultiheadAttention(16, 4, key=jax.random.key(0))
    ref = eqx.nn.MultiheadAttention(
        4,
        16,
        use_query_bias=True,
        use_key_bias=True,
        use_value_bias=True,
        use_output_bias=True,
        key=jax.random.key(1),
    )
    pairs = [
        (ours.q_proj, "query_proj"),
        (ours.k_proj, "key_proj"),
        (ours.v_proj, "value_proj"),
        (ours.out_proj, "output_proj"),
    ]
    for lin, name in pairs:
        ref = eqx.tree_at(
            lambda m, name=name: (getattr(m, name).weight, getattr(m, name).bias),
            ref,
            (lin.weight, lin.bias),
        )
    return ours, ref


def test_mha_matches_equinox_with_and_without_mask():
    ours, ref = _mha_pair()
    x = rand(2, (7, 16))
    y = rand(3, (9, 16))
    causal = jnp.tril(jnp.ones((7, 7), bool))

    @eqx.filter_jit
    def both(ours, ref, x, y):
        return (
            (ours(x), ref(x, x, x)),
            (ours(x, y, y), ref(x, y, y)),
            (ours(x, is_causal=True), ref(x, x, x, mask=causal)),
        )

    for a, b in both(ours, ref, x, y):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    stacks = {str(e.source_info.name_stack) for e in jax.make_jaxpr(ours)(x).eqns}
    assert "tljax.layers.MultiheadAttention/tljax.layers.Linear" in stacks


def test_mha_padding_mask_equals_truncated_keys_and_batches():
    ours, _ = _mha_pair()
    x = rand(4, (2, 6, 16))
    mem = rand(5, (2, 8, 16))
    key_mask = jnp.arange(8)[None, :] < jnp.array([[5], [8]])

    @eqx.filter_jit
    def run(ours, x, mem):
        return ours(x, mem, key_mask=key_mask), ours(x[0], mem[0, :5]), ours(x[1], mem[1])

    out, first, second = run(ours, x, mem)
    assert out.shape == (2, 6, 16)
    np.testing.assert_allclose(out[0], first, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[1], second, rtol=1e-5, atol=1e-5)


def test_mha_flash_equals_standard_and_is_causal():
    std, _ = _mha_pair()
    # Same key as _mha_pair, so the same weights.
    flash = tl.MultiheadAttention(
        16, 4, implementation="flash", block_q=3, block_k=2, key=jax.random.key(0)
    )
    assert all(
        bool((a == b).all())
        for a, b in zip(jax.tree.leaves(flash), jax.tree.leaves(std), strict=True)
    )
    x = rand(6, (2, 7, 16))
    changed = x.at[:, 4:].set(5.0)

    @eqx.filter_jit
    def run(flash, std):
        return flash(x, is_causal=True), std(x, is_causal=True), flash(changed, is_causal=True)

    out_flash, out_std, out_changed = run(flash, std)
    np.testing.assert_allclose(out_flash, out_std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out_changed[:, :4], out_flash[:, :4], rtol=1e-6)
    with pytest.raises(ValueError, match="implementation must be 'standard' or 'flash'"):
        tl.MultiheadAttention(16, 4, implementation="fast", key=jax.random.key(0))
    with pytest.raises(ValueError, match="must be divisible by num_heads=3"):
        tl.MultiheadAttention(16, 3, key=jax.random.key(0))


def test_flash_equals_standard_under_tljax_exact_semantics():
    """Integration with tljax.evaluate(..., semantics="exact"): rational arithmetic end to end."""
    import tljax

    evaluate = getattr(tljax, "evaluate", None)
    if evaluate is None:
        pytest.skip("tljax.evaluate is not available in this checkout")
    rng = np.random.default_rng(5)
    B, T, S, N, H, Hv = 1, 5, 6, 1, 3, 2
    q = rng.integers(-1, 2, (B, T, N, H)).astype(np.float32)
    k = rng.integers(-1, 2, (B, S, N, H)).astype(np.float32)
    v = (rng.integers(-16, 17, (B, S, N, Hv)) / 8).astype(np.float32)
    mask = rng.random((B, N, T, S)) < 0.7
    mask[0, 0, 2, :] = False

    def exp2(x):
        return 2.0**x

    kw = dict(mask=mask, is_causal=True, scale=1.0, exp=exp2)
    std = evaluate(lambda *a: tl.dot_product_attention(*a, **kw), q, k, v, semantics="exact")
    flash = evaluate(
        lambda *a: tl.flash_attention(*a, block_q=2, block_k=4, **kw), q, k, v, semantics="exact"
    )
    for t in range(T):
        s = [int(q[0, t, 0] @ k[0, j, 0]) for j in range(S)]
        valid = [bool(mask[0, 0, t, j]) and j <= t for j in range(S)]
        vv = [[Fraction(float(x)) for x in v[0, j, 0]] for j in range(S)]
        expected = _fraction_standard(s, valid, vv)
        assert [Fraction(x) for x in np.asarray(std)[0, t, 0]] == expected
        assert [Fraction(x) for x in np.asarray(flash)[0, t, 0]] == expected
