"""Linear recurrences and diagonal state-space layers (S4D/S5-style and Mamba-style).

Everything reduces to the first-order linear recurrence

    h_t = a_t ⊙ h_{t-1} + b_t,    t = 0 .. L-1,   h_{-1} = h0,

computed either with `lax.scan` (sequential, L steps) or with `lax.associative_scan` over the
affine maps `h ↦ a h + b`, whose composition "first (a1, b1), then (a2, b2)" is

    (a1, b1) ∘ (a2, b2) = (a1 a2, a2 b1 + b2)       (associative; log L depth).

Both give the same numbers up to float reassociation, and exactly the same numbers whenever every
product and sum is representable (tested with small dyadic inputs against `fractions`).

The layers keep complex quantities as (real, imaginary) pairs of real arrays, so their graphs
contain only real-valued primitives (`exp`, `cos`, `sin`, `mul`, `add`, ...), which every tljax
semantics understands.
"""

from __future__ import annotations

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jax import lax

from tljax.layers._conv import Conv1d
from tljax.layers._linear import Linear
from tljax.layers._misc import default_float, named_scope

_MODES = ("sequential", "parallel")

# ------------------------------------------------------------------------------------------------
# Recurrences over pytrees with a pluggable product (plain arrays or complex pairs)
# ------------------------------------------------------------------------------------------------


def _mul(x, y):
    return x * y


def _cmul(x, y):
    (xr, xi), (yr, yi) = x, y
    return (xr * yr - xi * yi, xr * yi + xi * yr)


def _add(x, y):
    return jtu.tree_map(jnp.add, x, y)


def _index0(t, i):
    return jtu.tree_map(lambda z: z[i], t)


def _recurrence_sequential(a, b, h0, mul):
    def step(h, ab):
        a_t, b_t = ab
        h = _add(mul(a_t, h), b_t)
        return h, h

    _, hs = lax.scan(step, h0, (a, b))
    return hs


def _recurrence_parallel(a, b, h0, mul):
    # Fold h0 into the first element: h_0 = a_0 h0 + b_0; then h_t is the b-part of the prefix
    # composition of the maps (a_0, b_0'), (a_1, b_1), ...
    first = _add(mul(_index0(a, 0), h0), _index0(b, 0))
    b = jtu.tree_map(lambda bb, f: bb.at[0].set(f), b, first)

    def combine(left, right):
        (a1, b1), (a2, b2) = left, right
        return mul(a1, a2), _add(mul(a2, b1), b2)

    _, hs = lax.associative_scan(combine, (a, b))
    return hs


def _recurrence(a, b, h0, mul, mode, name):
    if mode == "sequential":
        return _recurrence_sequential(a, b, h0, mul)
    if mode == "parallel":
        return _recurrence_parallel(a, b, h0, mul)
    raise ValueError(f"{name}: mode must be 'sequential' or 'parallel', got {mode!r}.")


def _check_recurrence_args(a, b, h0, name):
    a, b, h0 = jnp.asarray(a), jnp.asarray(b), jnp.asarray(h0)
    if b.ndim == 0:
        raise ValueError(f"{name}: b must have a leading time axis, got a scalar.")
    try:
        a = jnp.broadcast_to(a, b.shape)
        h0 = jnp.broadcast_to(h0, b.shape[1:])
    except ValueError:
        raise ValueError(
            f"{name}: a {a.shape} must broadcast to b {b.shape} and h0 {h0.shape} to "
            f"b.shape[1:] = {b.shape[1:]}."
        ) from None
    dtype = jnp.result_type(a, b, h0)
    return a.astype(dtype), b.astype(dtype), h0.astype(dtype)


