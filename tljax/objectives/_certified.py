"""Certified (verified) training: IBP and CROWN-IBP losses, their schedules, and certification.

The robustness spec of an example `(x, y)` is the margin vector `m_j = z_y - z_j` (`z` the logits)
for every class `j`: the network is certified robust on the L-inf ball of radius `eps` around `x`
iff the lower bounds of all `m_j` (`j != y`) are positive. The *robust* cross-entropy is the
cross-entropy of the worst-case logits `-lower(m)` (entry `y` is 0); because softmax
cross-entropy only depends on logit differences, it upper-bounds the cross-entropy of every point
of the ball (Wong & Kolter 2018; Gowal et al. 2018; Zhang et al. 2020).

Bound methods (all differentiable w.r.t. the parameters and vmapped over the batch):

* ``"ibp"``: interval bound propagation, `tljax.bound(..., method="ibp")`.
* ``"crown-ibp"``: CROWN-IBP proper (Zhang et al. 2020), `tljax.bound(..., method="crown-ibp")`:
  IBP bounds for every intermediate node, then one CROWN backward linear-relaxation pass from
  the margins to the input that uses those IBP bounds for its relaxations (intersected with
  IBP). The beta mix with plain IBP adds one IBP sweep.
* ``"crown"``: full CROWN (`tljax.bound(..., method="crown")`), tighter and slower.

Training uses ``float_sound=False`` by default (bounds of the real-valued network, evaluated in
plain float32: cheaper, and what peers train with); certification (`certify`) defaults to the
float-sound CROWN of `tljax.bound`, which also covers the float32 rounding of the model.

The per-example margin matrix `C_y` (rows `e_y - e_j`) depends on the label, so instead of a
(static) `spec=` it enters the bounded function as an extra non-boxed argument:
`margins(x, C, *params) = C @ model_fn(x, *params)`; `C` is then a constant of the bound
computation, and a batch of examples with different labels is one `vmap`.
"""

from __future__ import annotations

import functools as ft
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..bounds import Box, bound
from ..core import InputError, ShapeMismatchError
from ._losses import accuracy, cross_entropy

__all__ = [
    "apply_model",
    "beta_schedule",
    "certified_loss",
    "certify",
    "crown_ibp_loss",
    "eps_schedule",
    "ibp_loss",
    "kappa_schedule",
    "linear_ramp",
    "margin_lower_bounds",
    "margin_spec",
    "robust_cross_entropy",
]

METHODS = ("ibp", "crown-ibp", "crown")


# ------------------------------------------------------------------------------------------------
# Schedules: pure functions of the (possibly traced) step
# ------------------------------------------------------------------------------------------------


def linear_ramp(step, start_step, end_step, start_value, end_value):
    """`start_value` until `start_step`, linear to `end_value` at `end_step`, then constant.

    `step` may be a traced integer; the result is a float32 scalar.
    """
    step = jnp.asarray(step, jnp.float32)
    span = jnp.maximum(jnp.float32(end_step) - jnp.float32(start_step), 1.0)
    t = jnp.clip((step - jnp.float32(start_step)) / span, 0.0, 1.0)
    return jnp.float32(start_value) + t * (jnp.float32(end_value) - jnp.float32(start_value))


def eps_schedule(step, eps, warmup_steps, ramp_steps):
    """Training radius: 0 for `warmup_steps` (natural training), then linear up to `eps` over
    `ramp_steps`, then `eps`."""
    return linear_ramp(step, warmup_steps, warmup_steps + ramp_steps, 0.0, eps)


def kappa_schedule(step, warmup_steps, ramp_steps, start=1.0, end=0.5):
    """Weight of the natural loss in `kappa * natural + (1 - kappa) * robust`: `start` (1) during
    the warm-up, linear to `end` (0.5) over the eps ramp (Gowal et al. 2018)."""
    return linear_ramp(step, warmup_steps, warmup_steps + ramp_steps, start, end)


