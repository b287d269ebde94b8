"""The closing lines of a successful pipeline run (lorarepro.pipeline.summary), on fake results."""

import json
from pathlib import Path

from lorarepro.pipeline.summary import closing_summary

REPO = Path(__file__).resolve().parents[1]


def write(path: str, data: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data))


def test_summary_names_verdicts_and_where_things_are(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write("results/audit/audit.paper.json", {"passed": True, "counts": {"fail": 0, "warn": 2, "pass": 40}})
    write("results/claims.paper.json", {"design_ok": True, "claims": [{"verdict": "reproduced"}, {"verdict": "inconclusive"},
                                                                 {"verdict": "reproduced"}]})
    text = closing_summary({"figures": [{"id": "ood_curve"}], "claims": {"comparisons": []}}, "paper")
    assert "audit:   passed (2 warn, 40 pass); results/audit/report.paper.md" in text
    assert "claims:  2 reproduced, 1 inconclusive; results/claims.paper.md" in text  # per config
    assert "results/tables/ (which runs each used: results/tables/index.paper.json)" in text
    assert "figures: results/figures/" in text
    assert "snakemake --report results/report.html with the same --configfile" in text


def test_summary_of_a_failed_audit_and_no_claims(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write("results/audit/audit.json", {"passed": False, "counts": {"fail": 1, "pass": 3}})
    text = closing_summary({}, "")
    assert "audit:   FAILED (1 fail, 3 pass); results/audit/report.md" in text
    assert "claims:  none in this config" in text and "figures:" not in text
    assert text.splitlines()[-1].strip().startswith("report:  snakemake --report results/report.html  (")


def test_summary_says_what_is_missing_without_raising(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write("results/claims.json", {"design_ok": False, "claims": [{"verdict": "inconclusive"}]})
    text = closing_summary({"claims": {"comparisons": []}}, "")
    assert "audit:   not found (results/audit/audit.json); run `lorarepro audit`" in text
    assert "positive control NOT detected" in text


def test_summary_says_a_claims_file_is_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "claims:  not found (results/claims.json)" in closing_summary({"claims": {"comparisons": []}}, "")


def test_summary_shows_the_timing_verdicts_from_their_own_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    claims = {"reference": str(REPO / "workflow" / "configs" / "claims.yaml"),
              "comparisons": [{"claim": "nlu_average"}, {"claim": "overhead_time"}]}
    write("results/claims.json", {"design_ok": True, "claims": [{"verdict": "reproduced"}]})
    write("results/claims_cost.json", {"design_ok": True, "claims": [{"verdict": "contradicted"}]})
    text = closing_summary({"claims": claims}, "")
    assert "claims:  1 reproduced; results/claims.md" in text
    assert "cost:    1 contradicted; results/claims_cost.md" in text
    assert "cost:" not in closing_summary({"claims": {**claims, "comparisons": claims["comparisons"][:1]}}, "")