def linear_recurrence_sequential(a: jax.Array, b: jax.Array, h0: jax.Array) -> jax.Array:
    """All states of `h_t = a_t * h_{t-1} + b_t` by a `lax.scan` over the leading (time) axis.

    Args:
      a: `(L, *S)` (or broadcastable to `b`); real or complex.
      b: `(L, *S)`.
      h0: initial state, broadcastable to `S`.

    Returns:
      `(L, *S)`: `h_0, ..., h_{L-1}`.

    Example:
      >>> import jax.numpy as jnp
      >>> linear_recurrence_sequential(jnp.full(3, 0.5), jnp.ones(3), jnp.zeros(()))
      Array([1.  , 1.5 , 1.75], dtype=float32)
    """
    name = "tljax.layers.linear_recurrence_sequential"
    with jax.named_scope(name):
        a, b, h0 = _check_recurrence_args(a, b, h0, name)
        return _recurrence_sequential(a, b, h0, _mul)


def linear_recurrence_parallel(a: jax.Array, b: jax.Array, h0: jax.Array) -> jax.Array:
    """All states of `h_t = a_t * h_{t-1} + b_t` by `lax.associative_scan` (log-depth).

    Uses the composition `(a1, b1) ∘ (a2, b2) = (a1 a2, a2 b1 + b2)` of the affine maps
    `h ↦ a h + b`; `h0` is folded into the first map. Same arguments and result as
    `linear_recurrence_sequential`.

    Args:
      a: `(L, *S)` (or broadcastable to `b`); real or complex.
      b: `(L, *S)`.
      h0: initial state, broadcastable to `S`.

    Returns:
      `(L, *S)`.

    Example:
      >>> import jax.numpy as jnp
      >>> linear_recurrence_parallel(jnp.full(3, 0.5), jnp.ones(3), jnp.zeros(()))
      Array([1.  , 1.5 , 1.75], dtype=float32)
    """
    name = "tljax.layers.linear_recurrence_parallel"
    with jax.named_scope(name):
        a, b, h0 = _check_recurrence_args(a, b, h0, name)
        return _recurrence_parallel(a, b, h0, _mul)


# ------------------------------------------------------------------------------------------------
# S4D / S5-style diagonal SSM with zero-order hold
# ------------------------------------------------------------------------------------------------


