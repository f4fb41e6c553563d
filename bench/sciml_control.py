"""Lyapunov verification of the shipped neural controllers: verdicts, leaves and times.

Runs every (model, spec) pair of `../shared/benchmarks/sciml/control/instances.csv` through the
VNN-LIB route (`tljax.io.load_vnnlib` + `tljax.verify.verify(loop.spec_outputs, prop)`), twice:
cold (compilation included, first spec of each system) and warm (compiled programs reused).

Reference: alpha-beta-CROWN's published times (Yang et al., ICML 2024, and the repository
`Verified-Intelligence/Lyapunov_Stable_NN_Controllers`) cover the pendulum *output-feedback*
system: 8 subproblems, mean 12.0 s each, on a GPU. The state-feedback systems verified here are
different instances; their published times are not given in the benchmark folder, so no per-spec
peer time is printed for them.

    python bench/sciml_control.py [--timeout 900] [--systems pendulum,path_tracking] [--specs 0,1]
"""

from __future__ import annotations

import argparse
import csv
import pathlib
import sys
import time

import jax

from tljax.io import load_vnnlib
from tljax.sciml import load_closed_loop, verify_lyapunov_continuous
from tljax.verify import verify

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONTROL = (ROOT / ".." / "shared" / "benchmarks" / "sciml" / "control").resolve()
PEER = "alpha-beta-CROWN, pendulum output feedback: 8 subproblems, mean 12.0 s each (GPU)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per spec")
    ap.add_argument("--systems", default="pendulum,path_tracking")
    ap.add_argument("--specs", default="0,1,2,3")
    ap.add_argument("--branching", default="widest")
    ap.add_argument("--no-warm", action="store_true", help="skip the warm re-run")
    ap.add_argument(
        "--continuous",
        default="1:50,50:200",
        help="pendulum bands c1:c2 for the continuous-time check ('' to skip)",
    )
    args = ap.parse_args(argv)
    if not (CONTROL / "instances.csv").is_file():
        print(f"benchmark data not found at {CONTROL}; nothing to run", file=sys.stderr)
        return 1
    systems = args.systems.split(",")
    specs = {int(s) for s in args.specs.split(",")}
    with open(CONTROL / "instances.csv") as f:
        rows = list(csv.DictReader(f))
    print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}")
    print(
        f"{'system':<30} {'spec':>4} {'verdict':>8} {'leaves':>7} {'domains':>8} "
        f"{'cold s':>8} {'warm s':>8}  expected"
    )
    loops: dict = {}
    for row in rows:
        model = row["model"]
        spec = pathlib.Path(row["vnnlib"])
        k = int(spec.stem.rsplit("_", 1)[1])
        if not any(model.startswith(s) for s in systems) or k not in specs:
            continue
        loop = loops.get(model) or loops.setdefault(model, load_closed_loop(CONTROL / model))
        prop = load_vnnlib(CONTROL / spec, loop.n_states, loop.n_states + 2)
        t = time.monotonic()
        res = verify(loop.spec_outputs, prop, timeout=args.timeout, branching=args.branching)
        cold = time.monotonic() - t
        warm = float("nan")
        if not args.no_warm:
            t = time.monotonic()
            again = verify(loop.spec_outputs, prop, timeout=args.timeout, branching=args.branching)
            warm = time.monotonic() - t
            if again.verdict != res.verdict:
                print(f"  (warm run verdict {again.verdict})")
        print(
            f"{spec.stem:<30} {k:>4} {res.verdict:>8} {res.stats.get('leaves', 0):>7} "
            f"{res.stats.get('domains', 0):>8} {cold:>8.1f} {warm:>8.1f}  {row['expected']}",
            flush=True,
        )
    print(f"reference: {PEER}; state-feedback published times: not given in the folder")
    if args.continuous:
        # The shipped V was trained for the discrete step; its continuous-time derivative along
        # the pendulum's vector field is checked on a few level-set bands (report, not a claim).
        loop = load_closed_loop(CONTROL / "pendulum_state_feedback.npz")
        print("\ncontinuous time, pendulum: grad V(x) . f(x, pi(x)) < 0 on {c1 <= V <= c2} in B")
        for band in args.continuous.split(","):
            c1, c2 = (float(v) for v in band.split(":"))
            r = verify_lyapunov_continuous(
                loop.lyapunov,
                loop.vector_field,
                (loop.box_lo, loop.box_hi),
                c1,
                c2,
                timeout=args.timeout,
            )
            print(f"  band [{c1:g}, {c2:g}]: {r}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
