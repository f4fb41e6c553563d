"""`tljax.verify(fn, prop, *args)`: falsification, bounds, then branch and bound."""

from __future__ import annotations

import dataclasses
import math
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from ..core import InputError, ShapeMismatchError, compat
from ._attack import SEMANTICS
from ._bab import LeafSet, Outcome, Search, SearchOptions
from ._result import GroupLeaves, Result, SearchCertificate
from ._spec import f32_outward, make_groups, validate_property

compat.register_exclusion(__file__)

METHODS = ("crown", "alpha-crown", "ibp")
SPLITS = ("auto", "input", "relu")
BRANCHINGS = ("unstable", "gradient", "objective", "widest")


def _output_size(fn, shape, args) -> int:
    try:
        out = jax.eval_shape(fn, jax.ShapeDtypeStruct(tuple(shape), jnp.float32), *args)
    except Exception as err:  # re-raised with the shape that was tried
        raise ShapeMismatchError(
            f"tljax.verify: calling fn on an input of shape {tuple(shape)} failed "
            f"({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); pass the network's input shape as "
            "`input_shape=` (e.g. the ONNX input shape (1, 1, 1, 5))"
        ) from err
    leaves = jax.tree_util.tree_leaves(out)
    if len(leaves) != 1:
        raise InputError(
            f"tljax.verify needs fn to return one array, got {len(leaves)} outputs; return the "
            "one the property is about"
        )
    return int(np.prod(leaves[0].shape, dtype=np.int64))


def _progress(enabled):
    if enabled is False:
        return None
    if enabled is None and not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency; a missing one only loses the bar
        return None
    return tqdm(desc="verify", unit="batch", leave=False, dynamic_ncols=True)


