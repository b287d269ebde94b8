"""lorarepro.domain.evaluation.sandbox: model-written code runs in a limited subprocess without network or new processes."""

from pathlib import Path

import pytest

from lorarepro.domain.evaluation.sandbox import run_program

ROOT = Path(__file__).resolve().parents[1]
ADD = "def add(a, b):\n    return a + b\n"
CHECK = "\nassert add(2, 3) == 5\nassert add(-1, 1) == 0\n"


def test_correct_program_passes_wrong_one_fails():
    ok = run_program(ADD + CHECK, timeout_s=5)
    assert ok["outcome"] == "passed" and ok["returncode"] == 0
    bad = run_program(ADD.replace("a + b", "a - b") + CHECK, timeout_s=5)
    assert bad["outcome"] == "failed" and "AssertionError" in bad["stderr"]


def test_infinite_loop_times_out():
    ran = run_program("while True:\n    pass\n", timeout_s=1)
    assert ran["outcome"] == "timeout" and ran["seconds"] < 5


def test_memory_bomb_fails_under_the_limit():
    ran = run_program("x = bytearray(2 * 2**30)\nprint(len(x))\n", timeout_s=5, memory_mb=512)
    assert ran["outcome"] == "failed" and "MemoryError" in ran["stderr"]
    assert ran["isolation"]["limits"]["memory_mb"] == 512


NET = "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)\nprint('connected')\n"
# A listening socket: refused outright, or (network namespace alone) bound where only a private
# loopback exists, so nothing outside can reach it.
BIND = ("import socket, sys\ns = socket.socket()\ns.bind(('0.0.0.0', 0))\ns.listen()\n"
        "names = [l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]]\n"
        "sys.exit(0 if names == ['lo'] else 'listening with interfaces ' + str(names))\n")


@pytest.mark.parametrize("layers", [("netns", "mountns", "seccomp"), ("netns",), ("seccomp",), ()])
def test_no_network_under_each_isolation_layer(layers):
    """Each layer alone refuses the network; with none, the Python socket guard does (and says so)."""
    ran = run_program(NET, timeout_s=5, layers=layers)
    assert ran["outcome"] == "failed" and "connected" not in ran["stderr"], ran
    network = ran["isolation"]["network"]
    bound = run_program(BIND, timeout_s=5, layers=layers)
    assert bound["outcome"] == ("passed" if network == ["user+network namespace"] else "failed"), bound
    if layers == ():
        assert network == ["python socket guard"]
    else:
        assert set(network) <= {"user+network namespace", "seccomp"} and network  # what the kernel allowed
        assert ("seccomp" in network) == (ran["isolation"]["seccomp"] is not None)


def test_socket_guard_leaves_the_program_unchanged():
    ran = run_program("from __future__ import annotations\nimport sys\nassert __name__ == '__main__'\n", timeout_s=5, layers=())
    assert ran["outcome"] == "passed" and ran["isolation"]["network"] == ["python socket guard"], ran


def test_netns_alone_has_no_route():
    ran = run_program(NET, timeout_s=5, layers=("netns",))
    if "user+network namespace" not in ran["isolation"]["network"]:
        pytest.skip("this kernel refuses unprivileged user namespaces")
    assert "unreachable" in ran["stderr"].lower()


def test_fork_bomb_is_contained():
    bomb = "import os\nwhile True:\n    os.fork()\n"
    ran = run_program(bomb, timeout_s=3)
    assert ran["outcome"] in ("failed", "timeout") and ran["seconds"] < 10
    if ran["isolation"]["seccomp"]:
        assert ran["outcome"] == "failed" and "Operation not permitted" in ran["stderr"]
    spawn = run_program("import subprocess\nsubprocess.run(['true'])\n", timeout_s=3)
    assert spawn["outcome"] == "failed"


def test_threads_still_work():
    ran = run_program("import threading\nt = threading.Thread(target=print, args=('hi',))\nt.start()\nt.join()\n", timeout_s=5)
    assert ran["outcome"] == "passed"


def test_program_runs_in_an_empty_temporary_cwd_that_is_removed():
    before = sorted(p.name for p in ROOT.iterdir())
    source = ("import os, pathlib\nprint(os.getcwd())\nassert sorted(os.listdir('.')) == ['program.py']\n"
              "pathlib.Path('written.txt').write_text('x')\npathlib.Path('../escaped.txt').write_text('x')\n"
              "import sys\nprint(os.getcwd(), file=sys.stderr)\n")
    ran = run_program(source, timeout_s=5, layers=("seccomp",))  # without the read-only mount namespace
    assert ran["outcome"] == "passed", ran
    cwd = Path(ran["stderr"].strip().splitlines()[-1])
    assert cwd.name == "work" and not cwd.parent.exists()  # the whole temporary directory is gone
    assert sorted(p.name for p in ROOT.iterdir()) == before


def test_environment_is_minimal_and_stdin_closed(monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", "s3cret")
    ran = run_program("import os, sys\nassert 'SECRET_TOKEN' not in os.environ, 'leaked'\nassert sys.stdin.read() == ''\n", timeout_s=5)
    assert ran["outcome"] == "passed", ran


def test_file_size_limit():
    ran = run_program("open('big', 'wb').write(b'0' * 64 * 2**20)\n", timeout_s=5)
    assert ran["outcome"] in ("error", "failed") and ran["outcome"] != "passed"


def test_file_system_is_read_only_but_the_cwd():
    source = ("import pathlib\npathlib.Path('mine.txt').write_text('ok')\n"
              f"pathlib.Path({str(ROOT / 'escaped.txt')!r}).write_text('x')\n")
    ran = run_program(source, timeout_s=5)
    if ran["isolation"]["filesystem"].startswith("not isolated"):
        pytest.skip("this kernel refuses the mount namespace (recorded as not isolated)")
    assert ran["outcome"] == "failed" and "Read-only file system" in ran["stderr"] and "escaped.txt" in ran["stderr"]
    assert "mine.txt" not in ran["stderr"]  # the cwd itself stayed writable
    assert not (ROOT / "escaped.txt").exists()
