"""tljax.bound over dot_product_attention and flash_attention, and the recording rules they need.

Shapes are tiny (the bound programs of the tiled path are unrolled over key blocks), but both
tilings are uneven: 3 queries in blocks of 2, 4 keys in blocks of 3 (one padded key).
"""

import functools as ft

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tljax
import tljax.layers as tl
from tljax.bounds import _tape
from tljax.bounds._tape import record_graph
from tljax.core._graph import trace

T, S, N, H = 3, 4, 1, 2
BLOCK_Q, BLOCK_K = 2, 3
EPS = 0.1
METHODS = ("ibp", "crown", "alpha-crown")


def qkv(seed=0):
    rng = np.random.default_rng(seed)
    return tuple(
        jnp.asarray(rng.standard_normal(shape), jnp.float32)
        for shape in [(T, N, H), (S, N, H), (S, N, H)]
    )


def attention(path, causal):
    if path == "standard":
        return lambda q, k, v: tl.dot_product_attention(q, k, v, is_causal=causal)
    return lambda q, k, v: tl.flash_attention(
        q, k, v, block_q=BLOCK_Q, block_k=BLOCK_K, is_causal=causal
    )


def box_points(lows, highs, n=10_000, n_corners=256, seed=0):
    """n uniform points of the box over the leaves, plus corners (all of them if few)."""
    lo = np.concatenate([np.asarray(x).reshape(-1) for x in lows])
    hi = np.concatenate([np.asarray(x).reshape(-1) for x in highs])
    rng = np.random.default_rng(seed)
    d = lo.size
    if 2**d <= n_corners:
        bits = np.array(np.meshgrid(*[[0, 1]] * d, indexing="ij")).reshape(d, -1).T
    else:
        bits = rng.integers(0, 2, (n_corners, d))
    flat = np.concatenate([rng.uniform(lo, hi, (n, d)), np.where(bits == 1, hi, lo)])
    flat = flat.astype(np.float32)
    flat = np.clip(flat, lo, hi)  # rounding to float32 stays in the box
    out, k = [], 0
    for x in lows:
        out.append(flat[:, k : k + x.size].reshape(-1, *x.shape))
        k += x.size
    return out


def assert_contains(lo, hi, ys, what):
    lo, hi = np.asarray(lo), np.asarray(hi)
    below, above = ys < lo, ys > hi
    n = int(below.sum() + above.sum())
    worst = max((lo - ys)[below].max(initial=0.0), (ys - hi)[above].max(initial=0.0))
    assert n == 0, f"{what}: {n} violations, worst by {worst}"


@ft.cache
def bounds_of(path, causal, boxed, method):
    fn = attention(path, causal)
    q, k, v = qkv()
    if boxed == "q":
        return tljax.bound(fn, tljax.Box(q - EPS, q + EPS), k, v, method=method)
    box = tljax.Box(tuple(x - EPS for x in (q, k, v)), tuple(x + EPS for x in (q, k, v)))
    return tljax.bound(lambda x: fn(*x), box, method=method)


@ft.cache
def outputs_of(path, causal, boxed):
    """fn at 10^4 points of the box and its corners, executed in float32 and in float64."""
    fn = attention(path, causal)
    q, k, v = qkv()
    xs = (q,) if boxed == "q" else (q, k, v)
    pts = box_points([x - EPS for x in xs], [x + EPS for x in xs])

    def run(dtype):
        rest = tuple(jnp.asarray(x, dtype) for x in ((k, v) if boxed == "q" else ()))
        args = [jnp.asarray(p, dtype) for p in pts]
        return np.asarray(jax.jit(jax.vmap(lambda *a: fn(*a, *rest)))(*args))

    ys32 = run(jnp.float32)
    with jax.enable_x64(True):
        ys64 = run(jnp.float64)
    return ys32, ys64


def _is_slow(path, causal, boxed, method):
    """Cases over ~20 s on 2 busy cores, run with `-m slow`: alpha-CROWN on the standard path
    optimises the ReLUs of the row maxima (30-60 s to compile, even for one row of three keys);
    the tiled path has none (its running maxima are intervals), so there alpha-CROWN is CROWN
    again (one case stays in the default run); CROWN on the tiled path with q, k, v all boxed
    (20-30 s)."""
    if method == "alpha-crown":
        return not (path == "flash" and causal and boxed == "q")
    return path == "flash" and boxed == "qkv" and method == "crown"


