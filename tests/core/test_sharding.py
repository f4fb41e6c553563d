"""Sharded batched bounds: equal to the unsharded computation, on 4 forced host devices and on 2
processes. The device count must be set before JAX initialises, so those runs are subprocesses."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tljax
from tljax.bounds._sharding import batch_mesh, bound_sharded
from tljax.core._errors import InputError, InvalidBoxError

REPO = pathlib.Path(__file__).resolve().parents[2]

MODEL = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    import tljax
    from tljax.bounds import relu_shapes
    from tljax.bounds._sharding import batch_mesh, bound_sharded

    ks = jax.random.split(jax.random.key(0), 4)
    params = {"w1": jax.random.normal(ks[0], (8, 16)) * 0.4, "b1": jnp.zeros(16),
              "w2": jax.random.normal(ks[1], (16, 3)) * 0.4}

    def mlp(x, p):
        return jax.nn.relu(x @ p["w1"] + p["b1"]) @ p["w2"]

    xs = np.asarray(jax.random.normal(ks[2], (10, 8)))   # 10 boxes: not a multiple of 4
    lo, hi = xs - 0.1, xs + 0.1
    """
)

SINGLE = MODEL + textwrap.dedent(
    """
    import json
    out = {"devices": len(jax.devices())}
    pts = np.asarray(jax.random.uniform(ks[3], (64, 10, 8), minval=-0.1, maxval=0.1)) + xs
    ys = np.asarray(jax.vmap(jax.vmap(lambda x: mlp(x, params)))(pts))
    for method in ("ibp", "crown", "alpha-crown"):
        b = bound_sharded(mlp, lo, hi, params, method=method, alpha_iters=3)
        out[method + "_contains"] = bool(np.all((b.lower <= ys) & (ys <= b.upper)))
        ref = jax.vmap(lambda l, h: tljax.bound(mlp, tljax.Box(l, h), params, method=method,
        alpha_iters=3))(lo, hi)
        out[method] = [bool(np.array_equal(b.lower, ref.lower)), bool(np.array_equal(b.upper,
        ref.upper)),
                       list(b.lower.shape)]
    one = tljax.bound(mlp, tljax.Box(lo[7], hi[7]), params, method="crown")
    b = bound_sharded(mlp, lo, hi, params, method="crown")
    out["single_box_close"] = float(max(np.max(np.abs(b.lower[7] - one.lower)),
    np.max(np.abs(b.upper[7] - one.upper))))
    # Branch-and-bound domains: the same box, different ReLU splits.
    (shape,) = relu_shapes(mlp, tljax.Box(lo[0], hi[0]), params)
    splits = np.zeros((6, *shape), np.int32)
    splits[:, :3] = np.array([[1, 1, 1], [-1, 1, 0], [0, 0, -1], [1, -1, -1], [-1, -1, -1], [0, 0,
    0]])
    blo, bhi = np.broadcast_to(lo[0], (6, 8)), np.broadcast_to(hi[0], (6, 8))
    bd = bound_sharded(mlp, blo, bhi, params, method="crown", relu_splits=[splits])
    ok = []
    for i in range(6):
        r = tljax.bound(mlp, tljax.Box(lo[0], hi[0]), params, method="crown",
        relu_splits=[splits[i]])
        ok.append(bool(np.allclose(bd.lower[i], r.lower, atol=1e-5, equal_nan=True)
                       and np.allclose(bd.upper[i], r.upper, atol=1e-5, equal_nan=True)))
    out["domains"] = ok
    # The program really is partitioned over 4 devices.
    from tljax.bounds import _sharding
    fn, run = [v for k, v in _sharding._CACHE.items() if "crown" in k and k[4] is None][-1]
    out["partitions"] = run.lower(*[jax.ShapeDtypeStruct((12, 8), jnp.float32)] * 2, None,
                                  [jax.ShapeDtypeStruct(np.shape(a), jnp.float32) for a in
                                   jax.tree_util.tree_leaves(params)]).as_text()
    out["partitions"] = out["partitions"].count("num_partitions = 4")
    print("RESULT" + json.dumps(out))
    """
)

MULTI = (
    textwrap.dedent(
        """
    import os, sys
    pid, port = int(sys.argv[1]), sys.argv[2]
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=pid)
    """
    )
    + MODEL
    + textwrap.dedent(
        """
    import json
    full = bound_sharded(mlp, lo, hi, params, method="crown")
    mine = slice(0, 5) if pid == 0 else slice(5, 10)
    local = bound_sharded(mlp, lo[mine], hi[mine], params, method="crown", process_local=True)
    ref = jax.vmap(lambda l, h: tljax.bound(mlp, tljax.Box(l, h), params, method="crown"))(lo, hi)
    print("RESULT" + json.dumps({
        "global_devices": len(jax.devices()), "local_devices": len(jax.local_devices()),
        "full": bool(np.array_equal(full.lower, ref.lower) and np.array_equal(full.upper,
        ref.upper)),
        "local": bool(np.array_equal(local.lower, ref.lower[mine]) and np.array_equal(local.upper,
        ref.upper[mine])),
    }))
    """
    )
)


