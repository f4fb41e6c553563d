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
import numpy as np
import sympy
from flint import arb, ctx, fmpq

from ..core._errors import TljaxError
from ..interpret._symbolic import round_fraction
from ._claims import Evidence, claim
from ._symbolic_api import symbolic, symbols

Fraction = fractions.Fraction


class Unavailable(TljaxError, RuntimeError):
    """A claim's subject is missing (a tljax module that has not landed, an optional dependency)."""


# ----------------------------------------------------------------------------------------------
# Exact evaluation: the exact semantics when installed, else exact rationals through sympy.


def exact_available() -> bool:
    """Whether the ``"exact"`` semantics is installed."""
    from ..interpret._registry import get_semantics

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
        from ..interpret._registry import evaluate

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
    try:
        from ..layers._attention import dot_product_attention, flash_attention
    except ImportError as err:
        raise Unavailable(f"tljax.layers attention is not installed ({err})") from err
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
    "tljax.layers.flash_attention equals dot_product_attention exactly over the reals, for every "
    "block_q, block_k dividing the sequence length, causal or not (exp := 2**x, scale 1, integer "
    "queries and keys so every score is an integer and every value rational)",
    "exact-enumerated",
    about="tljax.layers.flash_attention",
    tags=("layers", "attention"),
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
)
def _softmax_sum_claim() -> Evidence:
    x = symbols("x", 4)
    s = symbolic(lambda x: jnp.sum(jax.nn.softmax(x)), x)
    (e,), n = _generalise_max([s], "s")
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
    "tljax.layers.linear_recurrence_parallel (associative scan) equals "
    "linear_recurrence_sequential (lax.scan) exactly over the reals, lengths 1..9",
    "exact-enumerated",
    about="tljax.layers._ssm",
    tags=("layers", "ssm"),
)
def _scan_claim() -> Evidence:
    try:
        from ..layers._ssm import linear_recurrence_parallel, linear_recurrence_sequential
    except ImportError as err:
        raise Unavailable(f"tljax.layers SSM recurrences are not installed ({err})") from err
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
    comp = symbolic(lambda e1, e2, h: (lambda c: c[0] @ h + c[1])(_compose(e1, e2)), e[0], e[1], h)
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


def _relax_module():
    try:
        from ..bounds import _relax
    except ImportError as err:
        raise Unavailable(f"tljax.bounds relaxations are not installed ({err})") from err
    return _relax


