"""Probability distributions as frozen pytrees: Categorical, Bernoulli, Normal, DiagGaussian.

Each has `log_prob(x)`, `sample(key, sample_shape=())`, `entropy()` and `kl_divergence(other)`
(other of the same family), written in closed form. Parameters may carry batch dimensions
(`batch_shape`); `sample` returns `sample_shape + batch_shape (+ event_shape)`. Parameters are not
value-checked (scales must be > 0), so the classes work under `jit`.

The design follows distrax's template: a small abstract base (`Distribution`) and concrete
families; it is a fresh implementation.

References:
  Cover & Thomas, *Elements of Information Theory* (2006), §8.4 (Gaussian entropy), §2.3 (KL).
"""

from __future__ import annotations

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp

from tljax.core import InputError

_LOG_2PI = math.log(2 * math.pi)


def _float(x):
    return jnp.asarray(x, dtype=jnp.result_type(x, float))


class Distribution(eqx.Module):
    """Abstract base: subclasses implement `log_prob`, `sample`, `entropy`, `kl_divergence`."""

    @abc.abstractmethod
    def log_prob(self, x: jax.Array) -> jax.Array:
        """log p(x), shape `x.shape` minus the event dimensions."""

    @abc.abstractmethod
    def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
        """Draws samples of shape `sample_shape + batch_shape + event_shape`."""

    @abc.abstractmethod
    def entropy(self) -> jax.Array:
        """Shannon (differential) entropy in nats, shape `batch_shape`."""

    @abc.abstractmethod
    def kl_divergence(self, other: Distribution) -> jax.Array:
        """KL(self ‖ other) in nats, shape `batch_shape`."""

    def prob(self, x: jax.Array) -> jax.Array:
        """p(x) = exp(log_prob(x))."""
        return jnp.exp(self.log_prob(x))

    def sample_and_log_prob(self, key: jax.Array, sample_shape: tuple[int, ...] = ()):
        """`(x, log_prob(x))` for x = `sample(key, sample_shape)`."""
        x = self.sample(key, sample_shape)
        return x, self.log_prob(x)

    def _same_family(self, other: Distribution, where: str) -> None:
        if type(other) is not type(self):
            raise InputError(
                f"{type(self).__name__}.{where}: closed form needs another {type(self).__name__}, "
                f"got "
                f"{type(other).__name__}; compute it by Monte Carlo with sample_and_log_prob "
                f"instead."
            )


class Categorical(Distribution):
    """Categorical distribution over {0, …, K−1} given by `logits` (…, K).

    p_k = softmax(logits)_k; H = −Σ_k p_k log p_k; KL(p‖q) = Σ_k p_k (log p_k − log q_k), with
    0·log 0 = 0 (a logit of −inf is a zero-probability category).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> d = Categorical(jnp.log(jnp.array([0.25, 0.75])))
      >>> round(float(d.log_prob(1)), 4), d.sample(jax.random.key(0), (3,)).shape
      (-0.2877, (3,))
    """

    logits: jax.Array

    def __init__(self, logits):
        self.logits = _float(logits)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self.logits.shape[:-1]

    @property
    def num_categories(self) -> int:
        return self.logits.shape[-1]

    @property
    def log_probs(self) -> jax.Array:
        return jax.nn.log_softmax(self.logits, axis=-1)

    @property
    def probs(self) -> jax.Array:
        return jax.nn.softmax(self.logits, axis=-1)

    def mode(self) -> jax.Array:
        return jnp.argmax(self.logits, axis=-1)

    def log_prob(self, x):
        x = jnp.asarray(x)
        lp = jnp.broadcast_to(
            self.log_probs, jnp.broadcast_shapes(x.shape, self.batch_shape) + (self.num_categories,)
        )
        x = jnp.broadcast_to(x, lp.shape[:-1])
        return jnp.take_along_axis(lp, x[..., None].astype(jnp.int32), axis=-1)[..., 0]

    def sample(self, key, sample_shape=()):
        return jax.random.categorical(
            key, self.logits, axis=-1, shape=tuple(sample_shape) + self.batch_shape
        )

    def entropy(self):
        lp, p = self.log_probs, self.probs
        return -jnp.sum(jnp.where(p > 0, p * lp, 0.0), axis=-1)

    def kl_divergence(self, other):
        self._same_family(other, "kl_divergence")
        lp, lq, p = jnp.broadcast_arrays(self.log_probs, other.log_probs, self.probs)
        return jnp.sum(jnp.where(p > 0, p * (lp - lq), 0.0), axis=-1)


