"""Run one untrusted Python program (model-written code) in a separate, limited process.

    run_program(source, timeout_s, memory_mb) -> {"outcome": passed|failed|timeout|error, ...}

The program runs as `python -I sandbox.py <limits> program.py`: this file is also the launcher. The
launcher, a fresh single-threaded process (a `preexec_fn` would run in a fork of the multi-threaded
training job, which the Python docs call unsafe), applies the limits to itself and then exec's the
program, so every limit holds for the program and anything it starts:
- rlimits: address space (RLIMIT_AS), CPU seconds, processes (RLIMIT_NPROC; not enforced for root),
  file size (RLIMIT_FSIZE), no core files;
- no network: a new user + network namespace (only a down loopback) where the kernel allows it;
- a read-only file system but for its cwd: a mount namespace in that user namespace, every mount
  made read-only (mount_setattr, Linux >= 5.12), the cwd bind-mounted writable;
- seccomp (x86_64, aarch64): no new processes (fork/vfork/clone without CLONE_THREAD), no sockets
  but AF_UNIX: holds for root too, where RLIMIT_NPROC does not;
- where neither network layer is available, a guard that removes `socket` before the program runs.
The parent gives it an empty temporary cwd, a minimal environment, stdin from /dev/null, a wall
timeout that kills the whole process group, and removes the directory afterwards. Which layers
were actually in force is reported by the launcher (before the program runs) as `isolation`.
Without the mount namespace the file system is NOT isolated (the result says so): the program can
then write wherever the job's user can.
"""

import ctypes
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUTCOMES = ("passed", "failed", "timeout", "error")
FILE_LIMIT_MB = 16  # enough for any test's output, not for filling the disk
NPROC = 64
_SOCKET_GUARD = """\
import socket as _s, _socket
def _no_network(*a, **k):
    raise OSError("network disabled by the lorarepro sandbox")
for _m in (_s, _socket):
    for _n in ("socket", "create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo"):
        if hasattr(_m, _n):
            setattr(_m, _n, _no_network)
del _m, _n, _s, _socket, _no_network
"""


LAYERS = ("netns", "mountns", "seccomp")  # the layers tried, in order; tests switch them off one at a time


def run_program(source: str, timeout_s: float = 10.0, memory_mb: int = 2048, layers: tuple = LAYERS) -> dict:
    """Run `source` in the sandbox; outcome passed (exit 0), failed (non-zero exit: an assertion or
    any exception, MemoryError under the address-space limit included), timeout (wall clock), or
    error (killed by a signal, e.g. the CPU or file-size limit, or the sandbox could not start)."""
    limits = {"timeout_s": float(timeout_s), "memory_mb": int(memory_mb), "layers": list(layers)}
    with tempfile.TemporaryDirectory(prefix="lorarepro-sandbox-") as tmp:
        work = Path(tmp) / "work"  # the program's cwd: empty but for the program itself
        work.mkdir()
        (work / "program.py").write_text(source)
        report_r, report_w = os.pipe()
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(work), "TMPDIR": str(work)}
        start = time.perf_counter()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", str(Path(__file__).resolve()), json.dumps(limits), str(report_w), "program.py"],
                cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=(report_w,), start_new_session=True)
        except OSError as err:
            os.close(report_r)
            return {"outcome": "error", "returncode": None, "seconds": 0.0, "stderr": str(err), "isolation": {}}
        finally:
            os.close(report_w)
        try:
            _, err = proc.communicate(timeout=timeout_s)
            outcome = "passed" if proc.returncode == 0 else "failed" if proc.returncode > 0 else "error"
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            _, err = proc.communicate()
            outcome = "timeout"
        with os.fdopen(report_r) as fh:
            report = fh.read()
        isolation = json.loads(report) if report else {}
        if not isolation.get("seccomp"):
            _kill_group(proc.pid)  # it could fork: anything it left behind in its group
        if not isolation and outcome != "timeout":
            outcome = "error"  # the launcher died before the program started
    return {"outcome": outcome, "returncode": proc.returncode, "seconds": round(time.perf_counter() - start, 3),
            "stderr": err.decode(errors="replace")[-2000:], "isolation": isolation}


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ---- the launcher (runs in the child under `python -I`: standard library only) ----------------------

CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWNS, CLONE_THREAD = 0x10000000, 0x40000000, 0x00020000, 0x00010000
MS_BIND, MS_REC, MS_PRIVATE, MOUNT_ATTR_RDONLY, AT_RECURSIVE, AT_FDCWD = 0x1000, 0x4000, 0x40000, 1, 0x8000, -100
SYS_MOUNT_SETATTR = 442  # the same number on every architecture
# seccomp: audit arch -> syscall numbers (fork, vfork: x86_64 only; clone; clone3; socket)
ARCHS = {0xC000003E: {"fork": 57, "vfork": 58, "clone": 56, "clone3": 435, "socket": 41},  # x86_64
         0xC00000B7: {"clone": 220, "clone3": 435, "socket": 198}}  # aarch64
