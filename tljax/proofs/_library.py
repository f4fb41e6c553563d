"""tljax's own claims: statements about its layers, semantics and bounds, each machine-checked.

Every claim states how it is checked (`method`, see `tljax.proofs._claims`), and each check is a
function of this module that can also be run on other inputs (a buggy FlashAttention, a wrong
VJP) so that tests can show the check has teeth. Claims whose subject is not installed yet (a
module of another part of tljax) raise `Unavailable`, which the claims table shows as an error
naming the missing piece.

The checks (all host-side):

- FlashAttention == softmax attention, exactly, for every block size dividing the length
  (``exp`` replaced by ``2**x`` on integer scores so every value is rational).
- softmax shift invariance and rows summing to 1, as sympy identities.
- parallel (associative) scan == sequential recurrence, exactly; the scan operator is
  associative for non-commuting 2x2 matrices, as a sympy identity.
- CROWN's ReLU relaxation, symbolically (textbook form) and exactly (the library's function at
  enumerated boxes); its tanh/sigmoid relaxations, certified over each interval with arb
  interval arithmetic (branch and bound).
- IBP of an affine layer equals the exact range over the box (vertex enumeration).
- float emulation rounds + - * / sqrt correctly (against an independent Fraction rounding).
- the reference semantics equals ``jax.jit`` bit for bit on a zoo of programs.
- JAX's JVP/VJP rules agree with sympy derivatives (the rule audit) and ``jax.grad`` of an MLP
  and of a softmax/tanh model equals sympy's derivative exactly.
"""

from __future__ import annotations

import fractions
import itertools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import ml_dtypes
import numpy as np
import sympy
from flint import arb, ctx, fmpq

from ..bounds import Box, Options, bound, relax_relu, relax_smooth
from ..core import TljaxError
from ..interpret import evaluate, get_semantics, round_fraction
from ..layers import (
    dot_product_attention,
    flash_attention,
    linear_recurrence_parallel,
    linear_recurrence_sequential,
)
from ._audit import audit_rules, audit_totals
from ._claims import Evidence, claim
from ._grad import check_grad
from ._symbolic_api import symbolic, symbols

Fraction = fractions.Fraction


class Unavailable(TljaxError, RuntimeError):
    """A claim's subject is missing (a tljax module that has not landed, an optional dependency)."""


# ----------------------------------------------------------------------------------------------
# Exact evaluation: the exact semantics when installed, else exact rationals through sympy.


def exact_available() -> bool:
    """Whether the ``"exact"`` semantics is installed."""
    try:
        get_semantics("exact")
    except TljaxError:
        return False
    return True


def _fraction(v) -> Fraction:
    if isinstance(v, Fraction):
        return v
    if isinstance(v, bool | np.bool_):
        return Fraction(int(v))
    if isinstance(v, int | np.integer):
        return Fraction(int(v))
    if isinstance(v, sympy.Rational):
        return Fraction(int(v.p), int(v.q))
    if isinstance(v, fmpq):
        return Fraction(int(v.p), int(v.q))
    if isinstance(v, float | np.floating):
        return Fraction(float(v))
    raise TypeError(f"not an exact rational: {v!r} ({type(v).__name__})")


def exact_outputs(fn, *args) -> tuple[list[np.ndarray], str]:
    """Flat outputs of `fn(*args)` as object arrays of `Fraction`, and the semantics used.

    Uses the ``"exact"`` semantics when installed; otherwise the ``"symbolic"`` semantics on the
    concrete inputs, which is exact rational arithmetic too. A non-rational output (an
    enclosure, a closed form with exp) raises `TypeError`.
    """
    if exact_available():
        out, how = evaluate(fn, *args, semantics="exact"), "exact"
    else:
        out, how = symbolic(fn, *args), "symbolic"
    leaves = jtu.tree_leaves(out, is_leaf=lambda x: isinstance(x, np.ndarray | sympy.Basic))
    res = []
    for leaf in leaves:
        arr = np.asarray(leaf, dtype=object) if not isinstance(leaf, np.ndarray) else leaf
        conv = np.empty(arr.shape, dtype=object)
        for idx in np.ndindex(arr.shape):
            conv[idx] = _fraction(arr[idx])
        res.append(conv)
    return res, how


def _first_difference(a: np.ndarray, b: np.ndarray):
    for idx in np.ndindex(a.shape):
        if a[idx] != b[idx]:
            return idx, a[idx], b[idx]
    return None


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _exp2(x):
    return 2.0**x


# ----------------------------------------------------------------------------------------------
# FlashAttention.


def _attention_fns():
    return flash_attention, dot_product_attention


def attention_evidence(
    flash_fn: Callable,
    reference_fn: Callable,
    *,
    lengths: Sequence[int] = (4, 6),
    causal: Sequence[bool] = (False, True),
    seed: int = 0,
) -> Evidence:
    """Checks ``flash_fn == reference_fn`` exactly for every block size dividing each length.

    Both are called as ``f(q, k, v, [block_q=, block_k=,] is_causal=, scale=1.0, exp=2**x)``
    on unbatched integer queries/keys (so scores are integers and ``2**score`` is rational) and
    dyadic values. Equality is of exact rationals.

    Returns:
      `Evidence`; a counterexample names the length, block sizes, causality, output index and
      both values.
    """
    rng = np.random.default_rng(seed)
    checked, how = 0, ""
    for L in lengths:
        q = rng.integers(-2, 3, (L, 1, 2)).astype(np.float32)
        k = rng.integers(-2, 3, (L, 1, 2)).astype(np.float32)
        v = (rng.integers(-8, 9, (L, 1, 3)) / 4).astype(np.float32)
        for c in causal:
            (ref,), how = exact_outputs(
                lambda q, k, v, c=c: reference_fn(q, k, v, is_causal=c, scale=1.0, exp=_exp2),
                q,
                k,
                v,
            )
            for bq, bk in itertools.product(_divisors(L), _divisors(L)):
                (got,), _ = exact_outputs(
                    lambda q, k, v, c=c, bq=bq, bk=bk: flash_fn(
                        q, k, v, block_q=bq, block_k=bk, is_causal=c, scale=1.0, exp=_exp2
                    ),
                    q,
                    k,
                    v,
                )
                d = _first_difference(got, ref)
                if d is not None:
                    idx, g, r = d
                    return Evidence(
                        False,
                        f"{how} semantics: flash != softmax attention",
                        {
                            "length": L,
                            "block_q": bq,
                            "block_k": bk,
                            "is_causal": c,
                            "index": idx,
                            "flash": str(g),
                            "reference": str(r),
                            "q": q.tolist(),
                            "k": k.tolist(),
                            "v": v.tolist(),
                        },
                    )
                checked += 1
    return Evidence(
        True,
        f"{checked} (length, block_q, block_k, causal) configurations equal as rationals "
        f"({how} semantics; lengths {tuple(lengths)}, all divisor block sizes)",
    )


@claim(
    "flash-attention-equals-softmax-attention",
    "on seeded inputs (integer queries and keys in -2..2, dyadic values; sequence lengths 4 and "
    "6; one head), tljax.layers.flash_attention equals dot_product_attention exactly over the "
    "reals for every block_q, block_k dividing the length, causal or not (exp := 2**x, scale 1, "
    "so every score is an integer and every value rational)",
    "exact-enumerated",
    about="tljax.layers.flash_attention",
    tags=("layers", "attention"),
    scope="family",
    family="attention_evidence(): one seeded (q, k, v) per length 4 and 6, all divisor block "
    "sizes, causal and not",
)
def _flash_attention_claim() -> Evidence:
    flash, ref = _attention_fns()
    return attention_evidence(flash, ref)


# ----------------------------------------------------------------------------------------------
# Softmax identities.