class Bernoulli(Distribution):
    """Bernoulli distribution on {0, 1} with P(1) = σ(`logits`).

    log p(x) = −x·softplus(−ℓ) − (1−x)·softplus(ℓ); H = p·softplus(−ℓ) + (1−p)·softplus(ℓ).
    Samples are int32.
    """

    logits: jax.Array

    def __init__(self, logits):
        self.logits = _float(logits)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self.logits.shape

    @property
    def probs(self) -> jax.Array:
        return jax.nn.sigmoid(self.logits)

    def log_prob(self, x):
        x, logits = jnp.broadcast_arrays(jnp.asarray(x, self.logits.dtype), self.logits)
        return -x * jax.nn.softplus(-logits) - (1 - x) * jax.nn.softplus(logits)

    def sample(self, key, sample_shape=()):
        u = jax.random.uniform(key, tuple(sample_shape) + self.batch_shape, self.logits.dtype)
        return (u < jnp.broadcast_to(self.probs, u.shape)).astype(jnp.int32)

    def entropy(self):
        p = self.probs
        return p * jax.nn.softplus(-self.logits) + (1 - p) * jax.nn.softplus(self.logits)

    def kl_divergence(self, other):
        self._same_family(other, "kl_divergence")
        p, lp, lq = jnp.broadcast_arrays(self.probs, self.logits, other.logits)
        # log p − log q = softplus(−ℓ_q) − softplus(−ℓ_p); similarly for the 0 outcome.
        one = jax.nn.softplus(-lq) - jax.nn.softplus(-lp)
        zero = jax.nn.softplus(lq) - jax.nn.softplus(lp)
        return p * one + (1 - p) * zero


class Normal(Distribution):
    """Univariate normal N(`loc`, `scale`²) (elementwise over the batch).

    log p(x) = −½((x−μ)/σ)² − log σ − ½ log 2π;  H = ½ log(2πe σ²);
    KL(N(μ₁,σ₁²) ‖ N(μ₂,σ₂²)) = log(σ₂/σ₁) + (σ₁² + (μ₁−μ₂)²)/(2σ₂²) − ½.
    """

    loc: jax.Array
    scale: jax.Array

    def __init__(self, loc, scale):
        self.loc, self.scale = jnp.broadcast_arrays(_float(loc), _float(scale))

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self.loc.shape

    def log_prob(self, x):
        # Explicit broadcasting keeps this valid under jax_numpy_rank_promotion="raise".
        x, loc, scale = jnp.broadcast_arrays(jnp.asarray(x, self.loc.dtype), self.loc, self.scale)
        z = (x - loc) / scale
        return -0.5 * z**2 - jnp.log(scale) - 0.5 * _LOG_2PI

    def sample(self, key, sample_shape=()):
        eps = jax.random.normal(key, tuple(sample_shape) + self.batch_shape, self.loc.dtype)
        return jnp.broadcast_to(self.loc, eps.shape) + jnp.broadcast_to(self.scale, eps.shape) * eps

    def entropy(self):
        return 0.5 * (_LOG_2PI + 1.0) + jnp.log(self.scale)

    def kl_divergence(self, other):
        self._same_family(other, "kl_divergence")
        m1, s1, m2, s2 = jnp.broadcast_arrays(self.loc, self.scale, other.loc, other.scale)
        ratio = s1 / s2
        return -jnp.log(ratio) + 0.5 * (ratio**2 + ((m1 - m2) / s2) ** 2) - 0.5


class DiagGaussian(Distribution):
    """Multivariate normal with diagonal covariance: event shape (d,) = `loc.shape[-1:]`.

    All quantities are the sums over the last axis of the `Normal` ones (independent coordinates).
    """

    loc: jax.Array
    scale_diag: jax.Array

    def __init__(self, loc, scale_diag):
        self.loc, self.scale_diag = jnp.broadcast_arrays(_float(loc), _float(scale_diag))
        if self.loc.ndim < 1:
            raise InputError(
                "DiagGaussian: `loc` needs at least one (event) dimension; use Normal for scalars."
            )

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self.loc.shape[:-1]

    @property
    def event_shape(self) -> tuple[int, ...]:
        return self.loc.shape[-1:]

    def _normal(self) -> Normal:
        return Normal(self.loc, self.scale_diag)

    def log_prob(self, x):
        return jnp.sum(self._normal().log_prob(x), axis=-1)

    def sample(self, key, sample_shape=()):
        return self._normal().sample(key, sample_shape)

    def entropy(self):
        return jnp.sum(self._normal().entropy(), axis=-1)

    def kl_divergence(self, other):
        self._same_family(other, "kl_divergence")
        return jnp.sum(self._normal().kl_divergence(other._normal()), axis=-1)