EPERM, ENOSYS, AF_UNIX = 1, 38, 1


def _set_limits(limits: dict) -> dict:
    memory = limits["memory_mb"] * 2**20
    cpu = int(limits["timeout_s"]) + 1
    for name, value in (("RLIMIT_AS", memory), ("RLIMIT_CPU", cpu), ("RLIMIT_NPROC", NPROC),
                        ("RLIMIT_FSIZE", FILE_LIMIT_MB * 2**20), ("RLIMIT_CORE", 0)):
        resource.setrlimit(getattr(resource, name), (value, value))
    return {"memory_mb": limits["memory_mb"], "cpu_s": cpu, "nproc": NPROC, "nproc_enforced": os.getuid() != 0,
            "file_mb": FILE_LIMIT_MB}


def _namespaces(libc, layers: list[str]) -> tuple[bool, bool]:
    """A new user namespace (no privileges outside it) with a new, empty network namespace and a
    mount namespace whose mounts are all read-only but the cwd. Returns (network, file system) done."""
    flags = (CLONE_NEWNET if "netns" in layers else 0) | (CLONE_NEWNS if "mountns" in layers else 0)
    if not flags or libc.unshare(CLONE_NEWUSER | flags) != 0:
        return False, False
    if not flags & CLONE_NEWNS:
        return True, False

    class MountAttr(ctypes.Structure):
        _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                    ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]

    cwd = os.getcwd().encode()
    readonly, writable = MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0), MountAttr(0, MOUNT_ATTR_RDONLY, 0, 0)
    done = (libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) == 0  # nothing propagates back out
            and libc.mount(cwd, cwd, None, MS_BIND, None) == 0
            and libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, b"/", AT_RECURSIVE, ctypes.byref(readonly), ctypes.sizeof(readonly)) == 0
            and libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, cwd, 0, ctypes.byref(writable), ctypes.sizeof(writable)) == 0)
    os.chdir(cwd)  # onto the writable bind mount
    return bool(flags & CLONE_NEWNET), done


def _seccomp(libc) -> str | None:
    """A seccomp filter: no new processes, no sockets but AF_UNIX. Returns the arch, None if not applied."""
    arch = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}.get(platform.machine())
    if arch is None:
        return None
    nr = ARCHS[arch]
    ld, jeq, jset, ret = 0x20, 0x15, 0x45, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_JMP|JSET|K, BPF_RET|K
    allow, deny, nosys = 0x7FFF0000, 0x00050000 | EPERM, 0x00050000 | ENOSYS
    prog = [(ld, 0, 0, 4), (jeq, 1, 0, arch), (ret, 0, 0, 0x80000000),  # another arch: kill the process
            (ld, 0, 0, 0), (jset, 0, 1, 0x40000000), (ret, 0, 0, deny)]  # x32 syscalls: refused
    for name in ("fork", "vfork"):
        if name in nr:
            prog += [(jeq, 0, 1, nr[name]), (ret, 0, 0, deny)]
    prog += [(jeq, 0, 1, nr["clone3"]), (ret, 0, 0, nosys),  # libc falls back to clone, checked below
             (jeq, 0, 3, nr["clone"]), (ld, 0, 0, 16), (jset, 1, 0, CLONE_THREAD), (ret, 0, 0, deny),
             (ld, 0, 0, 0), (jeq, 0, 3, nr["socket"]), (ld, 0, 0, 16), (jeq, 1, 0, AF_UNIX), (ret, 0, 0, deny),
             (ret, 0, 0, allow)]

    class Filter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Filter))]

    table = (Filter * len(prog))(*[Filter(*f) for f in prog])
    fprog = Prog(len(prog), table)
    PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return None
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        return None
    return platform.machine()


def _launch(argv: list[str]) -> None:
    limits, report_fd, program = json.loads(argv[1]), int(argv[2]), argv[3]
    libc = ctypes.CDLL(None, use_errno=True)
    isolation = {"process": "subprocess, new session, empty temporary cwd, minimal env, stdin closed",
                 "limits": _set_limits(limits)}
    netns, mountns = _namespaces(libc, limits["layers"])
    isolation["filesystem"] = "read-only but its cwd (mount namespace)" if mountns else "not isolated (the job's user)"
    arch = _seccomp(libc) if "seccomp" in limits["layers"] else None
    isolation["seccomp"] = f"no fork, no sockets but AF_UNIX ({arch})" if arch else None
    network = (["user+network namespace"] if netns else []) + (["seccomp"] if arch else [])
    command = [sys.executable, "-I", program]
    if not network:  # the guard runs first, then the unchanged program as __main__
        command = [sys.executable, "-I", "-c", f"{_SOCKET_GUARD}import runpy\nrunpy.run_path({program!r}, run_name='__main__')\n"]
        network = ["python socket guard"]
    isolation["network"] = network
    os.write(report_fd, json.dumps(isolation, sort_keys=True).encode())
    os.close(report_fd)
    os.execv(sys.executable, command)


if __name__ == "__main__":
    _launch(sys.argv)
