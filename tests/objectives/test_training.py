"""train / save_checkpoint / load_checkpoint on scikit-learn's bundled digits (no download)."""

import io
import re
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import tljax.layers as tl
from tljax.core import InputError
from tljax.objectives._losses import accuracy, cross_entropy
from tljax.objectives._training import EarlyStopping, load_checkpoint, save_checkpoint, train


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int32)
    perm = np.random.default_rng(0).permutation(len(x))
    tr, te = perm[:1437], perm[1437:]
    return tuple(jnp.asarray(a) for a in (x[tr], y[tr], x[te], y[te]))


def mlp_loss(model, batch, key):
    logits = model(batch[0])
    return cross_entropy(logits, batch[1]), {"accuracy": accuracy(logits, batch[1])}


# One optimizer object shared by the tests: train's compiled epoch is cached per
# (model structure, loss, optimizer), so later tests reuse the first compilation.
ADAM = optax.adam(3e-3)


@pytest.fixture(scope="module")
def mlp_run(digits):
    xtr, ytr, xte, yte = digits
    net = tl.MLP(64, [64], 10, key=jax.random.key(0))
    ev = jax.jit(lambda m: {"accuracy": accuracy(m(xte), yte)})
    model, opt_state, hist = train(
        net,
        mlp_loss,
        ADAM,
        (xtr, ytr),
        epochs=10,
        batch_size=32,
        key=jax.random.key(1),
        eval_fn=ev,
        progress=False,
    )
    return model, opt_state, hist, ev


def test_mlp_reaches_90_percent_on_digits(mlp_run):
    model, _, hist, ev = mlp_run
    assert hist["eval_accuracy"][-1] > 0.9
    assert float(ev(model)["accuracy"]) == hist["eval_accuracy"][-1]
    assert hist["epochs_run"] == 10 and hist["steps"] == 10 * (1437 // 32)
    assert len(hist["loss"]) == len(hist["accuracy"]) == 10
    assert hist["loss"][-1] < hist["loss"][0]
    print(f"digits MLP test accuracy: {hist['eval_accuracy'][-1]:.4f}")


def test_cnn_reaches_90_percent_on_digits(digits):
    xtr, ytr, xte, yte = digits
    k1, k2 = jax.random.split(jax.random.key(0))
    cnn = tl.Sequential(
        tl.Conv2d(1, 8, 3, padding=1, key=k1),
        tl.ReLU(),
        tl.MaxPool2d(2),
        tl.Flatten(),
        tl.Linear(8 * 4 * 4, 10, key=k2),
    )
    xtr, xte = xtr.reshape(-1, 1, 8, 8), xte.reshape(-1, 1, 8, 8)

    def loss(model, batch, key):
        logits = jax.vmap(model)(batch[0])
        return cross_entropy(logits, batch[1]), {"accuracy": accuracy(logits, batch[1])}

    ev = jax.jit(lambda m: accuracy(jax.vmap(m)(xte), yte))
    _, _, hist = train(
        cnn,
        loss,
        ADAM,
        (xtr, ytr),
        epochs=8,
        batch_size=32,
        key=jax.random.key(2),
        eval_fn=ev,
        progress=False,
    )
    assert hist["eval_metric"][-1] > 0.9
    print(f"digits CNN test accuracy: {hist['eval_metric'][-1]:.4f}")


def test_same_seed_gives_identical_results(digits, mlp_run):
    xtr, ytr, _, _ = digits
    model, opt_state, hist, ev = mlp_run
    again, opt_again, hist_again = train(
        tl.MLP(64, [64], 10, key=jax.random.key(0)),
        mlp_loss,
        ADAM,
        (xtr, ytr),
        epochs=10,
        batch_size=32,
        key=jax.random.key(1),
        eval_fn=ev,
        progress=False,
    )
    assert hist_again["loss"] == hist["loss"]
    assert all(
        bool((a == b).all())
        for a, b in zip(
            jax.tree.leaves((model, opt_state)), jax.tree.leaves((again, opt_again)), strict=True
        )
    )
    other, _, _ = train(
        tl.MLP(64, [64], 10, key=jax.random.key(0)),
        mlp_loss,
        ADAM,
        (xtr, ytr),
        epochs=1,
        batch_size=32,
        key=jax.random.key(99),
        progress=False,
    )
    first, _, _ = train(
        tl.MLP(64, [64], 10, key=jax.random.key(0)),
        mlp_loss,
        ADAM,
        (xtr, ytr),
        epochs=1,
        batch_size=32,
        key=jax.random.key(1),
        progress=False,
    )
    assert not np.array_equal(other.layers[0].weight, first.layers[0].weight)


def test_checkpoint_round_trip_restores_params_and_optimizer_state(tmp_path, digits, mlp_run):
    model, opt_state, _, _ = mlp_run
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, model, opt_state)
    fresh = tl.MLP(64, [64], 10, key=jax.random.key(5))
    fresh_opt = ADAM.init(eqx.filter(fresh, eqx.is_inexact_array))
    loaded, loaded_opt = load_checkpoint(path, fresh, fresh_opt)
    saved_leaves = jax.tree.leaves((model, opt_state))
    loaded_leaves = jax.tree.leaves((loaded, loaded_opt))
    assert len(saved_leaves) == len(loaded_leaves)
    for a, b in zip(saved_leaves, loaded_leaves, strict=True):
        assert a.dtype == b.dtype and bool((a == b).all())
    # Resuming from the checkpoint continues exactly like the original run.
    xtr, ytr, _, _ = digits
    kw = dict(epochs=1, batch_size=32, key=jax.random.key(7), progress=False)
    cont, _, _ = train(model, mlp_loss, ADAM, (xtr, ytr), opt_state=opt_state, **kw)
    resumed, _, _ = train(loaded, mlp_loss, ADAM, (xtr, ytr), opt_state=loaded_opt, **kw)
    assert all(
        bool((a == b).all())
        for a, b in zip(jax.tree.leaves(cont), jax.tree.leaves(resumed), strict=True)
    )


