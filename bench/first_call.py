"""Time to first bound: fresh-process import, command-line and first-call times.

Usage: python bench/first_call.py [--quick] [--repeats N] [--src DIR]

Every number comes from fresh Python processes (the parent imports neither jax nor tljax):

- imports: `import jax`, then `import tljax` (lazy: loads nothing), then the first
  `tljax.bound` attribute (loads tljax.bounds); median of `--repeats` processes. Where this
  environment disables writing bytecode (PYTHONDONTWRITEBYTECODE), tljax's modules are compiled
  from source on every start; the rows marked "bytecode cached" rerun them with a private
  PYTHONPYCACHEPREFIX, as an installed package would run.
- `tljax --help` and `python -m tljax --help`: wall time of the whole process, beside
  `python -c pass` (the interpreter's own start).
- first call: one fresh process per (net, method, float_sound) on the peer MLPs of
  bench/bounds.py (../shared/benchmarks/peers): the first `tljax.bound(fn, ...)` after import,
  split with jax.monitoring into XLA lowering + compilation and the rest (tracing, tljax's
  Python); "run" is the median warm call on a pre-traced `tljax.Graph` (no tracing, compiled),
  "warm fn" the median warm call on the function (re-traced each call, as bench/bounds.py's
  "fn ms"). A first call is evaluated by numpy on the host and the second one compiles
  (`TLJAX_FIRST_CALL=numpy`, the default) or the first one compiles (`compile`, as before):
  `--first-call both` (default) prints a row for each, measured in the same run.

`--src DIR` times another checkout (e.g. a `git archive` of an older commit) for before/after.
`--fast-compile` sets TLJAX_FAST_COMPILE=1 (XLA optimisation level 0, see tljax/bounds/_api.py)
for the first-call processes, otherwise unset; `--compile-cache DIR` turns on JAX's persistent
compilation cache there and reports each first call from a second process (a cache hit).
auto_LiRPA's times are not measured here: bench/bounds.py quotes recorded ones, printed as such.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
BOUNDS_BENCH = REPO / "bench" / "bounds.py"
PEERS = REPO / ".." / "shared" / "benchmarks" / "peers"
METHODS = ("ibp", "crown", "alpha-crown")

IMPORT_CODE = """
import json, time
t0 = time.perf_counter()
import jax
t1 = time.perf_counter()
import tljax
t2 = time.perf_counter()
tljax.bound
t3 = time.perf_counter()
print(json.dumps({"jax": t1 - t0, "tljax": t2 - t1, "bound": t3 - t2, "file": tljax.__file__}))
"""

# One cold process: import, backend start, then the first bound of one (net, method, sound).
COLD_CODE = """
import json, statistics, sys, time
net_name, method, sound, reps = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])
t0 = time.perf_counter()
import jax
import numpy as np
import tljax
tljax.bound
t_import = time.perf_counter() - t0

XLA = ("/jax/core/compile/jaxpr_to_mlir_module_duration",
       "/jax/core/compile/backend_compile_duration")
xla = [0.0]
def on_event(event, duration, **kwargs):
    if event in XLA:
        xla[0] += duration
jax.monitoring.register_event_duration_secs_listener(on_event)

t0 = time.perf_counter()
jax.block_until_ready(jax.numpy.zeros(()))
t_backend = time.perf_counter() - t0

# the peer nets as bench/bounds.py loads them
d = np.load(f"{PEERS}/{net_name}_mlp.npz")
k = len([key for key in d.files if key.startswith("W")])
params = [(d[f"W{i}"], d[f"b{i}"]) for i in range(k)]
box = tljax.Box(d["x"][0] - d["eps"], d["x"][0] + d["eps"])

def fn(x, params):
    h = x
    for i, (w, b) in enumerate(params):
        h = w @ h + b
        if i < len(params) - 1:
            h = jax.nn.relu(h)
    return h

def call(f):
    t = time.perf_counter()
    b = tljax.bound(f, box, params, method=method, float_sound=sound)
    jax.block_until_ready((b.lower, b.upper))
    return time.perf_counter() - t, b

