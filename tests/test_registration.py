"""The registration lock (lorarepro.reporting.registration, `lorarepro register`): a change of a run-deciding
key after registration fails the check, naming the key, until it is recorded as a deviation with its
reason; a change that decides no run is no deviation; the analysis is pinned by its output."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from lorarepro.pipeline import cli
from lorarepro.reporting import registration

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_root(tmp_path, monkeypatch):
    """A repository root with the configs and no results."""
    shutil.copy(ROOT / "params.yaml", tmp_path)
    shutil.copytree(ROOT / "workflow" / "configs", tmp_path / "workflow" / "configs")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _edit(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _registration(root: Path) -> dict:
    return json.loads((root / "results" / "preregistration.json").read_text())


def test_register_check_deviation_cycle(repo_root, capsys):
    assert cli.main(["register", "--check"]) == 1  # nothing registered yet
    assert cli.main(["register", "--write", "--date", "2027-01-01"]) == 0
    first = _registration(repo_root)
    assert first["registered"] == "2027-01-01" and first["deviations"] == []
    assert [h["commit"] for h in first["history"]] == ["d4e228a", "2311f19"]  # the changes before registration
    assert first["regime"]["values"]["training"]["nlu"]["epochs"] == 6 and "threads" in first["regime"]["keys"]
    assert {"audit", "mlflow", "tables"} <= set(first["regime"]["not_regime"])
    capsys.readouterr()
    assert cli.main(["register", "--check"]) == 0

    _edit(repo_root / "params.yaml", lambda c: c["training"]["nlu"].update(epochs=8))
    assert cli.main(["register", "--check"]) == 1
    assert "training.nlu.epochs" in capsys.readouterr().out
    assert cli.main(["register", "--write"]) == 1  # a deviation needs its reason
    assert "--reason" in capsys.readouterr().err
    assert cli.main(["register", "--write", "--reason", "time budget", "--date", "2027-01-02"]) == 0
    second = _registration(repo_root)
    (deviation,) = second["deviations"]
    assert deviation["keys"] == ["training.nlu.epochs"] and deviation["reason"] == "time budget"
    assert deviation["date"] == "2027-01-02" and deviation["commit"] is None
    assert deviation["regime_sha256"]["before"] == first["regime"]["sha256"] != second["regime"]["sha256"]
    assert second["registered"] == "2027-01-01"  # the registration date stays
    assert cli.main(["register", "--check"]) == 0  # recorded: the check passes again

    # the commit, once known, fills in the deviations without one
    assert cli.main(["register", "--write", "--commit", "abc1234"]) == 0
    assert _registration(repo_root)["deviations"][0]["commit"] == "abc1234"


def test_keys_that_decide_no_run_are_no_deviation(repo_root, capsys):
    assert cli.main(["register", "--write"]) == 0

    def change(config):
        config["audit"] = {"reevaluate": 3}
        config["mlflow"]["experiment"] = "elsewhere"
        config["jobs"] = "per_seed"
        config["checkpoint_every"] = 10
        config["tables"][0]["caption"] = "another caption"
        config["resources"] = {"train": {"mem_mb": 9000, "runtime": 30}}  # where and how long, not what

    _edit(repo_root / "params.yaml", change)
    capsys.readouterr()
    assert cli.main(["register", "--check"]) == 0, capsys.readouterr().out
    assert cli.main(["register", "--write"]) == 0
    assert _registration(repo_root)["deviations"] == []
    # the device does decide the floats
    _edit(repo_root / "params.yaml", lambda c: c["resources"]["train"].update(gpu=1))
    assert cli.main(["register", "--check"]) == 1
    assert "resources.train.gpu" in capsys.readouterr().out


def test_claims_changes_are_named(repo_root, capsys):
    assert cli.main(["register", "--write"]) == 0
    _edit(repo_root / "workflow" / "configs" / "claims.yaml", lambda c: c["nlu_average"]["paper"].update(value=0.3))
    _edit(repo_root / "params.yaml", lambda c: c["claims"]["comparisons"][1].update(tasks=["sentiment"]))
    capsys.readouterr()
    assert cli.main(["register", "--check"]) == 1
    out = capsys.readouterr().out
    assert "claims file: nlu_average.paper.value" in out and "claims.comparisons" in out
    # a comment in the claims file is not a claim
    path = repo_root / "workflow" / "configs" / "claims.yaml"
    assert cli.main(["register", "--write", "--reason", "r"]) == 0
    path.write_text("# a new comment\n" + path.read_text())
    assert cli.main(["register", "--check"]) == 0


def _claims_output(root: Path, effect: float, note: str = "") -> None:
    run = root / "results" / "runs" / "t" / "m" / "seed0.json"
    run.parent.mkdir(parents=True, exist_ok=True)
    if not run.exists():
        run.write_text(json.dumps({"metrics": {"test": 50.0}, "lineage": {"git_commit": "x"}}))
    (root / "results" / "claims.json").write_text(json.dumps(
        {"claims": [{"claim": "c", "effect": effect, "note": note, "runs": ["results/runs/t/m/seed0.json"]}]}))


def test_analysis_is_pinned_by_its_output(repo_root, capsys):
    from lorarepro.core.config import read

    config = read(repo_root / "params.yaml")
    _claims_output(repo_root, 0.1)
    registration.write(registration.build(config, repo_root, "2027-01-01"), repo_root)
    assert registration.check(config, repo_root) == []
    # a refactor: other prose, the last bits of a float, a volatile key of a run record -> no deviation
    _claims_output(repo_root, 0.1 + 1e-16, note="reworded")
    run = repo_root / "results" / "runs" / "t" / "m" / "seed0.json"
    run.write_text(json.dumps({"metrics": {"test": 50.0}, "lineage": {"git_commit": "y"}}))
    assert registration.check(config, repo_root) == []
    # the same runs, another output: the analysis changed
    _claims_output(repo_root, 0.2)
    assert any(p.startswith("analysis") for p in registration.check(config, repo_root))
    assert registration.status(config, repo_root)["analysis"] is False
    # other runs: not comparable, no deviation (the pin follows with the next --write)
    run.write_text(json.dumps({"metrics": {"test": 60.0}}))
    assert registration.check(config, repo_root) == []
    updated, deviation = registration.update(registration.load(repo_root), config, repo_root)
    assert deviation is None and updated["analysis"]["sha256"] != registration.load(repo_root)["analysis"]["sha256"]


def test_status_and_markdown_list_every_deviation(repo_root):
    from lorarepro.core.config import read

    config = read(repo_root / "params.yaml")
    missing = registration.status(config, repo_root)
    assert not missing["registered"] and "No registration" in registration.markdown(missing)
    first = registration.build(config, repo_root, "2027-01-01")
    config["seeds"] = [0, 1, 2]
    written, deviation = registration.update(first, config, repo_root, reason="budget", date="2027-02-01")
    assert deviation["keys"] == ["seeds"]
    registration.write(written, repo_root)
    state = registration.status(config, repo_root)
    assert state["registered"] and state["matches"] and state["date"] == "2027-01-01"
    text = registration.markdown(state)
    assert "Registered 2027-01-01" in text and "2027-02-01: seeds. Reason: budget" in text
    assert "d4e228a" in text and "2311f19" in text and "time budget" in text
    config["data_seed"] = 99
    state = registration.status(config, repo_root)
    assert not state["matches"] and state["differs"] == ["data_seed"] and "data_seed" in registration.markdown(state)


def test_the_committed_claims_are_the_registered_analysis_of_the_committed_runs():
    """The analysis is pinned by its behaviour: recomputed now on the committed run records (and the
    prepared labels the collapse test reads), it gives the committed claims.json, which the registration
    pins; and the committed config is the registered regime."""
    from lorarepro.core import paths
    from lorarepro.domain.experiment import load
    from lorarepro.reporting import claims
    from lorarepro.reporting.tables.cells import load_reference

    root = Path(__file__).resolve().parents[1]
    config = load(root / "params.yaml")
    tasks = {t for c in claims.claim_comparisons(config).values() for t in c["tasks"]}
    if not all((root / paths.manifest(t)).is_file() for t in tasks):
        pytest.skip("no prepared data here (a fresh clone before `snakemake` or `dvc pull`): the collapse test needs its labels")
    import os

    here = os.getcwd()
    os.chdir(root)
    try:
        files, _ = claims.claims_files(config, load_reference("workflow/configs/paper_reference.yaml"))
        assert files[paths.claims("json")] == paths.claims("json").read_text(encoding="utf-8")
        assert registration.check(config) == []
        assert registration.status(config)["analysis"] is True
    finally:
        os.chdir(here)
