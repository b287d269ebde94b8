"""GPU slots (lorarepro.pipeline.gpus) with fake GPU counts: distinct GPUs per job, waiting, release on death."""

import os
import subprocess
import sys

import pytest

from lorarepro.pipeline import gpus

HOLDER = """
import sys
from lorarepro.pipeline.gpus import claim
with claim(int(sys.argv[1]), lock_dir=sys.argv[2]) as ids:
    print(",".join(ids), flush=True)
    sys.stdin.readline()
"""


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("LORAREPRO_GPUS", "2")


def holder(n: int, lock_dir) -> tuple[subprocess.Popen, list[str]]:
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(n), str(lock_dir)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    return proc, proc.stdout.readline().strip().split(",")


def test_jobs_get_distinct_gpus_and_wait_for_a_free_one(two_gpus, tmp_path):
    other, other_ids = holder(1, tmp_path)
    try:
        with gpus.claim(1, lock_dir=tmp_path) as mine:
            assert set(mine) | set(other_ids) == {"0", "1"} and mine != other_ids
            assert os.environ["CUDA_VISIBLE_DEVICES"] == mine[0]
            with pytest.raises(TimeoutError):  # both GPUs are held now
                with gpus.claim(1, lock_dir=tmp_path, poll_s=0.05, timeout_s=0.3):
                    pass
        assert "CUDA_VISIBLE_DEVICES" not in os.environ
        with pytest.raises(TimeoutError):  # a 2-GPU job cannot start while one is held
            with gpus.claim(2, lock_dir=tmp_path, poll_s=0.05, timeout_s=0.3):
                pass
    finally:
        other.kill()  # killed, not released: the kernel drops its lock
        other.wait()
    with gpus.claim(2, lock_dir=tmp_path, timeout_s=5) as both:
        assert sorted(both) == ["0", "1"] and os.environ["CUDA_VISIBLE_DEVICES"] in ("0,1", "1,0")


def test_slots_follow_visible_devices_and_refuse_too_many(monkeypatch, tmp_path):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    with gpus.claim(1, lock_dir=tmp_path) as ids:
        assert ids == ["2"] and os.environ["CUDA_VISIBLE_DEVICES"] == "2"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2,3"
    with pytest.raises(RuntimeError, match="only 2 are visible"):
        with gpus.claim(3, lock_dir=tmp_path):
            pass


def test_slurm_and_cpu_jobs_claim_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    with gpus.claim(1, lock_dir=tmp_path) as ids:
        assert ids == ["5"]
    monkeypatch.delenv("SLURM_JOB_ID")
    with gpus.claim(0, lock_dir=tmp_path) as ids:
        assert ids == []
    assert not any(tmp_path.iterdir())