def beta_schedule(step, warmup_steps, ramp_steps, start=1.0, end=0.0):
    """CROWN-IBP's mix `beta * CROWN-IBP + (1 - beta) * IBP` of the margin lower bounds: `start`
    (1) during the warm-up, linear to `end` (0) over the eps ramp (Zhang et al. 2020)."""
    return linear_ramp(step, warmup_steps, warmup_steps + ramp_steps, start, end)


# ------------------------------------------------------------------------------------------------
# Margins and their bounds
# ------------------------------------------------------------------------------------------------


def margin_spec(y, num_classes: int) -> jax.Array:
    """`C_y` of shape `(*batch, K, K)`: row `j` is `e_y - e_j` (row `y` is zero).

    `C_y @ logits` are the margins `z_y - z_j`.
    """
    y = jnp.asarray(y)
    eye = jnp.eye(num_classes, dtype=jnp.float32)
    return eye[y][..., None, :] - eye


def apply_model(x, model):
    """`model(x)`: a `model_fn` for Equinox modules passed whole as the parameters."""
    return model(x)


@ft.lru_cache(maxsize=64)
def _margins_fn(model_fn: Callable) -> Callable:
    # One stable function object per model_fn, so tljax.bound's per-function cache is reused.
    def margins(x, c, *args):
        return c @ jnp.reshape(model_fn(x, *args), (-1,))

    margins.__name__ = f"margins_of_{getattr(model_fn, '__name__', 'model')}"
    return margins


