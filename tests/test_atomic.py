"""Outputs that cannot be written (disk full, permission denied): a clear error naming the output,
and nothing left behind that looks complete."""

import errno
import json
import os
import subprocess
import sys

import pytest

from lorarepro.core import atomic, paths
from lorarepro.core.atomic import OutputError, atomic_dir, write_json, write_text
from lorarepro.domain.experiment import resolve_run
from lorarepro.stages.training.train import train_one


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_names_the_file_and_keeps_the_old_version(tmp_path, monkeypatch):
    out = tmp_path / "results" / "table.csv"
    write_text(out, "old, complete\n")
    monkeypatch.setattr(atomic.os, "fsync", _disk_full)  # the data hits the disk at fsync
    with pytest.raises(OutputError, match=rf"cannot write {out}: disk full") as err:
        write_json(out, {"new": 1})
    assert err.value.errno == errno.ENOSPC
    assert out.read_text() == "old, complete\n"
    assert os.listdir(out.parent) == ["table.csv"]  # no temporary left behind


def test_disk_full_while_filling_a_directory_leaves_no_directory(tmp_path):
    final = tmp_path / "checkpoints" / "seed0"
    with pytest.raises(OutputError, match=f"cannot write {final}: disk full"):
        with atomic_dir(final) as tmp:
            (tmp / "adapter_config.json").write_text("{}")
            _disk_full()
    assert not final.exists() and os.listdir(final.parent) == []


def test_other_errors_pass_through_unchanged(tmp_path):
    with pytest.raises(ValueError, match="a bug"):
        with atomic_dir(tmp_path / "d"):
            raise ValueError("a bug")
    assert os.listdir(tmp_path) == []


READ_ONLY_WRITE = """
import os, sys
from lorarepro.core.atomic import OutputError, write_text
os.setgid(65534); os.setuid(65534)  # nobody: root ignores directory permissions
try:
    write_text(sys.argv[1], "x")
except OutputError as exc:
    print(exc)
    sys.exit(3)
"""


@pytest.fixture
def open_tmp():
    """A world-traversable temporary directory (pytest's own are private to the user)."""
    import shutil
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp())
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_read_only_directory_names_the_file(open_tmp):
    ro = open_tmp / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    target = ro / "seed0.json"
    if os.geteuid() == 0:  # drop to nobody in a child, so the permission check really happens
        src = os.path.dirname(os.path.dirname(atomic.__file__))
        env = {**os.environ, "PYTHONPATH": src}
        done = subprocess.run([sys.executable, "-c", READ_ONLY_WRITE, str(target)], capture_output=True, text=True, env=env)
        assert done.returncode == 3, done.stderr
        message = done.stdout
    else:
        with pytest.raises(OutputError) as err:
            write_text(target, "x")
        message = str(err.value)
    assert f"cannot write {target}: permission denied" in message
    assert os.listdir(ro) == []


def test_training_job_on_a_full_disk_fails_clearly_without_a_result(workspace, monkeypatch):
    run = resolve_run(workspace, "sentiment", "lora_r8")
    result = paths.run_result("sentiment", "lora_r8", 0)
    result.unlink(missing_ok=True)
    with monkeypatch.context() as patch, pytest.raises(OutputError, match=r"cannot write .*: disk full"):
        patch.setattr(atomic.os, "fsync", _disk_full)
        train_one(workspace, run, seed=0)
    assert not result.exists()
    assert not [p for p in result.parent.parent.rglob("*.tmp*")]
    assert json.loads(json.dumps(train_one(workspace, run, seed=0)))["status"] == "FINISHED"
