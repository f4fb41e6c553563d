"""One process of a multi-process test job (started by the tests, alone or under a launcher).

`python tests/multihost/worker.py JOB ARGS...` joins the group its environment describes
(`tljax.core.processes.initialize`), runs JOB and prints one line `RESULT {json}`.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        if a is not None:
            h.update(a.tobytes())
    return h.hexdigest()[:16]


def verify_job(folder, batch, *pairs):
    """Verifies each `onnx vnnlib` pair of `pairs` (paths under `folder`) in turn."""
    import numpy as np

    import tljax.verify._bounder as B
    from tljax.verify import load_instance, verify

    runs = []
    for onnx, vnnlib in zip(pairs[::2], pairs[1::2], strict=True):
        B.BATCH_STATS.update(calls=0, bytes=0, bytes_in=0)
        B.BATCH_STATS["spans"].clear()
        fn, prop, args, shape = load_instance(f"{folder}/{onnx}", f"{folder}/{vnnlib}")
        t0 = time.monotonic()
        res = verify(fn, prop, *args, input_shape=shape, timeout=100, batch_size=int(batch))
        out = {"verdict": res.verdict, "time": time.monotonic() - t0}
        out["domains"] = int(res.stats.get("domains", 0))
        if res.certificate is not None:
            digests, bounds = [], []
            for gl in res.certificate.groups:
                key = np.concatenate([gl.lower, gl.upper], axis=1).T[::-1]
                order = np.lexsort(key)
                digests.append(_digest(gl.case[order], gl.lower[order], gl.upper[order]))
                bounds.append(np.asarray(gl.bounds[order], np.float64).tolist())
            out["leaves"] = digests  # the leaf boxes, exactly
            out["bounds"] = bounds  # their certified bounds
            out["n_leaves"] = res.certificate.n_leaves
            out["checked"] = bool(res.check().accepted)
        if res.counterexample is not None:
            out["cex"] = np.asarray(res.counterexample.x, np.float64).reshape(-1).tolist()
        out["calls"] = B.BATCH_STATS["calls"]
        out["spans"] = sorted(B.BATCH_STATS["spans"])
        out["bytes"] = B.BATCH_STATS["bytes"]
        out["bytes_in"] = B.BATCH_STATS["bytes_in"]
        runs.append(out)
    return {"runs": runs}


def train_job(steps="6"):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import tljax
    import tljax.layers as tl
    from tljax.objectives import certified_loss

    key = jax.random.key(0)
    x = np.asarray(jax.random.normal(key, (48, 6)), np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int32)
    net = tl.MLP(6, [16], 2, key=jax.random.key(1))

    loss = certified_loss(method="ibp", eps=0.1, warmup_steps=2, ramp_steps=4, clip=None)
    (net, _), _, hist = tljax.train(
        net,
        loss,
        optax.adam(1e-2),
        (x, y),
        epochs=int(steps),
        batch_size=24,
        key=jax.random.key(2),
        progress=False,
        state=jnp.int32(0),
    )
    leaves = [
        np.asarray(a).reshape(-1)
        for a in jax.tree_util.tree_leaves(net)
        if hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.floating)
    ]
    return {"params": np.concatenate(leaves).tolist(), "loss": hist["loss"]}


def sleep_job(seconds="600"):
    # a search loop stands in: collectives every step, so a lost peer shows up at the next one
    import numpy as np

    from tljax.core import processes

    processes.gather(np.zeros(1))  # every process is in the loop from here
    print("READY", flush=True)
    end = time.monotonic() + float(seconds)
    k = 0
    while time.monotonic() < end:
        processes.agree_any(k % 2 == 0)
        processes.gather(np.arange(4) + k)
        time.sleep(0.05)
        k += 1
    return {"steps": k}


JOBS = {"verify": verify_job, "train": train_job, "sleep": sleep_job}


def main():
    from tljax.core import processes

    processes.initialize()
    import jax

    job, *args = sys.argv[1:]
    try:
        out = JOBS[job](*args)
    except processes.PeerLostError as err:
        processes.exit_on_peer_loss(err, "worker")
    out.update(
        process=jax.process_index(),
        processes=jax.process_count(),
        devices=len(jax.devices()),
        local_devices=jax.local_device_count(),
    )
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