def _env(n_devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n_devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _result(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT")]
    assert lines, f"subprocess printed no result:\n{stdout[-3000:]}"
    return json.loads(lines[-1][len("RESULT") :])


def test_sharded_bounds_on_four_devices_equal_the_unsharded_computation():
    proc = subprocess.run(
        [sys.executable, "-c", SINGLE],
        env=_env(4),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = _result(proc.stdout)
    assert out["devices"] == 4
    for method in ("ibp", "crown"):
        assert out[method] == [True, True, [10, 3]], (method, out[method])
    # alpha-CROWN's Adam steps amplify rounding differences between batch layouts (a gradient
    # near 0 flips the step's sign), so sharded and vmapped runs may end at different slopes:
    # both are sound, which is what is checked.
    assert out["alpha-crown"][2] == [10, 3]
    assert all(out[m + "_contains"] for m in ("ibp", "crown", "alpha-crown"))
    assert (
        out["single_box_close"] < 1e-5
    )  # vs unbatched bound: only batched-matmul rounding differs
    assert out["domains"] == [True] * 6
    assert out["partitions"] >= 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_sharded_bounds_across_two_processes():
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MULTI, str(pid), port],
            env=_env(2),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for pid in (0, 1)
    ]
    outs = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        assert p.returncode == 0, stderr[-3000:]
        outs.append(_result(stdout))
    for out in outs:
        assert out == {"global_devices": 4, "local_devices": 2, "full": True, "local": True}


# ----------------------------------------------------------------------------------------------
# In-process (one device): the same code path with a mesh of one.


def _mlp(x, w):
    return jax.nn.relu(x @ w) @ jnp.ones((w.shape[1], 2), x.dtype)


def test_one_device_mesh_equals_vmapped_bound():
    w = jnp.linspace(-1, 1, 12, dtype=jnp.float32).reshape(3, 4)
    xs = jnp.linspace(-1, 1, 15, dtype=jnp.float32).reshape(5, 3)
    b = bound_sharded(_mlp, xs - 0.05, xs + 0.05, w, method="crown")
    ref = jax.vmap(lambda lo, hi: tljax.bound(_mlp, tljax.Box(lo, hi), w, method="crown"))(
        xs - 0.05, xs + 0.05
    )
    np.testing.assert_array_equal(b.lower, np.asarray(ref.lower))
    np.testing.assert_array_equal(b.upper, np.asarray(ref.upper))
    assert b.method == "crown" and b.lower.shape == (5, 2)
    # A second call with new boxes of the same shapes reuses the compiled program.
    from tljax.bounds import _sharding

    before = len(_sharding._CACHE)
    b2 = bound_sharded(_mlp, xs - 0.1, xs + 0.1, w, method="crown")
    assert len(_sharding._CACHE) == before
    ref2 = jax.vmap(lambda lo, hi: tljax.bound(_mlp, tljax.Box(lo, hi), w, method="crown"))(
        xs - 0.1, xs + 0.1
    )
    np.testing.assert_array_equal(b2.lower, np.asarray(ref2.lower))


def test_batch_errors_name_the_problem():
    w = jnp.ones((3, 4))
    xs = jnp.zeros((5, 3))
    with pytest.raises(InvalidBoxError, match="the batch is empty"):
        bound_sharded(_mlp, xs[:0], xs[:0], w)
    with pytest.raises(InvalidBoxError, match="lowers have batch size 5, uppers 4"):
        bound_sharded(_mlp, xs, xs[:4], w)
    with pytest.raises(InvalidBoxError, match=r"index \(2, 1\): lower"):
        bound_sharded(_mlp, xs.at[2, 1].set(1.0), xs, w)
    with pytest.raises(InputError, match="relu_splits\\[0\\] needs a leading batch axis of size 5"):
        bound_sharded(_mlp, xs, xs, w, relu_splits=[np.zeros((4,), np.int32)])
    with pytest.raises(InputError, match="unknown method"):
        bound_sharded(_mlp, xs, xs, w, method="lp")
    mesh2 = jax.sharding.Mesh(np.array(jax.devices()).reshape(1, -1), ("a", "b"))
    with pytest.raises(InputError, match="needs a 1-D mesh"):
        bound_sharded(_mlp, xs, xs, w, mesh=mesh2)
    assert batch_mesh().axis_names == ("batch",)
