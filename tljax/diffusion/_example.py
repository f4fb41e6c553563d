"""Worked example: a tiny MLP denoiser trained on a 2-D toy distribution, then sampled.

The data come from scikit-learn's `make_moons` / `make_swiss_roll` (generated, no download) and are
standardised to zero mean and unit variance per coordinate, so N(0, I) is a fair baseline. The
sample quality is measured by Gaussian-kernel MMD^2 and sliced 2-Wasserstein against a held-out data
sample, next to three references: N(0, I) samples, samples of the untrained network with the same
sampler, and a second independent data sample (the noise floor of the estimators).
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from tljax.core import InputError

from ._losses import epsilon_loss, training_inputs
from ._metrics import median_bandwidth, mmd_gaussian, sliced_wasserstein
from ._samplers import Sampler, ddim_sampler, ddpm_sampler, probability_flow_sampler, sample
from ._schedule import Schedule, linear_schedule


def time_embedding(t, dim: int) -> jax.Array:
    """Sinusoidal embedding of a scalar time (Vaswani et al. 2017; Ho et al. 2020).

    Args:
      t: scalar time (int or float).
      dim: even embedding size; frequencies 10000^(-k / (dim/2)), k = 0..dim/2 - 1.

    Returns:
      Array of shape `(dim,)`: `[sin(t w_k)..., cos(t w_k)...]`.
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
    angles = jnp.asarray(t, jnp.float32) * freqs
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)])


class ToyDenoiser(eqx.Module):
    """An MLP that predicts eps from (x_t, t) for one point; use `batched` for a batch."""

    mlp: eqx.nn.MLP
    embed_dim: int = eqx.field(static=True)

    def __init__(
        self, dim: int = 2, *, hidden: int = 128, depth: int = 3, embed_dim: int = 32, key
    ):
        """Builds the MLP `[x, embed(t)] -> eps_hat` with SiLU activations.

        Args:
          dim: dimension of the data points.
          hidden: width of the hidden layers.
          depth: number of hidden layers.
          embed_dim: size of the sinusoidal time embedding (even).
          key: PRNG key for the initial weights.
        """
        self.embed_dim = embed_dim
        self.mlp = eqx.nn.MLP(dim + embed_dim, dim, hidden, depth, activation=jax.nn.silu, key=key)

    def __call__(self, x, t):
        """Predicts the noise of one point.

        Args:
          x: one point, shape `(dim,)`.
          t: scalar time in 1..T.

        Returns:
          eps_hat, shape `(dim,)`.
        """
        return self.mlp(jnp.concatenate([x, time_embedding(t, self.embed_dim)]))


def batched(model):
    """`model(x, t)` for one point -> `fn(x, t)` for a batch `(n, dim)`, t scalar or `(n,)`."""

    def fn(x, t):
        t = jnp.broadcast_to(jnp.asarray(t), x.shape[:1])
        return jax.vmap(model)(x, t)

    return fn


class Distances(NamedTuple):
    """Distances between a sample and held-out data.

    Attributes:
      mmd2: Gaussian-kernel MMD^2 with the median-heuristic bandwidth h (coarse shape).
      mmd2_fine: MMD^2 with bandwidth h / 8, sensitive to the thin structure of the moons.
      sliced_w2: sliced 2-Wasserstein distance (128 directions).
    """

    mmd2: float
    mmd2_fine: float
    sliced_w2: float


class ToyDiffusionResult(NamedTuple):
    """What `train_toy_diffusion` returns.

    Attributes:
      model: the trained `ToyDenoiser`.
      schedule: the noise schedule it was trained with.
      samples: `(num_samples, 2)` samples of the trained model.
      reference: `(num_samples, 2)` held-out data the distances are measured against.
      distances: `Distances` for "trained", "gaussian" (N(0, I)), "untrained" (same sampler,
        initial weights) and "data" (an independent data sample: the estimators' noise floor).
      losses: per-step training loss, shape `(num_train_steps,)`.
      bandwidth: the MMD kernel width h (median heuristic on the reference).
      train_seconds: wall time of training, compilation included.
      sample_seconds: wall time of sampling the trained model, compilation included.
    """

    model: ToyDenoiser
    schedule: Schedule
    samples: jax.Array
    reference: jax.Array
    distances: dict[str, Distances]
    losses: jax.Array
    bandwidth: float
    train_seconds: float
    sample_seconds: float


def toy_data(seed: int, n: int, dataset: str = "moons", noise: float = 0.05) -> np.ndarray:
    """`n` standardised float32 points of a 2-D toy distribution (scikit-learn generators).

    Args:
      seed: numpy seed for the generator.
      n: number of points.
      dataset: "moons" (two interleaved half circles) or "swiss_roll" (its (x, z) coordinates).
      noise: Gaussian noise of the generator (in the generator's units, before standardising).

    Returns:
      Array of shape `(n, 2)`, each coordinate with zero mean and unit variance (exactly, over
      these `n` points).
    """
    from sklearn.datasets import make_moons, make_swiss_roll  # lazy: slow import, toy data only

    if dataset == "moons":
        pts, _ = make_moons(n, noise=noise, random_state=seed)
    elif dataset == "swiss_roll":
        pts3, _ = make_swiss_roll(n, noise=noise, random_state=seed)
        pts = pts3[:, [0, 2]]
    else:
        raise InputError(f"toy_data: dataset must be 'moons' or 'swiss_roll', got {dataset!r}.")
    pts = (pts - pts.mean(0)) / pts.std(0)
    return pts.astype(np.float32)


