"""Run context: the git state names the commit and flags changed code, not regenerated results."""

import subprocess

from lorarepro.core.runinfo import git_state, versions


def _git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_dirty_flag_ignores_regenerated_results(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "table.csv").write_text("a\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
    clean = git_state(tmp_path)
    assert len(clean["commit"]) == 40 and clean["dirty"] is False
    (tmp_path / "results" / "table.csv").write_text("b\n")
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_state(tmp_path)["dirty"] is True


def test_outside_git_gives_nulls(tmp_path):
    assert git_state(tmp_path) == {"commit": None, "dirty": None}


def test_versions_name_the_key_packages():
    v = versions()
    assert v["torch"] and v["peft"] and v["transformers"] and v["python"]
