"""Scaled dot-product attention: a standard path, a tiled (flash) path and attention layers.

Layout is `jax.nn.dot_product_attention`'s: queries `(B, T, N, H)`, keys `(B, S, K, H)`, values
`(B, S, K, Hv)`, or the same without the leading batch axis; `K` may divide `N` (grouped-query
attention: query head `n` reads key/value head `n // (N // K)`). Masks are boolean and True means
"may attend"; bias and mask broadcast to `(B, N, T, S)` (or `(N, T, S)` unbatched). `is_causal`
lets query `i` see keys `j <= i` (top-left aligned, as in `jax.nn`).

**Fully masked rows.** A query row whose keys are all masked out has output exactly 0 (and
finite gradients) in both paths. `jax.nn.dot_product_attention` instead returns the plain
average of the values there (it masks with a large negative number); everywhere else the paths
agree with it to float tolerance.

**No infinities.** Neither path uses `-inf` or NaN: masked scores are replaced by a neutral
finite value (the row's first valid score) with `select_n` before the max, and `exp` is only
applied to selected differences that are `<= 0`. So on integer scores with
`exp=lambda x: 2.0 ** x`, every operation is exact rational arithmetic and the flash and
standard paths agree exactly. The differences are taken from the very array the max was taken
over, so `s - m <= 0` is visible to bound propagation (`tljax.bound`) too.
"""

from __future__ import annotations

import functools as ft
import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from tljax.core import InputError, Kernel, kernel
from tljax.layers._linear import Linear
from tljax.layers._misc import named_scope

ExpFn = Callable[[jax.Array], jax.Array]


# ------------------------------------------------------------------------------------------------
# Argument preparation (shared by both paths)
# ------------------------------------------------------------------------------------------------


