"""`python -m tljax.launch -n N COMMAND ...`: start N processes of one `jax.distributed` job here.

Each process runs COMMAND with the environment that `tljax.core.processes.initialize()` (called
by `tljax verify` and `tljax run-instances`) reads: `JAX_COORDINATOR_ADDRESS` (process 0, on
127.0.0.1 and a free port), `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`. On a cluster the scheduler
starts the processes instead and sets the same variables (or JAX detects SLURM / Open MPI
itself): see `docs/multi_host.md`.

    python -m tljax.launch -n 2 tljax verify net.onnx prop.vnnlib --timeout 116
    python -m tljax.launch -n 3 --devices-per-process 2 --cpu python my_script.py

The launcher only starts processes and watches them (subprocess + environment variables): when
one exits with an error, it says which, stops the others and exits with that status, so a job
never waits on a dead peer.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

__all__ = ["command_line", "launch", "main"]


def _free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the coordinator binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command_line(command: list[str]) -> list[str]:
    """`command` with `tljax` / `python` / `*.py` run by this Python interpreter."""
    if not command:
        raise ValueError("no command to launch: give one after the options, e.g. `tljax verify`")
    head, rest = command[0], list(command[1:])
    if head == "tljax":
        return [sys.executable, "-m", "tljax", *rest]
    if head in ("python", "python3"):
        return [sys.executable, *rest]
    if head.endswith(".py"):
        return [sys.executable, head, *rest]
    return list(command)


def environments(
    n: int, *, port: int | None = None, devices_per_process: int | None = None, cpu: bool = False
) -> list[dict]:
    """The environment of each of the `n` processes (the variables `initialize()` reads)."""
    port = _free_port() if port is None else port
    envs = []
    for pid in range(n):
        env = dict(os.environ)
        env.update(
            JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
            JAX_NUM_PROCESSES=str(n),
            JAX_PROCESS_ID=str(pid),
            PYTHONUNBUFFERED="1",
        )
        if devices_per_process is not None:
            flags = env.get("XLA_FLAGS", "").split()
            flags = [f for f in flags if "xla_force_host_platform_device_count" not in f]
            flags.append(f"--xla_force_host_platform_device_count={devices_per_process}")
            env["XLA_FLAGS"] = " ".join(flags)
        if cpu:
            env["JAX_PLATFORMS"] = "cpu"
        envs.append(env)
    return envs


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _stop(procs, grace: float) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    end = time.monotonic() + grace
    for p in procs:
        left = max(end - time.monotonic(), 0.0)
        try:
            p.wait(left)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def launch(
    command: list[str],
    n: int,
    *,
    devices_per_process: int | None = None,
    cpu: bool = False,
    port: int | None = None,
    timeout: float | None = None,
    grace: float = 5.0,
    log=None,
) -> int:
    """Runs `command` as processes 0..n-1 of one job; returns the job's exit status.

    0 when every process exits with 0; else the status of the first process that failed (the
    others are stopped: SIGTERM, then SIGKILL after `grace` seconds), 124 past `timeout`.

    Arguments:
      command: the program and its arguments (`tljax ...`, `python script.py`, `script.py`).
      n: number of processes.
      devices_per_process: forced CPU devices per process (`XLA_FLAGS`), None: leave as is.
      cpu: run on CPU (`JAX_PLATFORMS=cpu`).
      port: the coordinator's port on 127.0.0.1 (default: a free one).
      timeout: seconds for the whole job (None: no limit).
      grace: seconds between SIGTERM and SIGKILL when stopping processes.
      log: where the launcher's own lines go (default stderr).
    """
    if n < 1:
        raise ValueError(f"need at least one process, got -n {n}")
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    argv = command_line(command)
    envs = environments(n, port=port, devices_per_process=devices_per_process, cpu=cpu)
    procs = [subprocess.Popen(argv, env=env) for env in envs]
    end = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                i, code = failed[0]
                say(
                    f"tljax.launch: process {i} of {n} {_describe(code)}; stopping the other "
                    f"processes (process {i}'s own messages above say why)"
                )
                _stop(procs, grace)
                return code if code > 0 else 128 - code
            if all(c == 0 for c in codes):
                return 0
            if end is not None and time.monotonic() > end:
                say(f"tljax.launch: the job ran past --timeout {timeout:g} s; stopping it")
                _stop(procs, grace)
                return 124
            time.sleep(0.05)
    except KeyboardInterrupt:
        _stop(procs, grace)
        return 130


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tljax.launch",
        description=(
            "Start N processes of one jax.distributed job on this machine (coordinator on "
            "127.0.0.1). Every process runs COMMAND; `tljax verify` and `tljax run-instances` "
            "join the job by themselves, scripts call tljax.core.processes.initialize()."
        ),
    )
    p.add_argument("-n", "--processes", type=int, required=True, help="number of processes")
    p.add_argument(
        "--devices-per-process",
        type=int,
        default=None,
        help="forced CPU devices per process (XLA_FLAGS=--xla_force_host_platform_device_count)",
    )
    p.add_argument("--cpu", action="store_true", help="run on CPU (JAX_PLATFORMS=cpu)")
    p.add_argument("--port", type=int, default=None, help="coordinator port (default: free one)")
    p.add_argument("--timeout", type=float, default=None, help="seconds for the whole job")
    p.add_argument("command", nargs=argparse.REMAINDER, help="tljax ... | python script.py ...")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        return launch(
            command,
            args.processes,
            devices_per_process=args.devices_per_process,
            cpu=args.cpu,
            port=args.port,
            timeout=args.timeout,
        )
    except (ValueError, OSError) as err:
        print(f"tljax.launch: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