def _generalise_max(exprs, tag: str):
    """Replaces every Max(...) by a fresh real symbol: an identity proved for all values of the
    symbol holds in particular for the max (softmax's stabilising shift)."""
    maxes = set()
    for e in exprs:
        maxes |= sympy.sympify(e).atoms(sympy.Max)
    sub = {m: sympy.Symbol(f"m_{tag}{i}", real=True) for i, m in enumerate(sorted(maxes, key=str))}
    return [sympy.sympify(e).subs(sub) for e in exprs], len(sub)


@claim(
    "softmax-shift-invariant",
    "jax.nn.softmax(x + c) == jax.nn.softmax(x) for every real vector x (length 3) and real c",
    "symbolic",
    about="jax.nn.softmax",
    tags=("softmax",),
    scope="general",
)
def _softmax_shift_claim() -> Evidence:
    x, c = symbols("x", 3), symbols("c")
    shifted = symbolic(lambda x, c: jax.nn.softmax(x + c), x, c)
    plain = symbolic(jax.nn.softmax, x)
    a, na = _generalise_max(list(shifted), "a")
    b, nb = _generalise_max(list(plain), "b")
    for i, (u, w) in enumerate(zip(a, b, strict=True)):
        if sympy.simplify(u - w) != 0:
            return Evidence(
                False, f"component {i} does not simplify to 0", {"shifted": str(u), "plain": str(w)}
            )
    return Evidence(
        True,
        f"3 components simplify to 0 (the {na + nb} stabilising maxima generalised to free "
        "symbols)",
    )


@claim(
    "softmax-rows-sum-to-one",
    "sum(jax.nn.softmax(x)) == 1 for every real vector x (length 4)",
    "symbolic",
    about="jax.nn.softmax",
    tags=("softmax",),
    scope="general",
)
def _softmax_sum_claim() -> Evidence:
    x = symbols("x", 4)
    s = symbolic(lambda x: jnp.sum(jax.nn.softmax(x)), x)
    (e,), _ = _generalise_max([s], "s")
    r = sympy.simplify(e)
    return Evidence(
        r == 1,
        f"simplifies to {r} (stabilising max generalised to a free symbol)",
        None if r == 1 else {"sum": str(r)},
    )


# ----------------------------------------------------------------------------------------------
# Linear recurrences.


def recurrence_evidence(
    parallel_fn, sequential_fn, *, lengths=tuple(range(1, 10)), seed=0
) -> Evidence:
    """Checks ``parallel_fn(a, b, h0) == sequential_fn(a, b, h0)`` exactly (dyadic inputs)."""
    rng = np.random.default_rng(seed)
    how = ""
    for L in lengths:
        a = (rng.integers(-4, 5, (L, 2)) / 4).astype(np.float32)
        b = (rng.integers(-8, 9, (L, 2)) / 8).astype(np.float32)
        h0 = (rng.integers(-4, 5, (2,)) / 2).astype(np.float32)
        (p,), how = exact_outputs(parallel_fn, a, b, h0)
        (s,), _ = exact_outputs(sequential_fn, a, b, h0)
        d = _first_difference(p, s)
        if d is not None:
            return Evidence(
                False,
                f"{how} semantics: parallel != sequential at length {L}",
                {
                    "length": L,
                    "index": d[0],
                    "parallel": str(d[1]),
                    "sequential": str(d[2]),
                    "a": a.tolist(),
                    "b": b.tolist(),
                    "h0": h0.tolist(),
                },
            )
    return Evidence(
        True,
        f"lengths {lengths[0]}..{lengths[-1]} (state size 2) equal as rationals ({how} semantics)",
    )


@claim(
    "parallel-scan-equals-sequential",
    "on seeded dyadic inputs (one (a, b, h0) per length 1..9, state size 2), "
    "tljax.layers.linear_recurrence_parallel (associative scan) equals "
    "linear_recurrence_sequential (lax.scan) exactly over the reals",
    "exact-enumerated",
    about="tljax.layers._ssm",
    tags=("layers", "ssm"),
    scope="family",
    family="recurrence_evidence(): 9 seeded dyadic (a, b, h0), lengths 1..9",
)
def _scan_claim() -> Evidence:
    return recurrence_evidence(linear_recurrence_parallel, linear_recurrence_sequential)


def _compose(e1, e2):
    """(A1, b1) ∘ (A2, b2) = (A2 A1, A2 b1 + b2): first h -> A1 h + b1, then A2 h + b2."""
    (A1, b1), (A2, b2) = e1, e2
    return A2 @ A1, A2 @ b1 + b2


@claim(
    "scan-operator-associative",
    "the affine-map composition (A1,b1)∘(A2,b2) = (A2 A1, A2 b1 + b2) used by the parallel scan is "
    "associative and composes the maps, for arbitrary (non-commuting) 2x2 matrices",
    "symbolic",
    about="tljax.layers._ssm",
    tags=("ssm",),
    scope="general",
)
def _assoc_claim() -> Evidence:
    e = [(symbols(f"A{i}", (2, 2)), symbols(f"b{i}", 2)) for i in (1, 2, 3)]
    left = symbolic(lambda e1, e2, e3: _compose(_compose(e1, e2), e3), *e)
    right = symbolic(lambda e1, e2, e3: _compose(e1, _compose(e2, e3)), *e)
    for name, u, w in (("A", left[0], right[0]), ("b", left[1], right[1])):
        for idx in np.ndindex(u.shape):
            if sympy.expand(u[idx] - w[idx]) != 0:
                return Evidence(
                    False, f"{name}{idx} differs", {"left": str(u[idx]), "right": str(w[idx])}
                )
    # It is the composition of the maps: apply(e1∘e2, h) == apply(e2, apply(e1, h)).
    h = symbols("h", 2)

    def apply_composed(e1, e2, h):
        c = _compose(e1, e2)
        return c[0] @ h + c[1]

    comp = symbolic(apply_composed, e[0], e[1], h)
    seq = symbolic(lambda e1, e2, h: e2[0] @ (e1[0] @ h + e1[1]) + e2[1], e[0], e[1], h)
    if any(sympy.expand(comp[i] - seq[i]) != 0 for i in range(2)):
        return Evidence(False, "e1∘e2 is not 'first e1, then e2'")
    # Sanity: the operator is not commutative, so the check above is not vacuous.
    swapped = symbolic(lambda e1, e2: _compose(e2, e1)[0], e[0], e[1])
    plain = symbolic(lambda e1, e2: _compose(e1, e2)[0], e[0], e[1])
    noncomm = any(sympy.expand(swapped[i] - plain[i]) != 0 for i in np.ndindex(2, 2))
    return Evidence(
        True,
        "((e1∘e2)∘e3) - (e1∘(e2∘e3)) expands to 0 (12 entries); e1∘e2 applies e1 "
        f"then e2; non-commutative: {noncomm}",
    )


# ----------------------------------------------------------------------------------------------
# CROWN relaxations.


@claim(
    "crown-relu-relaxation-symbolic",
    "textbook CROWN ReLU relaxation: for all l < 0 < u, x in [l, u], alpha in [0, 1]: "
    "alpha*x <= relu(x) <= u (x - l) / (u - l)",
    "symbolic",
    about="CROWN (Zhang et al. 2018)",
    tags=("bounds",),
    scope="general",
)
def _relu_textbook_claim() -> Evidence:
    a, b = sympy.symbols("a b", positive=True)  # l = -a, u = b
    x = sympy.Symbol("x", real=True)
    l, u = -a, b
    upper = u * (x - l) / (u - l)
    # Both sides are linear on [l, 0] and on [0, u], and the lower line is linear in alpha, so the
    # inequalities hold everywhere iff they hold at x in {l, 0, u} and alpha in {0, 1}.
    checks = []
    for xv in (l, sympy.Integer(0), u):
        relu = sympy.Max(0, xv)
        checks.append(sympy.simplify(upper.subs(x, xv) - relu))
        for alpha in (0, 1):
            checks.append(sympy.simplify(relu - alpha * xv))
    bad = [c for c in checks if not c.is_nonnegative]
    if bad:
        return Evidence(False, "a vertex gap is not provably >= 0", {"gaps": [str(c) for c in bad]})
    return Evidence(
        True,
        f"{len(checks)} vertex gaps (x in {{l, 0, u}}, alpha in {{0, 1}}) are >= 0 for all "
        "l = -a, u = b with a, b > 0 (sympy assumptions); piecewise linearity covers the rest",
    )