@claim(
    "crown-relu-relaxation-symbolic",
    "textbook CROWN ReLU relaxation: for all l < 0 < u, x in [l, u], alpha in [0, 1]: "
    "alpha*x <= relu(x) <= u (x - l) / (u - l)",
    "symbolic",
    about="CROWN (Zhang et al. 2018)",
    tags=("bounds",),
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


_RELU_BOXES = [
    (-1.0, 1.0),
    (-3.0, 0.5),
    (-0.25, 4.0),
    (0.5, 2.0),
    (-2.0, -0.5),
    (-1e-3, 1e-3),
    (-7.5, 7.25),
    (0.0, 1.0),
    (-1.0, 0.0),
    (-0.1, 3.3),
]


def relu_relaxation_evidence(
    relax_relu: Callable, boxes=_RELU_BOXES, alphas=(None, 0.0, 0.5, 1.0)
) -> Evidence:
    """Exact check of ``relax_relu(l, u, alpha) -> (a_l, b_l, a_u, b_u)`` on each box.

    The lines and relu are linear on [l, 0] and [0, u], so checking x in {l, 0, u} ∩ [l, u] in
    exact arithmetic proves the box.
    """
    n = 0
    for (lo, hi), alpha in itertools.product(boxes, alphas):
        l, u = jnp.float32(lo), jnp.float32(hi)
        al = None if alpha is None else jnp.float32(alpha)
        a_l, b_l, a_u, b_u = (Fraction(float(v)) for v in relax_relu(l, u, al))
        L, U = Fraction(float(l)), Fraction(float(u))
        for x in {L, U, *([Fraction(0)] if L < 0 < U else [])}:
            r = max(x, Fraction(0))
            if not (a_l * x + b_l <= r <= a_u * x + b_u):
                return Evidence(
                    False,
                    "relaxation violated",
                    {
                        "l": lo,
                        "u": hi,
                        "alpha": alpha,
                        "x": str(x),
                        "lower_line": str(a_l * x + b_l),
                        "relu": str(r),
                        "upper_line": str(a_u * x + b_u),
                    },
                )
        n += 1
    return Evidence(True, f"{n} (box, alpha) cases proved exactly at the breakpoints")


@claim(
    "crown-relu-relaxation-sound",
    "tljax.bounds' ReLU relaxation (relax_relu) is sound: a_l x + b_l <= relu(x) <= a_u x + b_u on "
    "[l, u], for 10 float32 boxes (unstable, stable, tiny, touching 0) and alpha in "
    "{default, 0, 0.5, 1}",
    "exact-enumerated",
    about="tljax.bounds._relax.relax_relu",
    tags=("bounds",),
)
def _relu_library_claim() -> Evidence:
    return relu_relaxation_evidence(_relax_module().relax_relu)


def _arb_of(v) -> arb:
    return arb(fmpq(v.numerator, v.denominator))


def _mono(f):
    """A monotone increasing f on an interval: enclosure from its ends (tight, unlike ball f)."""

    def enc(lo: Fraction, hi: Fraction) -> arb:
        a, b = f(_arb_of(lo)), f(_arb_of(hi))
        return a.union(b)

    return enc


def _arb_sigmoid(x: arb) -> arb:
    return 1 / (1 + (-x).exp())


_SMOOTH = {
    # name: (f on a ball, monotone enclosure of f, enclosure of f' on an interval)
    "tanh": (arb.tanh, _mono(arb.tanh), lambda lo, hi: 1 - _mono(arb.tanh)(lo, hi) ** 2),
    "logistic": (
        _arb_sigmoid,
        _mono(_arb_sigmoid),
        lambda lo, hi: (lambda s: s * (1 - s))(_mono(_arb_sigmoid)(lo, hi)),
    ),
}


def certify_line(
    fn: str,
    a: Fraction,
    b: Fraction,
    sign: int,
    l: Fraction,
    u: Fraction,
    *,
    max_boxes: int = 20000,
    prec: int = 128,
):
    """Certifies ``sign * (f(x) - (a x + b)) >= 0`` for all x in [l, u] (f = tanh or logistic).

    Branch and bound with arb interval arithmetic: a subinterval is proved by the natural
    enclosure or by the mean-value form ``g(c) + g'(X)(X - c)``; a midpoint where g is certainly
    negative is a counterexample.

    Returns:
      ``(True, n_boxes)``, ``(False, x)`` with a violating point, or ``(None, n)`` when the budget
      ran out (not decided).
    """
    f, f_enc, df_enc = _SMOOTH[fn]
    old = ctx.prec
    ctx.prec = prec
    try:
        A, B, s = _arb_of(a), _arb_of(b), arb(sign)
        stack, n = [(l, u)], 0
        while stack:
            lo, hi = stack.pop()
            n += 1
            if n > max_boxes:
                return None, n
            X = _arb_of(lo).union(_arb_of(hi))
            if (s * (f_enc(lo, hi) - (A * X + B))).lower() >= 0:
                continue
            c = (lo + hi) / 2
            C = _arb_of(c)
            gc = s * (f(C) - (A * C + B))
            if gc.upper() < 0:
                return False, c
            dg = s * (df_enc(lo, hi) - A)
            half = _arb_of((hi - lo) / 2)
            if (gc - abs(dg).upper() * half).lower() >= 0:
                continue
            if hi - lo < Fraction(1, 2**60):
                return None, n
            stack.extend([(lo, c), (c, hi)])
        return True, n
    finally:
        ctx.prec = old


_SMOOTH_BOXES = [
    (-1.0, 1.0),
    (-3.0, 0.5),
    (0.25, 4.0),
    (-6.0, -2.0),
    (-0.01, 0.02),
    (1.0, 1.0),
    (-8.0, 8.0),
    (2.0, 2.5),
    (-20.0, 3.0),
    (-0.5, 12.0),
]


def smooth_relaxation_evidence(relax: Callable, fn: str, boxes=_SMOOTH_BOXES) -> Evidence:
    """Certifies ``relax(l, u) -> (a_l, b_l, a_u, b_u)`` for f = `fn` over each box (see
    `certify_line`)."""
    total = 0
    for lo, hi in boxes:
        l, u = jnp.float32(lo), jnp.float32(hi)
        a_l, b_l, a_u, b_u = (Fraction(float(v)) for v in relax(l, u))
        L, U = Fraction(float(l)), Fraction(float(u))
        for sign, a, b, which in ((1, a_l, b_l, "lower"), (-1, a_u, b_u, "upper")):
            ok, info = certify_line(fn, a, b, sign, L, U)
            if ok is False:
                return Evidence(
                    False,
                    f"{which} line violated",
                    {
                        "fn": fn,
                        "l": lo,
                        "u": hi,
                        "x": str(info),
                        "slope": str(a),
                        "intercept": str(b),
                    },
                )
            if ok is None:
                return Evidence(
                    False,
                    f"not certified within the budget ({info} boxes)",
                    {"fn": fn, "l": lo, "u": hi, "line": which},
                )
            total += info
    return Evidence(
        True, f"{len(boxes)} intervals x 2 lines certified with arb ({total} sub-intervals)"
    )


def _smooth_claim(fn: str) -> Evidence:
    relax = _relax_module()
    opts = relax.Options()
    return smooth_relaxation_evidence(lambda l, u: relax.relax_smooth(fn, l, u, opts), fn)


@claim(
    "crown-tanh-relaxation-sound",
    "tljax.bounds' tanh relaxation (relax_smooth('tanh'), float-sound options) satisfies "
    "a_l x + b_l <= tanh(x) <= a_u x + b_u for every real x in [l, u], for 10 float32 intervals",
    "certified-bound",
    about="tljax.bounds._relax.relax_smooth",
    tags=("bounds",),
)
def _tanh_claim() -> Evidence:
    return _smooth_claim("tanh")


@claim(
    "crown-sigmoid-relaxation-sound",
    "tljax.bounds' sigmoid relaxation (relax_smooth('logistic'), float-sound options) satisfies "
    "a_l x + b_l <= sigmoid(x) <= a_u x + b_u for every real x in [l, u], for 10 float32 intervals",
    "certified-bound",
    about="tljax.bounds._relax.relax_smooth",
    tags=("bounds",),
)
def _sigmoid_claim() -> Evidence:
    return _smooth_claim("logistic")


# ----------------------------------------------------------------------------------------------
# IBP of an affine layer.


def _bound_fn():
    try:
        from ..bounds._api import bound
        from ..bounds._box import Box
    except ImportError as err:
        raise Unavailable(f"tljax.bound is not installed ({err})") from err
    return bound, Box


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
    "tljax.bound(method='ibp', float_sound=False) of an affine layer equals the exact range "
    "[min, max] of each output over the box (vertex argument, exact arithmetic), and "
    "float_sound=True contains it",
    "exact-enumerated",
    about="tljax.bound",
    tags=("bounds",),
)
def _ibp_claim() -> Evidence:
    bound, Box = _bound_fn()
    return ibp_affine_evidence(bound, Box)


