"""The `lorarepro` command's surface: help with examples, --version, known tasks and methods,
--configfile that never swallows the positionals."""

import shutil
from pathlib import Path

import pytest

from lorarepro.pipeline import cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_root(tmp_path, monkeypatch):
    """A repository root with the configs and no results."""
    shutil.copy(ROOT / "params.yaml", tmp_path)
    shutil.copytree(ROOT / "workflow" / "configs", tmp_path / "workflow" / "configs")
    (tmp_path / "one_seed.yaml").write_text("seeds: [0]\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("argv", [["--help"], ["audit", "--help"], ["evaluate", "--help"]])
def test_help_shows_examples(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    assert "  lorarepro evaluate --configfile workflow/configs/paper.yaml" in out  # layout kept (raw formatter)


def test_version_is_the_package_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"lorarepro {version('lorarepro')}"


def test_configfile_before_the_positionals_does_not_swallow_them():
    args = cli._parser().parse_args(["evaluate", "--configfile", "workflow/configs/paper.yaml", "sentiment", "lora_r8"])
    assert (args.configfile, args.task, args.method) == (["workflow/configs/paper.yaml"], "sentiment", "lora_r8")
    args = cli._parser().parse_args(["audit", "--configfile", "a.yaml", "--configfile", "b.yaml"])
    assert args.configfile == ["a.yaml", "b.yaml"]  # snakemake's order, one flag per file


def test_several_files_after_one_flag_say_how_to_write_them(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["audit", "--configfile", "a.yaml", "b.yaml"])
    assert stop.value.code == 2
    assert "repeat the flag: --configfile b.yaml" in capsys.readouterr().err


@pytest.mark.parametrize("task, method, named, known", [
    ("nosuch", "lora_r8", "unknown task 'nosuch'", "known tasks (without --configfile: params.yaml's only): "),
    ("sentiment", "nosuch", "unknown method 'nosuch'", "flat_lora_r8")])
def test_unknown_task_or_method_names_the_known_ones(repo_root, capsys, task, method, named, known):
    assert cli.main(["evaluate", task, method]) == 2
    err = capsys.readouterr().err
    assert named in err and known in err
    assert "train the run first" not in err


def test_known_run_without_results_says_train_it_first(repo_root, capsys):
    assert cli.main(["evaluate", "--configfile", "one_seed.yaml", "sentiment", "lora_r8"]) == 1
    assert "results/runs/sentiment/lora_r8/seed0.json (train the run first)" in capsys.readouterr().err
