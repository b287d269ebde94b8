"""The audit's small parts without a pipeline: options, sampling, verdict, report order, CLI errors."""

import pytest

from lorarepro import audit
from lorarepro.audit import report
from lorarepro.audit.report import render_markdown


def test_record_rejects_unknown_status():
    with pytest.raises(ValueError, match="unknown audit status"):
        report.record("tables", "ok", "x")


def test_options_from_config_then_flags_and_unknown_keys():
    config = {"audit": {"reevaluate": 3, "paper_tolerance": 2.0}}
    options = audit.Options.from_config(config, retrain=1, reevaluate=None)
    assert (options.reevaluate, options.retrain, options.paper_tolerance) == (3, 1, 2.0)
    with pytest.raises(ValueError, match="config key 'audit'.*reevalute"):
        audit.Options.from_config({"audit": {"reevalute": 1}})
    with pytest.raises(ValueError, match="'retrain' must be >= 0"):
        audit.Options.from_config({}, retrain=-1)


def test_sample_is_seeded_per_table_and_counts_shared_runs_once():
    tables = {"a": list(range(10)), "b": list(range(5, 15))}
    first = audit.sample_runs(tables, 2, seed=0)
    assert first == audit.sample_runs(tables, 2, seed=0) and len(set(first)) == len(first) <= 4
    assert audit.sample_runs(tables, 2, seed=1) != first or len(first) < 4
    assert len(audit.sample_runs(tables, 0, seed=0)) == 0


def _records():
    return [report.record("params", "pass", "r1.json"), report.record("dvc", "warn", "dvc.lock", "not recorded", "dvc commit"),
            report.record("tables", "fail", "t.csv", "cell edited", "rebuild"), report.record("paper", "info", "t.md")]


def test_verdict_fails_only_on_fail_unless_strict():
    loose = audit.summarize(_records()[:1] + _records()[1:2], [], audit.Options())
    assert loose["passed"] and loose["counts"]["warn"] == 1
    assert not audit.summarize(_records()[:2], [], audit.Options(strict=True))["passed"]
    assert not audit.summarize(_records(), [], audit.Options())["passed"]


def test_report_lists_failures_first_with_file_and_fix():
    result = audit.summarize(_records(), [], audit.Options())
    lines = [l for l in render_markdown(result).splitlines() if l.startswith("- **")]
    assert lines[0] == "- **FAIL** `tables` `t.csv`: cell edited — fix: rebuild"
    assert [l.split("**")[1] for l in lines] == ["FAIL", "WARN", "INFO", "PASS"]


def test_cli_refuses_a_bad_config_with_exit_2(tmp_path, monkeypatch, capsys):
    from lorarepro.pipeline.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["audit"]) == 2
    assert "params.yaml" in capsys.readouterr().err