class DiagonalSSM(eqx.Module):
    """Diagonal linear state-space layer (S4D-style), one SSM of size N per channel.

    Continuous system per channel: `x' = A x + B u`, `y = Re(C x) (·2 if complex) + D u`, with
    diagonal `A` (real part `-exp(log_neg_a)` < 0 for stability). Discretised by zero-order hold
    with a learned per-channel step `dt = exp(log_dt)`:

        Abar = exp(dt A),   Bbar = (Abar - 1) / A · B,   x_t = Abar x_{t-1} + Bbar u_t.

    With `complex=True` A, B, C are complex (kept as real/imaginary arrays; S4D-Lin init
    `A_n = -1/2 + iπn`, and the output takes `2 Re(C x)` as S4D does for conjugate pairs);
    with `complex=False` they are real (S4D-Real init `A_n = -(n+1)`).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> ssm = DiagonalSSM(4, 8, key=jax.random.key(0))
      >>> ssm(jnp.ones((16, 4))).shape
      (16, 4)
    """

    log_dt: jax.Array
    log_neg_a: jax.Array
    a_imag: jax.Array | None
    b_real: jax.Array
    b_imag: jax.Array | None
    c_real: jax.Array
    c_imag: jax.Array | None
    d: jax.Array
    d_model: int = eqx.field(static=True)
    state_size: int = eqx.field(static=True)
    mode: str = eqx.field(static=True)

    def __init__(
        self,
        d_model: int,
        state_size: int,
        *,
        complex: bool = True,
        mode: str = "parallel",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dtype: Any = None,
        key: jax.Array,
    ):
        """Create the layer.

        Args:
          d_model: channels H (last axis of the input).
          state_size: state size N per channel.
          complex: complex diagonal A (S4D-Lin init) or real (S4D-Real init).
          mode: `"parallel"` (associative scan) or `"sequential"` (scan).
          dt_min: smallest initial step (steps are log-uniform in `[dt_min, dt_max]`).
          dt_max: largest initial step.
          dtype: parameter dtype (default float32).
          key: PRNG key for the initialisation.
        """
        if mode not in _MODES:
            raise ValueError(
                f"tljax.layers.DiagonalSSM: mode must be one of {_MODES}, got {mode!r}."
            )
        dtype = default_float(dtype)
        kdt, kc1, kc2 = jax.random.split(key, 3)
        H, N = d_model, state_size
        u = jax.random.uniform(kdt, (H,), dtype)
        self.log_dt = math.log(dt_min) + u * (math.log(dt_max) - math.log(dt_min))
        n = jnp.arange(N, dtype=dtype)
        if complex:
            self.log_neg_a = jnp.full((H, N), math.log(0.5), dtype)
            self.a_imag = jnp.broadcast_to(math.pi * n, (H, N))
            self.b_real, self.b_imag = jnp.ones((H, N), dtype), jnp.zeros((H, N), dtype)
            scale = math.sqrt(0.5)  # unit variance for the complex normal C
            self.c_real = jax.random.normal(kc1, (H, N), dtype) * scale
            self.c_imag = jax.random.normal(kc2, (H, N), dtype) * scale
        else:
            self.log_neg_a = jnp.broadcast_to(jnp.log(n + 1), (H, N))
            self.a_imag = self.b_imag = self.c_imag = None
            self.b_real = jnp.ones((H, N), dtype)
            self.c_real = jax.random.normal(kc1, (H, N), dtype)
        self.d = jnp.ones((H,), dtype)
        self.d_model, self.state_size, self.mode = d_model, state_size, mode

    def discretise(self) -> tuple[Any, Any]:
        """Zero-order hold: `(Abar, Bbar)`, each `(H, N)` (real/imaginary pairs if complex)."""
        dt = jnp.exp(self.log_dt)[:, None]
        a_re = -jnp.exp(self.log_neg_a)
        if self.a_imag is None:
            abar = jnp.exp(dt * a_re)
            return abar, (abar - 1.0) / a_re * self.b_real
        a_im = self.a_imag
        mag = jnp.exp(dt * a_re)
        abar = (mag * jnp.cos(dt * a_im), mag * jnp.sin(dt * a_im))
        # (Abar - 1) / A = (Abar - 1) · conj(A) / |A|²
        norm = a_re * a_re + a_im * a_im
        ratio = _cmul((abar[0] - 1.0, abar[1]), (a_re / norm, -a_im / norm))
        return abar, _cmul(ratio, (self.b_real, self.b_imag))

    @named_scope("tljax.layers.DiagonalSSM")
    def __call__(self, u: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Run the SSM over a sequence.

        Args:
          u: `(L, d_model)`; batch with `jax.vmap`.
          key: ignored.

        Returns:
          `(L, d_model)`.
        """
        del key
        if u.ndim != 2 or u.shape[1] != self.d_model:
            raise ValueError(
                f"tljax.layers.DiagonalSSM: expected input (L, {self.d_model}), got {u.shape}; "
                "use jax.vmap for batches."
            )
        abar, bbar = self.discretise()
        L = u.shape[0]
        uu = u[:, :, None]
        name = "tljax.layers.DiagonalSSM"
        if self.a_imag is None:
            a = jnp.broadcast_to(abar, (L, *abar.shape))
            h = _recurrence(a, bbar * uu, jnp.zeros_like(abar), _mul, self.mode, name)
            y = jnp.sum(h * self.c_real, axis=-1)
        else:
            a = tuple(jnp.broadcast_to(t, (L, *t.shape)) for t in abar)
            b = (bbar[0] * uu, bbar[1] * uu)
            h0 = (jnp.zeros_like(abar[0]), jnp.zeros_like(abar[1]))
            h = _recurrence(a, b, h0, _cmul, self.mode, name)
            y = 2.0 * jnp.sum(h[0] * self.c_real - h[1] * self.c_imag, axis=-1)
        return y + self.d * u


# ------------------------------------------------------------------------------------------------
# Mamba-style selective scan
# ------------------------------------------------------------------------------------------------


def selective_scan(
    u: jax.Array,
    delta: jax.Array,
    A: jax.Array,
    B: jax.Array,
    C: jax.Array,
    D: jax.Array | None = None,
    *,
    h0: jax.Array | None = None,
    mode: str = "parallel",
) -> jax.Array:
    """Mamba's selective scan (S6) with input-dependent step, input and output matrices.

    Per time step t, channel d and state n:

        Abar = exp(Δ_t,d · A_d,n),   Bbar u = Δ_t,d · B_t,n · u_t,d   (Euler, as Mamba),
        h_t,d,n = Abar · h_{t-1},d,n + Bbar u,    y_t,d = Σ_n C_t,n h_t,d,n + D_d u_t,d.

    Args:
      u: `(L, D_in)` inputs.
      delta: `(L, D_in)` positive steps (Mamba: softplus of a linear map of u).
      A: `(D_in, N)` (negative for stability).
      B: `(L, N)`.
      C: `(L, N)`.
      D: optional `(D_in,)` skip weights.
      h0: optional initial state `(D_in, N)` (default 0).
      mode: `"parallel"` (associative scan) or `"sequential"` (scan).

    Returns:
      `(L, D_in)`.

    Example:
      >>> import jax.numpy as jnp
      >>> y = selective_scan(jnp.ones((5, 3)), jnp.full((5, 3), 0.1), -jnp.ones((3, 2)),
      ...                    jnp.ones((5, 2)), jnp.ones((5, 2)))
      >>> y.shape
      (5, 3)
    """
    name = "tljax.layers.selective_scan"
    with jax.named_scope(name):
        L, Din = u.shape
        N = A.shape[-1]
        if delta.shape != (L, Din) or A.shape != (Din, N) or B.shape != (L, N) or C.shape != (L, N):
            raise ValueError(
                f"{name}: expected u (L, D), delta (L, D), A (D, N), B (L, N), C (L, N); got "
                f"u {u.shape}, delta {delta.shape}, A {A.shape}, B {B.shape}, C {C.shape}."
            )
        dA = delta[:, :, None] * A[None]
        a = jnp.exp(dA)
        b = (delta * u)[:, :, None] * B[:, None, :]
        h0 = jnp.zeros((Din, N), a.dtype) if h0 is None else h0
        h = _recurrence(a, b, h0, _mul, mode, name)
        y = jnp.einsum("ldn,ln->ld", h, C)
        if D is not None:
            y = y + D * u
        return y


def _inverse_softplus(y: jax.Array) -> jax.Array:
    return y + jnp.log(-jnp.expm1(-y))


class SelectiveSSM(eqx.Module):
    """Mamba's selective SSM (S6) as a layer: Δ, B, C computed from the input.

    `x_proj` maps `u_t` to `(Δ_low, B_t, C_t)`; `Δ = softplus(dt_proj(Δ_low))`; `A = -exp(A_log)`
    (init `A_d,n = -(n+1)`, S4D-Real); then `selective_scan`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> s6 = SelectiveSSM(8, 4, key=jax.random.key(0))
      >>> s6(jnp.ones((10, 8))).shape
      (10, 8)
    """

    x_proj: Linear
    dt_proj: Linear
    A_log: jax.Array
    D: jax.Array
    d_model: int = eqx.field(static=True)
    state_size: int = eqx.field(static=True)
    dt_rank: int = eqx.field(static=True)
    mode: str = eqx.field(static=True)

    def __init__(
        self,
        d_model: int,
        state_size: int = 16,
        dt_rank: int | None = None,
        *,
        mode: str = "parallel",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dtype: Any = None,
        key: jax.Array,
    ):
        """Create the layer.

        Args:
          d_model: channels D (last axis of the input).
          state_size: state size N per channel.
          dt_rank: rank of the Δ projection (default `ceil(d_model / 16)`, as Mamba).
          mode: `"parallel"` or `"sequential"`.
          dt_min: smallest initial Δ (initial Δ is log-uniform in `[dt_min, dt_max]`).
          dt_max: largest initial Δ.
          dtype: parameter dtype (default float32).
          key: PRNG key for the initialisation.
        """
        if mode not in _MODES:
            raise ValueError(
                f"tljax.layers.SelectiveSSM: mode must be one of {_MODES}, got {mode!r}."
            )
        dtype = default_float(dtype)
        dt_rank = dt_rank or -(-d_model // 16)
        k1, k2, k3 = jax.random.split(key, 3)
        self.x_proj = Linear(d_model, dt_rank + 2 * state_size, bias=False, dtype=dtype, key=k1)
        dt_proj = Linear(dt_rank, d_model, dtype=dtype, key=k2)
        u = jax.random.uniform(k3, (d_model,), dtype)
        dt = jnp.exp(math.log(dt_min) + u * (math.log(dt_max) - math.log(dt_min)))
        # Bias so that softplus(bias) is the sampled initial step (Mamba's init).
        self.dt_proj = eqx.tree_at(lambda lin: lin.bias, dt_proj, _inverse_softplus(dt))
        self.A_log = jnp.log(
            jnp.broadcast_to(jnp.arange(1, state_size + 1, dtype=dtype), (d_model, state_size))
        )
        self.D = jnp.ones((d_model,), dtype)
        self.d_model, self.state_size, self.dt_rank, self.mode = d_model, state_size, dt_rank, mode

    @named_scope("tljax.layers.SelectiveSSM")
    def __call__(self, u: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Run over a sequence.

        Args:
          u: `(L, d_model)`; batch with `jax.vmap`.
          key: ignored.

        Returns:
          `(L, d_model)`.
        """
        del key
        if u.ndim != 2 or u.shape[1] != self.d_model:
            raise ValueError(
                f"tljax.layers.SelectiveSSM: expected input (L, {self.d_model}), got {u.shape}; "
                "use jax.vmap for batches."
            )
        proj = self.x_proj(u)
        r, n = self.dt_rank, self.state_size
        delta = jax.nn.softplus(self.dt_proj(proj[:, :r]))
        B, C = proj[:, r : r + n], proj[:, r + n :]
        return selective_scan(u, delta, -jnp.exp(self.A_log), B, C, self.D, mode=self.mode)


class MambaBlock(eqx.Module):
    """A Mamba block: in-projection, causal depthwise conv, SiLU, selective SSM, gating.

    `x, z = in_proj(u)`; `x = silu(causal_conv(x))`; `y = SelectiveSSM(x) · silu(z)`;
    `out = out_proj(y)`. No normalisation or residual (add them around the block).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> block = MambaBlock(8, key=jax.random.key(0))
      >>> block(jnp.ones((12, 8))).shape
      (12, 8)
    """

    in_proj: Linear
    conv: Conv1d
    ssm: SelectiveSSM
    out_proj: Linear
    d_inner: int = eqx.field(static=True)

    def __init__(
        self,
        d_model: int,
        state_size: int = 16,
        expand: int = 2,
        conv_size: int = 4,
        *,
        mode: str = "parallel",
        dtype: Any = None,
        key: jax.Array,
    ):
        """Create the block.

        Args:
          d_model: input/output channels.
          state_size: SSM state size N.
          expand: inner width factor (`d_inner = expand * d_model`).
          conv_size: causal convolution width.
          mode: scan mode of the SSM.
          dtype: parameter dtype.
          key: PRNG key.
        """
        d_inner = expand * d_model
        k1, k2, k3, k4 = jax.random.split(key, 4)
        self.in_proj = Linear(d_model, 2 * d_inner, dtype=dtype, key=k1)
        self.conv = Conv1d(
            d_inner,
            d_inner,
            conv_size,
            padding=((conv_size - 1, 0),),
            groups=d_inner,
            dtype=dtype,
            key=k2,
        )
        self.ssm = SelectiveSSM(d_inner, state_size, mode=mode, dtype=dtype, key=k3)
        self.out_proj = Linear(d_inner, d_model, dtype=dtype, key=k4)
        self.d_inner = d_inner

    @named_scope("tljax.layers.MambaBlock")
    def __call__(self, u: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Apply to `u` of shape `(L, d_model)`; returns `(L, d_model)`."""
        del key
        x, z = jnp.split(self.in_proj(u), 2, axis=-1)
        x = jax.nn.silu(self.conv(x.T).T)  # left padding only: position t sees inputs <= t
        y = self.ssm(x) * jax.nn.silu(z)
        return self.out_proj(y)