def verify(
    fn,
    prop,
    *args,
    timeout: float | None = None,
    method: str = "crown",
    input_shape: tuple[int, ...] | None = None,
    split: str = "auto",
    branching: str = "unstable",
    batch_size: int = 256,
    attack: bool = True,
    alpha: bool | str = "auto",
    beta: bool | str = "auto",
    certificates: bool | int = False,
    certificate_timeout: float | None = None,
    progress: bool | None = None,
    seed: int = 0,
    semantics: str = "float32",
    memory_budget: int | None = None,
) -> Result:
    """Decides a VNN-LIB property of a network: unsat (verified), sat (counterexample) or unknown.

    Search order: falsification by box corners and random samples; certified CROWN bounds of
    every case box; PGD on the margin (jitted and batched) in the boxes those bounds leave open
    (a box verified by its root bound is never attacked); alpha-CROWN on them where it is
    enabled; then branch and bound: input splitting for low-dimensional inputs (ACAS Xu style),
    ReLU splitting with beta-CROWN (split constraints as optimised Lagrangian terms) for
    high-dimensional ones. Bounds are float-sound: an unsat verdict holds for the float32 program
    as executed and for the real-valued network, over every point of the boxes.

    A sat verdict is reported only after the counterexample is re-executed: its float32 output
    (through XLA) must violate the property, tested exactly, and its exact rational output
    (`tljax.evaluate(..., semantics="exact")`) is tested too. Where only the float32 program
    violates it (rounding: a large bias absorbing a small input, a dot product whose rounding
    flips a sign), the deployed program is wrong there and the verdict is sat; the
    counterexample says so (`Counterexample.float_only`, a note). `semantics="real"` asks for a
    violation of the real-valued network as well: such a candidate is then rejected (a note says
    so) and the search goes on.

    Args:
      fn: the network as a pure function `fn(x, *args)` of an input `x` of shape `input_shape`,
        returning one array (flattened row-major it is `Y_0, Y_1, ...`). Passing weights through
        `*args` (e.g. `lambda x, params: net(params, x)`) lets networks of one architecture share
        compiled code.
      prop: a `tljax.io.Property` (from `tljax.io.load_vnnlib`).
      *args: further arguments of `fn` (weights), treated as constants.
      timeout: wall-clock budget in seconds (None: no limit). Checked between batches.
      method: bound method of the search: "crown" (default), "alpha-crown" or "ibp".
      input_shape: the shape of `x` (default `(prop.n_inputs,)`); VNN-LIB's `X_i` are its
        elements in row-major order.
      split: "auto" (input splitting up to 16 inputs, ReLU splitting above: halving every
        coordinate once takes 2^n input domains), "input" or "relu".
      branching: input-split coordinate choice: "unstable" (the coordinate that causes most of
        the spread of the ReLU inputs likely to be unstable in the box, estimated at its centre),
        "objective" (width x |gradient| of the row that decides the float margin at the box
        centre), "gradient" (the same for the row whose certified bound is closest to proving)
        or "widest" (see `tljax.verify._bab`).
      batch_size: domains per compiled bound call (fixed, padded: one compile per size); the
        most: the search halves it while a batch's widest CROWN pass would not fit
        `memory_budget`, then keeps the widest intermediate nodes at interval bounds (a note
        says so).
      memory_budget: bytes a batch of bound computations may take (default: half the memory
        available when the search starts).
      attack: run the falsifier (before and during the search).
      alpha: also try alpha-CROWN on case boxes CROWN cannot verify: True, False, or "auto"
        (only with ReLU splitting, where it pays for its compile time).
      beta: ReLU splitting with beta-CROWN (True, or "auto": unless `method="ibp"`): every case
        box's ReLU input bounds are computed once (alpha-CROWN on them) and every domain's output
        bound is optimised over the ReLU lower slopes and the split constraints' Lagrange
        multipliers, warm-started from its parent (`tljax.bounds.Problem.split_bound`). False:
        each domain is bounded from scratch by `method` with its splits clipping the ReLU input
        intervals. Input splitting ignores it.
      certificates: also attach `tljax.bound(..., certificate=True)` certificates to the leaves
        of an unsat result (True: all leaves; an int: at most that many; needs
        `tljax.bounds.check`, skipped with a note otherwise). A ReLU-split leaf's certificate is
        about its split domain and, for beta-CROWN leaves, carries the split multipliers that
        rule it out (`leaf_certificate`).
      certificate_timeout: seconds for attaching the bound certificates once the verdict is
        unsat (None: what is left of `timeout`); out of time, they are skipped with a note.
      progress: show a tqdm bar on stderr (domains open, leaves closed, best margin); None: only
        when stderr is a terminal.
      seed: PRNG seed of the falsifier.
      semantics: what a counterexample must violate: "float32" (default: the program as it runs,
        as VNN-COMP's checker executes it) or "real" (the float32 program and the real-valued
        network both).

    Returns:
      A `Result`; `result.check()` re-verifies it, `result.vnncomp()` is the result-file text.

    Raises:
      InputError: `prop` is not a Property, bad option values, or fn returns several arrays.
      ShapeMismatchError: the property's input/output counts differ from the network's.
      InvalidBoxError: an input box is empty, NaN or unbounded.

    Example:
      >>> net, params = tljax.io.load_onnx("ACASXU_run2a_1_1_batch_2000.onnx")  # doctest: +SKIP
      >>> prop = tljax.io.load_vnnlib("prop_1.vnnlib", 5, 5)  # doctest: +SKIP
      >>> res = tljax.verify.verify(lambda x, p: net(p, x), prop, params,
      ...                           input_shape=(1, 1, 1, 5), timeout=116)  # doctest: +SKIP
      >>> res.verdict, res.check().accepted  # doctest: +SKIP
      ('unsat', True)
    """
    t0 = time.monotonic()
    if method not in METHODS:
        raise InputError(f"tljax.verify: unknown method {method!r}; choose one of {METHODS}")
    if split not in SPLITS:
        raise InputError(f"tljax.verify: unknown split {split!r}; choose one of {SPLITS}")
    if branching not in BRANCHINGS:
        raise InputError(
            f"tljax.verify: unknown branching {branching!r}; choose one of {BRANCHINGS}"
        )
    if timeout is not None and not (
        isinstance(timeout, int | float) and timeout > 0 and not math.isnan(timeout)
    ):
        raise InputError(
            f"tljax.verify: timeout must be a positive number of seconds or None, got {timeout!r}"
        )
    if semantics not in SEMANTICS:
        raise InputError(
            f"tljax.verify: unknown semantics {semantics!r}; choose 'float32' (the program as it "
            "runs) or 'real' (the real-valued network too)"
        )
    if beta not in (True, False, "auto"):
        raise InputError(f"tljax.verify: beta must be True, False or 'auto', got {beta!r}")
    if not isinstance(batch_size, int) or batch_size < 2:
        raise InputError(f"tljax.verify: batch_size must be an int >= 2, got {batch_size!r}")
    if memory_budget is not None and (
        isinstance(memory_budget, bool) or not isinstance(memory_budget, int) or memory_budget < 1
    ):
        raise InputError(
            f"tljax.verify: memory_budget must be a positive int (bytes) or None, got "
            f"{memory_budget!r}"
        )
    if not callable(fn):
        raise InputError(f"tljax.verify: fn must be callable, got {type(fn).__name__}")
    from ..io import Property

    if not isinstance(prop, Property):
        raise InputError(
            f"tljax.verify expects a tljax.io.Property as `prop`, got {type(prop).__name__}; read "
            "one with tljax.io.load_vnnlib(path, n_inputs, n_outputs)"
        )
    shape = tuple(int(s) for s in (input_shape if input_shape is not None else (prop.n_inputs,)))
    n_in = int(np.prod(shape, dtype=np.int64))
    if n_in != prop.n_inputs:
        validate_property(prop, shape, -1)  # raises the input-count mismatch with its message
    n_out = _output_size(fn, shape, args)
    validate_property(prop, shape, n_out)

    opts = SearchOptions(
        method=method,
        batch_size=batch_size,
        split=split,
        branching=branching,
        attack=attack,
        alpha=alpha,
        beta=beta,
        seed=seed,
        semantics=semantics,
        memory_budget=memory_budget,
    )
    deadline = t0 + (timeout if timeout is not None else float("inf"))
    stats: dict = {}
    notes: list[str] = []
    context = (fn, tuple(args), prop, shape)
    groups = make_groups(prop, n_out)
    bar = _progress(progress)
    search = Search(fn, args, prop, shape, opts, deadline, bar, stats, notes)

    def done(verdict, **kw):
        if bar is not None:
            bar.close()
        stats["rejected_candidates"] = search.rejected
        return Result(
            verdict,
            time=time.monotonic() - t0,
            stats=stats,
            notes=tuple(notes),
            context=context,
            semantics=semantics,
            **kw,
        )

    all_leaves = []
    verdicts = []
    try:
        # The cheap attack (box corners, random samples) on every group first: a sat found there
        # ends the run. Then every group's case boxes are bounded, and the gradient attack (a
        # few seconds on a CNN) runs only on the boxes those bounds leave open.
        for g in groups:
            for box in g.boxes:
                search.falsify(g, box, pgd=False)
        begun = [search.begin_group(g) for g in groups]
        for g, (_, state) in zip(groups, begun, strict=True):
            search.attack_open(g, state)
        for g, b in zip(groups, begun, strict=True):
            leaves = LeafSet()
            verdicts.append(search.run_group(g, leaves, b))
            all_leaves.append((g, leaves))
    except Outcome as out:
        if out.verdict == "sat":
            cex = out.counterexample
            if cex.float_only:
                notes.append(cex.describe())
            return done("sat", counterexample=cex)
        return done("timeout")
    if any(v != "unsat" for v in verdicts):
        return done("unknown")
    cert_groups = []
    for g, leaves in all_leaves:
        a = leaves.arrays()
        cert_groups.append(
            GroupLeaves(
                group=g,
                case=a["case"],
                lower=a["lower"],
                upper=a["upper"],
                splits=a["splits"],
                bounds=a["bounds"],
                method=a["method"],
                witness=a["witness"],
            )
        )
    cert = SearchCertificate(groups=tuple(cert_groups), input_shape=shape)
    if certificates:
        if certificate_timeout is not None:
            deadline = time.monotonic() + certificate_timeout
        cert = _attach_bound_certificates(cert, fn, args, shape, certificates, deadline, notes)
    stats["leaves"] = cert.n_leaves
    return done("unsat", certificate=cert)


