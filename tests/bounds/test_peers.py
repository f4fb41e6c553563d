"""Agreement with auto_LiRPA 0.7.1 on the identical networks (../shared/benchmarks/peers)."""

import jax
import numpy as np
import pytest

import tljax


def load(benchmarks_dir, name):
    d = np.load(benchmarks_dir / "peers" / f"{name}_mlp.npz")
    ref = np.load(benchmarks_dir / "peers" / f"{name}_mlp_bounds_lirpa.npz")
    k = len([key for key in d.files if key.startswith("W")])
    params = [(d[f"W{i}"], d[f"b{i}"]) for i in range(k)]
    box = tljax.Box(d["x"][0] - d["eps"], d["x"][0] + d["eps"])
    return params, box, ref


def net(x, params):
    h = x
    for i, (w, b) in enumerate(params):
        h = w @ h + b
        if i < len(params) - 1:
            h = jax.nn.relu(h)
    return h


@pytest.mark.parametrize("name", ["acas", "mnist"])
def test_ibp_and_crown_match_auto_lirpa(benchmarks_dir, name):
    params, box, ref = load(benchmarks_dir, name)
    for method, key in (("ibp", "ibp"), ("crown", "crown")):
        b = tljax.bound(net, box, params, method=method, float_sound=False)
        for side, arr in (("lb", b.lower), ("ub", b.upper)):
            peer = ref[f"{key}_{side}"][0]
            # float32 on both sides: agree to 1e-5 relative to the magnitude
            np.testing.assert_allclose(
                np.asarray(arr), peer, rtol=1e-5, atol=1e-5, err_msg=f"{method} {side}"
            )


@pytest.mark.parametrize("name", ["acas", pytest.param("mnist", marks=pytest.mark.slow)])
def test_alpha_crown_at_least_as_tight_as_auto_lirpa(benchmarks_dir, name):
    params, box, ref = load(benchmarks_dir, name)
    b = tljax.bound(net, box, params, method="alpha-crown", float_sound=False)
    tol = 1e-5
    assert np.all(np.asarray(b.lower) >= ref["alpha_crown_lb"][0] - tol), (
        np.asarray(b.lower) - ref["alpha_crown_lb"][0]
    )
    assert np.all(np.asarray(b.upper) <= ref["alpha_crown_ub"][0] + tol), ref["alpha_crown_ub"][
        0
    ] - np.asarray(b.upper)


@pytest.mark.parametrize("name", ["acas", "mnist"])
def test_float_sound_crown_is_slightly_looser_and_contains_peer(benchmarks_dir, name):
    params, box, ref = load(benchmarks_dir, name)
    s = tljax.bound(net, box, params, method="crown")
    lo, hi = np.asarray(s.lower), np.asarray(s.upper)
    assert np.all(lo <= ref["crown64_lb"][0]) and np.all(hi >= ref["crown64_ub"][0])
    widening = (hi - lo) / (ref["crown64_ub"][0] - ref["crown64_lb"][0]) - 1.0
    assert np.all(widening < 0.1), widening  # the float-soundness margin stays a few percent
