"""Certified training on scikit-learn's 8x8 digits: standard vs IBP vs CROWN-IBP, MLP and CNN.

Run from the repository root:

    python bench/certified_training.py                # full table (a few minutes on 2 CPU cores)
    python bench/certified_training.py --epochs 20    # quicker

Pixels are scaled to [0, 1]; the L-inf balls are clipped to [0, 1]. Certified training ramps the
radius linearly from 0 to `--train-eps` (0.05) after a warm-up of natural training, with the
natural/robust mix kappa from 1 to 0.5 and (CROWN-IBP) beta from 1 to 0 over the same ramp
(Zhang et al. 2020). Training bounds use `float_sound=False`. The table reports clean test
accuracy and the share of test points certified robust (all margins' lower bounds > 0) by
float-sound CROWN (`tljax.bound(..., method="crown")`, the default) at eps = 0.01 and 0.05,
and the mean training step time (compilation excluded).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import tljax.layers as tl
from tljax.objectives._certified import apply_model, certified_loss, certify
from tljax.objectives._losses import accuracy, cross_entropy
from tljax.objectives._training import train


def digits(cnn: bool):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int32)
    perm = np.random.default_rng(0).permutation(len(x))
    tr, te = perm[:1437], perm[1437:]
    if cnn:
        x = x.reshape(-1, 1, 8, 8)
    return tuple(jnp.asarray(a) for a in (x[tr], y[tr], x[te], y[te]))


def make_model(kind: str, key):
    if kind == "mlp":
        return tl.MLP(64, [64, 64], 10, key=key)
    k = jax.random.split(key, 4)
    return tl.Sequential(
        tl.Conv2d(1, 8, 3, padding=1, key=k[0]),
        tl.ReLU(),
        tl.Conv2d(8, 16, 4, stride=2, padding=1, key=k[1]),
        tl.ReLU(),
        tl.Flatten(0),
        tl.Linear(256, 64, key=k[2]),
        tl.ReLU(),
        tl.Linear(64, 10, key=k[3]),
    )


def natural_loss(model, batch, key):
    logits = jax.vmap(model)(batch[0])
    return cross_entropy(logits, batch[1]), {"accuracy": accuracy(logits, batch[1])}


def run(kind, method, args, data):
    xtr, ytr, xte, yte = data
    model = make_model(kind, jax.random.key(args.seed))
    opt = optax.adam(args.lr)
    steps_per_epoch = len(xtr) // args.batch_size
    kw = dict(batch_size=args.batch_size, key=jax.random.key(args.seed + 1), progress=False)
    if method == "standard":
        loss, state = natural_loss, None
    else:
        warm = args.warmup_epochs * steps_per_epoch
        ramp = args.ramp_epochs * steps_per_epoch
        loss = certified_loss(
            apply_model, method=method, eps=args.train_eps, warmup_steps=warm, ramp_steps=ramp
        )
        state = jnp.int32(0)
    # Compile once (the step is cached per model structure, loss and optimizer), then time.
    train(model, loss, opt, (xtr, ytr), epochs=1, state=state, **kw)
    out, _, hist = train(model, loss, opt, (xtr, ytr), epochs=args.epochs, state=state, **kw)
    model = out[0] if state is not None else out
    step_ms = 1e3 * hist["time_s"] / hist["steps"]
    clean = float(accuracy(jax.vmap(model)(xte), yte))
    t = time.perf_counter()
    cert = [float(np.mean(certify(apply_model, model, xte, yte, e))) for e in args.cert_eps]
    cert_s = time.perf_counter() - t
    return clean, cert, step_ms, cert_s


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--warmup-epochs", type=int, default=5)
    p.add_argument("--ramp-epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--train-eps", type=float, default=0.05)
    p.add_argument("--cert-eps", type=float, nargs="+", default=[0.01, 0.05])
    p.add_argument("--models", nargs="+", default=["mlp", "cnn"])
    p.add_argument("--methods", nargs="+", default=["standard", "ibp", "crown-ibp"])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}; digits 8x8, 1437 train / 360 test; "
        f"{args.epochs} epochs, batch {args.batch_size}, train eps {args.train_eps} "
        f"(warm-up {args.warmup_epochs}, ramp {args.ramp_epochs} epochs)"
    )
    ce = " | ".join(f"cert@{e:g}" for e in args.cert_eps)
    print(f"| model | training | clean acc | {ce} | step ms | certify s |")
    print("|---|---|---|" + "---|" * len(args.cert_eps) + "---|---|")
    for kind in args.models:
        data = digits(kind == "cnn")
        for method in args.methods:
            clean, cert, step_ms, cert_s = run(kind, method, args, data)
            cs = " | ".join(f"{c:.3f}" for c in cert)
            print(
                f"| {kind} | {method} | {clean:.3f} | {cs} | {step_ms:.2f} | {cert_s:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