# ----------------------------------------------------------------------------------------------
# Interval families: the finite set of float32 intervals that the relaxation claims are checked on.

_F32_TINY = float(np.finfo(np.float32).tiny)  # smallest normal, 2**-126
_WIDTHS = (0.0, 1e-7, 1e-5, 1e-3, 0.1, 1.0, 10.0, 100.0)
# Known bad case: relax_smooth('logistic') with float-sound options had a lower line above the
# sigmoid on this interval (found with this certifier, 2024).
_KNOWN_BAD = ((-17.878672, -17.399183),)


def _f32(v) -> np.float32:
    with np.errstate(over="ignore"):
        return np.float32(v)


def _neighbours(p: float) -> list[np.float32]:
    """p rounded to float32 and its two float32 neighbours."""
    q = _f32(p)
    return [np.nextafter(q, _f32(-np.inf)), q, np.nextafter(q, _f32(np.inf))]


def _outside_subnormal(x: np.float32, side: int) -> np.float32:
    """A float32-subnormal end moved outward to 0 or the smallest normal, as `tljax.bound` moves
    box ends (XLA:CPU reads subnormal operands as zero; computed interval ends are normal)."""
    if x == 0 or abs(float(x)) >= _F32_TINY:
        return x
    if side < 0:
        return _f32(0.0) if x > 0 else _f32(-_F32_TINY)
    return _f32(_F32_TINY) if x > 0 else _f32(0.0)


def interval_family(
    pivots: Sequence[float],
    domain: tuple[float, float] = (-math.inf, math.inf),
    *,
    seed: int = 0,
    n_random: int = 60,
    n_tails: int = 40,
    extra: Sequence[tuple[float, float]] = (),
) -> list[tuple[np.float32, np.float32]]:
    """A deterministic adversarial family of float32 intervals ``[l, u]`` inside `domain`.

    The family (sorted, without duplicates):

    - straddling each pivot p: ``[p - w1, p + w2]`` for widths w1, w2 in 0, 1e-7, 1e-5, 1e-3, 0.1,
      1, 10, 100 (all 64 pairs);
    - one endpoint at p's float32 neighbours (nextafter down, p, nextafter up) and at the tiny
      normals ±2**-126, ±2**-125, the other at distance w (same widths), on either side;
    - integer endpoints: ``[k, k + m]`` for 24 seeded integers k in [-100, 100], m in {0, 1, 2, 7};
    - far tails: `n_tails` intervals centred at ±U(10, 100), width 10**U(-7, 2);
    - `n_random` intervals centred at ±10**U(-3, 2), width 10**U(-7, 2);
    - point intervals ``l == u`` at ±0.5, ±3, ±50;
    - `extra` intervals (known bad cases).

    Endpoints are rounded to float32 and clipped to ``|x| <= 100``; a float32-subnormal endpoint
    is moved outward to 0 or ±2**-126, as `tljax.bound` moves box ends. An interval that leaves
    `domain` is mirrored about the domain's lower end when it lies wholly below it, else clipped
    to the domain. `pivots` are the function's inflection points, 0 and its domain ends.

    Returns:
      ``[(l, u)]`` with ``l <= u`` float32 scalars.
    """
    rng = np.random.default_rng(seed)
    raw: list[tuple[float, float]] = []
    for p in pivots:
        for w1, w2 in itertools.product(_WIDTHS, _WIDTHS):
            raw.append((p - w1, p + w2))
        tiny = [p + t * _F32_TINY for t in (-2, -1, 1, 2)]
        for q in [*(float(v) for v in _neighbours(p)), *tiny]:
            for w in _WIDTHS[1:]:
                raw += [(q, q + w), (q - w, q)]
    for k in rng.integers(-100, 101, 24):
        raw += [(float(k), float(k + m)) for m in (0, 1, 2, 7)]
    sides = rng.choice([-1.0, 1.0], n_tails)
    centres = sides * rng.uniform(10.0, 100.0, n_tails)
    widths = 10.0 ** rng.uniform(-7.0, 2.0, n_tails)
    raw += [(c - w / 2, c + w / 2) for c, w in zip(centres, widths, strict=True)]
    sides = rng.choice([-1.0, 1.0], n_random)
    centres = sides * 10.0 ** rng.uniform(-3.0, 2.0, n_random)
    widths = 10.0 ** rng.uniform(-7.0, 2.0, n_random)
    raw += [(c - w / 2, c + w / 2) for c, w in zip(centres, widths, strict=True)]
    raw += [(x, x) for x in (-50.0, -3.0, -0.5, 0.5, 3.0, 50.0)]
    raw += list(extra)
    dlo, dhi = domain
    out = set()
    for lo, hi in raw:
        lo, hi = max(lo, -100.0), min(hi, 100.0)
        if lo > hi:
            continue
        if hi < dlo:  # wholly below the domain: mirror about its lower end
            lo, hi = 2 * dlo - hi, 2 * dlo - lo
        lo, hi = max(lo, dlo), min(hi, dhi)
        l, u = _outside_subnormal(_f32(lo), -1), _outside_subnormal(_f32(hi), 1)
        if l < _f32(dlo):  # float32 rounding left the domain
            l = np.nextafter(l, _f32(np.inf))
        if not (l <= u):
            continue
        out.add((float(l), float(u)))
    return [(_f32(lo), _f32(hi)) for lo, hi in sorted(out)]


# ----------------------------------------------------------------------------------------------
# ReLU relaxation, exactly.


def relu_family() -> list[tuple[np.float32, np.float32]]:
    """`interval_family` around 0 (the kink): the ReLU relaxation claim's boxes."""
    return interval_family([0.0], seed=1, n_random=40, n_tails=20)


def relu_relaxation_evidence(
    relax_relu: Callable, boxes=None, alphas=(None, 0.0, 0.5, 1.0)
) -> Evidence:
    """Exact check of ``relax_relu(l, u, alpha) -> (a_l, b_l, a_u, b_u)`` on each box.

    The lines and relu are linear on [l, 0] and [0, u], so checking x in {l, 0, u} ∩ [l, u] in
    exact arithmetic proves the box. `relax_relu` is called once per alpha on float32 arrays of
    all boxes (default: `relu_family()`).
    """
    boxes = relu_family() if boxes is None else boxes
    lo = np.asarray([b[0] for b in boxes], np.float32)
    hi = np.asarray([b[1] for b in boxes], np.float32)
    n = 0
    for alpha in alphas:
        al = None if alpha is None else jnp.full(lo.shape, alpha, jnp.float32)
        lines = [
            np.asarray(v, np.float32) for v in relax_relu(jnp.asarray(lo), jnp.asarray(hi), al)
        ]
        lines = [np.broadcast_to(v, lo.shape) for v in lines]
        for i in range(len(lo)):
            a_l, b_l, a_u, b_u = (Fraction(float(v[i])) for v in lines)
            L, U = Fraction(float(lo[i])), Fraction(float(hi[i]))
            for x in {L, U, *([Fraction(0)] if L < 0 < U else [])}:
                r = max(x, Fraction(0))
                if not (a_l * x + b_l <= r <= a_u * x + b_u):
                    return Evidence(
                        False,
                        "relaxation violated",
                        {
                            "l": float(lo[i]),
                            "u": float(hi[i]),
                            "alpha": alpha,
                            "x": str(x),
                            "lower_line": str(a_l * x + b_l),
                            "relu": str(r),
                            "upper_line": str(a_u * x + b_u),
                        },
                        scope="family",
                    )
            n += 1
    return Evidence(
        True, f"{n} (box, alpha) cases proved exactly at the breakpoints", scope="family"
    )


