"""Command line: `tljax demo | proofs | verify | run-instances` (also `python -m tljax ...`)."""

from __future__ import annotations

import itertools
import re
import sys
import textwrap
import time

# (command, its arguments, what it does). The arguments are written out rather than read from
# the commands' parsers so that `tljax --help` imports neither jax nor the subpackages; a test
# (tests/test_import_time.py) checks them against the parsers (`_parsers`).
COMMANDS = (
    ("demo", "", "certified bounds and a semantics comparison on a built-in model"),
    (
        "proofs",
        "[--tag TAG] [--claim CLAIM] [-v] [--audit] [--list]",
        "check the registered claims and print the table",
    ),
    (
        "verify",
        "onnx vnnlib [--timeout TIMEOUT] [--out OUT] [--method {crown,alpha-crown,ibp}] "
        "[--split {auto,input,relu}] [--batch-size BATCH_SIZE] [--memory-budget MEMORY_BUDGET] "
        "[--seed SEED] [--semantics {float32,real}] [--check] [--progress | --quiet]",
        "verify a VNN-LIB property of an ONNX network (VNN-COMP result on stdout, its first "
        "line the verdict; progress on stderr)",
    ),
    (
        "run-instances",
        "instances [--timeout TIMEOUT] [--limit LIMIT] [--select SELECT] [--out OUT] "
        "[--method {crown,alpha-crown,ibp}] [--split {auto,input,relu}] "
        "[--batch-size BATCH_SIZE] [--spread]",
        "run a VNN-COMP benchmark folder and print a table",
    ),
)


def _parsers() -> dict:
    """Each command's argparse parser (imports the commands' packages, hence jax)."""
    from . import proofs, verify

    return {
        "proofs": proofs.cli_parser(),
        "verify": verify.verify_parser(),
        "run-instances": verify.run_parser(),
    }


def parser_args(parser) -> str:
    """A parser's usage line minus "usage:", the program name and [-h], positionals first."""
    args = parser.format_usage().split(parser.prog, 1)[1]
    tokens = [t for t in re.findall(r"\[[^\[\]]*\]|\S+", args) if t != "[-h]"]
    tokens.sort(key=lambda t: t.startswith("["))
    return " ".join(tokens)


def usage() -> str:
    """The top-level usage: every command with all its options."""
    lines = ["usage: tljax COMMAND [ARGS]", "", "commands:"]
    for cmd, args, what in COMMANDS:
        line = f"  {cmd}"
        for t in re.findall(r"\[[^\[\]]*\]|\S+", args):
            if len(line) + 1 + len(t) > 98:
                lines.append(line)
                line = "     "
            line += " " + t
        lines.append(line)
        lines += textwrap.wrap(what, 98, initial_indent="      ", subsequent_indent="      ")
    lines += ["", "`tljax COMMAND --help` describes a command's options."]
    return "\n".join(lines) + "\n"


def demo(argv=()) -> int:
    """Bounds and semantics of one small MLP, generated from a fixed seed (no download)."""
    del argv
    import jax
    import jax.numpy as jnp
    import numpy as np

    import tljax

    rng = np.random.RandomState(0)
    sizes = [8, 32, 32, 4]
    params = [
        ((rng.randn(o, i) / np.sqrt(i)).astype(np.float32), (0.1 * rng.randn(o)).astype(np.float32))
        for i, o in itertools.pairwise(sizes)
    ]

    def mlp(x, params):
        h = x
        for k, (w, b) in enumerate(params):
            h = w @ h + b
            if k < len(params) - 1:
                h = jax.nn.relu(h)
        return h

    x = jnp.asarray(rng.uniform(-1, 1, 8).astype(np.float32))
    print("tljax demo: an 8-32-32-4 ReLU MLP, one jaxpr, several semantics\n")
    print(tljax.trace(mlp, x, params))
    print("\n== The same graph under reference (XLA), exact, bf16 and fp8 semantics ==")
    print(tljax.compare(mlp, x, params, semantics=["reference", "float[bf16]", "float[e4m3fn]"]))
    eps = 0.05
    box = tljax.Box.linf(x, eps)
    pts = box.sample(jax.random.PRNGKey(0), 10_000)
    ys = np.asarray(jax.jit(jax.vmap(lambda p: mlp(p, params)))(pts))
    print(f"\n== Certified output bounds over the L-inf ball of radius {eps} (float32-sound) ==")
    print(f"{'method':12s} {'time':>8s}  {'mean width':>10s}  sampled outputs inside")
    for method in ("ibp", "affine", "crown", "alpha-crown"):
        t0 = time.perf_counter()
        b = tljax.bound(mlp, box, params, method=method)
        jax.block_until_ready(b.lower)
        dt = time.perf_counter() - t0
        lo, hi = np.asarray(b.lower), np.asarray(b.upper)
        inside = np.all((ys >= lo) & (ys <= hi))
        seen = "all 10000" if inside else "VIOLATION"
        print(f"{method:12s} {dt:7.2f}s  {float(np.mean(hi - lo)):10.4f}  {seen}")
        if not inside:
            return 1
    b = tljax.bound(mlp, box, params, method="crown")
    for j in range(4):
        print(
            f"  y[{j}] in [{float(b.lower[j]): .5f}, {float(b.upper[j]): .5f}]   sampled range "
            f"[{ys[:, j].min(): .5f}, {ys[:, j].max(): .5f}]"
        )
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "demo":
        return demo(rest)
    # each command's package loads only when that command runs
    if cmd == "proofs":
        from . import proofs

        return proofs.cli_main(rest)
    if cmd == "verify":
        from . import verify

        return verify.main_verify(rest)
    if cmd == "run-instances":
        from . import verify

        return verify.main_run_instances(rest)
    print(f"tljax: unknown command {cmd!r}\n\n{usage()}", file=sys.stderr)
    return 2
