"""Steps per second of `tljax.objectives.train` against a hand-written jitted Equinox+Optax step.

Run from the repository root:

    python bench/train.py                 # MLP and CNN on scikit-learn's digits, batch 128
    python bench/train.py --epochs 40 --batch-size 64 --repeats 5

Both loops train the same model with the same optimizer on the same data and batch size. The
hand-written baseline is the strongest plain version: a `jax.jit` step taking the partitioned
parameters, the optimizer state, the full data arrays and one row of batch indices (so the
minibatch gather happens on device), called from a Python loop over index rows prepared
beforehand (not timed). `train` is timed as a whole call (setup, per-epoch permutations, metric
sums, history) after a one-epoch warm-up call that compiles the step it then reuses.
"Overhead" is `hand steps/s / train steps/s - 1` (negative: `train` is faster); the goal is
<= 5%. Each row is the best of `--repeats` interleaved runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tljax.layers as tl
from tljax.objectives._losses import cross_entropy
from tljax.objectives._training import train


def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return jnp.asarray(d.data / 16.0, jnp.float32), jnp.asarray(d.target, jnp.int32)


def make_mlp():
    return tl.MLP(64, [256, 256], 10, key=jax.random.key(0))


def make_cnn():
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    return tl.Sequential(
        tl.Conv2d(1, 16, 3, padding=1, key=k1),
        tl.ReLU(),
        tl.Conv2d(16, 16, 3, padding=1, key=k2),
        tl.ReLU(),
        tl.MaxPool2d(2),
        tl.Flatten(),
        tl.Linear(16 * 4 * 4, 10, key=k3),
    )


def loss_fn(model, batch, key):
    del key
    x, y = batch
    return cross_entropy(jax.vmap(model)(x), y)


def bench_train(model, optimizer, data, epochs, batch_size):
    kw = dict(batch_size=batch_size, key=jax.random.key(1), progress=False)
    train(model, loss_fn, optimizer, data, epochs=1, **kw)  # compiles; later calls reuse it
    start = time.perf_counter()
    trained, _, hist = train(model, loss_fn, optimizer, data, epochs=epochs, **kw)
    jax.block_until_ready(trained)
    return hist["steps"] / (time.perf_counter() - start)


def bench_hand(model, optimizer, data, epochs, batch_size):
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt_state = optimizer.init(params)
    n = data[0].shape[0]
    steps_per_epoch = n // batch_size

    @jax.jit
    def step(params, opt_state, data, idx, key):
        def loss(p):
            return loss_fn(eqx.combine(p, static), jax.tree.map(lambda a: a[idx], data), key)

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    rng = np.random.default_rng(0)
    orders = [
        jnp.asarray(rng.permutation(n)[: steps_per_epoch * batch_size].reshape(-1, batch_size))
        for _ in range(epochs)
    ]
    rows = [list(order) for order in orders]  # device rows sliced before timing
    key = jax.random.key(2)
    params, opt_state, value = step(params, opt_state, data, rows[0][0], key)  # compile
    value.block_until_ready()
    start = time.perf_counter()
    for epoch_rows in rows:
        for idx in epoch_rows:
            params, opt_state, value = step(params, opt_state, data, idx, key)
    value.block_until_ready()
    return epochs * steps_per_epoch / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    x, y = digits()
    rows = [
        ("MLP 64-256-256-10", make_mlp, (x, y)),
        ("CNN 2x conv16 + pool", make_cnn, (x.reshape(-1, 1, 8, 8), y)),
    ]
    optimizer = optax.adam(1e-3)
    print(
        f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}"
    )
    print(
        f"data: digits {x.shape[0]} examples, batch {args.batch_size}, {args.epochs} timed epochs"
    )
    header = f"{'model':<22} {'hand steps/s':>13} {'train steps/s':>14} {'overhead':>9}"
    print(header)
    print("-" * len(header))
    for name, make, data in rows:
        hand, ours = 0.0, 0.0
        for _ in range(args.repeats):  # interleaved, so load changes hit both alike
            hand = max(hand, bench_hand(make(), optimizer, data, args.epochs, args.batch_size))
            ours = max(ours, bench_train(make(), optimizer, data, args.epochs, args.batch_size))
        print(f"{name:<22} {hand:>13.0f} {ours:>14.0f} {hand / ours - 1:>+9.1%}")


if __name__ == "__main__":
    main()