def _attach_bound_certificates(
    cert: SearchCertificate, fn, args, shape, limit, deadline, notes
) -> SearchCertificate:
    from .. import bounds as tb

    if not hasattr(tb, "check"):
        notes.append(
            "bound certificates skipped: tljax.bounds.check is not available in this version"
        )
        return cert
    cap = cert.n_leaves if limit is True else int(limit)
    if cert.n_leaves > cap:
        notes.append(f"bound certificates skipped: {cert.n_leaves} leaves exceed the limit {cap}")
        return cert
    new_groups = []
    for gl in cert.groups:
        certs = []
        for i in range(len(gl)):
            if time.monotonic() > deadline:
                notes.append("bound certificates skipped: out of time")
                return cert
            try:
                certs.append(leaf_certificate(gl, i, fn, args, shape, notes))
            except (InputError, ValueError) as err:
                notes.append(f"bound certificates skipped: leaf {i}: {err}")
                return cert
        new_groups.append(dataclasses.replace(gl, bound_certificates=tuple(certs)))
    return dataclasses.replace(cert, groups=tuple(new_groups))


# Extra beta-CROWN steps for a leaf whose certificate, re-derived from its witness with the
# certificate's own ReLU input bounds (see `leaf_certificate`), does not rule the leaf out.
CERT_RETRY_ITERS = 30