def test_checkpoint_mismatch_lists_offending_leaves(tmp_path, mlp_run):
    model, opt_state, _, _ = mlp_run
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, model, opt_state)
    wider = tl.MLP(64, [32], 10, key=jax.random.key(0))
    with pytest.raises(
        InputError,
        match=re.escape(
            "does not match like_model:\n  model.layers[0].weight: saved float32[64, 64]"
        ),
    ):
        load_checkpoint(path, wider, opt_state)
    with pytest.raises(InputError, match="holds 4 arrays for model, the given like_model has 2"):
        load_checkpoint(path, tl.Linear(64, 10, key=jax.random.key(0)), opt_state)


def test_early_stopping_restores_best_epoch(digits):
    xtr, ytr, _, _ = digits
    # The metric only gets worse, so epoch 0 is the best and training stops after `patience`.
    calls = []

    def ev(model):
        calls.append(None)
        return {"score": -float(len(calls))}

    net = tl.MLP(64, [64], 10, key=jax.random.key(0))
    kw = dict(batch_size=32, key=jax.random.key(1), progress=False)
    best, _, hist = train(
        net,
        mlp_loss,
        ADAM,
        (xtr, ytr),
        epochs=10,
        eval_fn=ev,
        early_stopping=EarlyStopping(patience=2),
        **kw,
    )
    assert hist["epochs_run"] == 3 and hist["stopped_early"] and hist["best_epoch"] == 0
    one_epoch, _, _ = train(net, mlp_loss, ADAM, (xtr, ytr), epochs=1, **kw)
    assert all(
        bool((a == b).all())
        for a, b in zip(jax.tree.leaves(best), jax.tree.leaves(one_epoch), strict=True)
    )


def test_checkpoint_dir_writes_last_and_best(tmp_path, digits):
    xtr, ytr, _, _ = digits
    net = tl.MLP(64, [64], 10, key=jax.random.key(0))
    model, opt_state, _ = train(
        net,
        mlp_loss,
        ADAM,
        (xtr, ytr),
        epochs=2,
        batch_size=32,
        key=jax.random.key(1),
        progress=False,
        eval_fn=lambda m: 1.0,
        checkpoint_dir=tmp_path / "ck",
    )
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["best.npz", "last.npz"]
    last, _ = load_checkpoint(tmp_path / "ck" / "last.npz", net, opt_state)
    assert bool((last.layers[0].weight == model.layers[0].weight).all())


def test_progress_bar_silent_when_not_a_terminal_and_shown_on_a_terminal(
    digits, capsys, monkeypatch
):
    xtr, ytr, _, _ = digits
    net = tl.MLP(64, [64], 10, key=jax.random.key(0))
    kw = dict(epochs=1, batch_size=32, key=jax.random.key(1))
    train(net, mlp_loss, ADAM, (xtr, ytr), progress=True, **kw)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    fake = Terminal()
    monkeypatch.setattr(sys, "stdout", fake)
    train(net, mlp_loss, ADAM, (xtr, ytr), progress=True, **kw)
    assert "loss=" in fake.getvalue() and "accuracy=" in fake.getvalue()


def test_batchnorm_state_is_threaded_through_training(digits):
    xtr, ytr, xte, yte = digits
    k1, k2 = jax.random.split(jax.random.key(3))
    net = tl.Sequential(
        tl.Linear(64, 32, key=k1), tl.BatchNorm(32), tl.ReLU(), tl.Linear(32, 10, key=k2)
    )

    def loss(model, state, batch, key):
        logits, state = model(batch[0], state)
        return cross_entropy(logits, batch[1]), state

    def ev(model, state):
        logits, _ = eqx.nn.inference_mode(model)(xte, state)
        return accuracy(logits, yte)

    (_model, state), _, hist = train(
        net,
        loss,
        ADAM,
        (xtr, ytr),
        state=net.init_state(),
        epochs=5,
        batch_size=64,
        key=jax.random.key(4),
        eval_fn=ev,
        progress=False,
    )
    assert hist["eval_metric"][-1] > 0.9
    assert not np.allclose(state[1].running_mean, 0.0)  # running statistics were updated
    print(f"digits MLP+BatchNorm test accuracy: {hist['eval_metric'][-1]:.4f}")