@claim(
    "crown-relu-relaxation-sound-on-family",
    "on the seeded float32 box family relu_family() (boxes straddling, touching and near 0: "
    "float32 neighbours of 0, tiny normals, widths 0..100, integers, far and random boxes), "
    "tljax.bounds.relax_relu's lines satisfy a_l x + b_l <= relu(x) <= a_u x + b_u for every "
    "real x in [l, u], alpha in {default, 0, 0.5, 1}; other boxes are not checked",
    "exact-enumerated",
    about="tljax.bounds.relax_relu",
    tags=("bounds",),
    scope="family",
    family=f"relu_family(): {len(relu_family())} float32 boxes (seed 1) x 4 alphas",
)
def _relu_library_claim() -> Evidence:
    return relu_relaxation_evidence(relax_relu)


# ----------------------------------------------------------------------------------------------
# Smooth relaxations, certified with arb.


def _arb_of(v) -> arb:
    return arb(fmpq(v.numerator, v.denominator))


def _sig(x: arb) -> arb:
    return 1 / (1 + (-x).exp())


def _gauss(x: arb) -> arb:
    """2/√π e^{-x²}, the derivative of erf."""
    return 2 / arb.pi().sqrt() * (-(x * x)).exp()


def _const_sign(sign: int):
    return lambda lo, hi, X: sign


def _sign_of(v: arb) -> int:
    """+1 / -1 when the ball is certainly >= 0 / <= 0, else 0."""
    if v.lower() >= 0:
        return 1
    if v.upper() <= 0:
        return -1
    return 0


def _inflection_at_zero(sign_left: int):
    """Curvature sign of a function whose f'' has sign `sign_left` on x < 0 and the opposite on
    x > 0 (tanh, logistic, erf: +1; erfc: -1)."""

    def curv(lo, hi, X):
        if hi <= 0:
            return sign_left
        if lo >= 0:
            return -sign_left
        return 0

    return curv


# name: (f, f', sign of f'' on an interval, domain). f and f' act on arb balls (rigorous
# enclosures); the curvature function gets the exact ends (lo, hi) and a ball X covering them and
# returns +1 (f convex there), -1 (concave) or 0 (unknown). The curvature facts are textbook and
# checked symbolically in tests/proofs/test_library.py.
SMOOTH_ARB = {
    "exp": (arb.exp, arb.exp, _const_sign(1), (-math.inf, math.inf)),
    "expm1": (arb.expm1, arb.exp, _const_sign(1), (-math.inf, math.inf)),
    "log": (arb.log, lambda x: 1 / x, _const_sign(-1), (0.0, math.inf)),
    "log1p": (arb.log1p, lambda x: 1 / (1 + x), _const_sign(-1), (-1.0, math.inf)),
    "sqrt": (arb.sqrt, lambda x: 1 / (2 * x.sqrt()), _const_sign(-1), (0.0, math.inf)),
    "rsqrt": (arb.rsqrt, lambda x: -x.rsqrt() / (2 * x), _const_sign(1), (0.0, math.inf)),
    "recip": (
        lambda x: 1 / x,
        lambda x: -1 / (x * x),
        lambda lo, hi, X: 1 if lo > 0 else (-1 if hi < 0 else 0),
        (-math.inf, math.inf),
    ),
    "square": (lambda x: x * x, lambda x: 2 * x, _const_sign(1), (-math.inf, math.inf)),
    "softplus": (lambda x: x.exp().log1p(), _sig, _const_sign(1), (-math.inf, math.inf)),
    "tanh": (arb.tanh, lambda x: x.sech() ** 2, _inflection_at_zero(1), (-math.inf, math.inf)),
    "logistic": (
        _sig,
        lambda x: _sig(x) * _sig(-x),
        _inflection_at_zero(1),
        (-math.inf, math.inf),
    ),
    "erf": (arb.erf, _gauss, _inflection_at_zero(1), (-math.inf, math.inf)),
    "erfc": (arb.erfc, lambda x: -_gauss(x), _inflection_at_zero(-1), (-math.inf, math.inf)),
    # sin'' = -sin, cos'' = -cos: the sign of f on the ball decides the curvature.
    "sin": (arb.sin, arb.cos, lambda lo, hi, X: -_sign_of(X.sin()), (-math.inf, math.inf)),
    "cos": (
        arb.cos,
        lambda x: -x.sin(),
        lambda lo, hi, X: -_sign_of(X.cos()),
        (-math.inf, math.inf),
    ),
}


def _pm(x: arb) -> list[arb]:
    return [-x, x]


def _sig_crit(a: arb) -> list[arb]:
    d = (1 - 4 * a).sqrt()
    s = (1 + d) / 2
    return _pm((s / (1 - s)).log())


# name: points where f'(x) = a, as arb balls (every real solution, or a superset of the ones in
# the interval at hand; solutions that do not exist come out as NaN balls and are ignored). Used
# where g is convex, to bound its minimum by g at the point where g' = 0: exactly, when that
# point is rational (a tangent can touch f exactly there: (x + 50)**2 >= 0 is the lower line of
# x**2 on [-100, 0]).
SMOOTH_CRIT = {
    "exp": lambda a: [a.log()],
    "expm1": lambda a: [a.log()],
    "log": lambda a: [1 / a],
    "log1p": lambda a: [1 / a - 1],
    "sqrt": lambda a: [1 / (4 * a * a)],
    "rsqrt": lambda a: [(-2 * a) ** arb(fmpq(-2, 3))],
    "recip": lambda a: _pm((-1 / a).sqrt()),
    "square": lambda a: [a / 2],
    "softplus": lambda a: [(a / (1 - a)).log()],
    "tanh": lambda a: _pm((1 - a).sqrt().atanh()),
    "logistic": _sig_crit,
    "erf": lambda a: _pm((-(a * arb.pi().sqrt() / 2).log()).sqrt()),
    "erfc": lambda a: _pm((-(-a * arb.pi().sqrt() / 2).log()).sqrt()),
}

# Points where a relaxation is most likely to go wrong: inflection points, 0, extrema, domain ends.
_PI = math.pi
SMOOTH_PIVOTS = {
    "exp": (0.0, 88.72284),  # float32 exp overflows just above 88.72284
    "expm1": (0.0, 88.72284),
    "log": (0.0, 1.0),
    "log1p": (-1.0, 0.0),
    "sqrt": (0.0, 1.0),
    "rsqrt": (0.0, 1.0),
    "recip": (0.0, 1.0, -1.0),
    "square": (0.0,),
    "softplus": (0.0,),
    "tanh": (0.0,),
    "logistic": (0.0,),
    "erf": (0.0,),
    "erfc": (0.0,),
    "sin": (0.0, _PI / 2, _PI, -_PI, 2 * _PI),
    "cos": (0.0, _PI / 2, -_PI / 2, _PI, 3 * _PI / 2),
}


def smooth_family(fn: str) -> list[tuple[np.float32, np.float32]]:
    """The seeded interval family of `fn`'s relaxation claim: `interval_family` around
    ``SMOOTH_PIVOTS[fn]`` inside ``fn``'s domain, plus the known bad case (mirrored into the
    domain)."""
    return interval_family(
        SMOOTH_PIVOTS[fn], SMOOTH_ARB[fn][3], seed=sorted(SMOOTH_ARB).index(fn), extra=_KNOWN_BAD
    )


