"""The branch-and-bound loop is one pure `(init, step)` pair for every strategy: a step leaves
its input state untouched and repeats exactly; leaves plus open domains always cover the cases."""

from __future__ import annotations

import numpy as np
import pytest

from tljax.verify import check_cover
from tljax.verify._bab import BetaSplit, InputSplit, ReluSplit, Search, SearchOptions, init, step
from tljax.verify._spec import make_groups


def _snapshot(state):
    return [a.copy() for a in (state.open.lo, state.open.hi, state.open.splits, state.open.margin)]


@pytest.mark.parametrize(
    "split,beta,kind",
    [("input", "auto", InputSplit), ("relu", "auto", BetaSplit), ("relu", False, ReluSplit)],
)
def test_step_is_pure_and_keeps_a_cover(relu_split_instance, split, beta, kind):
    fn, params, prop, _, _ = relu_split_instance
    opts = SearchOptions(split=split, beta=beta, alpha=False, attack=False, batch_size=16)
    search = Search(fn, (params,), prop, (8,), opts, np.inf, None, {}, [])
    group = make_groups(prop, 2)[0]
    strategy = search.strategy(group)
    assert type(strategy) is kind
    state = init(strategy, strategy.roots())
    assert state.verdict is None and len(state.open) == 1  # the root bound cannot prove it
    for _ in range(3):
        before = _snapshot(state)
        nxt = step(strategy, state)
        again = step(strategy, state)
        for a, b in zip(before, _snapshot(state), strict=True):
            np.testing.assert_array_equal(a, b)  # the input state is not modified
        for a, b in zip(_snapshot(nxt), _snapshot(again), strict=True):
            np.testing.assert_array_equal(a, b)  # and the step repeats exactly
        assert len(nxt.leaves) == len(again.leaves)
        # closed leaves and open domains together cover the case box exactly
        parts = [(leaf[1], leaf[2], leaf[3]) for leaf in nxt.leaves] + [
            (nxt.open.lo, nxt.open.hi, nxt.open.splits)
        ]
        lo, hi, sp = (np.concatenate([p[k] for p in parts]) for k in range(3))
        ok, why = check_cover(*group.boxes[0], lo, hi, sp.astype(np.int8))
        assert ok, why
        state = nxt
        if state.verdict is not None:
            break
    assert search.stats["domains"] > 1
