"""Unsat certificates of ReLU-split searches (beta-CROWN leaves): every leaf carries a bound
certificate about its split domain, `Result.check` re-checks them exactly, tampering is caught."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tljax.verify import load_instance, verify


def _flat(splits):
    return np.concatenate([np.asarray(v).reshape(-1) for v in splits])


@pytest.fixture(scope="module")
def split_result(relu_split_instance):
    fn, params, prop, _, _ = relu_split_instance
    res = verify(fn, prop, params, split="relu", alpha=False, timeout=120, certificates=True)
    assert res.verdict == "unsat", res.notes
    return res, fn, prop, params


def test_relu_split_leaves_carry_accepted_certificates(split_result):
    res = split_result[0]
    g = res.certificate.groups[0]
    assert set(g.method) == {"beta-crown"} and np.any(g.splits != 0)
    assert g.bound_certificates is not None and len(g.bound_certificates) == len(g)
    for i, c in enumerate(g.bound_certificates):
        np.testing.assert_array_equal(_flat(c.relu_splits), g.splits[i])
        if np.any(g.splits[i] != 0):
            assert c.passes[1]["betas"], i  # the split constraints' multipliers are recorded
    report = res.check()
    assert report.accepted, report.reasons
    assert any("every bound certificate accepted" in c for c in report.checked)


def test_tampered_split_leaf_certificates_rejected(split_result):
    res, fn, prop, params = split_result
    cert = res.certificate
    g = cert.groups[0]
    i = int(np.flatnonzero(np.any(g.splits != 0, axis=1))[0])
    c = g.bound_certificates[i]

    def with_leaf_cert(new):
        certs = g.bound_certificates[:i] + (new,) + g.bound_certificates[i + 1 :]
        return dataclasses.replace(cert, groups=(dataclasses.replace(g, bound_certificates=certs),))

    # a raised claim (the leaf's margin stays positive): the exact checker refuses it
    lower = [c.lower[0] + 0.05]
    report = with_leaf_cert(dataclasses.replace(c, lower=lower)).check(prop, fn, params)
    assert not report.accepted and "bound certificate rejected" in report.reasons[0], report.reasons
    # the leaf's splits flipped in its certificate: not the leaf's domain
    flipped = [-v for v in c.relu_splits]
    report = with_leaf_cert(dataclasses.replace(c, relu_splits=flipped)).check(prop, fn, params)
    assert not report.accepted and "splits differ" in report.reasons[0], report.reasons
    # another leaf's certificate (other splits) does not vouch for this leaf
    j = next(k for k in range(len(g)) if not np.array_equal(g.splits[k], g.splits[i]))
    report = with_leaf_cert(g.bound_certificates[j]).check(prop, fn, params)
    assert not report.accepted and "splits differ" in report.reasons[0], report.reasons


def _mnist(benchmarks_dir, vnnlib):
    folder = benchmarks_dir / "mnist_fc"
    return load_instance(folder / "onnx/mnist-net_256x2.onnx", folder / vnnlib)


def _check_mnist(fn, prop, args, shape):
    res = verify(fn, prop, *args, input_shape=shape, timeout=116, certificates=True)
    assert res.verdict == "unsat", (res, res.notes)
    g = res.certificate.groups[0]
    assert set(g.method) == {"beta-crown"} and g.witness is not None
    assert g.bound_certificates is not None and all(c is not None for c in g.bound_certificates)
    report = res.check()
    assert report.accepted, report.reasons
    assert any("every bound certificate accepted" in c for c in report.checked)
    # one leaf certificate tampered: a node interval of the second layer narrowed
    c = g.bound_certificates[0]
    key = sorted(c.passes[1]["nodes"], key=int)[1]  # the second ReLU's input
    lo, hi = (np.array(v) for v in c.passes[1]["nodes"][key])
    flo, fhi = lo.reshape(-1), hi.reshape(-1)  # views
    r = int(np.argmax(fhi - flo))
    flo[r] = 0.5 * (flo[r] + fhi[r])
    nodes = dict(c.passes[1]["nodes"], **{key: (lo, hi)})
    passes = [c.passes[0], dict(c.passes[1], nodes=nodes)]
    bad = dataclasses.replace(
        g, bound_certificates=(dataclasses.replace(c, passes=passes),) + g.bound_certificates[1:]
    )
    report = dataclasses.replace(res.certificate, groups=(bad,)).check(prop, fn, *args)
    assert not report.accepted and "bound certificate rejected" in report.reasons[0], report.reasons
    return res


@pytest.mark.slow
def test_mnist_beta_crown_root_leaf_certificate(benchmarks_dir):
    # prop_9 at eps 0.03: verified at the root domain by beta-CROWN (one leaf, no split yet);
    # ~45 s on 2 cores (the exact check of the 784-256-256-10 network's passes dominates)
    fn, prop, args, shape = _mnist(benchmarks_dir, "vnnlib_2022/prop_9_0.03.vnnlib")
    _check_mnist(fn, prop, args, shape)


@pytest.mark.slow
def test_mnist_relu_split_leaf_certificates(benchmarks_dir):
    # prop_14 at eps 0.05 needs ReLU splits (3 leaves); certificates and their check take ~80 s
    fn, prop, args, shape = _mnist(benchmarks_dir, "vnnlib_2022/prop_14_0.05.vnnlib")
    res = _check_mnist(fn, prop, args, shape)
    assert np.any(res.certificate.groups[0].splits != 0)


def test_certificates_out_of_time_are_skipped_with_a_note(relu_split_instance):
    fn, params, prop, _, _ = relu_split_instance
    res = verify(
        fn, prop, params, split="relu", alpha=False, timeout=120, certificates=True,
        certificate_timeout=0.0,
    )  # fmt: skip
    assert res.verdict == "unsat"
    assert all(g.bound_certificates is None for g in res.certificate.groups)
    assert any("out of time" in n for n in res.notes), res.notes
    assert res.check().accepted  # coverage and margins still re-check
