"""Multi-step returns and advantages for one trajectory (unbatched; `jax.vmap` for batches).

Time indexing follows rlax: for a trajectory of T steps, `r_t[t]` and `discount_t[t]` are the
reward and discount received on the transition out of step t, and `v_t[t]` is the value of the
state reached by it (the bootstrap for step t). GAE takes `values` of length T+1 instead:
`values[t]` = V(s_t) for t = 0..T. Discounts are γ·(1 − terminal), so a 0 cuts the return.

References:
  Sutton & Barto (2018), §7.1 (n-step returns), §12.1 (λ-return), §12.5 (offline λ-return).
  Schulman et al., "High-dimensional continuous control using generalized advantage estimation",
  ICLR 2016 (GAE).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tljax.core import ShapeMismatchError
from tljax.rl._checks import check_equal_shapes, check_ranks


def lambda_returns(
    r_t: jax.Array,
    discount_t: jax.Array,
    v_t: jax.Array,
    lambda_: jax.Array | float = 1.0,
    *,
    stop_target_gradients: bool = False,
) -> jax.Array:
    """λ-returns, computed by the backward recursion

        G_t = r_t + γ_t [(1 − λ_t) v_t + λ_t G_{t+1}],   with G_T := v_{T−1} (bootstrap at the end),

    equivalently G_t = (1−λ) Σ_{n≥1} λ^{n−1} G_t^{(n)} truncated at the end of the trajectory (the
    remaining weight goes to the longest return). λ = 1 gives the discounted return bootstrapped
    from v_{T−1}; λ = 0 the one-step target r_t + γ_t v_t.

    Arguments:
      - `r_t`: rewards, shape (T,).
      - `discount_t`: discounts, shape (T,).
      - `v_t`: bootstrap values, shape (T,).
      - `lambda_`: scalar or shape (T,).
      - `stop_target_gradients`: wrap the result in `stop_gradient`.

    Returns:
      G^λ, shape (T,).

    Example:
      >>> import jax.numpy as jnp
      >>> lambda_returns(jnp.ones(2), jnp.full(2, 0.5), jnp.zeros(2), 1.0).tolist()
      [1.5, 1.0]
    """
    check_ranks(
        "lambda_returns",
        {
            "r_t": (r_t, 1),
            "discount_t": (discount_t, 1),
            "v_t": (v_t, 1),
            "lambda_": (lambda_, {0, 1}),
        },
    )
    check_equal_shapes("lambda_returns", {"r_t": r_t, "discount_t": discount_t, "v_t": v_t})
    lam = jnp.broadcast_to(jnp.asarray(lambda_, dtype=jnp.result_type(r_t, float)), jnp.shape(r_t))

    def step(g_next, xs):
        r, d, v, la = xs
        g = r + d * ((1 - la) * v + la * g_next)
        return g, g

    _, g = jax.lax.scan(step, v_t[-1], (r_t, discount_t, v_t, lam), reverse=True)
    return jax.lax.stop_gradient(g) if stop_target_gradients else g


def discounted_returns(
    r_t: jax.Array,
    discount_t: jax.Array,
    v_t: jax.Array | float,
    *,
    stop_target_gradients: bool = False,
) -> jax.Array:
    """G_t = r_t + γ_t G_{t+1}, bootstrapped with the last value: G_{T−1} = r_{T−1} + γ_{T−1} v.

    Arguments:
      - `r_t`, `discount_t`: shape (T,).
      - `v_t`: shape (T,) (only the last entry is used) or a scalar bootstrap value.
    """
    v = jnp.broadcast_to(jnp.asarray(v_t, dtype=jnp.result_type(r_t, float)), jnp.shape(r_t))
    return lambda_returns(r_t, discount_t, v, 1.0, stop_target_gradients=stop_target_gradients)


def n_step_returns(
    r_t: jax.Array,
    discount_t: jax.Array,
    v_t: jax.Array,
    n: int,
    *,
    stop_target_gradients: bool = False,
) -> jax.Array:
    """n-step bootstrapped returns, truncated at the end of the trajectory:

        G_t^{(n)} = Σ_{k<m} (Π_{j<k} γ_{t+j}) r_{t+k} + (Π_{j<m} γ_{t+j}) v_{t+m−1},  m = min(n, T
        − t).

    Computed by applying G ← r + γ·shift(G) n times starting from v (each pass adds one step).

    Arguments:
      - `r_t`, `discount_t`, `v_t`: shape (T,).
      - `n`: a positive Python int.

    Returns:
      shape (T,).
    """
    check_ranks("n_step_returns", {"r_t": (r_t, 1), "discount_t": (discount_t, 1), "v_t": (v_t, 1)})
    check_equal_shapes("n_step_returns", {"r_t": r_t, "discount_t": discount_t, "v_t": v_t})
    if not isinstance(n, int) or n < 1:
        raise ShapeMismatchError(f"n_step_returns: `n` must be a positive Python int, got {n!r}.")

    def one_more_step(_, g_prev):
        # G^{(k)}_t = r_t + γ_t G^{(k-1)}_{t+1}; past the end the last step bootstraps from v_{T-1}.
        nxt = jnp.concatenate([g_prev[1:], v_t[-1:]])
        return r_t + discount_t * nxt

    g = r_t + discount_t * v_t  # G^{(1)}
    g = jax.lax.fori_loop(1, n, one_more_step, g)
    return jax.lax.stop_gradient(g) if stop_target_gradients else g


def gae(
    r_t: jax.Array,
    discount_t: jax.Array,
    lambda_: jax.Array | float,
    values: jax.Array,
    *,
    stop_target_gradients: bool = False,
) -> jax.Array:
    """Truncated generalised advantage estimation (GAE(γ, λ)).

        δ_t = r_t + γ_t V(s_{t+1}) − V(s_t),   Â_t = Σ_{k≥0} (Π_{j<k} γ_{t+j} λ) δ_{t+k},

    computed backwards as Â_t = δ_t + γ_t λ Â_{t+1}, Â_T = 0. Then Â + V(s_t) is the λ-return with
    v_t = V(s_{t+1}); λ = 0 gives δ_t, λ = 1 gives the bootstrapped return minus V(s_t) (claims
    "rl: GAE ...").

    Arguments:
      - `r_t`, `discount_t`: shape (T,).
      - `lambda_`: scalar or shape (T,).
      - `values`: V(s_0), …, V(s_T), shape (T+1,).
      - `stop_target_gradients`: wrap the result in `stop_gradient`.

    Returns:
      advantages Â, shape (T,).

    Example:
      >>> import jax.numpy as jnp
      >>> gae(jnp.ones(2), jnp.ones(2), 0.0, jnp.array([1.0, 2.0, 3.0])).tolist()
      [2.0, 2.0]
    """
    check_ranks(
        "gae",
        {
            "r_t": (r_t, 1),
            "discount_t": (discount_t, 1),
            "values": (values, 1),
            "lambda_": (lambda_, {0, 1}),
        },
    )
    check_equal_shapes("gae", {"r_t": r_t, "discount_t": discount_t})
    if values.shape[0] != r_t.shape[0] + 1:
        raise ShapeMismatchError(
            f"gae: `values` has shape {values.shape} but `r_t` has {r_t.shape}; pass T+1 values "
            "V(s_0..s_T), the last one being the bootstrap value."
        )
    delta = r_t + discount_t * values[1:] - values[:-1]
    lam = jnp.broadcast_to(jnp.asarray(lambda_, dtype=delta.dtype), delta.shape)

    def step(a_next, xs):
        d, g, la = xs
        a = d + g * la * a_next
        return a, a

    _, adv = jax.lax.scan(step, jnp.zeros((), delta.dtype), (delta, discount_t, lam), reverse=True)
    return jax.lax.stop_gradient(adv) if stop_target_gradients else adv
