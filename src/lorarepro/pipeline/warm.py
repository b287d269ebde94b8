"""Warm job start: one server process imports torch, transformers, PEFT, MLflow … once per pipeline
run, and every job is a fork of it, so a job starts in well under a second instead of paying ~4.5 s
of imports (measured by benchmarks/pipeline_overhead.py).

Snakemake still runs each job as its own process (the script adapter in workflow/scripts/). That
process is a thin client: it sends the job (its `snakemake` object, cwd, environment, sys.path and
its stdin/stdout/stderr descriptors) over a Unix socket; the server forks; the fork takes over the
client's descriptors, working directory and environment and runs the job; the client exits with the
job's exit status. Each job is still a process of its own (its own RNG state, CUDA context, GPU
claim); only already-imported modules are shared, copy-on-write.

Lifetime and faults:
- Snakemake's `onstart` starts the server for local execution (`warm_start: true`, the default) and
  `onsuccess`/`onerror` stop it; the server also exits when Snakemake dies (it polls its parent).
- The server stays in Snakemake's process group, and so do its forks: a Ctrl-C or a kill of the
  group reaches jobs exactly as before. A job whose client dies (kill -9 of the job process) kills
  itself: it watches the connection for end of file.
- Without a server (cluster executors, `warm_start: false`, or the server not reachable), the
  adapter runs the job in its own process, as before: the server is only ever a speed-up.
- The socket lives in a fresh 0700 directory, and the server serves only its own user (SO_PEERCRED).
- The server never runs a job itself, starts no threads and touches no CUDA, so forking it is safe.
"""

from __future__ import annotations

import atexit
import importlib
import os
import pickle
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import lorarepro
from lorarepro.pipeline import jobs

ENV = "LORAREPRO_WARM"  # the server's socket path, inherited by every job Snakemake starts
_HEADER = struct.Struct("!Q")  # payload length, sent with the client's three descriptors


def run_job(smk, job) -> None:
    """Run `job(smk)` (a function of lorarepro.pipeline.jobs) in a fork of the warm server when one is up,
    else here. Exits with the job's status in the first case; returns or raises in the second."""
    address = os.environ.get(ENV)
    if address:
        status = _run_in_server(address, smk, f"{job.__module__}:{job.__qualname__}")
        if status is not None:
            sys.exit(status)
    job(smk)


def _run_in_server(address: str, smk, target: str) -> int | None:
    """The job's exit status, or None when the server cannot take the job (then it runs here)."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(address)
    except OSError as exc:
        print(f"lorarepro.pipeline.warm: no server at {address} ({exc}); running the job in this process", file=sys.stderr)
        return None
    request = pickle.dumps({
        "target": target, "snakemake": smk, "cwd": os.getcwd(), "env": dict(os.environ), "path": list(sys.path),
        "argv": list(sys.argv), "package": lorarepro.__file__,
    })
    stdio = [fd if _is_open(fd) else os.open(os.devnull, os.O_RDWR) for fd in (0, 1, 2)]
    socket.send_fds(client, [_HEADER.pack(len(request))], stdio)
    client.sendall(request)
    replies = client.makefile("r")
    first = replies.readline().split()  # "pid N" once forked (the server may still be importing)
    if not first or first[0] != "pid":
        reason = " ".join(first[1:]) if first else "the server closed the connection"
        print(f"lorarepro.pipeline.warm: server refused the job ({reason}); running the job in this process", file=sys.stderr)
        return None
    pid = int(first[1])
    _forward_signals(pid)
    last = replies.readline().split()  # "exit N" from the server once the fork is reaped
    if not last:  # the server died first: the fork's status is lost, so the job counts as failed
        print(f"lorarepro.pipeline.warm: the server ended before job process {pid}; its status is unknown", file=sys.stderr)
        return 1
    status = int(last[1])
    return 128 - status if status < 0 else status  # killed by signal N: the shell's 128+N


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def _forward_signals(pid: int) -> None:
    """A SIGTERM to this client (Snakemake cancelling the job) goes to the job too. A SIGINT is
    forwarded only to a job outside this process group: a terminal's Ctrl-C reaches the group."""
    def forward(signum, _frame):
        try:
            if signum == signal.SIGTERM or os.getpgid(pid) != os.getpgrp():
                os.kill(pid, signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)


# ---- server ---------------------------------------------------------------------------------------


def start(log_path: str | Path, parent: int | None = None, timeout: float = 30.0) -> tuple[str, int]:
    """Start a server for this process (Snakemake's onstart); returns (socket path, server pid).
    Returns as soon as the socket listens: jobs that connect during the imports wait for them."""
    address = str(Path(tempfile.mkdtemp(prefix="lorarepro-warm-")) / "socket")  # mkdtemp: mode 0700
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "lorarepro.pipeline.warm", address, str(parent or os.getpid())],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while not os.path.exists(address):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the warm job server did not start (see {log_path})")
        time.sleep(0.02)
    return address, proc.pid