def _split_params(params):
    """`(arrays, rebuild)`: the array leaves of `params` and a function putting them back.

    Equinox modules carry non-array leaves (activation functions, ints), which `jax.eval_shape`
    and `jax.jit` refuse as arguments; those stay in `rebuild` as static data."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    mask = tuple(isinstance(v, jax.Array | np.ndarray | np.generic) for v in leaves)
    arrays = [v for v, m in zip(leaves, mask, strict=True) if m]
    static = tuple(None if m else v for v, m in zip(leaves, mask, strict=True))

    def rebuild(arrs):
        it = iter(arrs)
        return jax.tree_util.tree_unflatten(
            tree, [next(it) if m else s for m, s in zip(mask, static, strict=True)]
        )

    return arrays, rebuild, (tree, mask, static)


def _model(model_fn, params, who: str):
    """`(model_fn, params)` with a module given whole (`certify(mlp, None, ...)`) turned into
    `(apply_model, mlp)`, after checking what was passed."""
    if not callable(model_fn):
        raise InputError(
            f"{who}: model_fn must be callable as model_fn(x, params), got "
            f"{type(model_fn).__name__}"
        )
    leaves = jax.tree_util.tree_leaves(model_fn)
    if params is None and any(isinstance(v, jax.Array | np.ndarray) for v in leaves):
        # a module with array leaves, called as model(x): its arrays are the parameters
        return apply_model, model_fn
    return model_fn, params


def _num_classes(model_fn, x0, params, who: str) -> int:
    arrays, rebuild, _ = _split_params(params)
    try:
        out = jax.eval_shape(lambda a: model_fn(x0, rebuild(a)), arrays)
    except (TypeError, ValueError) as err:
        raise InputError(
            f"{who}: calling model_fn(x[0], params) on one example of shape {tuple(x0.shape)} "
            f"failed ({type(err).__name__}: {str(err).splitlines()[0]}); model_fn must take one "
            "unbatched example and the params and return the logits (pass "
            "tljax.objectives.apply_model with an Equinox module as params)"
        ) from err
    if not hasattr(out, "shape"):
        raise InputError(
            f"{who}: model_fn returned {type(out).__name__}; it must return one logits array (K,)"
        )
    return int(np.prod(out.shape))


def _check_batch(x, y, eps, who: str):
    x = jnp.asarray(x)
    if x.ndim < 1 or x.shape[0] == 0:
        raise ShapeMismatchError(
            f"{who}: x has shape {tuple(x.shape)}; give a batch (B, *input_shape) with B >= 1 "
            "(one example: x[None])"
        )
    y_shape = tuple(np.shape(y))
    if y_shape != (x.shape[0],):
        raise ShapeMismatchError(
            f"{who}: y has shape {y_shape} but x holds {x.shape[0]} example(s); give one integer "
            f"label per example, shape ({x.shape[0]},)"
        )
    if not isinstance(eps, jax.core.Tracer) and not (np.all(np.asarray(eps) >= 0)):
        raise InputError(f"{who}: eps={eps!r} must be >= 0 (the L-inf radius)")
    return x


def _box(x, eps, clip):
    lo, hi = x - eps, x + eps
    if clip is not None:
        lo = jnp.clip(lo, clip[0], clip[1])
        hi = jnp.clip(hi, clip[0], clip[1])
    return Box(lo, hi)


def margin_lower_bounds(
    model_fn: Callable,
    params: Any,
    x: jax.Array,
    y: jax.Array,
    eps,
    *,
    method: str = "ibp",
    beta=1.0,
    num_classes: int | None = None,
    float_sound: bool = False,
    clip: tuple[float, float] | None = (0.0, 1.0),
) -> jax.Array:
    """Lower bounds `(B, K)` of the margins `z_y - z_j` over `||x' - x||_inf <= eps` (clipped to
    `clip`), per example of the batch `x` `(B, *in_shape)`.

    Args:
      model_fn: `model_fn(x_single, params) -> logits (K,)`; pass `apply_model` for an Equinox
        module given as `params`. Keep it the same object across steps (compilation cache).
      params: parameters (any pytree; gradients flow to it).
      x, y: batch of inputs and integer labels.
      eps: radius (scalar, may be traced).
      method: ``"ibp"``, ``"crown-ibp"`` (`beta * CROWN-IBP + (1 - beta) * IBP`) or
        ``"crown"`` (full CROWN).
      beta: CROWN-IBP mix weight (scalar, may be traced; with `beta <= 0` only IBP is run).
      num_classes: K (default: inferred by evaluating the model once abstractly).
      float_sound: bound the float32 program too (default False: training).
      clip: input domain to intersect the ball with, or None.

    Entry `y` of each row is 0 (the margin of the label with itself).
    """
    who = "tljax.objectives.margin_lower_bounds"
    if method not in METHODS:
        raise InputError(f"{who}: unknown bound method={method!r}; use one of {METHODS}")
    model_fn, params = _model(model_fn, params, who)
    x = _check_batch(x, y, eps, who)
    if num_classes is None:
        num_classes = _num_classes(model_fn, x[0], params, who)
    c = margin_spec(y, num_classes)
    fn = _margins_fn(model_fn)

    def public(xi, ci, meth):
        return bound(
            fn, _box(xi, eps, clip), ci, params, method=meth, float_sound=float_sound
        ).lower

    if method in ("ibp", "crown"):
        return jax.vmap(lambda xi, ci: public(xi, ci, method))(x, c)

    def mixed(_):
        ibp_lo = jax.vmap(lambda xi, ci: public(xi, ci, "ibp"))(x, c)
        cibp_lo = jax.vmap(lambda xi, ci: public(xi, ci, "crown-ibp"))(x, c)
        return beta * cibp_lo + (1.0 - beta) * ibp_lo

    def ibp_only(_):
        return jax.vmap(lambda xi, ci: public(xi, ci, "ibp"))(x, c)

    beta = jnp.asarray(beta, jnp.float32)
    return lax.cond(beta > 0, mixed, ibp_only, None)


# ------------------------------------------------------------------------------------------------
# Losses
# ------------------------------------------------------------------------------------------------


def robust_cross_entropy(margin_lower: jax.Array, y: jax.Array, *, reduction: str = "mean"):
    """Cross-entropy of the worst-case logits `-margin_lower` (`(B, K)`, entry `y` zero).

    Since cross-entropy only depends on logit differences, this upper-bounds the cross-entropy
    of every point whose margins are at least `margin_lower`.
    """
    return cross_entropy(-margin_lower, y, reduction=reduction)


def ibp_loss(
    model_fn: Callable,
    params: Any,
    x: jax.Array,
    y: jax.Array,
    eps,
    *,
    reduction: str = "mean",
    float_sound: bool = False,
    clip: tuple[float, float] | None = (0.0, 1.0),
    num_classes: int | None = None,
) -> jax.Array:
    """IBP robust cross-entropy (Gowal et al. 2018) over the L-inf ball of radius `eps`.

    `>=` the natural cross-entropy of each example (exactly so with `float_sound=True`).
    See `margin_lower_bounds` for the arguments.
    """
    lower = margin_lower_bounds(
        model_fn, params, x, y, eps, method="ibp", float_sound=float_sound, clip=clip,
        num_classes=num_classes,
    )
    return robust_cross_entropy(lower, y, reduction=reduction)


def crown_ibp_loss(
    model_fn: Callable,
    params: Any,
    x: jax.Array,
    y: jax.Array,
    eps,
    beta=1.0,
    *,
    reduction: str = "mean",
    float_sound: bool = False,
    clip: tuple[float, float] | None = (0.0, 1.0),
    num_classes: int | None = None,
) -> jax.Array:
    """CROWN-IBP robust cross-entropy (Zhang et al. 2020): margins' lower bounds
    `beta * CROWN-IBP + (1 - beta) * IBP`, cross-entropy on the worst-case logits.

    CROWN-IBP here is the real thing: IBP intermediate bounds and one CROWN backward pass.
    """
    lower = margin_lower_bounds(
        model_fn, params, x, y, eps, method="crown-ibp", beta=beta, float_sound=float_sound,
        clip=clip, num_classes=num_classes,
    )
    return robust_cross_entropy(lower, y, reduction=reduction)


def certified_loss(
    model_fn: Callable = apply_model,
    *,
    method: str = "ibp",
    eps: float,
    warmup_steps: int,
    ramp_steps: int,
    kappa_end: float = 0.5,
    beta_start: float = 1.0,
    beta_end: float = 0.0,
    float_sound: bool = False,
    clip: tuple[float, float] | None = (0.0, 1.0),
) -> Callable:
    """A stateful loss for `tljax.objectives.train(..., state=jnp.int32(0))`.

    The state is the step counter that drives the schedules: the returned
    `loss_fn(model, step, (x, y), key) -> (loss, step + 1, metrics)` computes
    `kappa * CE(model(x), y) + (1 - kappa) * robust_CE` with `eps_schedule`, `kappa_schedule`
    (1 -> `kappa_end`) and, for ``"crown-ibp"``, `beta_schedule` (`beta_start` -> `beta_end`);
    `model` is passed to `model_fn` as the parameters (`model_fn(x, model)`).
    Metrics: natural accuracy, robust loss, eps, kappa (and beta).
    """
    if method not in METHODS:
        raise InputError(f"tljax.objectives: unknown bound method {method!r}; use one of {METHODS}")

    def loss_fn(model, step, batch, key):
        del key
        x, y = batch
        eps_t = eps_schedule(step, eps, warmup_steps, ramp_steps)
        kappa = kappa_schedule(step, warmup_steps, ramp_steps, 1.0, kappa_end)
        logits = jax.vmap(lambda xi: model_fn(xi, model))(x)
        natural = cross_entropy(logits, y)
        beta = beta_schedule(step, warmup_steps, ramp_steps, beta_start, beta_end)
        lower = margin_lower_bounds(
            model_fn, model, x, y, eps_t, method=method, beta=beta,
            num_classes=logits.shape[-1], float_sound=float_sound, clip=clip,
        )
        robust = robust_cross_entropy(lower, y)
        loss = kappa * natural + (1.0 - kappa) * robust
        metrics = {"accuracy": accuracy(logits, y), "robust_loss": robust, "eps": eps_t,
                   "kappa": kappa}
        if method == "crown-ibp":
            metrics["beta"] = beta
        return loss, step + 1, metrics

    return loss_fn


# ------------------------------------------------------------------------------------------------
# Certification
# ------------------------------------------------------------------------------------------------


@ft.lru_cache(maxsize=8)
def _pairwise_spec(k: int) -> np.ndarray:
    # Row y * K + j is e_y - e_j: a static `spec` that serves every label.
    eye = np.eye(k, dtype=np.float32)
    return (eye[:, None, :] - eye[None, :, :]).reshape(k * k, k)


_CERTIFY_CACHE: dict = {}


def _certify_fn(model_fn, method, float_sound, clip, k, rebuild, static_key):
    # Jitted over the params' array leaves only; the rest (an Equinox module's functions) is
    # static, part of the cache key when hashable.
    try:
        key = (model_fn, method, float_sound, clip, k, static_key)
        hash(key)
    except TypeError:
        key = None
    if key is not None and key in _CERTIFY_CACHE:
        return _CERTIFY_CACHE[key]
    spec = _pairwise_spec(k)

    @jax.jit
    def lows(xb, arrays, eps):
        params = rebuild(arrays)
        return jax.vmap(
            lambda xi: bound(
                model_fn, _box(xi, eps, clip), params, method=method, float_sound=float_sound,
                spec=spec,
            ).lower
        )(xb)

    if key is not None:
        if len(_CERTIFY_CACHE) >= 16:
            _CERTIFY_CACHE.pop(next(iter(_CERTIFY_CACHE)))
        _CERTIFY_CACHE[key] = lows
    return lows


def certify(
    model_fn: Callable,
    params: Any,
    x: jax.Array,
    y: jax.Array,
    eps: float,
    *,
    method: str = "crown",
    float_sound: bool = True,
    clip: tuple[float, float] | None = (0.0, 1.0),
    chunk: int = 64,
) -> np.ndarray:
    """Boolean `(B,)`: example certified robust at radius `eps` (every margin `z_y - z_j`,
    `j != y`, has a positive lower bound over the ball), by `tljax.bound` with the static
    `spec` of all K^2 pairwise differences (rows of the label selected afterwards).

    Default: float-sound CROWN. Runs `chunk` examples per vmapped call.
    """
    who = "tljax.objectives.certify"
    if method not in ("ibp", "crown-ibp", "crown", "alpha-crown"):
        raise InputError(
            f"{who}: unknown method={method!r}; use 'crown' (default), 'alpha-crown', 'crown-ibp' "
            "or 'ibp'"
        )
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise InputError(f"{who}: chunk={chunk!r} must be a positive int (examples per call)")
    model_fn, params = _model(model_fn, params, who)
    x = _check_batch(x, y, eps, who)
    y = np.asarray(y)
    k = _num_classes(model_fn, x[0], params, who)
    if y.dtype.kind not in "iu" or np.any((y < 0) | (y >= k)):
        raise InputError(
            f"{who}: labels y must be integers in [0, {k}) (the model has {k} outputs), got "
            f"{y.dtype} values in [{y.min()}, {y.max()}]"
        )
    arrays, rebuild, (tree, mask, static) = _split_params(params)
    lows = _certify_fn(
        model_fn, method, bool(float_sound), clip, k, rebuild, (tree, mask, static)
    )

    out = []
    for s in range(0, len(x), chunk):
        xb = x[s : s + chunk]
        pad = chunk - len(xb)
        if pad:
            xb = jnp.concatenate([xb, jnp.repeat(xb[-1:], pad, axis=0)])
        out.append(np.asarray(lows(xb, arrays, jnp.float32(eps)))[: chunk - pad])
    low = np.concatenate(out).reshape(len(x), k, k)[np.arange(len(x)), y]  # (B, K)
    low[np.arange(len(x)), y] = np.inf
    return np.all(low > 0, axis=1)