def _prepare(q, k, v, bias, mask, name):
    """Check shapes, add a batch axis if needed, expand grouped heads, broadcast bias/mask."""
    if q.ndim not in (3, 4) or k.ndim != q.ndim or v.ndim != q.ndim:
        raise ValueError(
            f"{name}: query/key/value must all be (B, T, N, H) or all (T, N, H), got shapes "
            f"{q.shape}, {k.shape}, {v.shape}."
        )
    unbatched = q.ndim == 3
    if unbatched:
        q, k, v = q[None], k[None], v[None]
    B, T, N, H = q.shape
    _, S, K, _ = k.shape
    if k.shape[0] != B or k.shape[3] != H or v.shape[:3] != k.shape[:3]:
        raise ValueError(
            f"{name}: incompatible shapes query {q.shape}, key {k.shape}, value {v.shape}: key "
            "must be (B, S, K, H) with the query's B and H, value (B, S, K, Hv)."
        )
    if N % K:
        raise ValueError(f"{name}: query heads N={N} must be a multiple of key/value heads K={K}.")
    if K != N:  # grouped-query attention: query head n reads kv head n // G
        k = jnp.repeat(k, N // K, axis=2)
        v = jnp.repeat(v, N // K, axis=2)
    target = (B, N, T, S)

    def expand(t, what):
        if t is None:
            return None
        t = jnp.asarray(t)
        if unbatched and t.ndim == 4:
            raise ValueError(f"{name}: unbatched inputs need a {what} of rank <= 3, got {t.shape}.")
        try:
            return jnp.broadcast_to(t[None] if unbatched and t.ndim == 3 else t, target)
        except ValueError:
            full = "(N, T, S)" if unbatched else "(B, N, T, S)"
            raise ValueError(
                f"{name}: {what} of shape {t.shape} does not broadcast to {full} = "
                f"{target[1:] if unbatched else target}."
            ) from None

    bias = expand(bias, "bias")
    mask = expand(mask, "mask")
    if mask is not None and mask.dtype != jnp.bool_:
        raise TypeError(f"{name}: mask must be boolean (True = may attend), got {mask.dtype}.")
    return q, k, v, bias, mask, unbatched


def _scale(scale, H):
    return 1.0 / math.sqrt(H) if scale is None else float(scale)


def _causal(q_pos, k_pos):
    return q_pos[..., :, None] >= k_pos[..., None, :]


def _first_valid(s, valid):
    """The score of each row's first valid key (`s[..., 0]` for a row without one): a neutral
    element for the masked max that needs no -inf. It is a selection, not a comparison of
    scores, so the max over a masked row costs no more than over an unmasked one (the row
    minimum would be a second reduction over the scores)."""
    first = jnp.argmax(valid, axis=-1, keepdims=True)
    return jnp.take_along_axis(s, first, axis=-1)


# ------------------------------------------------------------------------------------------------
# Standard path
# ------------------------------------------------------------------------------------------------


def dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    *,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    exp: ExpFn = jnp.exp,
) -> jax.Array:
    """softmax(Q Kᵀ · scale + bias, masked) V, computed in one piece.

    Matches `jax.nn.dot_product_attention` (its xla implementation) to float tolerance on every
    row that has at least one unmasked key; fully masked rows give 0 (see the module docstring).
    The normalisation is done after the value product, `(P V) / Σ P`, with
    `P = exp(s - max s)`, so that exact arithmetic gives the same result as `flash_attention`.

    Args:
      query: `(B, T, N, H)` or `(T, N, H)`.
      key: `(B, S, K, H)` or `(S, K, H)`, `N % K == 0`.
      value: `(B, S, K, Hv)` or `(S, K, Hv)`.
      bias: optional additive bias broadcastable to `(B, N, T, S)` (`(N, T, S)` unbatched).
      mask: optional boolean mask, same broadcasting; True = may attend.
      is_causal: also mask keys `j > i` for query `i`.
      scale: multiplier of the scores; default `1 / sqrt(H)`.
      exp: exponential used by the softmax (e.g. `lambda x: 2.0 ** x` for exact tests).

    Returns:
      `(B, T, N, Hv)` or `(T, N, Hv)`.

    Example:
      >>> import jax.numpy as jnp
      >>> q = k = v = jnp.ones((2, 5, 4, 8))
      >>> dot_product_attention(q, k, v, is_causal=True).shape
      (2, 5, 4, 8)
    """
    name = "tljax.layers.dot_product_attention"
    with jax.named_scope(name):
        q, k, v, bias, mask, unbatched = _prepare(query, key, value, bias, mask, name)
        T, S, H = q.shape[1], k.shape[1], q.shape[3]
        s = jnp.einsum("btnh,bsnh->bnts", q, k) * jnp.asarray(_scale(scale, H), q.dtype)
        if bias is not None:
            s = s + bias.astype(s.dtype)
        valid = mask
        if is_causal:
            causal = _causal(jnp.arange(T), jnp.arange(S))
            valid = causal if valid is None else valid & causal
        out = _softmax_values(s, valid, v, exp)
        return out[0] if unbatched else out


def _softmax_values(s, valid, v, exp):
    """(exp(s - m) V) / Σ exp(s - m) over the last axis of s, masked rows -> 0; (B,T,N,Hv)."""
    if valid is None:
        m = lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))
        p = exp(s - m)
        denom = jnp.sum(p, axis=-1, keepdims=True)
        return jnp.einsum("bnts,bsnh->btnh", p, v) / jnp.swapaxes(denom, 1, 2)
    valid = jnp.broadcast_to(valid, s.shape)
    s = jnp.where(valid, s, _first_valid(s, valid))
    m = lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))
    p = jnp.where(valid, exp(jnp.where(valid, s - m, 0.0)), 0.0)
    denom = jnp.sum(p, axis=-1, keepdims=True)
    any_valid = jnp.any(valid, axis=-1, keepdims=True)
    num = jnp.einsum("bnts,bsnh->btnh", p, v)
    denom = jnp.swapaxes(jnp.where(any_valid, denom, 1.0), 1, 2)
    return jnp.where(jnp.swapaxes(any_valid, 1, 2), num / denom, 0.0)


# ------------------------------------------------------------------------------------------------
# Flash path
# ------------------------------------------------------------------------------------------------


