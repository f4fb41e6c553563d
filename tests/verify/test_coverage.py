"""The exact leaf-coverage check."""

import numpy as np

from tljax.verify import check_cover


def _bisect(lo, hi, depth, rng, out, level=0):
    if depth == 0 or (level >= 3 and rng.random() < 0.15):
        out.append((lo.copy(), hi.copy()))
        return
    j = rng.integers(lo.size)
    mid = 0.5 * (lo[j] + hi[j])
    h = hi.copy()
    h[j] = mid
    _bisect(lo, h, depth - 1, rng, out, level + 1)
    lo2 = lo.copy()
    lo2[j] = mid
    _bisect(lo2, hi, depth - 1, rng, out, level + 1)


def _tree(seed, n=3, depth=8):
    rng = np.random.default_rng(seed)
    out = []
    lo, hi = -0.3 * np.ones(n), 0.7 * np.ones(n)
    _bisect(lo, hi, depth, rng, out)
    return lo, hi, np.array([a for a, _ in out]), np.array([b for _, b in out])


def test_split_trees_cover_their_root_in_any_order():
    for seed in range(10):
        lo, hi, L, H = _tree(seed)
        perm = np.random.default_rng(seed).permutation(len(L))
        assert check_cover(lo, hi, L[perm], H[perm]) == (True, "")


def test_a_missing_leaf_is_a_gap():
    lo, hi, L, H = _tree(3)
    assert len(L) > 4
    ok, why = check_cover(lo, hi, np.delete(L, 2, 0), np.delete(H, 2, 0))
    assert not ok and "not covered" in why


def test_a_boundary_moved_by_one_ulp_is_a_gap():
    lo, hi = np.zeros(2), np.ones(2)
    L = np.array([[0.0, 0.0], [0.5, 0.0]])
    H = np.array([[0.5, 1.0], [1.0, 1.0]])
    assert check_cover(lo, hi, L, H)[0]
    L2 = L.copy()
    L2[1, 0] = np.nextafter(0.5, 1.0)
    ok, why = check_cover(lo, hi, L2, H)
    assert not ok and "0.5" in why


def test_leaves_must_reach_the_root_boundary():
    ok, why = check_cover(np.zeros(1), np.ones(1), np.array([[0.0]]), np.array([[0.99]]))
    assert not ok and "not covered" in why


def test_overlapping_and_duplicate_leaves_are_fine():
    L = np.array([[0.0], [0.0], [0.4]])
    H = np.array([[0.6], [0.6], [1.0]])
    assert check_cover(np.zeros(1), np.ones(1), L, H)[0]


def test_relu_split_leaves_cover_only_with_both_signs():
    box_l, box_h = np.zeros((3, 1)), np.ones((3, 1))
    splits = np.array([[1, 0], [-1, 1], [-1, -1]])
    assert check_cover(np.zeros(1), np.ones(1), box_l, box_h, splits)[0]
    ok, why = check_cover(np.zeros(1), np.ones(1), box_l[:2], box_h[:2], splits[:2])
    assert not ok and "n0=-1" in why and "n1=-1" in why


def test_mixed_input_and_relu_splits():
    # neuron 0 split; its inactive side further split in the input
    L = np.array([[0.0], [0.0], [0.5]])
    H = np.array([[1.0], [0.5], [1.0]])
    S = np.array([[1], [-1], [-1]])
    assert check_cover(np.zeros(1), np.ones(1), L, H, S)[0]
    assert not check_cover(np.zeros(1), np.ones(1), L[:2], H[:2], S[:2])[0]


def test_malformed_leaves_are_rejected():
    assert check_cover(np.zeros(1), np.ones(1), np.zeros((0, 1)), np.zeros((0, 1))) == (
        False,
        "no leaves",
    )
    ok, why = check_cover(np.zeros(1), np.ones(1), np.array([[np.nan]]), np.array([[1.0]]))
    assert not ok and "NaN" in why
    ok, why = check_cover(
        np.zeros(1), np.ones(1), np.zeros((1, 1)), np.ones((1, 1)), np.array([[2]])
    )
    assert not ok and "-1, 0 or +1" in why