# ----------------------------------------------------------------------------------------------
# Float emulation: correct rounding, against an independent Fraction-based rounding.

# (mantissa bits, exponent bits) of the formats checked.
_FORMATS = {"fp32": (23, 8), "fp16": (10, 5), "bf16": (7, 8)}
_F32_MIN_NORMAL = Fraction(2) ** -126


def _format_values(fmt: str, bits: np.ndarray) -> np.ndarray:
    """float32 arrays holding values of the format, from raw bit patterns."""
    import ml_dtypes

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
        import ml_dtypes

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
        if math.isinf(x) and math.isinf(y) or (x == 0 and y == 0):
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
        from ..interpret._registry import evaluate

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
                    math.isfinite(want)
                    and _is_f32_subnormal(Fraction(want))
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
    import ml_dtypes

    dt = np.float16 if fmt == "fp16" else ml_dtypes.bfloat16
    with np.errstate(over="ignore", invalid="ignore"):  # out-of-range samples become ±inf: wanted
        return a.astype(dt).astype(np.float32)


@claim(
    "float-emulation-correctly-rounded",
    "float[fp32], float[fp16] and float[bf16] compute + - * / sqrt of format values as the "
    "correctly rounded (round-to-nearest-even) exact result, including ±0, ±inf and NaN; cases "
    "touching float32 subnormals are excluded and counted (XLA:CPU flushes them)",
    "exact-enumerated",
    about="tljax.interpret._float",
    tags=("float",),
)
def _float_claim() -> Evidence:
    from ..interpret._registry import get_semantics

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
    from ..interpret._registry import evaluate

    names, mismatches = [], []
    for name, f, args in programs if programs is not None else _zoo():
        if against == "jit":
            # The reference semantics run under jit must equal jax.jit(f): XLA sees the same ops.
            ref = jtu.tree_leaves(jax.jit(lambda *a, f=f: evaluate(f, *a, semantics="reference"))(*args))
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
    "RNN, cond + fori_loop, while_loop, layernorm + gelu + custom_vjp, grad of an MLP, conv)",
    "exact-enumerated",
    about="tljax.interpret._reference",
    tags=("interpret",),
)
def _reference_claim() -> Evidence:
    return reference_evidence(against="jit")