def certify_line(
    fn: str,
    a: Fraction,
    b: Fraction,
    sign: int,
    l: Fraction,
    u: Fraction,
    *,
    max_boxes: int = 20000,
    prec: int = 256,
):
    """Certifies ``g(x) = sign * (f(x) - (a x + b)) >= 0`` for every real x in [l, u], f = `fn`.

    Branch and bound with arb ball arithmetic (rigorous at any precision; `prec` bits only
    decides how often a sign is decided). On a sub-interval [lo, hi]:

    - g(lo), g(hi) or g(midpoint) certainly < 0: that point is a counterexample;
    - the natural enclosure of g over the sub-interval is >= 0;
    - g concave there (from the sign of f''): g >= min(g(lo), g(hi));
    - g convex: g' is increasing, so g >= g(lo) if g'(lo) >= 0, g >= g(hi) if g'(hi) <= 0,
      g >= g(c) - |g'(c)| (hi - lo)/2 (tangent at the midpoint c), and when g' changes sign,
      g >= g(x*) at the zero x* of g' (closed form `SMOOTH_CRIT`; exact when x* is rational);
    - otherwise the mean-value form ``g(c) - sup|g'(X)| (hi - lo)/2``;
    - else bisect.

    Returns:
      ``(True, n_boxes)``; ``(False, x)`` with a rational x where g(x) < 0; or ``(None, n)``
      when not decided (budget `max_boxes` spent, or a sub-interval narrower than 2**-60 of
      its magnitude, or an end where g's sign cannot be decided).
    """
    f, df, curvature, _ = SMOOTH_ARB[fn]
    crit = SMOOTH_CRIT.get(fn)
    old = ctx.prec
    try:
        ctx.prec = 4 * prec
        A, B = _arb_of(a), _arb_of(b)  # exact for dyadic a, b (float lines)

        def g_ball(X: arb) -> arb:
            return sign * (f(X) - (A * X + B))

        def dg(X: arb) -> arb:
            return sign * (df(X) - A)

        def at(h, x: Fraction) -> arb:
            # h at the point x, retried at 4x precision when its sign is not decided (far
            # tails and subnormal ends need ~300 bits or more).
            for p in (prec, 4 * prec):
                ctx.prec = p
                v = h(_arb_of(x))
                if v.lower() >= 0 or v.upper() <= 0:
                    break
            ctx.prec = prec
            return v

        def g(x: Fraction) -> arb:
            return at(g_ball, x)

        def min_at_crit(lo: Fraction, hi: Fraction):
            """g convex with g'(lo) < 0 < g'(hi): its minimum is at the zero x* of g' in the
            box, and min g >= the lower end of g over the ball of x*. Returns True (proved), a
            rational x* with g(x*) < 0, or None."""
            if crit is None:
                return None
            X = _arb_of(lo).union(_arb_of(hi))
            for xs in crit(A):
                if not xs.is_finite() or not xs.overlaps(X):
                    continue
                if xs.lower() >= _arb_of(lo).lower() and xs.upper() <= _arb_of(hi).upper():
                    gx = g_ball(xs)
                    if gx.lower() >= 0:
                        return True
                    if xs.rad() == 0 and gx.upper() < 0:  # an exact point below the line
                        man, exp = (int(v) for v in xs.mid().man_exp())
                        return man * Fraction(2) ** exp
            return None

        ctx.prec = prec
        stack, n = [(l, u, g(l), g(u))], 0
        while stack:
            lo, hi, glo, ghi = stack.pop()
            n += 1
            if n > max_boxes:
                return None, n
            for x, gx in ((lo, glo), (hi, ghi)):
                if gx.upper() < 0:
                    return False, x
            if lo == hi:
                if glo.lower() >= 0:
                    continue
                return None, n
            ends_ok = glo.lower() >= 0 and ghi.lower() >= 0
            X = _arb_of(lo).union(_arb_of(hi))
            if ends_ok and g_ball(X).lower() >= 0:  # natural enclosure (flat lines, sin, cos)
                continue
            curv = sign * curvature(lo, hi, X)
            if curv < 0:  # g concave: its minimum is at an end
                if ends_ok:
                    continue
                return None, n
            c = (lo + hi) / 2
            gc = g(c)
            if gc.upper() < 0:
                return False, c
            half = _arb_of((hi - lo) / 2)
            if curv > 0:
                dlo, dhi = at(dg, lo), at(dg, hi)
                if glo.lower() >= 0 and dlo.lower() >= 0:
                    continue
                if ghi.lower() >= 0 and dhi.upper() <= 0:
                    continue
                if (gc - abs(dg(_arb_of(c))).upper() * half).lower() >= 0:
                    continue
                if dlo.upper() < 0 < dhi.lower():
                    m = min_at_crit(lo, hi)
                    if m is True:
                        continue
                    if m is not None:
                        return False, m
            elif (gc - abs(dg(X)).upper() * half).lower() >= 0:
                continue
            if hi - lo < Fraction(1, 2**60) * (abs(lo) + abs(hi)):
                return None, n
            stack.extend([(lo, c, glo, gc), (c, hi, gc, ghi)])
        return True, n
    finally:
        ctx.prec = old


_PAD = 256