def test_flax_nnx_model_trains_and_checkpoints(tmp_path, digits):
    from flax import nnx

    xtr, ytr, xte, yte = digits

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(64, 64, rngs=rngs)
            self.bn = nnx.BatchNorm(64, rngs=rngs)
            self.l2 = nnx.Linear(64, 10, rngs=rngs)

        def __call__(self, x):
            return self.l2(jax.nn.relu(self.bn(self.l1(x))))

    net = Net(nnx.Rngs(0))

    def loss(model, batch, key):
        logits = model(batch[0])
        return cross_entropy(logits, batch[1]), {"accuracy": accuracy(logits, batch[1])}

    def ev(model):
        model.eval()
        acc = float(accuracy(model(xte), yte))
        model.train()
        return acc

    model, opt_state, hist = train(
        net,
        loss,
        ADAM,
        (xtr, ytr),
        epochs=6,
        batch_size=32,
        key=jax.random.key(1),
        eval_fn=ev,
        progress=False,
    )
    assert isinstance(model, Net)
    assert hist["eval_metric"][-1] > 0.9
    print(f"digits Flax NNX MLP+BatchNorm test accuracy: {hist['eval_metric'][-1]:.4f}")
    assert not np.allclose(
        model.bn.mean[...], 0.0
    )  # batch statistics were carried and written back
    path = tmp_path / "nnx.npz"
    save_checkpoint(path, model, opt_state)
    fresh = Net(nnx.Rngs(5))
    fresh_opt = ADAM.init(nnx.state(fresh, nnx.Param))
    loaded, loaded_opt = load_checkpoint(path, fresh, fresh_opt)
    for a, b in zip(
        jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(loaded)), strict=True
    ):
        assert bool((a == b).all())
    for a, b in zip(jax.tree.leaves(opt_state), jax.tree.leaves(loaded_opt), strict=True):
        assert bool((a == b).all())


def test_bad_arguments_explain(digits):
    xtr, ytr, _, _ = digits
    net = tl.Linear(64, 10, key=jax.random.key(0))
    with pytest.raises(InputError, match="batch_size=5000 exceeds the 1437 examples"):
        train(net, mlp_loss, ADAM, (xtr, ytr), epochs=1, batch_size=5000, key=jax.random.key(0))
    with pytest.raises(InputError, match="early_stopping watches an eval_fn metric"):
        train(
            net,
            mlp_loss,
            ADAM,
            (xtr, ytr),
            epochs=1,
            batch_size=32,
            key=jax.random.key(0),
            early_stopping=EarlyStopping(),
        )
    with pytest.raises(InputError, match="same leading"):
        train(net, mlp_loss, ADAM, (xtr, ytr[:10]), epochs=1, batch_size=32, key=jax.random.key(0))
    with pytest.raises(
        InputError, match=re.escape("the loss must return a scalar or (loss, metrics_dict)")
    ):
        train(
            net,
            lambda m, b, k: (1.0, 2.0),
            ADAM,
            (xtr, ytr),
            epochs=1,
            batch_size=32,
            key=jax.random.key(0),
            progress=False,
        )


def test_compiled_step_is_reused_across_calls_and_int_arrays_are_not_trained():
    traces = []

    class Scaled(eqx.Module):
        linear: tl.Linear
        classes: jax.Array  # an integer array: held fixed, not trained

        def __call__(self, x):
            return self.linear(x)[..., self.classes]

    def loss(model, batch, key):
        traces.append(None)  # runs only while tracing
        return cross_entropy(model(batch[0]), batch[1])

    x = jnp.asarray(np.random.default_rng(0).standard_normal((40, 3)), jnp.float32)
    y = jnp.asarray(np.arange(40) % 2, jnp.int32)
    model = Scaled(tl.Linear(3, 4, key=jax.random.key(0)), jnp.array([1, 3]))
    opt = optax.sgd(0.1)
    kw = dict(epochs=2, batch_size=8, key=jax.random.key(1), progress=False)
    trained, _, hist = train(model, loss, opt, (x, y), **kw)
    n_traces = len(traces)
    assert n_traces >= 1 and hist["steps"] == 10
    assert bool((trained.classes == model.classes).all())
    assert not bool((trained.linear.weight == model.linear.weight).all())
    plain = tl.MLP(3, [4], 2, key=jax.random.key(2))
    train(plain, loss, opt, (x, y), **kw)
    n_plain = len(traces)
    train(tl.MLP(3, [4], 2, key=jax.random.key(3)), loss, opt, (x, y), **kw)
    assert len(traces) == n_plain  # same structure, loss and optimizer: no retracing