def _cases():
    for path in ("standard", "flash"):
        for causal in (False, True):
            for boxed in ("q", "qkv"):
                for method in METHODS:
                    marks = [pytest.mark.slow] if _is_slow(path, causal, boxed, method) else []
                    name = f"{path}-{'causal' if causal else 'full'}-{boxed}-{method}"
                    yield pytest.param(path, causal, boxed, method, id=name, marks=marks)


@pytest.mark.parametrize("path, causal, boxed, method", list(_cases()))
def test_attention_bounds_contain_float32_and_float64_outputs(path, causal, boxed, method):
    b = bounds_of(path, causal, boxed, method)
    lo, hi = np.asarray(b.lower), np.asarray(b.upper)
    assert lo.shape == hi.shape == (T, N, H)
    assert np.isfinite(lo).all() and np.isfinite(hi).all()
    ys32, ys64 = outputs_of(path, causal, boxed)
    assert_contains(lo, hi, ys32, f"{path}/{method} vs float32")
    assert_contains(lo, hi, ys64, f"{path}/{method} vs float64")


@pytest.mark.parametrize("path", ["standard", "flash"])
def test_crown_is_no_wider_than_ibp(path):
    ibp, crown = (bounds_of(path, True, "q", m) for m in ("ibp", "crown"))
    w_ibp = np.asarray(ibp.upper - ibp.lower)
    w_crown = np.asarray(crown.upper - crown.lower)
    assert (w_crown <= w_ibp).all()
    assert w_crown.mean() < (0.2 if path == "standard" else 0.5) * w_ibp.mean()


def test_flash_and_standard_bounds_both_contain_both_paths():
    """Exact arithmetic gives the same function, so each path's bounds contain the other path's
    outputs too, up to float error (far below the widths)."""
    outs = {path: outputs_of(path, True, "q")[0] for path in ("standard", "flash")}
    np.testing.assert_allclose(outs["flash"], outs["standard"], atol=1e-5)
    for path in outs:
        b = bounds_of(path, True, "q", "crown")
        for other in outs.values():
            assert_contains(b.lower - 1e-5, b.upper + 1e-5, other, path)


def test_flash_with_a_mask_argument_is_sound():
    """A mask passed as an argument is traced under `bound`'s jit: the tiles' `where`s then have
    unknown (but concrete) predicates; recording keeps them as affine selections."""
    q, k, v = qkv(2)
    mask = jnp.asarray(np.random.default_rng(3).random((N, T, S)) < 0.6).at[..., 0].set(True)

    def fn(q_, k_, v_, mask_):
        return tl.flash_attention(q_, k_, v_, mask=mask_, block_q=BLOCK_Q, block_k=BLOCK_K)

    box = tljax.Box(q - EPS, q + EPS)
    pts = box_points([box.lower], [box.upper], n=2000)[0]
    ys = np.asarray(jax.jit(jax.vmap(lambda q_: fn(q_, k, v, mask)))(pts))
    b = tljax.bound(fn, box, k, v, mask, method="crown")
    assert_contains(b.lower, b.upper, ys, "crown")


# --- recording -----------------------------------------------------------------------------------


def _flash_tape(jit):
    q, k, v = qkv()
    graph = trace(attention("flash", True), q, k, v)

    def rec(k_, v_):
        tape = record_graph(graph, [True, False, False], [k_, v_])
        return len(tape.eqns), sorted({e.kind for e in tape.eqns}), tape

    if not jit:
        return rec(k, v)
    out = []
    jax.jit(lambda k_, v_: out.append(rec(k_, v_)) or 0)(k, v)
    return out[0]