def stop(address: str, pid: int) -> None:
    """Stop the server (Snakemake's onsuccess/onerror); running forks are not affected."""
    try:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
    _remove(address)


def _remove(address: str) -> None:
    for path in (address, os.path.dirname(address)):
        try:
            os.rmdir(path) if os.path.isdir(path) else os.unlink(path)
        except FileNotFoundError:
            pass


def serve(address: str, parent: int) -> None:
    """Listen first (so clients can connect at once), import everything, then fork one process per job."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(128)
    wake_r, wake_w = os.pipe()  # SIGCHLD wakes select() through this pipe
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the jobs; Snakemake stops us
    started, environment = time.monotonic(), dict(os.environ)
    jobs.preload()
    # what the imports put in the environment (e.g. TORCHINDUCTOR_CACHE_DIR): a cold job's imports would too
    set_by_imports = {k: v for k, v in os.environ.items() if environment.get(k) != v}
    if threading.active_count() > 1:  # forking a process with threads can deadlock its children
        raise RuntimeError(f"preloading started threads {threading.enumerate()}; not serving")
    print(f"lorarepro.pipeline.warm: imports done in {time.monotonic() - started:.2f} s; serving {address}", flush=True)
    running: dict[int, socket.socket] = {}
    try:
        while os.getppid() == parent:
            readable, _, _ = select.select([listener, wake_r], [], [], 1.0)
            if wake_r in readable:
                os.read(wake_r, 4096)
            if listener in readable:
                conn, _ = listener.accept()
                pid = _fork_job(conn, listener, (wake_r, wake_w), set_by_imports)
                if pid:
                    running[pid] = conn
            _reap(running)
    finally:
        listener.close()
        _remove(address)


def _fork_job(conn: socket.socket, listener: socket.socket, pipe: tuple[int, int], set_by_imports: dict) -> int | None:
    uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[1]
    if uid != os.getuid():
        conn.sendall(b"refused another user\n")
        conn.close()
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        listener.close()
        for fd in pipe:
            os.close(fd)
        _job_process(conn, set_by_imports)  # never returns
    return pid


def _reap(running: dict[int, socket.socket]) -> None:
    while running:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        conn = running.pop(pid, None)
        if conn is not None:
            try:
                conn.sendall(f"exit {os.waitstatus_to_exitcode(status)}\n".encode())
            except OSError:  # the client is gone (killed): nobody to tell
                pass
            conn.close()


def _job_process(conn: socket.socket, set_by_imports: dict) -> None:
    """In the fork: become the client's job (descriptors, cwd, environment, path), run it, exit."""
    status = 1
    try:
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
        request = _receive(conn, _HEADER.unpack(header)[0])
        if request["package"] != lorarepro.__file__:
            conn.sendall(f"refused server imported {lorarepro.__file__}, job wants {request['package']}\n".encode())
            os._exit(0)
        for target_fd, fd in enumerate(fds):
            os.dup2(fd, target_fd)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update({**set_by_imports, **request["env"]})
        sys.path[:] = request["path"]
        sys.argv = request["argv"]
        _fresh_unseeded_rngs()
        conn.sendall(f"pid {os.getpid()}\n".encode())
        threading.Thread(target=_die_with_client, args=(conn,), daemon=True).start()
        module, _, name = request["target"].partition(":")
        job = getattr(importlib.import_module(module), name)
        try:
            job(request["snakemake"])
            status = 0
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        atexit._run_exitfuncs()  # what a normal interpreter exit runs (MLflow, logging); then no unwinding into serve()
        os._exit(status)


def _receive(conn: socket.socket, size: int) -> dict:
    chunks, left = [], size
    while left:
        chunk = conn.recv(min(left, 1 << 20))
        if not chunk:
            raise ConnectionError("the client closed the connection mid-request")
        chunks.append(chunk)
        left -= len(chunk)
    return pickle.loads(b"".join(chunks))


def _fresh_unseeded_rngs() -> None:
    """Fresh RNG states, as a job process started cold has (all three seed themselves from OS
    entropy at start-up): forks would all share the server's. Results never depend on these."""
    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    if "torch" in sys.modules:
        sys.modules["torch"].default_generator.seed()  # CPU only: CUDA stays untouched


def _die_with_client(conn: socket.socket) -> None:
    """The client sends nothing after its request: end of file means it died (e.g. kill -9), and
    the job must not outlive it (a rerun would race a ghost writing the same outputs)."""
    try:
        while conn.recv(1):
            pass
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