def leaf_certificate(gl: GroupLeaves, i: int, fn, args, shape, notes=None):
    """The `tljax.bound(..., certificate=True)` certificate of leaf `i` of `gl`.

    Input-split leaves: the leaf's box and method. ReLU-split leaves: the box, the leaf's splits
    (`relu_splits`) and, for "beta-crown" leaves, the witness slopes and multipliers with ReLU
    input bounds over the leaf's case box (`SplitParams`), as the search computed them. The
    certificate's ReLU input bounds are re-derived by a pass that the exact checker can follow
    (per-row best alpha-CROWN slopes), which can differ from the search's in the last bits (or
    more, in networks with several alpha-optimised layers): when the witness then no longer rules
    the leaf out, `CERT_RETRY_ITERS` beta-CROWN steps from the witness follow (with a note).
    """
    from .. import bounds as tb
    from ._bounder import ROOT_ITERS, ROOT_LR, _layout, spec_fn

    g_fn = spec_fn(fn)
    spec = jnp.asarray(gl.group.spec)
    lo32, hi32 = f32_outward(gl.lower[i], gl.upper[i])
    box = tb.Box(jnp.asarray(lo32).reshape(shape), jnp.asarray(hi32).reshape(shape))
    method = gl.method[i]
    if gl.splits.shape[1] == 0:
        return tb.bound(g_fn, box, spec, *args, method=method, certificate=True).certificate
    shapes = tb.relu_shapes(g_fn, box, spec, *args)
    sizes, offsets = _layout(shapes)
    if int(offsets[-1]) != gl.splits.shape[1]:
        raise ValueError(f"leaf {i}: {gl.splits.shape[1]} split entries for {offsets[-1]} ReLUs")

    def unflatten(flat, lead=()):
        return [
            np.asarray(flat[..., offsets[k] : offsets[k + 1]]).reshape(*lead, *shapes[k])
            for k in range(len(sizes))
        ]

    splits = unflatten(gl.splits[i].astype(np.int8))
    if method != "beta-crown":
        return tb.bound(
            g_fn, box, spec, *args, method=method, relu_splits=splits, certificate=True
        ).certificate
    if gl.witness is None:
        raise ValueError(f"leaf {i}: a beta-crown leaf without witness parameters")
    rows = spec.shape[0]
    k = gl.group.cases.index(int(gl.case[i]))
    rlo, rhi = f32_outward(*gl.group.boxes[k])
    params = tb.SplitParams(
        alpha=unflatten(np.asarray(gl.witness[0][i], np.float32), (rows,)),
        beta=unflatten(np.asarray(gl.witness[1][i], np.float32), (rows,)),
        root_box=tb.Box(jnp.asarray(rlo).reshape(shape), jnp.asarray(rhi).reshape(shape)),
        root_iters=ROOT_ITERS,
        root_lr=ROOT_LR,
    )
    for iters in (0, CERT_RETRY_ITERS):
        params = dataclasses.replace(params, iters=iters)
        c = tb.bound(
            g_fn,
            box,
            spec,
            *args,
            method="crown",
            relu_splits=splits,
            split_params=params,
            certificate=True,
        ).certificate
        claimed = np.asarray(c.lower[0], np.float64).reshape(1, -1)
        if gl.group.margins(claimed)[0] > 0:
            if iters and notes is not None:
                notes.append(
                    f"leaf {i}: its witness did not rule it out with the certificate's ReLU input "
                    f"bounds; {iters} more beta-CROWN steps did"
                )
            return c
    if notes is not None:
        notes.append(f"leaf {i}: its bound certificate does not rule it out (check will say so)")
    return c