def flash_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    *,
    block_q: int = 128,
    block_k: int = 128,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    exp: ExpFn = jnp.exp,
) -> jax.Array:
    """Attention by tiles with an online softmax (FlashAttention's algorithm, in plain JAX).

    Queries are cut into blocks of `block_q` rows (processed side by side) and keys/values into
    blocks of `block_k`; a `lax.scan` over key blocks keeps, per query row, the running max `m`,
    the running denominator `l` and the running numerator `acc`. A new block with max `m'` is
    folded in by `α = exp(m - m')`, `l ← α l + Σ p`, `acc ← α acc + p V_blk`, `p = exp(s - m')`;
    the output is `acc / l`. Gradients come from JAX's AD through the scan. The causal mask is
    built per tile from positions, never as a full `T × S` array. Lengths that the block sizes
    do not divide are padded (padded keys are masked out, padded query rows dropped).

    Equal to `dot_product_attention` to float tolerance for any block sizes, and exactly equal
    on integer scores with `exp=lambda x: 2.0 ** x` (see the module docstring).

    Args:
      query: `(B, T, N, H)` or `(T, N, H)`.
      key: `(B, S, K, H)` or `(S, K, H)`, `N % K == 0`.
      value: `(B, S, K, Hv)` or `(S, K, Hv)`.
      block_q: query rows per tile (clipped to `T`).
      block_k: keys per tile (clipped to `S`).
      bias: optional additive bias broadcastable to `(B, N, T, S)`.
      mask: optional boolean mask broadcastable to `(B, N, T, S)`; True = may attend.
      is_causal: also mask keys `j > i` for query `i`.
      scale: multiplier of the scores; default `1 / sqrt(H)`.
      exp: exponential (e.g. `lambda x: 2.0 ** x` for exact tests).

    Returns:
      `(B, T, N, Hv)` or `(T, N, Hv)`.

    Example:
      >>> import jax
      >>> q = k = v = jax.random.normal(jax.random.key(0), (1, 10, 2, 4))
      >>> out = flash_attention(q, k, v, block_q=4, block_k=3, is_causal=True)
      >>> bool(jnp.allclose(out, dot_product_attention(q, k, v, is_causal=True), atol=1e-6))
      True
    """
    name = "tljax.layers.flash_attention"
    if block_q < 1 or block_k < 1:
        raise ValueError(f"{name}: block sizes must be positive, got {block_q}, {block_k}.")
    with jax.named_scope(name):
        q, k, v, bias, mask, unbatched = _prepare(query, key, value, bias, mask, name)
        B, T, N, H = q.shape
        S, Hv = k.shape[1], v.shape[3]
        bq, bk = min(block_q, T), min(block_k, S)
        nq, nk = -(-T // bq), -(-S // bk)
        Tp, Sp = nq * bq, nk * bk
        padded_keys = Sp != S

        # Tiles: queries (B, N, nq, bq, H); keys/values scanned over (nk, B, N, bk, .).
        q = q * jnp.asarray(_scale(scale, H), q.dtype)
        q = jnp.pad(q, ((0, 0), (0, Tp - T), (0, 0), (0, 0)))
        q = q.transpose(0, 2, 1, 3).reshape(B, N, nq, bq, H)
        k = jnp.pad(k, ((0, 0), (0, Sp - S), (0, 0), (0, 0)))
        v = jnp.pad(v, ((0, 0), (0, Sp - S), (0, 0), (0, 0)))
        k = k.transpose(0, 2, 1, 3).reshape(B, N, nk, bk, H).transpose(2, 0, 1, 3, 4)
        v = v.transpose(0, 2, 1, 3).reshape(B, N, nk, bk, Hv).transpose(2, 0, 1, 3, 4)

        def tiles(t, fill):  # (B, N, T, S) -> (nk, B, N, nq, bq, bk)
            t = jnp.pad(t, ((0, 0), (0, 0), (0, Tp - T), (0, Sp - S)), constant_values=fill)
            return t.reshape(B, N, nq, bq, nk, bk).transpose(4, 0, 1, 2, 3, 5)

        xs = {"k": k, "v": v, "k_pos": jnp.arange(Sp).reshape(nk, bk)}
        if bias is not None:
            xs["bias"] = tiles(bias.astype(q.dtype), 0)
        if mask is not None:
            xs["mask"] = tiles(mask, False)
        q_pos = jnp.arange(Tp).reshape(nq, bq)
        masked = mask is not None or is_causal or padded_keys

        def step(carry, blk):
            m, denom, acc, seen = carry
            s = jnp.einsum("bnqth,bnkh->bnqtk", q, blk["k"])
            if "bias" in blk:
                s = s + blk["bias"]
            valid = blk.get("mask")
            if is_causal:
                c = _causal(q_pos, blk["k_pos"])
                valid = c if valid is None else valid & c
            if padded_keys:
                real = blk["k_pos"] < S
                valid = real if valid is None else valid & real
            if masked:
                valid = jnp.broadcast_to(valid, s.shape)
                s = jnp.where(valid, s, _first_valid(s, valid))
                blk_max = jnp.max(s, axis=-1)
                blk_any = jnp.any(valid, axis=-1)
                m_new = jnp.where(seen, jnp.where(blk_any, jnp.maximum(m, blk_max), m), blk_max)
            else:
                blk_max = jnp.max(s, axis=-1)
                blk_any = True
                m_new = jnp.where(seen, jnp.maximum(m, blk_max), blk_max)
            m_new = lax.stop_gradient(m_new)
            # alpha rescales the old sums; it is 0 (not exp of garbage) before any valid key.
            alpha = jnp.where(seen, exp(jnp.where(seen, m - m_new, 0.0)), 0.0)
            diff = s - m_new[..., None]
            if masked:
                p = jnp.where(valid, exp(jnp.where(valid, diff, 0.0)), 0.0)
            else:
                p = exp(diff)
            denom_new = alpha * denom + jnp.sum(p, axis=-1)
            acc_new = alpha[..., None] * acc + jnp.einsum("bnqtk,bnkh->bnqth", p, blk["v"])
            return (m_new, denom_new, acc_new, seen | blk_any), None

        zeros = jnp.zeros((B, N, nq, bq), q.dtype)
        init = (zeros, zeros, jnp.zeros((B, N, nq, bq, Hv), q.dtype), jnp.zeros(zeros.shape, bool))
        (_, denom, acc, seen), _ = lax.scan(step, init, xs)
        out = jnp.where(seen[..., None], acc / jnp.where(seen, denom, 1.0)[..., None], 0.0)
        out = out.reshape(B, N, Tp, Hv)[:, :, :T].transpose(0, 2, 1, 3)
        return out[0] if unbatched else out


# ------------------------------------------------------------------------------------------------
# FlashAttention as a kernel: tiled reference (`flash_attention`), fused implementation. It lives
# here, next to its reference: core's kernel boundary knows nothing about attention.
# ------------------------------------------------------------------------------------------------

_HALF = ("bfloat16", "float16")


def attention_kernel(
    *,
    is_causal: bool = False,
    scale: float | None = None,
    block_q: int = 128,
    block_k: int = 128,
    gpu_implementation: str | None = "auto",
    platforms: tuple[str, ...] = ("gpu",),
    tolerance=None,
    name: str = "flash_attention",
) -> Kernel:
    """FlashAttention declared as a kernel.

    The reference is `flash_attention` (tiled, online softmax, plain lax), so every
    tljax semantics sees the tiled algorithm; bfloat16/float16 inputs are computed in float32 and
    the output rounded back, as fused kernels accumulate. The implementation is
    `jax.nn.dot_product_attention`: cuDNN's fused attention for bfloat16/float16 inputs and XLA's
    attention for float32 (cuDNN has no float32 path) with ``gpu_implementation="auto"``; float32
    inputs run with float32 matmul precision (not TF32), so the float32 contract can be tight.

    Args:
      is_causal: causal masking (top-left aligned, as `jax.nn`).
      scale: score multiplier, default ``1/sqrt(H)``.
      block_q, block_k: tile sizes of the reference.
      gpu_implementation: ``"auto"``, ``"cudnn"``, ``"xla"`` or None (JAX's choice), passed as
        `implementation=` to `jax.nn.dot_product_attention`.
      platforms: where the fused implementation is used (``("gpu",)``; add ``"cpu"`` to run XLA's
        attention on CPU too).
      tolerance: default ``{"float32": (2e-5, 2e-5), "bfloat16": (2e-2, 2e-2), "float16": (2e-3,
      2e-3)}``.
      name: kernel name.

    Returns:
      A `Kernel` taking ``(query (B,T,N,H), key (B,S,K,H), value (B,S,K,Hv))`` (or unbatched
      ``(T,N,H)``...) and returning ``(B,T,N,Hv)``. No mask/bias arguments: fully masked rows are
      where the two definitions differ (see this module's docstring), and causal masking never
      produces one.

    Example:
      >>> attn = attention_kernel(is_causal=True)
      >>> out = jax.jit(attn)(q, k, v)          # cuDNN on GPU (bf16), tiled reference on CPU
    """
    if gpu_implementation not in ("auto", "cudnn", "xla", None):
        raise InputError(
            f"gpu_implementation must be 'auto', 'cudnn', 'xla' or None, got {gpu_implementation!r}"
        )

    def reference(query, key, value):
        dtype = jnp.result_type(query, key, value)
        # Fused kernels accumulate half-precision attention in float32; so does the reference.
        compute = jnp.float32 if dtype.name in _HALF else dtype
        out = flash_attention(
            query.astype(compute),
            key.astype(compute),
            value.astype(compute),
            block_q=block_q,
            block_k=block_k,
            is_causal=is_causal,
            scale=scale,
        )
        return out.astype(dtype)

    def fused(query, key, value, *, platform):
        impl = gpu_implementation if platform in ("gpu", "cuda", "rocm") else "xla"
        half = jnp.result_type(query).name in _HALF
        if impl == "auto":
            impl = "cudnn" if half else "xla"
        # float32 attention in true float32: GPUs would otherwise run its matmuls in TF32, far
        # outside a float32 contract (use bfloat16 inputs for the fast path).
        precision = "default" if half else "float32"
        with jax.default_matmul_precision(precision):
            return jax.nn.dot_product_attention(
                query, key, value, scale=scale, is_causal=is_causal, implementation=impl
            )

    reference.__name__ = name
    if tolerance is None:
        tolerance = {"float32": (2e-5, 2e-5), "bfloat16": (2e-2, 2e-2), "float16": (2e-3, 2e-3)}
    impls = {p: ft.partial(fused, platform=p) for p in platforms}
    return kernel(reference, implementations=impls, tolerance=tolerance, name=name)


flash_attention_kernel = attention_kernel()
"""FlashAttention as a kernel: tiled `tljax.layers.flash_attention` as reference, cuDNN (bf16/fp16)
or XLA (fp32) fused attention via `jax.nn.dot_product_attention` on GPU; non-causal."""


# ------------------------------------------------------------------------------------------------
# Layers
# ------------------------------------------------------------------------------------------------


class FlashAttention(eqx.Module):
    """`flash_attention` as a (parameter-free) layer with fixed tiling and options.

    With `fused=True` (default) and no `bias`/`mask`, the layer is one `tljax.kernel` equation
    (`tljax.layers.attention_kernel`): compiled for a GPU it runs fused attention (cuDNN for
    bfloat16/float16, XLA's for float32), elsewhere the tiled reference; every tljax semantics
    (exact, float emulation, bounds) walks the tiled reference, and `tljax.kernel_contracts`
    lists the contract that links the two. Half-precision inputs are then computed in float32
    and rounded back, as fused kernels do. `fused=False` (or a bias or mask) calls
    `flash_attention` directly.

    Example:
      >>> import jax.numpy as jnp
      >>> attn = FlashAttention(block_q=4, block_k=4, is_causal=True)
      >>> attn(jnp.ones((8, 2, 4)), jnp.ones((8, 2, 4)), jnp.ones((8, 2, 4))).shape
      (8, 2, 4)
    """

    block_q: int = eqx.field(static=True, default=128)
    block_k: int = eqx.field(static=True, default=128)
    is_causal: bool = eqx.field(static=True, default=False)
    scale: float | None = eqx.field(static=True, default=None)
    fused: bool = eqx.field(static=True, default=True)

    @named_scope("tljax.layers.FlashAttention")
    def __call__(
        self,
        query: jax.Array,
        key_: jax.Array,
        value: jax.Array,
        *,
        bias: jax.Array | None = None,
        mask: jax.Array | None = None,
        key: jax.Array | None = None,
    ) -> jax.Array:
        """Attend; shapes as `flash_attention` (the PRNG `key` is ignored)."""
        del key
        if self.fused and bias is None and mask is None:
            kern = _attention_kernel(self.is_causal, self.scale, self.block_q, self.block_k)
            return kern(query, key_, value)
        return flash_attention(
            query,
            key_,
            value,
            block_q=self.block_q,
            block_k=self.block_k,
            bias=bias,
            mask=mask,
            is_causal=self.is_causal,
            scale=self.scale,
        )


@ft.cache
def _attention_kernel(is_causal, scale, block_q, block_k):
    # One Kernel per configuration: evidence from `check_kernel` accumulates on it.
    return attention_kernel(
        is_causal=is_causal, scale=scale, block_q=block_q, block_k=block_k, name="FlashAttention"
    )


class MultiheadAttention(eqx.Module):
    """Multi-head attention with input and output projections, like `torch.nn.MultiheadAttention`.

    Inputs are sequences `(L, E)` (batch with `jax.vmap`) or batch-first `(B, L, E)`.
    `implementation="flash"` computes the attention with `flash_attention` (same result to
    float tolerance, less memory for long sequences).

    Masks follow JAX's convention, **True = may attend** (the opposite of PyTorch's
    `key_padding_mask`): `key_mask` marks real (non-padding) keys, `attn_mask` is a general
    mask broadcastable to `(B, N, L, S)`, and `is_causal` masks future positions.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> mha = MultiheadAttention(16, 4, key=jax.random.key(0))
      >>> x = jnp.ones((6, 16))
      >>> mha(x, is_causal=True).shape
      (6, 16)
    """

    q_proj: Linear
    k_proj: Linear
    v_proj: Linear
    out_proj: Linear
    embed_dim: int = eqx.field(static=True)
    num_heads: int = eqx.field(static=True)
    implementation: str = eqx.field(static=True)
    block_q: int = eqx.field(static=True)
    block_k: int = eqx.field(static=True)

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        kdim: int | None = None,
        vdim: int | None = None,
        bias: bool = True,
        implementation: str = "standard",
        block_q: int = 128,
        block_k: int = 128,
        dtype: Any = None,
        key: jax.Array,
    ):
        """Create the layer.

        Args:
          embed_dim: model width E (query features and output features).
          num_heads: number of heads N; must divide `embed_dim` (head size E // N).
          kdim: key features (default E).
          vdim: value features (default E).
          bias: whether the four projections have biases.
          implementation: `"standard"` or `"flash"`.
          block_q: query tile size for the flash path.
          block_k: key tile size for the flash path.
          dtype: parameter dtype (default float32).
          key: PRNG key for the initialisation.
        """
        if embed_dim % num_heads:
            raise ValueError(
                f"tljax.layers.MultiheadAttention: embed_dim={embed_dim} must be divisible by "
                f"num_heads={num_heads}."
            )
        if implementation not in ("standard", "flash"):
            raise ValueError(
                "tljax.layers.MultiheadAttention: implementation must be 'standard' or 'flash', "
                f"got {implementation!r}."
            )
        kq, kk, kv, ko = jax.random.split(key, 4)
        self.q_proj = Linear(embed_dim, embed_dim, bias, dtype=dtype, key=kq)
        self.k_proj = Linear(kdim or embed_dim, embed_dim, bias, dtype=dtype, key=kk)
        self.v_proj = Linear(vdim or embed_dim, embed_dim, bias, dtype=dtype, key=kv)
        self.out_proj = Linear(embed_dim, embed_dim, bias, dtype=dtype, key=ko)
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.implementation = implementation
        self.block_q, self.block_k = block_q, block_k

    @named_scope("tljax.layers.MultiheadAttention")
    def __call__(
        self,
        query: jax.Array,
        key_: jax.Array | None = None,
        value: jax.Array | None = None,
        *,
        key_mask: jax.Array | None = None,
        attn_mask: jax.Array | None = None,
        is_causal: bool = False,
        key: jax.Array | None = None,
    ) -> jax.Array:
        """Attend.

        Args:
          query: `(L, E)` or `(B, L, E)`.
          key_: `(S, kdim)` or `(B, S, kdim)`; default `query` (self-attention).
          value: `(S, vdim)` or `(B, S, vdim)`; default `key_`.
          key_mask: boolean `(S,)` or `(B, S)`, True for real keys, False for padding.
          attn_mask: boolean, broadcastable to `(L, S)`, `(N, L, S)` or `(B, N, L, S)`.
          is_causal: mask keys after the query position.
          key: ignored (no dropout).

        Returns:
          `(L, E)` or `(B, L, E)`.
        """
        del key
        key_ = query if key_ is None else key_
        value = key_ if value is None else value
        batched = query.ndim == 3
        n, d = self.num_heads, self.embed_dim // self.num_heads
        q = self.q_proj(query).reshape(*query.shape[:-1], n, d)
        k = self.k_proj(key_).reshape(*key_.shape[:-1], n, d)
        v = self.v_proj(value).reshape(*value.shape[:-1], n, d)
        mask = None
        if key_mask is not None:
            key_mask = jnp.asarray(key_mask)
            mask = key_mask[:, None, None, :] if batched else key_mask[None, None, :]
        if attn_mask is not None:
            attn_mask = jnp.asarray(attn_mask)
            mask = attn_mask if mask is None else mask & attn_mask
        if self.implementation == "flash":
            out = flash_attention(
                q,
                k,
                v,
                mask=mask,
                is_causal=is_causal,
                block_q=self.block_q,
                block_k=self.block_k,
            )
        else:
            out = dot_product_attention(q, k, v, mask=mask, is_causal=is_causal)
        return self.out_proj(out.reshape(*out.shape[:-2], self.embed_dim))