xla[0] = 0.0
first, b = call(fn)
first_xla = xla[0]
xla[0] = 0.0
second = call(fn)[0]
second_xla = xla[0]
warm_fn = statistics.median(call(fn)[0] for _ in range(reps))
graph = tljax.trace(fn, box.lower, params)
call(graph)
run = statistics.median(call(graph)[0] for _ in range(reps))
width = float(np.mean(np.asarray(b.upper) - np.asarray(b.lower)))
print(json.dumps({"import": t_import, "backend": t_backend, "first": first, "xla": first_xla,
                  "second": second, "second_xla": second_xla, "warm_fn": warm_fn, "run": run,
                  "width": width, "jax": jax.__version__}))
"""


def _env(src: pathlib.Path, pyc: str | None = None, fast: bool = False, cache=None) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": str(src),
        "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"),
    }
    env.pop("TLJAX_FAST_COMPILE", None)
    if fast:
        env["TLJAX_FAST_COMPILE"] = "1"
    if cache is not None:
        env["JAX_COMPILATION_CACHE_DIR"] = str(cache)
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    if pyc is not None:  # as an installed package runs: bytecode written once, then reused
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pyc
    return env


def _child(code: str, env: dict, *args: str, timeout: float = 600) -> dict:
    # cwd is the timed checkout: `python -c` puts the current directory first on sys.path
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=env["PYTHONPATH"],
        timeout=timeout,
    )
    if proc.returncode:
        raise RuntimeError(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _wall(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        cmd, capture_output=True, env=env, cwd=env["PYTHONPATH"], timeout=120, check=True
    )
    return time.perf_counter() - t0


def _console_script() -> list[str]:
    """The installed `tljax` script next to this Python, else what it runs."""
    script = pathlib.Path(sys.executable).parent / "tljax"
    if script.is_file():
        return [sys.executable, str(script), "--help"]
    return [sys.executable, "-c", "from tljax._cli import main; main(['--help'])"]


def _recorded_lirpa() -> dict:
    """bench/bounds.py's LIRPA_MS, read from its source (importing it would import jax)."""
    tree = ast.parse(BOUNDS_BENCH.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["LIRPA_MS"]:
            return ast.literal_eval(node.value)
    return {}


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def imports_table(src: pathlib.Path, repeats: int) -> list[str]:
    env = _env(src)
    no_bytecode = bool(os.environ.get("PYTHONDONTWRITEBYTECODE")) or sys.flags.dont_write_bytecode
    runs = {"": [_child(IMPORT_CODE, env) for _ in range(repeats)]}
    if no_bytecode:
        with tempfile.TemporaryDirectory(prefix="tljax-pyc-") as pyc:
            _child(IMPORT_CODE, _env(src, pyc))  # writes the bytecode
            runs[", bytecode cached"] = [
                _child(IMPORT_CODE, _env(src, pyc)) for _ in range(repeats)
            ]
    where = {r["file"] for rs in runs.values() for r in rs}
    lines = [
        f"tljax from {', '.join(sorted(where))}; bytecode writing "
        + ("disabled (PYTHONDONTWRITEBYTECODE)" if no_bytecode else "enabled"),
        "",
        _row(["step (fresh processes)", "median s", "min s", "runs"]),
        _row(["---", "---:", "---:", "---:"]),
    ]
    for tag, rs in runs.items():
        for key, what in (
            ("jax", "`import jax`"),
            ("tljax", "`import tljax` after `import jax`"),
            ("bound", "first `tljax.bound` attribute (loads tljax.bounds)"),
        ):
            xs = [r[key] for r in rs]
            lines.append(
                _row([what + tag, f"{statistics.median(xs):.3f}", f"{min(xs):.3f}", len(xs)])
            )
    for what, cmd in (
        ("`python -c pass` (interpreter start)", [sys.executable, "-c", "pass"]),
        (
            "`tljax --help` (whole process)",
            [sys.executable, "-c", "from tljax._cli import main; main(['--help'])"],
        ),
        ("`python -m tljax --help` (whole process)", [sys.executable, "-m", "tljax", "--help"]),
    ):
        xs = [_wall(cmd, env) for _ in range(repeats)]
        lines.append(_row([what, f"{statistics.median(xs):.3f}", f"{min(xs):.3f}", len(xs)]))
    return lines


def first_call_table(
    src: pathlib.Path, nets, reps: int, fast, cache, modes
) -> tuple[list[str], str]:
    code = COLD_CODE.replace("{PEERS}", str(PEERS.resolve()))
    lines = [
        _row(
            ["net", "method", "float_sound", "first call on", "import s", "backend s",
             "first call s", "of which XLA s", "second call s", "of which XLA s", "run ms",
             "warm fn ms", "mean width"]
        ),
        _row(["---", "---", "---", "---", *["---:"] * 9]),
    ]  # fmt: skip
    jax_version = "?"
    for net in nets:
        for method in METHODS:
            for sound in (False, True):
                for mode in modes:
                    env = _env(src, fast=fast, cache=cache)
                    env["TLJAX_FIRST_CALL"] = mode
                    argv = (net, method, "1" if sound else "0", str(reps))
                    if cache is not None:
                        _child(code, env, *argv)  # fills the cache; the row is the next process
                    r = _child(code, env, *argv)
                    jax_version = r["jax"]
                    lines.append(
                        _row(
                            [net, method, sound, mode, f"{r['import']:.2f}",
                             f"{r['backend']:.2f}", f"{r['first']:.2f}", f"{r['xla']:.2f}",
                             f"{r['second']:.2f}", f"{r['second_xla']:.2f}",
                             f"{r['run'] * 1e3:.1f}", f"{r['warm_fn'] * 1e3:.1f}",
                             f"{r['width']:.4f}"]
                        )
                    )  # fmt: skip
                print(lines[-1], file=sys.stderr, flush=True)
    return lines, jax_version


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="3 import runs, the acas net only")
    ap.add_argument("--repeats", type=int, default=None, help="fresh processes per import row")
    ap.add_argument("--src", type=pathlib.Path, default=REPO, help="checkout to time")
    ap.add_argument("--fast-compile", action="store_true", help="TLJAX_FAST_COMPILE=1")
    ap.add_argument("--compile-cache", type=pathlib.Path, help="JAX persistent cache folder")
    ap.add_argument("--no-imports", action="store_true", help="skip the import rows")
    ap.add_argument(
        "--first-call",
        choices=("numpy", "compile", "both"),
        default="both",
        help="TLJAX_FIRST_CALL of the first-call processes (both: a row for each)",
    )
    args = ap.parse_args()
    repeats = args.repeats or (3 if args.quick else 5)
    nets = ("acas",) if args.quick else ("mnist", "acas")
    if not PEERS.is_dir():
        raise SystemExit(f"peer data not found at {PEERS}")
    t0 = time.perf_counter()
    print(f"python {platform.python_version()}, {platform.machine()}; start: {_load()}\n")
    if not args.no_imports:
        print("## Imports and the command line\n")
        print("\n".join(imports_table(args.src.resolve(), repeats)))
    print("\n## First bound (one fresh process per row)\n")
    cache = args.compile_cache.resolve() if args.compile_cache else None
    modes = ("numpy", "compile") if args.first_call == "both" else (args.first_call,)
    lines, jax_version = first_call_table(
        args.src.resolve(), nets, reps=3, fast=args.fast_compile, cache=cache, modes=modes
    )
    settings = [
        "TLJAX_FAST_COMPILE=1" if args.fast_compile else "XLA default optimisation",
        f"persistent compilation cache hit ({cache})" if cache else "no compilation cache",
    ]
    print(f"jax {jax_version}, CPU, {', '.join(settings)}; run and warm fn: median of 3 calls\n")
    print("\n".join(lines))
    print("\n## auto_LiRPA\n")
    if importlib.util.find_spec("auto_LiRPA") is None:
        print("auto_LiRPA: not installed")
    else:
        print("auto_LiRPA: installed, not timed by this bench")
    recorded = _recorded_lirpa()
    if recorded:
        print(
            "\nauto_LiRPA 0.7.1 warm-call medians **recorded** in bench/bounds.py (2-core CI CPU,"
        )
        print("quiet-noisy machine), not measured in this run:\n")
        print(_row(["net", "method", "recorded ms"]))
        print(_row(["---", "---", "---:"]))
        for (net, method), (lo, hi) in recorded.items():
            if net in nets and method in METHODS:
                print(_row([net, method, f"{lo}-{hi}"]))
    print(f"\nend: {_load()}; bench took {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
