"""Process groups on JAX's multi-controller runtime (`jax.distributed`).

tljax runs one program per process (SPMD, JAX's multi-controller model): every process executes
the same Python code, holds the same host-side state (a search's open domains, a training loop's
step counter) and takes the same decisions, while the batched device programs are sharded over a
global mesh of every process's devices. The helpers here are the few points where processes talk:

- `initialize()`: `jax.distributed.initialize` from the environment a launcher sets
  (`JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`; `python -m tljax.launch`,
  SLURM, Open MPI, a Kubernetes indexed job), with CPU collectives over gloo and a heartbeat
  timeout short enough that a dead peer ends the others within a bounded time;
- `gather`, `agree_any`, `allgather_bytes`: collectives (`multihost_utils.process_allgather`
  underneath, so gloo on CPU and NCCL on GPU) that turn a failed peer into a `PeerLostError`
  naming this process and what to do, instead of a bare XLA error or a hang;
- `group_size()` / `local()`: how many processes share the current work (1 inside `local()`:
  work that each process does on its own, e.g. its share of a suite's instances).

Nothing here opens sockets or queues of its own: all traffic is JAX's (the coordination service
for start-up and liveness, XLA collectives for data).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys

import jax
import numpy as np
from jax.experimental import multihost_utils

from ._errors import TljaxError

__all__ = [
    "PeerLostError",
    "agree_any",
    "allgather_bytes",
    "exit_on_peer_loss",
    "gather",
    "group_size",
    "index",
    "initialize",
    "local",
]

# A process that stops sending heartbeats for this long is declared dead by the coordination
# service, which then stops every other process (JAX's default, 100 s, is long for a test or an
# interactive run; override with TLJAX_HEARTBEAT_TIMEOUT).
HEARTBEAT_TIMEOUT = 30
INIT_TIMEOUT = 120

_LOCAL = [0]  # depth of `local()` scopes

# Text of the errors XLA raises when a collective loses a peer (gloo on CPU, NCCL on GPU, the
# coordination service's own liveness errors).
_PEER_SIGNS = (
    "gloo",
    "connection reset",
    "connection refused",
    "connection closed",
    "broken pipe",
    "nccl",
    "heartbeat",
    "unavailable:",
    "deadline_exceeded",
    "socket closed",
)


class PeerLostError(TljaxError, RuntimeError):
    """Another process of the job died or stopped answering during a collective."""


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    heartbeat_timeout: int | None = None,
    init_timeout: int | None = None,
) -> bool:
    """Joins the process group described by the arguments or the environment, once.

    Reads `JAX_COORDINATOR_ADDRESS` ("host:port" of process 0), `JAX_NUM_PROCESSES` and
    `JAX_PROCESS_ID` (or `JOB_COMPLETION_INDEX`, a Kubernetes indexed job's pod index) for what
    is not passed; without them, on SLURM or Open MPI with more than one task, JAX's own cluster
    detection fills everything in. CPU collectives use gloo (set before JAX starts its backends).

    Must run before anything else touches JAX's devices.

    Arguments:
      coordinator_address, num_processes, process_id: as in `jax.distributed.initialize`.
      heartbeat_timeout: seconds after which a silent process counts as dead and the others
        are stopped (default `TLJAX_HEARTBEAT_TIMEOUT` or 30).
      init_timeout: seconds to wait for every process to join (default 120).

    Returns:
      True when this process is part of a group of several processes, False when it runs alone
      (nothing to join: no arguments, no launcher environment).

    Raises:
      PeerLostError: the group could not be formed in time (the message says which address was
        tried and what to check).
    """
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    env = os.environ
    coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS") or None
    if num_processes is None and env.get("JAX_NUM_PROCESSES"):
        num_processes = int(env["JAX_NUM_PROCESSES"])
    if process_id is None:
        pid = env.get("JAX_PROCESS_ID") or env.get("JOB_COMPLETION_INDEX")
        process_id = None if pid is None or pid == "" else int(pid)
    cluster = _cluster_tasks()
    if num_processes is None and cluster <= 1:
        return False
    if num_processes is not None and num_processes <= 1:
        return False
    if heartbeat_timeout is None:
        heartbeat_timeout = int(env.get("TLJAX_HEARTBEAT_TIMEOUT", HEARTBEAT_TIMEOUT))
    if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
        # cross-process collectives between CPU devices need an implementation; gloo is built in
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address,
            num_processes,
            process_id,
            initialization_timeout=int(init_timeout or INIT_TIMEOUT),
            heartbeat_timeout_seconds=heartbeat_timeout,
        )
    except Exception as err:  # re-raised with what was tried and what to check
        raise PeerLostError(
            f"could not join the process group (coordinator {coordinator_address or 'auto'}, "
            f"{num_processes or cluster} processes, this is process {process_id}): "
            f"{_first_line(err)}. Check that every process was started with the same "
            "JAX_COORDINATOR_ADDRESS and JAX_NUM_PROCESSES, that process 0 is running and its "
            "port is reachable, and that no proxy variable (http_proxy) intercepts it"
        ) from err
    return jax.process_count() > 1


def _cluster_tasks() -> int:
    """Tasks of a SLURM / Open MPI job (1 when there is none): JAX detects the rest itself."""
    for var in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        try:
            return int(os.environ[var])
        except (KeyError, ValueError):
            continue
    return 1


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


def group_size() -> int:
    """Processes sharing the current work: `jax.process_count()`, or 1 inside `local()`."""
    if _LOCAL[0]:
        return 1
    return jax.process_count()


def index() -> int:
    """This process's index in the group (0 when alone or inside `local()`)."""
    return 0 if group_size() == 1 else jax.process_index()


@contextlib.contextmanager
def local():
    """Work in this block is this process's alone: searches and bound batches use only its own
    devices and talk to no other process (each process verifies its share of a suite)."""
    _LOCAL[0] += 1
    try:
        yield
    finally:
        _LOCAL[0] -= 1


def is_peer_failure(err: BaseException) -> bool:
    """Whether `err` is how XLA reports a collective that lost a peer."""
    if isinstance(err, PeerLostError):
        return True
    text = str(err).lower()
    return any(s in text for s in _PEER_SIGNS)


def peer_lost(what: str, err: BaseException) -> PeerLostError:
    """The `PeerLostError` for a failed collective `what`."""
    return PeerLostError(
        f"process {jax.process_index()} of {jax.process_count()}: another process of this job "
        f"died or stopped answering during {what} ({_first_line(err)}). Its own log (stderr) "
        "says why; `python -m tljax.launch` names the process that exited first. Rerun the job "
        "(all processes together); this process cannot continue without it"
    )


@contextlib.contextmanager
def collective(what: str):
    """Turns XLA's errors for a lost peer inside the block into a `PeerLostError`."""
    try:
        yield
    except PeerLostError:
        raise
    except Exception as err:
        if group_size() > 1 and is_peer_failure(err):
            raise peer_lost(what, err) from err
        raise


def gather(tree, *, what: str = "a gather"):
    """Every process's `tree` leaves concatenated along axis 0, in process order (numpy);
    a global (non fully addressable) array comes back whole, on every process."""
    if group_size() == 1:
        return jax.tree_util.tree_map(np.asarray, tree)
    with collective(what):
        return multihost_utils.process_allgather(tree, tiled=True)


def agree_any(*flags: bool, what: str = "an agreement") -> tuple[bool, ...]:
    """Per flag: whether any process raised it. Every process gets the same answer, so a
    decision taken on it (stop on a timeout, run the falsifier now) is taken by all."""
    if group_size() == 1:
        return tuple(bool(f) for f in flags)
    with collective(what):
        got = multihost_utils.process_allgather(np.asarray(flags, np.int32))
    return tuple(bool(v) for v in np.any(np.asarray(got) != 0, axis=0))


def allgather_bytes(payload: bytes, *, what: str = "an exchange") -> list[bytes]:
    """Every process's `payload`, in process order (two collectives: lengths, then bytes)."""
    if group_size() == 1:
        return [payload]
    with collective(what):
        sizes = np.asarray(
            multihost_utils.process_allgather(np.asarray([len(payload)], np.int64))
        ).reshape(-1)
        buf = np.zeros(max(int(sizes.max()), 1), np.uint8)
        buf[: len(payload)] = np.frombuffer(payload, np.uint8)
        rows = np.asarray(multihost_utils.process_allgather(buf))
    return [rows[k, : int(n)].tobytes() for k, n in enumerate(sizes)]


def allgather_objects(obj, *, what: str = "an exchange") -> list:
    """Every process's picklable `obj`, in process order (results, a counterexample: values
    this process computed itself, sent through the group's collectives)."""
    return [pickle.loads(b) for b in allgather_bytes(pickle.dumps(obj), what=what)]


def exit_on_peer_loss(err: PeerLostError, prog: str = "tljax") -> None:
    """Prints `err` and ends the process at once with status 3.

    A normal exit would wait at `jax.distributed`'s shutdown barrier for the lost peer until the
    heartbeat timeout, then abort with a C++ stack trace; the message is the useful part."""
    print(f"{prog}: error: {err}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(3)