@claim(
    "reference-equals-eager",
    "the reference semantics reproduces eager (op-by-op) JAX bit for bit on the claim zoo",
    "exact-enumerated",
    about="tljax.interpret._reference",
    tags=("interpret",),
)
def _reference_eager_claim() -> Evidence:
    return reference_evidence(against="eager")


# ----------------------------------------------------------------------------------------------
# Derivatives.


@claim(
    "jax-ad-rules-agree-with-sympy",
    "for every differentiable primitive with an exact or symbolic rule, JAX's JVP equals J t and "
    "its "
    "VJP equals J^T v, J = sympy's Jacobian (symbolic identities; piecewise ones on every piece, "
    "kink conventions stated; rules with float32-rounded constants agree up to that rounding)",
    "symbolic",
    about="jax.interpreters.ad rules",
    tags=("grad", "audit"),
)
def _audit_claim() -> Evidence:
    from ._audit import audit_rules, audit_totals

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
    "jax.grad of a ReLU MLP loss (at a point off the kinks) equals sympy's derivative exactly as "
    "rationals (exact semantics), and for a tanh(softmax) loss sympy's closed-form gradient lies "
    "inside the exact semantics' arb enclosure of jax.grad",
    "exact-enumerated",
    about="jax.grad",
    tags=("grad",),
)
def _grad_claim() -> Evidence:
    from ._grad import check_grad

    w = np.asarray([[0.5, 0.25], [1.0, -1.0], [-0.75, 0.5]], np.float32)
    r1 = check_grad(_mlp_loss, w)
    r2 = check_grad(_softmax_tanh_loss, np.asarray([0.5, -1.0, 2.0], np.float32))
    ok = r1.equal and r2.equal and not r1.at_kink and r1.method == r2.method == "exact"
    return Evidence(
        ok,
        f"MLP: {r1.detail}; softmax/tanh: {r2.detail}",
        None if ok else {"mlp": r1.detail, "softmax_tanh": r2.detail},
    )
