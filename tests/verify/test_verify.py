"""tljax.verify end to end: benchmark instances, disjunctive properties, ReLU splitting,
the counterexample re-check and bad inputs."""

from __future__ import annotations

import csv
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tljax
from tljax.core import InputError, InvalidBoxError, ShapeMismatchError
from tljax.io import Property, load_vnnlib
from tljax.verify import _bab, load_instance, verify
from tljax.verify._attack import confirm


def _prop(boxes, unsafe, pairing=None, n_out=None):
    boxes = tuple((np.asarray(lo, np.float64), np.asarray(hi, np.float64)) for lo, hi in boxes)
    unsafe = tuple((np.asarray(c, np.float64), np.asarray(d, np.float64)) for c, d in unsafe)
    if pairing is None:
        pairing = tuple(tuple(range(len(unsafe))) for _ in boxes)
    return Property(
        input_boxes=boxes,
        unsafe=unsafe,
        pairing=pairing,
        n_inputs=boxes[0][0].size,
        n_outputs=n_out if n_out is not None else unsafe[0][0].shape[1],
        path="<test>",
    )


# ---------------------------------------------------------------------------------------------
# VNN-COMP instances


def _expected(folder):
    with open(folder / "expected.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("row", range(5))
def test_vnncomp_test_instances_all_right(benchmarks_dir, row):
    rows = _expected(benchmarks_dir / "test")
    r = rows[row]
    fn, prop, args, shape = load_instance(
        benchmarks_dir / "test" / r["onnx"], benchmarks_dir / "test" / r["vnnlib"]
    )
    res = verify(fn, prop, *args, input_shape=shape, timeout=float(r["timeout_s"]))
    assert res.verdict == r["expected"], (r, res, res.notes)
    report = res.check()
    assert report.accepted, report.reasons


# Instances that solve in a few seconds each on a 2-core machine (the full set is bench/vnncomp.py).
ACAS_FAST = [
    ("onnx/ACASXU_run2a_1_5_batch_2000.onnx", "vnnlib/prop_3.vnnlib"),
    ("onnx/ACASXU_run2a_1_4_batch_2000.onnx", "vnnlib/prop_3.vnnlib"),
    ("onnx/ACASXU_run2a_1_4_batch_2000.onnx", "vnnlib/prop_2.vnnlib"),
    ("onnx/ACASXU_run2a_1_7_batch_2000.onnx", "vnnlib/prop_4.vnnlib"),
    # formerly unsolved within 116 s (input splitting with the "objective" branching did not
    # finish); the "unstable" branching needs a few hundred domains
    ("onnx/ACASXU_run2a_2_2_batch_2000.onnx", "vnnlib/prop_1.vnnlib"),
    ("onnx/ACASXU_run2a_1_9_batch_2000.onnx", "vnnlib/prop_2.vnnlib"),
]


@pytest.mark.parametrize("onnx,vnnlib", ACAS_FAST)
def test_acasxu_fast_subset_no_wrong_verdict(benchmarks_dir, onnx, vnnlib):
    folder = benchmarks_dir / "acasxu"
    expected = {(r["onnx"], r["vnnlib"]): r["expected"] for r in _expected(folder)}[(onnx, vnnlib)]
    fn, prop, args, shape = load_instance(folder / onnx, folder / vnnlib)
    res = verify(fn, prop, *args, input_shape=shape, timeout=60)
    assert res.verdict == expected, (res, res.notes)
    assert res.check().accepted
    assert res.stats.get("domains", 0) < 5000, res.stats  # branching stays effective
    if res.verdict == "sat":
        x = res.counterexample.x
        y = np.asarray(fn(jnp.asarray(x), *args)).reshape(-1)
        assert prop.is_counterexample(x, y)  # the reader's own (independent) test


# ---------------------------------------------------------------------------------------------
# Small networks: weights are arguments, so every test here shares one compilation.


def _mlp(x, params):
    w1, b1, w2, b2 = params
    return jax.nn.relu(x @ w1 + b1) @ w2 + b2


def _abs_net():
    # y0 = |x|, y1 = -|x| written with ReLUs: y0 = relu(x) + relu(-x)
    w1 = jnp.array([[1.0, -1.0]], jnp.float32)
    b1 = jnp.zeros(2, jnp.float32)
    w2 = jnp.array([[1.0, -1.0], [1.0, -1.0]], jnp.float32)
    b2 = jnp.zeros(2, jnp.float32)
    return (w1, b1, w2, b2)


def test_disjunctive_property_union_of_boxes_and_polytopes(tmp_path):
    params = _abs_net()
    # unsafe: y0 >= 2 or y1 >= 0.5 (i.e. |x| >= 2 or |x| <= -0.5); boxes x in [-1, 1] or [1.5, 1.9]
    text = """
    (declare-const X_0 Real) (declare-const Y_0 Real) (declare-const Y_1 Real)
    (assert (or (and (>= X_0 -1) (<= X_0 1)) (and (>= X_0 1.5) (<= X_0 1.9))))
    (assert (or (>= Y_0 2) (>= Y_1 0.5)))
    """
    path = tmp_path / "disj.vnnlib"
    path.write_text(text)
    prop = load_vnnlib(path, 1, 2)
    assert len(prop.cases) == 2 and len(prop.unsafe) == 2
    res = verify(_mlp, prop, params, timeout=60)
    assert res.verdict == "unsat", res.notes
    assert res.check(rebound=True).accepted
    # a third box reaching |x| = 2 makes it sat, through the first disjunct
    path.write_text(
        text.replace("(<= X_0 1.9))))", "(<= X_0 1.9)) (and (>= X_0 -2.5) (<= X_0 -1.5))))")
    )
    prop = load_vnnlib(path, 1, 2)
    res = verify(_mlp, prop, params, timeout=60)
    assert res.verdict == "sat"
    x = float(res.counterexample.x.reshape(-1)[0])
    assert -2.5 <= x <= -2.0  # only there is |x| >= 2 inside a box
    assert res.check().accepted


def _sum_abs_net(n):
    # y = sum_i |x_i| = sum relu(x_i) + relu(-x_i)
    w1 = jnp.concatenate([jnp.eye(n), -jnp.eye(n)], axis=1).astype(jnp.float32)
    return (w1, jnp.zeros(2 * n, jnp.float32), jnp.ones((2 * n, 1), jnp.float32), jnp.zeros(1))


def test_gradient_attack_runs_only_on_boxes_the_root_bounds_leave_open(monkeypatch):
    n = 20
    params = _sum_abs_net(n)
    calls = []
    real_attack = _bab.attack

    def spy(fn, args, group, lower, upper, shape, **kw):
        calls.append((float(np.max(upper)), kw.get("pgd", True)))
        return real_attack(fn, args, group, lower, upper, shape, **kw)

    monkeypatch.setattr(_bab, "attack", spy)
    # unsafe: sum |x_i| >= 19.9. On [-0.5, 0.5]^20 the root CROWN bound (10) rules it out; on
    # [-1, 1]^20 only points within 0.1 of a corner violate it: random samples (sum |x_i| ~ 10
    # +- 1.3) miss them, there are too many corners to try, PGD walks to one.
    unsafe = [(np.array([[-1.0]]), np.array([-19.9]))]  # -y <= -19.9
    small = (-0.5 * np.ones(n), 0.5 * np.ones(n))
    big = (-np.ones(n), np.ones(n))
    res = verify(_mlp, _prop([small], unsafe), params, timeout=60)
    assert res.verdict == "unsat", res.notes
    assert calls and not any(pgd for _, pgd in calls)  # samples only: the root bound decided
    calls.clear()
    res = verify(_mlp, _prop([small, big], unsafe), params, timeout=60)
    assert res.verdict == "sat", res.notes
    assert float(np.sum(np.abs(res.counterexample.x))) >= 19.9
    assert [u for u, pgd in calls if pgd] == [1.0]  # PGD ran on the open box only
    assert res.check().accepted


def test_non_product_pairing_only_pairs_listed_disjuncts(tmp_path):
    params = _abs_net()
    # case A: x in [-1, 1] with unsafe y0 >= 2 (never);
    # case B: x in [3, 4] with unsafe y1 >= 0 (never)
    text = """
    (declare-const X_0 Real) (declare-const Y_0 Real) (declare-const Y_1 Real)
    (assert (or (and (>= X_0 -1) (<= X_0 1) (>= Y_0 2))
                (and (>= X_0 3) (<= X_0 4) (>= Y_1 0))))
    """
    path = tmp_path / "pairs.vnnlib"
    path.write_text(text)
    prop = load_vnnlib(path, 1, 2)
    assert not prop.is_product
    res = verify(_mlp, prop, params, timeout=60)
    # the product reading (case A with y1 >= 0) would be sat at x = 0: the pairing must be honoured
    assert res.verdict == "unsat", (res, res.notes)
    assert res.check().accepted


def test_relu_splitting_proves_what_the_root_bound_cannot(relu_split_instance):
    fn, params, prop, root_upper, t = relu_split_instance
    assert root_upper > t
    res = verify(fn, prop, params, split="relu", alpha=False, timeout=60)
    assert res.verdict == "unsat", res.notes
    leaves = res.certificate.groups[0]
    assert len(leaves) > 1 and np.any(leaves.splits != 0)
    assert res.check(rebound=True).accepted


# ---------------------------------------------------------------------------------------------
# The counterexample re-check


def _cancel(x, a):
    # float32: (x + 1e8) - 1e8 == 0 for |x| < 4; exactly: x. `a` is an argument so XLA cannot
    # fold it.
    return (x + a) - a


BIG = jnp.float32(1e8)


def test_confirm_rejects_float_and_exact_disagreement():
    # unsafe y >= 0.5 on x in [0.5, 1]: exact output x violates, the float32 output 0 does not
    prop = _prop([([0.5], [1.0])], [(np.array([[-1.0]]), np.array([-0.5]))])
    c = confirm(_cancel, (BIG,), prop, np.array([0.75], np.float32), (1,))
    assert c.counterexample is None and not c.float_violates and c.exact_violates
    assert "disagree" in c.reason


def test_float_only_counterexample_is_not_reported_under_real_semantics():
    # unsafe y <= 0.25 on x in [0.5, 1]: float32 gives y = 0 (violates), exact gives y = x (safe)
    prop = _prop([([0.5], [1.0])], [(np.array([[1.0]]), np.array([0.25]))])
    c = confirm(_cancel, (BIG,), prop, np.array([0.75], np.float32), (1,), semantics="real")
    assert c.counterexample is None and c.float_violates and c.exact_violates is False
    res = verify(_cancel, prop, BIG, timeout=4, semantics="real")
    assert res.verdict in ("unknown", "timeout")
    assert res.stats["rejected_candidates"] >= 1
    assert any("exact output does not" in n for n in res.notes)
    # the default (the program as it runs) takes the same point as a counterexample
    c = confirm(_cancel, (BIG,), prop, np.array([0.75], np.float32), (1,))
    assert c.counterexample is not None and c.counterexample.float_only


def test_exact_only_violation_is_neither_sat_nor_unsat():
    prop = _prop([([0.5], [1.0])], [(np.array([[-1.0]]), np.array([-0.5]))])
    res = verify(_cancel, prop, BIG, timeout=4)
    # sat would be wrong for the float program, unsat wrong for the real-valued one
    assert res.verdict in ("unknown", "timeout")


def test_tampered_counterexample_fails_check():
    params = _abs_net()
    prop = _prop([([-3.0], [3.0])], [(np.array([[-1.0, 0.0]]), np.array([-2.0]))])  # |x| >= 2
    res = verify(_mlp, prop, params, timeout=60)
    assert res.verdict == "sat" and res.check().accepted
    import dataclasses

    fake = dataclasses.replace(res.counterexample, x=np.zeros_like(res.counterexample.x))
    bad = dataclasses.replace(res, counterexample=fake)
    report = bad.check()
    assert not report.accepted and "does not re-check" in report.reasons[0]


def test_vnncomp_text_reads_back_exactly():
    params = _abs_net()
    prop = _prop([([-3.0], [3.0])], [(np.array([[-1.0, 0.0]]), np.array([-2.0]))])
    res = verify(_mlp, prop, params, timeout=60)
    text = res.vnncomp()
    assert text.startswith("sat\n((X_0 ") and text.rstrip().endswith("))")
    values = dict(re.findall(r"\((\w+) ([^()\s]+)\)", text))
    assert np.float32(float(values["X_0"])) == res.counterexample.x.reshape(-1)[0]
    assert np.float32(float(values["Y_0"])) == res.counterexample.y[0]
    y = np.asarray(_mlp(jnp.asarray([np.float32(float(values["X_0"]))]), params))
    assert prop.is_counterexample([float(values["X_0"])], y)


# ---------------------------------------------------------------------------------------------
# Certificates


def _unsat_result():
    params = _abs_net()
    # |x| <= 1 on [-1, 1]: unsafe y0 >= 1.5; CROWN needs a few splits around the kink at 0
    prop = _prop([([-1.0], [1.0])], [(np.array([[-1.0, 0.0]]), np.array([-1.5]))])
    res = verify(_mlp, prop, params, timeout=60)
    assert res.verdict == "unsat"
    return res, prop, params


def test_certificate_rejects_a_missing_leaf_and_a_forged_bound():
    import dataclasses

    res, prop, params = _unsat_result()
    cert = res.certificate
    assert cert.check(prop, _mlp, params, rebound=True).accepted
    g = cert.groups[0]
    if len(g) == 1:  # root verified: split the root leaf artificially so a leaf can go missing
        mid = 0.0
        g = dataclasses.replace(
            g,
            case=np.array([0, 0]),
            lower=np.array([[-1.0], [mid]]),
            upper=np.array([[mid], [1.0]]),
            splits=np.zeros((2, 0), np.int8),
            bounds=np.repeat(g.bounds, 2, 0),
            method=g.method * 2,
        )
        assert dataclasses.replace(cert, groups=(g,)).check(prop).accepted
    dropped = dataclasses.replace(
        g,
        case=g.case[1:],
        lower=g.lower[1:],
        upper=g.upper[1:],
        splits=g.splits[1:],
        bounds=g.bounds[1:],
        method=g.method[1:],
    )
    report = dataclasses.replace(cert, groups=(dropped,)).check(prop)
    assert not report.accepted and any("not covered" in r or "cover" in r for r in report.reasons)
    forged = g.bounds.copy()
    forged[0] = -1e9
    report = dataclasses.replace(cert, groups=(dataclasses.replace(g, bounds=forged),)).check(prop)
    assert not report.accepted and "do not rule out" in report.reasons[0]
    # a certificate for another property is not accepted for this one
    other = _prop([([-1.0], [1.0])], [(np.array([[-1.0, 0.0]]), np.array([-1.25]))])
    assert not cert.check(other).accepted


def test_rebound_catches_bounds_that_do_not_hold():
    import dataclasses

    res, prop, params = _unsat_result()
    g = res.certificate.groups[0]
    # widen the leaves (still a cover) while keeping the stored bounds: recomputation disagrees
    wide = dataclasses.replace(g, lower=g.lower - 5.0, upper=g.upper + 5.0)
    cert = dataclasses.replace(res.certificate, groups=(wide,))
    assert cert.check(prop).accepted  # the stored numbers alone look fine
    report = cert.check(prop, _mlp, params, rebound=True)
    assert not report.accepted and "recomputed bounds" in " ".join(report.reasons)


# ---------------------------------------------------------------------------------------------
# Bad inputs


def test_empty_box_is_a_clear_error():
    prop = _prop([([0.0, 1.0], [1.0, 0.5])], [(np.array([[1.0, 0.0]]), np.array([0.0]))])
    with pytest.raises(
        InvalidBoxError, match=re.escape("X_1: empty interval, lower 1.0 > upper 0.5")
    ):
        verify(lambda x: x, prop)


def test_nan_and_unbounded_boxes_are_clear_errors():
    prop = _prop([([np.nan, -np.inf], [1.0, 1.0])], [(np.array([[1.0, 0.0]]), np.array([0.0]))])
    with pytest.raises(InvalidBoxError, match="NaN bound") as err:
        verify(lambda x: x, prop)
    assert "unbounded interval" in str(err.value)


def test_wrong_input_count_names_both_sizes():
    prop = _prop([([0.0] * 5, [1.0] * 5)], [(np.eye(5)[:1], np.array([0.0]))])
    with pytest.raises(
        ShapeMismatchError,
        match=re.escape(
            "has 5 inputs (X_0..X_4) but the network input has shape (3,) = 3 elements"
        ),
    ):
        verify(lambda x: jnp.concatenate([x, x[:2]]), prop, input_shape=(3,))


def test_wrong_output_count():
    prop = _prop([([0.0], [1.0])], [(np.array([[1.0, 0.0, 0.0]]), np.array([0.0]))])
    with pytest.raises(ShapeMismatchError, match=r"3 outputs .* returns 2 elements"):
        verify(lambda x: jnp.concatenate([x, x]), prop)


def test_function_that_rejects_the_input_shape():
    prop = _prop([([0.0] * 4, [1.0] * 4)], [(np.array([[1.0, 0.0]]), np.array([0.0]))])
    with pytest.raises(ShapeMismatchError, match="input_shape="):
        verify(lambda x: x.reshape(2, 2) @ jnp.ones((3, 2)), prop)


def test_bad_arguments():
    prop = _prop([([0.0], [1.0])], [(np.array([[1.0]]), np.array([0.0]))])
    with pytest.raises(InputError, match=re.escape("tljax.io.Property")):
        verify(lambda x: x, {"boxes": []})
    with pytest.raises(InputError, match="unknown method 'beta'"):
        verify(lambda x: x, prop, method="beta")
    with pytest.raises(InputError, match="timeout must be a positive"):
        verify(lambda x: x, prop, timeout=0)
    with pytest.raises(InputError, match="unknown split"):
        verify(lambda x: x, prop, split="neurons")
    with pytest.raises(InputError, match="unknown semantics 'exact'"):
        verify(lambda x: x, prop, semantics="exact")


def test_no_progress_output_when_not_a_terminal(capsys):
    params = _abs_net()
    prop = _prop([([-1.0], [1.0])], [(np.array([[-1.0, 0.0]]), np.array([-1.5]))])
    res = verify(_mlp, prop, params, timeout=60)
    assert res.verdict == "unsat"
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_leaf_bound_certificates_are_checked_exactly():
    import dataclasses

    params = _abs_net()
    prop = _prop([([-1.0], [1.0])], [(np.array([[-1.0, 0.0]]), np.array([-1.5]))])
    res = verify(_mlp, prop, params, timeout=60, certificates=True)
    assert res.verdict == "unsat"
    g = res.certificate.groups[0]
    assert g.bound_certificates is not None and len(g.bound_certificates) == len(g)
    report = res.check()
    assert report.accepted and any("bound certificate" in c for c in report.checked)
    # a bound certificate about a smaller box does not vouch for the leaf
    small = dataclasses.replace(g.bound_certificates[0], box=[(np.array([0.0]), np.array([0.5]))])
    bad = dataclasses.replace(g, bound_certificates=(small,) + g.bound_certificates[1:])
    report = dataclasses.replace(res.certificate, groups=(bad,)).check(prop, _mlp, params)
    assert not report.accepted and "does not contain the leaf" in report.reasons[0]


def test_networks_of_one_architecture_share_one_function(benchmarks_dir):
    from tljax.verify import load_network

    a = load_network(benchmarks_dir / "acasxu/onnx/ACASXU_run2a_1_1_batch_2000.onnx")
    b = load_network(benchmarks_dir / "acasxu/onnx/ACASXU_run2a_2_9_batch_2000.onnx")
    c = load_network(benchmarks_dir / "test/onnx/test_small.onnx")
    assert a[0] is b[0] and a[0] is not c[0]
    assert a[2] == (1, 1, 1, 5) and c[2] == (1,)
    # shared code, own weights: the outputs differ and match each network's own translation
    x = jnp.full((1, 1, 1, 5), 0.1, jnp.float32)
    ya, yb = np.asarray(a[0](x, a[1])), np.asarray(b[0](x, b[1]))
    assert not np.allclose(ya, yb)
    net, params = tljax.io.load_onnx(
        benchmarks_dir / "acasxu/onnx/ACASXU_run2a_2_9_batch_2000.onnx"
    )
    np.testing.assert_array_equal(yb, np.asarray(net(params, x)))


# mnist_fc (784 inputs: ReLU splitting with beta-CROWN). prop_6 needed thousands of domains with
# clipped-interval splits (timeout); prop_2 is sat with a violation at a corner of the box that
# PGD from random starts misses, found at the minimiser of a domain's linear bound.
MNIST_HARD = [
    ("vnnlib_2022/prop_6_0.03.vnnlib", "unsat"),
    ("vnnlib_2022/prop_2_0.03.vnnlib", "sat"),
]


@pytest.mark.slow
@pytest.mark.parametrize("vnnlib,expected", MNIST_HARD)
def test_mnist_hard_instances_beta_crown(benchmarks_dir, vnnlib, expected):
    folder = benchmarks_dir / "mnist_fc"
    fn, prop, args, shape = load_instance(folder / "onnx/mnist-net_256x2.onnx", folder / vnnlib)
    res = verify(fn, prop, *args, input_shape=shape, timeout=116)
    assert res.verdict == expected, (res, res.notes)
    if expected == "unsat":
        leaves = res.certificate.groups[0]
        assert set(leaves.method) == {"beta-crown"} and leaves.witness is not None
        assert res.check(rebound=True).accepted
    else:
        assert res.check().accepted