def _call_padded(relax: Callable, lo: np.ndarray, hi: np.ndarray) -> list[np.ndarray]:
    """``relax(lo, hi)`` under `jax.jit` on arrays padded (with the first box) to a multiple of
    256, so that families of different sizes share compilations; returns float64 arrays."""
    n = len(lo)
    m = -(-n // _PAD) * _PAD
    pad = [np.concatenate([v, np.full(m - n, v[0], np.float32)]) for v in (lo, hi)]
    out = jax.jit(relax)(jnp.asarray(pad[0]), jnp.asarray(pad[1]))
    return [np.broadcast_to(np.asarray(v, np.float64), (m,))[:n] for v in out]


def smooth_relaxation_evidence(
    relax: Callable, fn: str, boxes=None, *, max_boxes: int = 4000, stop_after: int = 10
) -> Evidence:
    """Certifies the lines ``relax(l, u) -> (a_l, b_l, a_u, b_u)`` for f = `fn` on each box.

    `relax` is called once, on float32 arrays of all the boxes' ends (default:
    `smooth_family(fn)`). Each line is checked over the reals with `certify_line`. An infinite
    intercept on the safe side (lower ``-inf``, upper ``+inf``) holds trivially; NaN or an
    infinite slope, or an infinite intercept on the wrong side, is a violation. `max_boxes` is
    `certify_line`'s budget per line; the check stops after `stop_after` failing intervals.

    Returns:
      `Evidence` (scope ``"family"``): holds when every line of every box is certified; else
      the first violation (``fn``, ``l``, ``u``, the point ``x``, the line) and, in the detail,
      how many boxes were violated or left undecided.
    """
    boxes = smooth_family(fn) if boxes is None else boxes
    lo = np.asarray([b[0] for b in boxes], np.float32)
    hi = np.asarray([b[1] for b in boxes], np.float32)
    lines = _call_padded(relax, lo, hi)
    total, trivial, bad, undecided, first = 0, 0, 0, 0, None
    for i in range(len(lo)):
        L, U = Fraction(float(lo[i])), Fraction(float(hi[i]))
        a_l, b_l, a_u, b_u = (float(v[i]) for v in lines)
        box_bad = box_undecided = False
        for sign, a, b, which in ((1, a_l, b_l, "lower"), (-1, a_u, b_u, "upper")):
            case = {"fn": fn, "l": float(lo[i]), "u": float(hi[i]), "line": which}
            case |= {"slope": a, "intercept": b}
            if b == -sign * math.inf and not math.isnan(a) and math.isfinite(a):
                trivial += 1
                continue
            if not (math.isfinite(a) and math.isfinite(b)):
                ok, info = False, "line is not finite"
            else:
                ok, info = certify_line(
                    fn, Fraction(a), Fraction(b), sign, L, U, max_boxes=max_boxes
                )
            if ok:
                total += info
                continue
            if ok is False:
                box_bad = True
                if first is None or first[0] != "violated":
                    first = ("violated", f"{which} line violated", case | {"x": str(info)})
            else:
                box_undecided = True
                if first is None:
                    first = ("undecided", f"{which} line not certified ({info} boxes)", case)
        bad += box_bad
        undecided += box_undecided and not box_bad
        if bad + undecided >= stop_after:
            break
    n = len(lo)
    if first is not None:
        seen = f"first {i + 1} of {n}" if i + 1 < n else f"{n}"
        return Evidence(
            False,
            f"{first[1]}; of the {seen} intervals, {bad} violated, {undecided} undecided",
            first[2],
            scope="family",
        )
    return Evidence(
        True,
        f"{n} intervals x 2 lines certified with arb ({total} sub-intervals; {trivial} lines "
        "trivial: infinite intercept on the safe side)",
        scope="family",
    )


def _smooth_claim(fn: str, float_sound: bool) -> Evidence:
    opts = Options(float_sound=float_sound)
    try:
        relax_smooth(fn, jnp.float32(1.0), jnp.float32(2.0), opts)
    except KeyError as err:
        raise Unavailable(f"tljax.bounds.relax_smooth does not relax {fn!r} ({err})") from err
    return smooth_relaxation_evidence(lambda l, u: relax_smooth(fn, l, u, opts), fn)


def _register_smooth_claims():
    for fn in SMOOTH_ARB:
        n = len(smooth_family(fn))
        # float_sound=False computes the lines in plain float (peers' convention): not claimed
        for float_sound, opts, tag in ((True, "Options()", "float-sound"),):
            claim(
                f"crown-{fn}-relaxation-{tag}-on-family",
                f"on the seeded float32 interval family smooth_family({fn!r}) ({n} intervals: far "
                "tails to |x| = 100, widths 0 and 1e-7..100, straddling the inflection points, "
                "extrema, 0 and domain ends, their float32 neighbours, tiny normals, integers, "
                "the known bad logistic case), the lines of tljax.bounds.relax_smooth"
                f"({fn!r}, l, u, {opts}) satisfy a_l x + b_l <= {fn}(x) <= a_u x + b_u for every "
                "real x in [l, u] (arb branch and bound); intervals outside the family are not "
                "checked",
                "certified-bound",
                about="tljax.bounds.relax_smooth",
                tags=("bounds", "relaxation"),
                scope="family",
                family=f"smooth_family({fn!r}): {n} float32 intervals",
            )(lambda fn=fn, float_sound=float_sound: _smooth_claim(fn, float_sound))


_register_smooth_claims()


# ----------------------------------------------------------------------------------------------
# IBP of an affine layer.


def ibp_affine_evidence(bound: Callable, Box, *, seed: int = 0, cases: int = 4) -> Evidence:
    """IBP (float_sound=False) of x -> W x + b equals the exact range of every output over the
    box; float_sound=True contains it. Exact range: every vertex evaluated exactly (a linear map
    attains its extremes at vertices)."""
    rng = np.random.default_rng(seed)
    for case in range(cases):
        n_in, n_out = 3, 2
        W = (rng.integers(-8, 9, (n_out, n_in)) / 4).astype(np.float32)
        bias = (rng.integers(-8, 9, (n_out,)) / 8).astype(np.float32)
        lo = (rng.integers(-8, 1, (n_in,)) / 4).astype(np.float32)
        hi = (lo + rng.integers(0, 9, (n_in,)) / 4).astype(np.float32)

        def layer(x, W=W, bias=bias):
            return W @ x + bias

        vals = []
        for corner in itertools.product(*[(lo[i], hi[i]) for i in range(n_in)]):
            (y,), _ = exact_outputs(layer, np.asarray(corner, np.float32))
            vals.append(y)
        emin = [min(v[j] for v in vals) for j in range(n_out)]
        emax = [max(v[j] for v in vals) for j in range(n_out)]
        tight = bound(layer, Box(jnp.asarray(lo), jnp.asarray(hi)), method="ibp", float_sound=False)
        sound = bound(layer, Box(jnp.asarray(lo), jnp.asarray(hi)), method="ibp", float_sound=True)
        for j in range(n_out):
            tl, tu = Fraction(float(tight.lower[j])), Fraction(float(tight.upper[j]))
            sl, su = Fraction(float(sound.lower[j])), Fraction(float(sound.upper[j]))
            if (tl, tu) != (emin[j], emax[j]) or not (sl <= emin[j] and emax[j] <= su):
                return Evidence(
                    False,
                    "IBP differs from the exact range",
                    {
                        "case": case,
                        "output": j,
                        "exact": (str(emin[j]), str(emax[j])),
                        "ibp": (str(tl), str(tu)),
                        "ibp_float_sound": (str(sl), str(su)),
                        "W": W.tolist(),
                        "b": bias.tolist(),
                        "lower": lo.tolist(),
                        "upper": hi.tolist(),
                    },
                )
    return Evidence(
        True,
        f"{cases} layers (3 -> 2, dyadic weights and boxes): IBP == exact vertex range, "
        "float-sound IBP contains it",
    )


@claim(
    "ibp-affine-equals-exact-range",
    "on 4 seeded affine layers (3 -> 2, dyadic weights, biases and boxes), "
    "tljax.bound(method='ibp', float_sound=False) equals the exact range [min, max] of each "
    "output over the box (vertex argument, exact arithmetic), and float_sound=True contains it",
    "exact-enumerated",
    about="tljax.bound",
    tags=("bounds",),
    scope="family",
    family="ibp_affine_evidence(): 4 layers and boxes from seed 0",
)
def _ibp_claim() -> Evidence:
    return ibp_affine_evidence(bound, Box)


# ----------------------------------------------------------------------------------------------
# Float emulation: correct rounding, against an independent Fraction-based rounding.

# (mantissa bits, exponent bits) of the formats checked.
_FORMATS = {"fp32": (23, 8), "fp16": (10, 5), "bf16": (7, 8)}
_F32_MIN_NORMAL = Fraction(2) ** -126


def _format_values(fmt: str, bits: np.ndarray) -> np.ndarray:
    """float32 arrays holding values of the format, from raw bit patterns."""
    if fmt == "fp32":
        return bits.astype(np.uint32).view(np.float32)
    if fmt == "fp16":
        return bits.astype(np.uint16).view(np.float16).astype(np.float32)
    return bits.astype(np.uint16).view(ml_dtypes.bfloat16).astype(np.float32)


def _specials(fmt: str) -> np.ndarray:
    m, e = _FORMATS[fmt]
    bias = (1 << (e - 1)) - 1
    tiny = 2.0 ** (1 - bias - m)
    largest = (2 - 2.0**-m) * 2.0**bias
    vals = [
        0.0,
        -0.0,
        np.inf,
        -np.inf,
        np.nan,
        1.0,
        -1.0,
        1.5,
        3.0,
        0.1,
        -7.25,
        tiny,
        -tiny,
        2.0 ** (1 - bias),
        largest,
        -largest,
        2.0 ** (bias // 2),
        2.0 ** -(bias // 2),
    ]
    out = np.asarray(vals, np.float32)
    if fmt == "fp16":
        out = out.astype(np.float16).astype(np.float32)
    elif fmt == "bf16":
        out = out.astype(ml_dtypes.bfloat16).astype(np.float32)
    return out


def _ieee_reference(op: str, x: float, y: float, fmt: str) -> float:
    """The IEEE-754 result (RNE) of op on format values x, y, via Fractions; NaN as float nan."""
    m, e = _FORMATS[fmt]

    def rnd(q: Fraction, zero_sign: float) -> float:
        if q == 0:
            return math.copysign(0.0, zero_sign)
        v = float(round_fraction(q, m, e))  # exact: format values are float64 values
        return v if v != 0 else math.copysign(0.0, zero_sign)

    if op == "sqrt":
        if math.isnan(x) or x < 0:
            return math.nan
        if x == 0 or math.isinf(x):
            return x
        return rnd(_sqrt_rne(Fraction(x), m, e), 1.0)
    if math.isnan(x) or math.isnan(y):
        return math.nan
    sx, sy = math.copysign(1.0, x), math.copysign(1.0, y)
    if op == "sub":
        op, y, sy = "add", -y, -sy
    if op == "add":
        if math.isinf(x) or math.isinf(y):
            if math.isinf(x) and math.isinf(y) and sx != sy:
                return math.nan
            return x if math.isinf(x) else y
        q = Fraction(x) + Fraction(y)
        if q == 0:  # exact zero: -0 only for (-0) + (-0) under round-to-nearest
            return -0.0 if (x == 0 and y == 0 and sx < 0 and sy < 0) else 0.0
        return rnd(q, 1.0)
    sign = sx * sy
    if op == "mul":
        if math.isinf(x) or math.isinf(y):
            return math.nan if (x == 0 or y == 0) else math.copysign(math.inf, sign)
        return rnd(Fraction(x) * Fraction(y), sign)
    if op == "div":
        if (math.isinf(x) and math.isinf(y)) or (x == 0 and y == 0):
            return math.nan
        if math.isinf(x) or y == 0:
            return math.copysign(math.inf, sign)
        if math.isinf(y):
            return math.copysign(0.0, sign)
        return rnd(Fraction(x) / Fraction(y), sign)
    raise ValueError(op)


def _sqrt_rne(q: Fraction, m: int, e: int) -> Fraction:
    """A rational that rounds (RNE, format (m, e)) exactly as sqrt(q) does."""
    bias = (1 << (e - 1)) - 1
    lg = q.numerator.bit_length() - q.denominator.bit_length()
    if Fraction(2) ** lg > q:
        lg -= 1
    ex = max(lg // 2, 1 - bias)
    quantum = Fraction(2) ** (ex - m)
    t = q / (quantum * quantum)  # sqrt(q) / quantum = sqrt(t)
    n = math.isqrt(t.numerator // t.denominator)
    # sqrt(t) in [n, n+1); compare with the midpoint n + 1/2 exactly.
    mid_sq = (Fraction(2 * n + 1, 2)) ** 2
    if t == n * n:
        return n * quantum
    if t == mid_sq:
        return (Fraction(2 * n + 1, 2)) * quantum  # an exact tie: let the rounding break it
    # Not a tie: any rational strictly between n and n+1 on the correct side of the midpoint.
    return (n + (Fraction(3, 4) if t > mid_sq else Fraction(1, 4))) * quantum


def _is_f32_subnormal(v: Fraction) -> bool:
    return v != 0 and abs(v) < _F32_MIN_NORMAL


def float_rounding_evidence(
    semantics_of: Callable[[str], str],
    formats=("fp32", "fp16", "bf16"),
    *,
    samples: int = 1500,
    seed: int = 0,
) -> Evidence:
    """Float emulation of + - * / sqrt vs independent correct rounding, bit for bit.

    Inputs are values of the format: all pairs of special values (±0, ±inf, NaN, smallest
    subnormal, smallest normal, largest, ...) plus random bit patterns. Cases whose inputs or
    exact result are float32 subnormals are counted separately (XLA:CPU flushes them: FTZ/DAZ);
    the claim is about all other cases.
    """
    rng = np.random.default_rng(seed)
    report, ftz_seen = [], 0
    for fmt in formats:
        sem = semantics_of(fmt)
        nbits = 32 if fmt == "fp32" else 16
        sp = _specials(fmt)
        xs = [
            np.repeat(sp, len(sp)),
            _format_values(fmt, rng.integers(0, 2**nbits, samples, dtype=np.uint64)),
        ]
        ys = [
            np.tile(sp, len(sp)),
            _format_values(fmt, rng.integers(0, 2**nbits, samples, dtype=np.uint64)),
        ]
        # Random values of moderate size too (full bit patterns mostly overflow in * and /).
        mid = _format_values(fmt, rng.integers(0, 2**nbits, samples, dtype=np.uint64))
        mid = np.where(np.isfinite(mid) & (mid != 0), mid, 1.0).astype(np.float32)
        scale = np.float32(2.0) ** rng.integers(-6, 7, samples).astype(np.float32)
        xs.append(np.asarray(mid / np.max(np.abs(mid)) * scale, np.float32))
        ys.append(np.asarray(np.roll(mid, 1) / np.max(np.abs(mid)) * scale[::-1], np.float32))
        X, Y = np.concatenate(xs), np.concatenate(ys)
        if fmt != "fp32":
            X, Y = _round_to(fmt, X), _round_to(fmt, Y)
        outs = {
            "add": evaluate(lambda a, b: a + b, X, Y, semantics=sem),
            "sub": evaluate(lambda a, b: a - b, X, Y, semantics=sem),
            "mul": evaluate(lambda a, b: a * b, X, Y, semantics=sem),
            "div": evaluate(lambda a, b: a / b, X, Y, semantics=sem),
            "sqrt": evaluate(jnp.sqrt, X, semantics=sem),
        }
        n_ok = 0
        for op, got in outs.items():
            got = np.asarray(got, np.float32)
            for i in range(len(X)):
                x, y = float(X[i]), float(Y[i])
                want = _ieee_reference(op, x, y, fmt)
                g = float(got[i])
                args = (x,) if op == "sqrt" else (x, y)
                subnormal = any(
                    _is_f32_subnormal(Fraction(a)) for a in args if math.isfinite(a)
                ) or (
                    (math.isfinite(want) and _is_f32_subnormal(Fraction(want)))
                    or (want == 0 and _exact_nonzero(op, x, y))
                )
                same = (math.isnan(g) and math.isnan(want)) or (
                    g == want and math.copysign(1.0, g) == math.copysign(1.0, want)
                )
                if same:
                    n_ok += 1
                    continue
                if subnormal:
                    ftz_seen += 1
                    continue
                return Evidence(
                    False,
                    f"{sem}: {op} is not correctly rounded",
                    {
                        "format": fmt,
                        "op": op,
                        "x": x,
                        "y": None if op == "sqrt" else y,
                        "emulated": g,
                        "correctly_rounded": want,
                    },
                )
        report.append(f"{fmt}: {n_ok} ok")
    return Evidence(
        True,
        "; ".join(report) + f"; {ftz_seen} cases with float32-subnormal inputs/results "
        "differ (XLA:CPU flush-to-zero), excluded",
    )


def _exact_nonzero(op, x, y) -> bool:
    if not (math.isfinite(x) and (op == "sqrt" or math.isfinite(y))):
        return False
    if op == "mul":
        return x != 0 and y != 0
    if op == "div":
        return x != 0 and y != 0
    return False


def _round_to(fmt: str, a: np.ndarray) -> np.ndarray:
    dt = np.float16 if fmt == "fp16" else ml_dtypes.bfloat16
    with np.errstate(over="ignore", invalid="ignore"):  # out-of-range samples become ±inf: wanted
        return a.astype(dt).astype(np.float32)


@claim(
    "float-emulation-rounding-on-sampled-values",
    "on a stated sample of format values (all pairs of 18 special values: ±0, ±inf, NaN, "
    "subnormal and normal extremes, ...; plus 3 x 1500 seeded random values per format), "
    "float[fp32], float[fp16] and float[bf16] compute + - * / sqrt as the correctly rounded "
    "(round-to-nearest-even) exact result; cases touching float32 subnormals are excluded and "
    "counted (XLA:CPU flushes them)",
    "exact-enumerated",
    about="tljax.interpret._float",
    tags=("float",),
    scope="family",
    family="float_rounding_evidence(): 18x18 special pairs + 3 x 1500 seeded values per format "
    "(fp32, fp16, bf16)",
)
def _float_claim() -> Evidence:
    try:
        get_semantics("float[fp16]")
    except TljaxError as err:
        raise Unavailable(f"the float emulation semantics is not installed ({err})") from err
    return float_rounding_evidence(lambda fmt: f"float[{fmt}]")


# ----------------------------------------------------------------------------------------------
# Reference semantics == jax.jit, bit for bit.


def _zoo():
    k = jax.random.split(jax.random.key(0), 8)
    x3 = jax.random.normal(k[0], (4, 3))
    W1, W2 = jax.random.normal(k[1], (3, 5)), jax.random.normal(k[2], (5, 2))

    def mlp(x):
        return jax.nn.relu(x @ W1) @ W2

    def attention(x):
        q = x @ W1
        return jax.nn.softmax(q @ q.T / jnp.sqrt(5.0)) @ q

    def rnn(x):
        def step(h, xt):
            h = jnp.tanh(h @ jnp.eye(3) * 0.5 + xt)
            return h, h

        return jax.lax.scan(step, jnp.zeros(3), x)[1]

    def control(x):
        y = jax.lax.cond(jnp.sum(x) > 0, lambda v: v * 2.0, lambda v: -v, x)
        return jax.lax.fori_loop(0, 3, lambda i, v: jnp.sin(v) + i, y)

    def while_loop(x):
        return jax.lax.while_loop(
            lambda c: c[1] < 4, lambda c: (c[0] * 1.5 + 0.1, c[1] + 1), (x, 0)
        )[0]

    @jax.custom_vjp
    def clip_grad(x):
        return jnp.clip(x, -1.0, 1.0)

    clip_grad.defvjp(lambda x: (clip_grad(x), None), lambda _, g: (g,))

    def layernorm_gelu(x):
        m = jnp.mean(x, axis=-1, keepdims=True)
        v = jnp.var(x, axis=-1, keepdims=True)
        return jax.nn.gelu((x - m) * jax.lax.rsqrt(v + 1e-5)) + clip_grad(x)

    def grad_mlp(x):
        return jax.grad(lambda x: jnp.sum(mlp(x) ** 2))(x)

    def conv(x):
        return jax.lax.conv_general_dilated(
            x[None, None], jnp.ones((2, 1, 2, 2)) * 0.3, (1, 1), "SAME"
        )

    return [
        (f.__name__, f, (x3,))
        for f in (mlp, attention, rnn, control, while_loop, layernorm_gelu, grad_mlp, conv)
    ]


def reference_evidence(programs=None, *, against: str = "jit") -> Evidence:
    """tljax.evaluate(f, x, semantics="reference") vs JAX, bitwise, per program (under jit when
    compared against jit, eagerly when compared against eager execution).

    Args:
      programs: ``[(name, f, args)]`` (default: the claim zoo).
      against: ``"jit"`` (``jax.jit(f)(*args)``) or ``"eager"`` (``f(*args)``, op by op).
    """
    names, mismatches = [], []
    for name, f, args in programs if programs is not None else _zoo():
        if against == "jit":
            # The reference semantics run under jit must equal jax.jit(f): XLA sees the same ops.
            ref = jtu.tree_leaves(
                jax.jit(lambda *a, f=f: evaluate(f, *a, semantics="reference"))(*args)
            )
        else:
            ref = jtu.tree_leaves(evaluate(f, *args, semantics="reference"))
        other = jtu.tree_leaves(jax.jit(f)(*args) if against == "jit" else f(*args))
        for i, (a, b) in enumerate(zip(ref, other, strict=True)):
            a, b = np.asarray(a), np.asarray(b)
            if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
                n_bad = int(np.sum(a != b)) if a.shape == b.shape else -1
                mismatches.append(
                    {
                        "program": name,
                        "output": i,
                        "elements_differing": n_bad,
                        "reference": a.reshape(-1)[:3].tolist(),
                        against: b.reshape(-1)[:3].tolist(),
                    }
                )
                break
        else:
            names.append(name)
    if mismatches:
        return Evidence(
            False,
            f"{len(mismatches)} program(s) differ bitwise from {against} "
            f"({', '.join(m['program'] for m in mismatches)}); equal: {', '.join(names)}",
            mismatches[0] if len(mismatches) == 1 else mismatches,
        )
    return Evidence(True, f"{len(names)} programs bitwise equal to {against}: {', '.join(names)}")


@claim(
    "reference-equals-jit",
    "the reference semantics reproduces jax.jit bit for bit on the claim zoo (MLP, attention, scan "
    "RNN, cond + fori_loop, while_loop, layernorm + gelu + custom_vjp, grad of an MLP, conv), "
    "each at one seeded input",
    "exact-enumerated",
    about="tljax.interpret._reference",
    tags=("interpret",),
    scope="family",
    family="_zoo(): 8 programs, one seeded (4, 3) input each",
)
def _reference_claim() -> Evidence:
    return reference_evidence(against="jit")


@claim(
    "reference-equals-eager",
    "the reference semantics reproduces eager (op-by-op) JAX bit for bit on the claim zoo, each "
    "program at one seeded input",
    "exact-enumerated",
    about="tljax.interpret._reference",
    tags=("interpret",),
    scope="family",
    family="_zoo(): 8 programs, one seeded (4, 3) input each",
)
def _reference_eager_claim() -> Evidence:
    return reference_evidence(against="eager")


# ----------------------------------------------------------------------------------------------
# Derivatives.


@claim(
    "jax-ad-rules-agree-with-sympy",
    "for each audit program of the enumerated list tljax.proofs._audit.default_cases() (a small "
    "program at fixed shapes and params per differentiable primitive with an exact or symbolic "
    "rule), JAX's JVP equals J t and its VJP equals J^T v, J = sympy's Jacobian, for all real "
    "inputs (symbolic identities; piecewise ones on every piece, kink conventions stated; rules "
    "with float32-rounded constants agree up to that rounding); other shapes and params are not "
    "checked, primitives without a program are listed as not auditable",
    "symbolic",
    about="jax.interpreters.ad rules",
    tags=("grad", "audit"),
    scope="family",
    family="default_cases(): one or more programs per audited primitive",
)
def _audit_claim() -> Evidence:
    rows = audit_rules()
    t = audit_totals(rows)
    failed = [r for r in rows if r.auditable and not r.passed]
    if failed:
        r = failed[0]
        return Evidence(
            False,
            f"{t['failed']} primitive(s) fail, first: {r.primitive}: {r.detail}",
            r.counterexample or {"primitive": r.primitive},
        )
    approx = [r.primitive for r in rows if r.passed and "ok≈" in (r.jvp, r.vjp)]
    return Evidence(
        True,
        f"{t['passed']}/{t['audited']} audited programs pass ({t['not_auditable']} primitives "
        f"not auditable); up to a float32 constant: {', '.join(approx) or 'none'}",
    )


_W2 = np.asarray([[1.0, -2.0, 0.5], [0.25, 1.0, -1.0]], np.float32)


def _mlp_loss(w):
    h = jax.nn.relu(w @ jnp.asarray([1.0, -2.0]) + jnp.asarray([0.5, -0.25, 1.0]))
    return jnp.sum((jnp.asarray(_W2) @ h - jnp.asarray([1.0, 0.0])) ** 2)


_W3 = np.asarray([[1.0, -0.5], [0.25, 2.0], [-1.0, 0.5]], np.float32)


def _stable_softmax(x):
    # Written out (not jax.nn.softmax): jax.nn.softmax carries a -inf constant (reduce_max's
    # initial value), which the exact semantics rejects as not a real number.
    e = jnp.exp(x - jax.lax.stop_gradient(jnp.max(x)))
    return e / jnp.sum(e)


def _softmax_tanh_loss(x):
    return jnp.sum(jnp.tanh(_stable_softmax(x) @ jnp.asarray(_W3)))


@claim(
    "grad-exact-mlp-and-softmax",
    "at one stated point each: jax.grad of a ReLU MLP loss (a point off the kinks) equals sympy's "
    "derivative exactly as rationals (exact semantics), and for a tanh(softmax) loss sympy's "
    "closed-form gradient lies inside the exact semantics' arb enclosure of jax.grad",
    "exact-enumerated",
    about="jax.grad",
    tags=("grad",),
    scope="family",
    family="two losses at one stated point each",
)
def _grad_claim() -> Evidence:
    w = np.asarray([[0.5, 0.25], [1.0, -1.0], [-0.75, 0.5]], np.float32)
    r1 = check_grad(_mlp_loss, w)
    r2 = check_grad(_softmax_tanh_loss, np.asarray([0.5, -1.0, 2.0], np.float32))
    ok = r1.equal and r2.equal and not r1.at_kink and r1.method == r2.method == "exact"
    return Evidence(
        ok,
        f"MLP: {r1.detail}; softmax/tanh: {r2.detail}",
        None if ok else {"mlp": r1.detail, "softmax_tanh": r2.detail},
    )