def train_toy_diffusion(
    key: jax.Array,
    *,
    dataset: str = "moons",
    num_diffusion_steps: int = 100,
    num_train_steps: int = 5000,
    batch_size: int = 256,
    learning_rate: float = 1e-2,
    hidden: int = 128,
    depth: int = 3,
    num_data: int = 20000,
    num_samples: int = 1000,
    sampler: str | Sampler = "ddpm",
) -> ToyDiffusionResult:
    """Trains a `ToyDenoiser` with the epsilon loss and samples from it.

    Schedule: `linear_schedule(num_diffusion_steps)` (DDPM's 1e-4..0.02 scaled by 1000 / T).
    Optimiser: Adam with a cosine-decayed learning rate. Each step draws a minibatch from
    `num_data` pre-generated points, one t per point uniform on 1..T and fresh noise.

    Args:
      key: PRNG key (data, initial weights, minibatches, sampling and projections derive from it).
      dataset: "moons" or "swiss_roll".
      num_diffusion_steps: T.
      num_train_steps: optimiser steps.
      batch_size: minibatch size.
      learning_rate: peak Adam learning rate.
      hidden: MLP width.
      depth: MLP hidden layers.
      num_data: size of the training set.
      num_samples: number of generated points (and of each reference sample).
      sampler: "ddpm", "ddim" (eta = 0, T/2 steps), "ode" (probability-flow Heun, T/2 steps) or a
        `Sampler`.

    Returns:
      A `ToyDiffusionResult`.
    """
    k_data, k_model, k_train, k_sample, k_gauss, k_untrained, k_proj = jax.random.split(key, 7)
    seed = int(jax.random.randint(k_data, (), 0, 2**31 - 1))
    # Three disjoint draws of one generator run: training set, held-out reference, noise floor.
    all_pts = toy_data(seed, num_data + 2 * num_samples, dataset)
    data = jnp.asarray(all_pts[:num_data])
    reference = jnp.asarray(all_pts[num_data : num_data + num_samples])
    floor = jnp.asarray(all_pts[num_data + num_samples :])

    schedule = linear_schedule(num_diffusion_steps)
    smp = _make_sampler(sampler, schedule)
    model0 = ToyDenoiser(2, hidden=hidden, depth=depth, key=k_model)
    params, static = eqx.partition(model0, eqx.is_array)
    opt = optax.adam(optax.cosine_decay_schedule(learning_rate, num_train_steps, alpha=0.05))

    def loss_fn(p, k):
        model = eqx.combine(p, static)
        k_idx, k_in = jax.random.split(k)
        x_0 = data[jax.random.randint(k_idx, (batch_size,), 0, num_data)]
        t, noise = training_inputs(k_in, schedule, x_0)
        return epsilon_loss(schedule, batched(model), x_0, t, noise)

    def train_step(carry, k):
        p, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(p, k)
        updates, opt_state = opt.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), loss

    @jax.jit
    def train(p, keys):
        (p, _), losses = lax.scan(train_step, (p, opt.init(p)), keys)
        return p, losses

    t0 = time.perf_counter()
    params, losses = jax.block_until_ready(
        train(params, jax.random.split(k_train, num_train_steps))
    )
    train_seconds = time.perf_counter() - t0
    model = eqx.combine(params, static)

    @jax.jit
    def draw(p, k):
        return sample(smp, batched(eqx.combine(p, static)), k, (num_samples, 2))

    t0 = time.perf_counter()
    samples = jax.block_until_ready(draw(params, k_sample))
    sample_seconds = time.perf_counter() - t0
    untrained = draw(eqx.partition(model0, eqx.is_array)[0], k_untrained)
    gaussian = jax.random.normal(k_gauss, (num_samples, 2), jnp.float32)

    bandwidth = median_bandwidth(reference)

    def dist(x):
        return Distances(
            float(mmd_gaussian(x, reference, bandwidth=bandwidth)),
            float(mmd_gaussian(x, reference, bandwidth=bandwidth / 8.0)),
            float(sliced_wasserstein(x, reference, key=k_proj)),
        )

    distances = {
        "trained": dist(samples),
        "gaussian": dist(gaussian),
        "untrained": dist(untrained),
        "data": dist(floor),
    }
    return ToyDiffusionResult(
        model,
        schedule,
        samples,
        reference,
        distances,
        losses,
        float(bandwidth),
        train_seconds,
        sample_seconds,
    )


def _make_sampler(sampler, schedule: Schedule) -> Sampler:
    if isinstance(sampler, Sampler):
        return sampler
    half = max(1, schedule.num_steps // 2)
    if sampler == "ddpm":
        return ddpm_sampler(schedule)
    if sampler == "ddim":
        return ddim_sampler(schedule, num_steps=half)
    if sampler == "ode":
        return probability_flow_sampler(schedule, num_steps=half)
    raise InputError(
        f"train_toy_diffusion: sampler must be 'ddpm', 'ddim', 'ode' or a Sampler, got {sampler!r}."
    )
