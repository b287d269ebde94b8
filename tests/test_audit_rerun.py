"""The pipeline's own audit: a manual `lorarepro audit` writes its own files
(results/audit/manual/), never the audit rule's output, so Snakemake reruns its audit exactly when
the rule's inputs changed, whatever a manual audit left behind."""

import json
import re
import sys
from pathlib import Path

import pytest

from conftest import FINISHED_CONFIG
from workspace import run_as_user

pytestmark = pytest.mark.slow

PIPELINE = (Path("results/audit/audit.small.json"), Path("results/audit/report.small.md"))  # the audit rule's
MANUAL = Path("results/audit/manual/audit.small.json")
TABLE = "results/tables/table_small.csv"


@pytest.fixture
def here(repo, monkeypatch):
    """The finished pipeline's copy, with this process's output root the repository's (the CLI selects it)."""
    from lorarepro.core import paths

    monkeypatch.setenv(paths.ROOT_ENV, ".")
    return repo


def cli_audit(*args: str) -> int:
    from lorarepro.pipeline.cli import main

    return main(["audit", "--configfile", FINISHED_CONFIG, "--reevaluate", "0", *args])


def pipeline_files() -> dict:
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in PIPELINE}


def planned(root: Path) -> list[str]:
    """The jobs `snakemake -n` would run."""
    done = run_as_user(root, sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", FINISHED_CONFIG)
    assert done.returncode == 0, done.stderr[-3000:]
    return re.findall(r"^(?:local)?rule (\w+):", done.stdout, flags=re.M)


def test_a_manual_audit_never_writes_the_rules_output_and_the_pipeline_stays_done(here):
    before = pipeline_files()
    assert cli_audit() == 0
    assert pipeline_files() == before
    assert json.loads(MANUAL.read_text())["passed"]
    assert Path("results/audit/manual/report.small.md").read_text().startswith("# Audit: PASSED")
    assert planned(here) == []


def test_after_a_failing_manual_audit_the_pipeline_audits_as_its_inputs_say(here):
    path = here / TABLE
    path.write_text(path.read_text().replace("lora_r8", "lora_r8 ", 1))  # a table newer than the pipeline's audit
    before = pipeline_files()
    assert cli_audit() == 1
    assert ("tables", TABLE) in {(r["check"], r["file"]) for r in json.loads(MANUAL.read_text())["records"]
                                 if r["status"] == "fail"}
    assert pipeline_files() == before  # the manual verdict is no verdict of the rule's
    jobs = planned(here)
    assert "audit" in jobs and not [j for j in jobs if j.startswith(("train", "tables"))]


def test_the_cli_refuses_to_write_the_pipelines_audit_files(here, capsys):
    before = pipeline_files()
    for flag, path in zip(("--json", "--report"), PIPELINE):
        assert cli_audit(flag, str(path)) == 2
        [line] = capsys.readouterr().err.strip().splitlines()
        assert str(path) in line and "pipeline's own audit file" in line
    assert pipeline_files() == before