def test_scan_carries_computed_from_constants_stay_known_under_jit():
    """`seen`, the tile masks and positions depend on constants only: also inside `bound`'s jit
    they are numbers while recording, so `where(seen, ...)` picks its case and the untaken case
    is pruned. The tape is the same as when recorded eagerly."""
    n_eager, kinds_eager, tape = _flash_tape(jit=False)
    n_jit, kinds_jit, _ = _flash_tape(jit=True)
    assert n_jit == n_eager
    assert kinds_jit == kinds_eager
    # Padded query rows are dropped and the padded key is never valid: no equation may compute
    # with the rescaling of an empty running sum (alpha = 0 before the first block).
    exps = [e for e in tape.eqns if e.kind == "unary" and e.fn == "exp"]
    # causal, 2 key blocks: p of block 0, p and alpha of block 1.
    assert len(exps) == 3


def test_where_with_a_known_uniform_predicate_records_one_case():
    def fn(x):
        return jnp.where(jnp.ones(3, bool), x, jnp.exp(x)) + jnp.where(
            jnp.zeros(3, bool), jnp.tanh(x), x
        )

    graph = trace(fn, jnp.zeros(3))
    tape = record_graph(graph, [True], [])
    assert {e.kind for e in tape.eqns} == {"affine"}
    b = tljax.bound(fn, tljax.Box(-jnp.ones(3), jnp.ones(3)), method="ibp")
    np.testing.assert_allclose(b.lower, -2.0, rtol=1e-5)  # float-sound: outward by ulps
    np.testing.assert_allclose(b.upper, 2.0, rtol=1e-5)


def test_max_min_and_row_max_get_the_exact_interval_hull():
    lo = jnp.asarray([-1.0, 0.5, -3.0, 2.0, 0.0])
    hi = jnp.asarray([1.0, 0.75, -2.0, 2.5, 4.0])
    box = tljax.Box(lo, hi)
    for fn, elo, ehi in [
        (lambda x: jnp.max(x), jnp.max(lo), jnp.max(hi)),
        (lambda x: jnp.min(x), jnp.min(lo), jnp.min(hi)),
        (
            lambda x: jnp.maximum(x[:2], x[2:4]),
            jnp.maximum(lo[:2], lo[2:4]),
            jnp.maximum(hi[:2], hi[2:4]),
        ),
    ]:
        for method in ("ibp", "crown"):
            b = tljax.bound(fn, box, method=method)
            np.testing.assert_array_equal(b.lower, elo)
            np.testing.assert_array_equal(b.upper, ehi)


def test_softmax_shift_is_nonpositive():
    def shift(x):
        return x - jax.lax.stop_gradient(jnp.max(x, axis=-1, keepdims=True))

    box = tljax.Box(-jnp.ones((2, 3)), jnp.ones((2, 3)))
    b = tljax.bound(shift, box, method="ibp", float_sound=False)
    assert float(jnp.max(b.upper)) == 0.0
    np.testing.assert_array_equal(b.lower, -2.0)
    # Float-sound: the subtraction's own rounding (it may be fused with x's producer) is allowed.
    b = tljax.bound(shift, box, method="ibp")
    assert 0.0 < float(jnp.max(b.upper)) < 1e-5
    # jax.nn.softmax has the same shift: its exp is at most 1.
    tape = record_graph(trace(lambda x: jax.nn.softmax(x, axis=-1), jnp.zeros((2, 3))), [True], [])
    hinted = [e for e in tape.eqns if e.hint and e.hint[0] == "nonpos"]
    assert len(hinted) == 1 and hinted[0].hint[1].all()


@pytest.mark.parametrize("mode", ["relax", "interval"])
def test_stabilizer_modes_are_sound(monkeypatch, mode):
    monkeypatch.setattr(_tape, "STABILIZERS", mode)
    fn = attention("standard", True)
    q, k, v = qkv(4)
    box = tljax.Box(q - EPS, q + EPS)
    b = tljax.bound(fn, box, k, v, method="crown")
    pts = box_points([box.lower], [box.upper], n=2000)[0]
    ys = np.asarray(jax.jit(jax.vmap(lambda q_: fn(q_, k, v)))(pts))
    assert_contains(b.lower, b.upper, ys, mode)
    with pytest.raises(ValueError, match="stabilizers must be"):
        record_graph(trace(fn, q, k, v), [True, False, False], [k, v], stabilizers="none")
