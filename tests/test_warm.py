"""Warm job start (lorarepro.pipeline.warm): jobs run as forks of a server that imported everything once.

Each test starts a real client process (what Snakemake starts for a job) against a real server.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lorarepro.core import paths
from lorarepro.domain import records
from lorarepro.pipeline import warm

TESTS = Path(__file__).parent

# A job's adapter process: prints its own pid, then hands the job over (or runs it, cold).
CLIENT = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
import warm_jobs
from lorarepro.pipeline.warm import run_job
print(f"client {os.getpid()}", flush=True)
run_job(json.loads(sys.argv[3]), getattr(warm_jobs, sys.argv[2]))
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("warm") / "server.log"
    address, pid = warm.start(log)
    assert Path(address).parent.stat().st_mode & 0o777 == 0o700  # only this user can hand it a job
    yield address, pid
    warm.stop(address, pid)
    assert not Path(address).parent.exists()  # socket and its directory removed


def client(job: str, args: dict, address: str | None, cwd: Path, **popen) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != warm.ENV}
    env.update({"MARKER": "from-the-client", **({warm.ENV: address} if address else {})})
    return subprocess.Popen([sys.executable, "-c", CLIENT, str(TESTS), job, json.dumps(args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def client_pid(out: str) -> int:
    return int(next(line for line in out.splitlines() if line.startswith("client")).split()[1])


def test_job_runs_in_a_fork_of_the_server_as_the_client(server, tmp_path):
    address, server_pid = server
    code, out, err = finish(client("report", {"out": str(tmp_path / "where.json")}, address, tmp_path))
    assert code == 0, err
    where = json.loads((tmp_path / "where.json").read_text())
    assert where["ppid"] == server_pid and where["pid"] != client_pid(out)  # a fork, not the client
    assert where["torch_loaded"]  # imported before the job asked for anything
    assert Path(where["cwd"]) == tmp_path and where["marker"] == "from-the-client" and where["argv"][0] == "-c"
    assert "hello from the job" in out and "a warning from the job" in err  # the client's stdout/stderr
    assert "lorarepro.pipeline.warm" not in err  # not a fallback


@pytest.mark.parametrize("how, status, message", [("exit", 3, ""), ("raise", 1, "ValueError: the job failed on purpose")])
def test_job_status_is_the_clients_exit_status(server, tmp_path, how, status, message):
    code, _, err = finish(client("fail", {"how": how}, server[0], tmp_path))
    assert code == status and message in err


def _gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _started(path: Path, timeout: float = 60) -> int:
    deadline = time.time() + timeout
    while not (path.exists() and path.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    return int(path.read_text())


def test_job_dies_with_its_killed_client(server, tmp_path):
    """kill -9 of the job process Snakemake started: the fork must not live on and race a rerun."""
    proc = client("sleep", {"out": str(tmp_path / "pid")}, server[0], tmp_path)
    job = _started(tmp_path / "pid")
    proc.kill()
    proc.wait()
    assert _gone(job)


def test_sigterm_to_the_client_reaches_the_job(server, tmp_path):
    proc = client("sleep", {"out": str(tmp_path / "pid")}, server[0], tmp_path)
    job = _started(tmp_path / "pid")
    proc.send_signal(signal.SIGTERM)
    code, _, _ = finish(proc)
    assert _gone(job) and code == 128 + signal.SIGTERM


def test_without_a_server_the_job_runs_in_the_client(tmp_path):
    missing = str(tmp_path / "no-server" / "socket")
    code, out, err = finish(client("report", {"out": str(tmp_path / "where.json")}, missing, tmp_path))
    assert code == 0 and f"no server at {missing}" in err
    assert json.loads((tmp_path / "where.json").read_text())["pid"] == client_pid(out)


def test_server_exits_when_its_parent_dies(tmp_path):
    """A hard-killed Snakemake leaves no server behind (it polls its parent)."""
    log = tmp_path / "server.log"
    parent = subprocess.run([sys.executable, "-c", "from lorarepro.pipeline import warm; print(*warm.start(%r))" % str(log)],
                            capture_output=True, text=True, check=True)
    address, pid = parent.stdout.split()
    assert _gone(int(pid), timeout=120), log.read_text()
    assert not Path(address).exists()


def _stable(path: Path) -> dict:
    return records.stable(records.load(path))


def test_warm_and_cold_jobs_give_identical_results(server, workspace):
    """The same training job, in a fork of the server and in a fresh process: same result JSONs."""
    args = {"config": workspace, "task": "sentiment", "method": "flat_lora_r8"}
    results = {}
    for mode, address in (("warm", server[0]), ("cold", None)):
        code, _, err = finish(client("train", args, address, Path.cwd()), timeout=300)
        assert code == 0 and "lorarepro.pipeline.warm" not in err, err
        results[mode] = {s: _stable(paths.run_result("sentiment", "flat_lora_r8", s)) for s in workspace["seeds"]}
    assert results["warm"] == results["cold"]
