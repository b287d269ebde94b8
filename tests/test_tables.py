"""Tables: statistics, incomplete/failed runs, best marking, paper columns, files and index."""

import fnmatch
import json
from pathlib import Path

import pandas as pd
import pytest

from lorarepro.core import paths
from lorarepro.reporting import tables

REPO = Path(__file__).resolve().parents[1]
SEEDS = [0, 1, 2]
REFERENCE = {"table1": {"rows": {"LoRA r8": {"SST-2": 94.25, "MNLI": 86.24}, "Flat r8": {"SST-2": 94.75}}}}


def make_config(seeds=SEEDS):
    return {
        "seeds": list(seeds),
        "tasks": {"sentiment": {"family": "nlu", "mirrors": "SST-2"}, "nli": {"family": "nlu", "mirrors": "MNLI"}},
        "methods": {
            "full_ft": {"label": "Full FT", "paper_row": "Full FT"},
            "lora_r8": {"label": "LoRA (r=8)", "paper_row": "LoRA r8"},
            "flat_lora_r8": {"label": "Flat-LoRA (r=8)", "paper_row": "Flat r8"},
        },
        "tables": [{
            "id": "table_nlu", "caption": "NLU; accuracy (%)", "paper_table": "table1",
            "tasks": ["sentiment", "nli"], "methods": ["full_ft", "lora_r8", "flat_lora_r8"],
        }],
    }


def write_run(task, method, seed, test, status="FINISHED"):
    path = paths.run_result(task, method, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"task": task, "method": method, "seed": seed, "status": status,
                                "metric": "accuracy", "metrics": {"test": test}}))
    return str(path)


def write_grid(grid):
    """grid: {(method, task): [value per seed or None]} -> list of written paths."""
    written = []
    for (method, task), values in grid.items():
        written += [write_run(task, method, s, v) for s, v in enumerate(values) if v is not None]
    return written


FULL_GRID = {
    ("full_ft", "sentiment"): [70.0, 71.0, 72.0], ("full_ft", "nli"): [60.0, 60.0, 60.0],
    ("lora_r8", "sentiment"): [80.0, 82.0, 84.0], ("lora_r8", "nli"): [66.0, 65.0, 64.0],
    ("flat_lora_r8", "sentiment"): [85.0, 86.0, 87.0], ("flat_lora_r8", "nli"): [61.0, 62.0, 63.0],
}


def md_grid(text):
    """Markdown pipe table -> {row label: {column header: cell}}."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    split = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    header, body = split[0], split[2:]
    return {row[0]: dict(zip(header, row)) for row in body}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def build(config=None, reference=REFERENCE):
    config = config or make_config()
    entry = tables.build_table("table_nlu", config, reference)
    csv = pd.read_csv(paths.table("table_nlu", "csv"), keep_default_na=False)
    md = paths.table("table_nlu", "md").read_text(encoding="utf-8")
    return entry, csv, md


def cell(csv, method, task):
    return csv[(csv["method"] == method) & (csv["task"] == task)].iloc[0]


def test_mean_and_sample_std(workdir):
    write_grid(FULL_GRID)
    _, csv, md = build()
    row = cell(csv, "lora_r8", "sentiment")
    assert (row["mean"], row["std"], row["n_seeds"], row["n_expected"]) == (82.0, 2.0, 3, 3)
    assert row["values"] == "80.0;82.0;84.0"
    assert list(csv.columns) == tables.CSV_COLUMNS
    grid = md_grid(md)
    assert grid["LoRA (r=8)"]["sentiment"] == "82.00 ± 2.00"
    assert grid["LoRA (r=8)"]["Avg"] == "73.50"  # (82 + 65) / 2
    assert "over 3 seeds" in md


def test_single_seed_has_zero_std_and_no_flag(workdir):
    write_grid(FULL_GRID)
    _, csv, md = build(make_config(seeds=[0]))
    assert cell(csv, "lora_r8", "sentiment")["std"] == 0.0
    assert md_grid(md)["LoRA (r=8)"]["sentiment"] == "80.00 ± 0.00"


def test_best_cell_marked_per_column(workdir):
    write_grid(FULL_GRID)
    _, csv, md = build()
    best = csv[csv["best"].astype(str) == "True"][["task", "method"]].values.tolist()
    assert sorted(best) == [["nli", "lora_r8"], ["sentiment", "flat_lora_r8"]]
    grid = md_grid(md)
    assert grid["Flat-LoRA (r=8)"]["sentiment"] == "**86.00 ± 1.00** ↑"  # bold best, and a significant gain
    assert grid["LoRA (r=8)"]["nli"] == "**65.00 ± 1.00**"
    assert not grid["LoRA (r=8)"]["sentiment"].startswith("**")
    tex = paths.table("table_nlu", "tex").read_text()
    assert r"\textbf{86.00} & \textbf{1.00}$^\uparrow$" in tex  # mean & std: two columns joined by the spec's ±
    html = paths.table("table_nlu", "html").read_text()
    assert "<strong>86.00 ± 1.00</strong> ↑" in html


def test_missing_seed_flags_cell_and_blanks_avg(workdir):
    grid = dict(FULL_GRID)
    grid[("flat_lora_r8", "nli")] = [90.0, 92.0, None]  # higher than every complete cell
    write_grid(grid)
    _, csv, md = build()
    row = cell(csv, "flat_lora_r8", "nli")
    assert (row["n_seeds"], row["best"]) == (2, False)
    flat = md_grid(md)["Flat-LoRA (r=8)"]
    assert flat["nli"] == "91.00 ± 1.41 (2/3)"
    assert flat["Avg"] == ""
    assert md_grid(md)["LoRA (r=8)"]["nli"].startswith("**")  # best among complete cells


def test_failed_run_is_missing_and_not_indexed(workdir):
    used = write_grid(FULL_GRID)
    failed = write_run("sentiment", "lora_r8", 2, 99.0, status="FAILED")
    used.remove(failed)
    entry, csv, md = build()
    assert cell(csv, "lora_r8", "sentiment")["mean"] == 81.0
    assert md_grid(md)["LoRA (r=8)"]["sentiment"] == "81.00 ± 1.41 (2/3; 1 diverged)"
    assert cell(csv, "lora_r8", "sentiment")["n_failed"] == 1
    assert entry["runs"] == sorted(used)


def test_no_runs_cell_shows_missing(workdir):
    grid = {k: v for k, v in FULL_GRID.items() if k != ("full_ft", "nli")}
    write_grid(grid)
    _, _, md = build()
    assert md_grid(md)["Full FT"]["nli"] == "— (0/3)"


def test_paper_values_beside_the_right_columns(workdir):
    write_grid(FULL_GRID)
    _, csv, md = build()
    header = next(line for line in md.splitlines() if line.startswith("|"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns == ["Method", "sentiment", "paper: SST-2", "nli", "paper: MNLI", "Avg"]
    grid = md_grid(md)
    assert grid["LoRA (r=8)"]["paper: SST-2"] == "94.25"
    assert grid["LoRA (r=8)"]["paper: MNLI"] == "86.24"
    assert grid["Flat-LoRA (r=8)"]["paper: MNLI"] == ""  # not in the reference
    assert grid["Full FT"]["paper: SST-2"] == ""  # row not in the reference
    assert float(cell(csv, "flat_lora_r8", "sentiment")["paper"]) == 94.75
    assert cell(csv, "flat_lora_r8", "nli")["paper"] == ""


def test_no_reference_leaves_paper_empty(workdir):
    write_grid(FULL_GRID)
    _, csv, _ = build(reference=None)
    assert set(csv["paper"]) == {""}


def test_index_entry_and_files(workdir):
    used = write_grid(FULL_GRID)
    entry, _, _ = build()
    assert entry["id"] == "table_nlu"
    assert entry["rows"] == ["full_ft", "lora_r8", "flat_lora_r8"]
    assert entry["columns"] == ["sentiment", "nli"]
    assert entry["runs"] == sorted(used) and len(used) == 18
    assert entry["files"] == [str(paths.table("table_nlu", e)) for e in ("csv", "md", "tex", "html")] + [
        str(paths.table("table_nlu_significance", e)) for e in ("csv", "md", "html")]
    tex = Path(entry["files"][2]).read_text()
    for needle in (r"\toprule", r"\midrule", r"\bottomrule", r"\caption{NLU; accuracy (\%)"):
        assert needle in tex
    assert not list(paths.table("x", "md").parent.glob(".*tmp*"))  # no temp files left


@pytest.mark.parametrize("nli_flat, expected", [
    ([61.0, 62.0, 63.0], "flat_lora_r8 beats lora_r8 on 1 of 2 tasks"),
    ([70.0, 70.0, 70.0], "flat_lora_r8 beats lora_r8 on 2 of 2 tasks"),
    ([65.0, 65.0, 65.0], "flat_lora_r8 beats lora_r8 on 1 of 2 tasks (1 tied)"),
    ([61.0, 62.0, None], "flat_lora_r8 beats lora_r8 on 1 of 1 task (1 not comparable"),
    # the same scores in another order: their means differ by float error (2.8e-14) and tie
    ([67.6, 66.2, 62.8], "flat_lora_r8 beats lora_r8 on 1 of 2 tasks (1 tied)"),
])
def test_flat_vs_lora_sentence(workdir, nli_flat, expected):
    lora_nli = [62.8, 67.6, 66.2] if nli_flat == [67.6, 66.2, 62.8] else FULL_GRID[("lora_r8", "nli")]
    write_grid({**FULL_GRID, ("lora_r8", "nli"): lora_nli, ("flat_lora_r8", "nli"): nli_flat})
    _, _, md = build()
    line = next(line for line in md.splitlines() if line.startswith("Flat-LoRA vs LoRA:"))
    assert expected in line


def test_flat_loses_everywhere(workdir):
    write_grid({**FULL_GRID, ("flat_lora_r8", "sentiment"): [50.0, 50.0, 50.0]})
    _, _, md = build()
    assert "flat_lora_r8 beats lora_r8 on 0 of 2 tasks" in md


def test_build_all_writes_index_and_metrics(workdir):
    write_grid({**FULL_GRID, ("full_ft", "nli"): [60.0, None, None]})
    ref = workdir / "ref.yaml"
    ref.write_text("table1:\n  LoRA r8: {SST-2: 94.25}\n")
    tables.build_all(make_config(), ref)
    index = json.loads(paths.tables_index().read_text())
    assert [t["id"] for t in index["tables"]] == ["table_nlu"]
    metrics = json.loads(paths.metrics_summary().read_text())
    assert metrics["table_nlu/lora_r8/sentiment"] == 82.0
    assert metrics["table_nlu/lora_r8/Avg"] == 73.5
    assert "table_nlu/full_ft/nli" not in metrics and "table_nlu/full_ft/Avg" not in metrics


def write_not_run(task, method, seed, reason="no MT-Bench judge: set evaluation.judge"):
    """A FINISHED run whose test split was deliberately not run (evaluate.NotRun)."""
    path = paths.run_result(task, method, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"task": task, "method": method, "seed": seed, "status": "FINISHED", "metric": "mt_bench",
                                "metrics": {"validation": None, "test": None},
                                "not_run": {"validation": reason, "test": reason}}))
    return str(path)


def test_not_run_cell_is_never_a_number_and_says_why(workdir):
    from lorarepro.audit.tables import check_tables

    grid = {k: v for k, v in FULL_GRID.items() if k[1] != "nli"}
    used = write_grid(grid) + [write_not_run("nli", m, s) for m in ("lora_r8", "flat_lora_r8") for s in SEEDS]
    used.append(write_not_run("nli", "full_ft", 0))
    write_run("nli", "full_ft", 1, 60.0)  # one seed judged, one not run, one missing
    write_run("nli", "full_ft", 2, 0.0, status="FAILED")
    entry, csv, md = build()
    grid_md = md_grid(md)
    assert grid_md["LoRA (r=8)"]["nli"] == grid_md["Flat-LoRA (r=8)"]["nli"] == "not run"
    assert grid_md["Full FT"]["nli"] == "60.00 ± 0.00 (1/3; 1 diverged; 1 not run)"
    assert "Avg" not in grid_md["LoRA (r=8)"]  # no row has every cell: an empty column is left out
    assert not grid_md["LoRA (r=8)"]["nli"].startswith("**")
    assert "\nNot run: nli (Full FT, LoRA (r=8), Flat-LoRA (r=8)): no MT-Bench judge: set evaluation.judge.\n" in md
    line = next(line for line in md.splitlines() if line.startswith("Flat-LoRA vs LoRA:"))
    assert "beats lora_r8 on 1 of 1 task (1 not run)" in line
    row = cell(csv, "lora_r8", "nli")
    assert (row["n_seeds"], row["n_not_run"], row["mean"], row["values"]) == (0, 3, "", "")
    assert row["not_run"] == "no MT-Bench judge: set evaluation.judge" and list(csv.columns)[-2:] == ["n_not_run", "not_run"]
    assert r"Not run: nli (Full FT, LoRA (r=8), Flat-LoRA (r=8)): no MT-Bench judge: set evaluation.judge." in \
        paths.table("table_nlu", "tex").read_text()
    assert sorted(entry["runs"]) == sorted(used + [str(paths.run_result("nli", "full_ft", 1))])
    sig, _ = read_sig()
    assert sig_row(sig, "nli")["n"] == 0  # nothing to pair
    # the audit recomputes every file byte for byte from result JSONs holding null metrics
    ref = workdir / "ref.yaml"
    ref.write_text("")
    tables.build_all(make_config(), ref)
    assert "table_nlu/lora_r8/nli" not in json.loads(paths.metrics_summary().read_text())
    records = check_tables(make_config(), ref)
    assert records and all(r["status"] == "pass" for r in records), records


def test_null_metric_without_a_reason_is_an_error(workdir):
    write_grid(FULL_GRID)
    write_run("nli", "lora_r8", 0, None)
    with pytest.raises(ValueError, match="no numeric metrics.test"):
        build()


def test_unknown_table_id_is_named(workdir):
    with pytest.raises(KeyError, match="nope"):
        tables.build_table("nope", make_config(), None)


def test_reference_yaml_holds_the_paper_values():
    ref = tables.load_reference(REPO / "workflow/configs/paper_reference.yaml")
    value = lambda table, row, column: tables.paper_value(ref, table, row, column)  # noqa: E731
    assert value("table1", "Flat r16", "CoLA") == 84.08 and value("table1", "LoRA r8", "MRPC") == 88.56
    assert [value("table1", "Full FT", c) for c in ("MNLI", "SST-2", "CoLA", "QNLI", "MRPC")] == [86.19, 94.15, 82.84, 93.10, 89.22]
    assert value("table2", "LoRA r8", "DTD") == 76.86 and value("table2", "Flat r16", "CIFAR-100") == 89.27
    assert value("table2", "Full FT", "CIFAR-10") is None and value("table2", "Full FT", "Avg") == 86.92  # derived
    assert value("table3", "LoRA r8", "GSM8K") == 57.47 and value("table3", "LoRA r8", "HumanEval") is None
    assert [value("table3_gains", "Flat r8 - LoRA r8", c) for c in ("MT-Bench", "GSM8K", "HumanEval")] == [0.20, 3.18, 3.08]
    # every table says how its numbers were obtained, and Table 2's inconsistent row is flagged, not resolved
    assert all({"kind", "source", "verified"} <= entry["provenance"].keys() for entry in ref.values())
    assert "86.962" in ref["table2"]["provenance"]["inconsistency"]
    for table in ("table1", "table2"):  # the transcribed averages agree with the text's gains
        for flat, lora, gain in (("Flat r8", "LoRA r8", table == "table1" and 0.48 or 0.56),
                                 ("Flat r16", "LoRA r16", table == "table1" and 0.57 or 0.74)):
            assert value(table, flat, "Avg") - value(table, lora, "Avg") == pytest.approx(gain, abs=0.011)


# ----------------------------------------------------------------------------- significance


def read_sig(table_id="table_nlu"):
    csv = pd.read_csv(paths.table(f"{table_id}_significance", "csv"), keep_default_na=False)
    md = paths.table(f"{table_id}_significance", "md").read_text(encoding="utf-8")
    return csv, md


def sig_row(csv, task):
    return csv[csv["task"] == task].iloc[0]


def test_significance_file_written_with_paired_tests(workdir):
    write_grid(FULL_GRID)
    build()
    csv, md = read_sig()
    assert list(csv.columns) == tables.SIG_COLUMNS
    assert set(zip(csv["flat_method"], csv["base_method"])) == {("flat_lora_r8", "lora_r8")}
    gain = sig_row(csv, "sentiment")  # diffs [5, 4, 3]: mean 4, sd 1, t = 4√3 on 2 df
    assert (gain["n"], gain["mean_diff"], gain["seeds"]) == (3, 4.0, "0;1;2")
    half = 4.302653 / 3 ** 0.5
    assert (gain["ci_lo"], gain["ci_hi"]) == pytest.approx((4 - half, 4 + half), abs=1e-5)
    # t on 2 df: two-sided p = 1 - t/√(t² + 2) = 1 - 6.928203/√50
    assert gain["p_ttest"] == pytest.approx(0.020204, abs=1e-5)
    assert (gain["p_sign"], gain["p_permutation"], gain["significant"]) == (0.25, 0.25, "better")
    noise = sig_row(csv, "nli")  # diffs [-5, -3, -1]: CI straddles 0
    assert noise["significant"] == "n.s." and noise["ci_lo"] < 0 < noise["ci_hi"]
    assert "paired t-test" in md and "sign-flip permutation test" in md and "the sign test decides" in md
    assert "3 seeds (0, 1, 2)" in md
    assert gain["mde"] == pytest.approx(3.2640435 * 1.0, abs=1e-4)  # sd of [5, 4, 3] is 1; mde(3, 1)


def test_clear_gain_marked_and_noise_not(workdir):
    write_grid(FULL_GRID)
    _, _, md = build()
    grid = md_grid(md)
    assert grid["Flat-LoRA (r=8)"]["sentiment"].endswith(" ↑")
    assert grid["Flat-LoRA (r=8)"]["nli"] == "62.00 ± 1.00"  # worse on average, but not significantly
    assert not any("↑" in c or "↓" in c for c in grid["LoRA (r=8)"].values())
    assert "paired by seed, p < 0.05" in md
    tex = paths.table("table_nlu", "tex").read_text()
    assert r"\textbf{86.00} & \textbf{1.00}$^\uparrow$" in tex and "paired t-test" in tex


def test_clear_loss_marked_down(workdir):
    write_grid({**FULL_GRID, ("flat_lora_r8", "sentiment"): [70.0, 71.5, 73.0]})
    _, _, md = build()
    assert md_grid(md)["Flat-LoRA (r=8)"]["sentiment"] == "71.50 ± 1.50 ↓"
    assert "$^\\downarrow$" in paths.table("table_nlu", "tex").read_text()


def test_incomplete_cell_tested_on_common_seeds_but_not_marked(workdir):
    write_grid({**FULL_GRID, ("flat_lora_r8", "sentiment"): [90.0, 91.0, None]})
    _, _, md = build()
    assert md_grid(md)["Flat-LoRA (r=8)"]["sentiment"] == "90.50 ± 0.71 (2/3)"
    row = sig_row(read_sig()[0], "sentiment")
    assert (row["n"], row["seeds"], row["significant"]) == (2, "0;1", "better")


def test_single_common_seed_gives_empty_statistics(workdir):
    write_grid({**FULL_GRID, ("flat_lora_r8", "nli"): [61.0, None, None]})
    build()
    row = sig_row(read_sig()[0], "nli")
    assert (row["n"], row["mean_diff"], row["significant"]) == (1, -5.0, "n.s.")
    assert row["ci_lo"] == row["p_ttest"] == row["p_sign"] == row["p_permutation"] == ""


def test_paper_gain_from_paper_values_and_from_claimed_gains(workdir):
    write_grid(FULL_GRID)
    build()
    csv, md = read_sig()
    assert float(sig_row(csv, "sentiment")["paper_gain"]) == pytest.approx(0.5)  # 94.75 - 94.25
    assert sig_row(csv, "nli")["paper_gain"] == ""  # Flat r8 MNLI not in the reference
    config = make_config()
    config["tasks"]["nli"]["mirrors"] = "GSM8K"
    config["tables"][0]["paper_table"] = "table3"
    reference = {"table3": {"rows": {"LoRA r8": {"GSM8K": 57.47}}},
                 "table3_gains": {"rows": {"Flat r8 - LoRA r8": {"GSM8K": 3.18}}}}
    build(config, reference)
    assert float(sig_row(read_sig()[0], "nli")["paper_gain"]) == pytest.approx(3.18)


def test_table_without_flat_pair_still_writes_significance(workdir):
    write_grid(FULL_GRID)
    config = make_config()
    config["tables"][0]["methods"] = ["full_ft", "lora_r8"]
    build(config)
    csv, md = read_sig()
    assert len(csv) == 0 and list(csv.columns) == tables.SIG_COLUMNS
    assert "No Flat variant" in md


# ----------------------------------------------------------------------------- sharpness table


def write_measures(task, method, seed, sharp, lam, test, ood=None):
    write_run(task, method, seed, test)
    run = json.loads(paths.run_result(task, method, seed).read_text())
    if ood is not None:
        run["metrics"].update({f"ood_s{s}": ood for s in range(1, 6)})
        paths.run_result(task, method, seed).write_text(json.dumps(run))
    paths.run_sharpness(task, method, seed).write_text(json.dumps({
        "expected_sharpness": {"0.01": sharp / 10, "0.05": sharp}, "hessian_top": {"eigenvalue": lam},
        "landscape": {"alphas": [0.0], "loss": [1.0]}}))


def test_sharpness_table_and_honest_verdict(workdir):
    for seed in (0, 1, 2):
        for task, flat_sharp in (("sentiment", 0.1), ("nli", 0.5)):  # flatter on sentiment only
            write_measures(task, "lora_r8", seed, 0.3, 10.0 + seed, 80.0, ood=50.0)
            write_measures(task, "flat_lora_r8", seed, flat_sharp, 20.0, 81.0, ood=52.0)
        write_measures("sentiment", "full_ft", seed, 1.0, 30.0, 70.0)
    entry = tables.sharpness_table(make_config())
    assert entry["id"] == "table_sharpness"
    assert entry["files"] == [str(paths.table("table_sharpness", e)) for e in ("csv", "md", "html")]
    csv = pd.read_csv(entry["files"][0]).set_index("method")
    assert list(csv.index) == ["full_ft", "lora_r8", "flat_lora_r8"]
    assert csv.loc["flat_lora_r8", "rho=0.05"] == pytest.approx(0.3)  # (0.1 + 0.5) / 2
    assert csv.loc["lora_r8", "lambda_max"] == pytest.approx(11.0)
    assert (csv.loc["flat_lora_r8", "n_tasks"], csv.loc["flat_lora_r8", "n_runs"]) == (2, 6)
    assert csv.loc["flat_lora_r8", "ood"] == pytest.approx(52.0)
    assert pd.isna(csv.loc["full_ft", "ood"])
    md = Path(entry["files"][1]).read_text(encoding="utf-8")
    assert ("Flat-LoRA (r=8) is flatter than LoRA (r=8) on 1 of 2 tasks by expected sharpness at "
            "ρ=0.05 and by λ_max on 0 of 2; test accuracy higher on 2 of 2, OOD accuracy on 2 of 2.") in md


def test_sharpness_verdict_says_when_not_flatter(workdir):
    for seed in (0, 1, 2):
        write_measures("sentiment", "lora_r8", seed, 0.3, 10.0, 80.0)
        write_measures("sentiment", "flat_lora_r8", seed, 0.4, 12.0, 79.0)
    md = Path(tables.sharpness_table(make_config())["files"][1]).read_text(encoding="utf-8")
    assert "on 0 of 1 task by expected sharpness" in md
    assert "not flatter by either measure on any task" in md


def test_sharpness_table_without_measures(workdir):
    entry = tables.sharpness_table(make_config())
    assert entry["runs"] == [] and "No sharpness measured yet" in Path(entry["files"][1]).read_text()


def test_malformed_sharpness_file_is_named(workdir):
    write_measures("sentiment", "lora_r8", 0, 0.3, 10.0, 80.0)
    paths.run_sharpness("sentiment", "lora_r8", 0).write_text(json.dumps({"landscape": {}}))
    with pytest.raises(ValueError, match=r"lora_r8/seed0\.sharpness\.json"):
        tables.sharpness_table(make_config())


# ----------------------------------------------------------------------------- per-table flags


def test_sharpness_table_skips_tables_marked_sharpness_false(workdir):
    config = make_config()
    config["methods"]["dora_r8"] = {"label": "DoRA (r=8)"}
    config["tables"].append({"id": "table_variants", "caption": "v", "tasks": ["sentiment"],
                             "methods": ["dora_r8"], "sharpness": False})
    for seed in (0, 1, 2):
        write_measures("sentiment", "lora_r8", seed, 0.3, 10.0, 80.0)
        write_measures("sentiment", "dora_r8", seed, 0.3, 10.0, 80.0)
    assert tables.sharpness_table(config)["rows"] == ["lora_r8"]


def write_cost(task, method, seed, ms, mb):
    path = paths.run_result(task, method, seed)
    run = json.loads(path.read_text())
    run["resources"] = {"seconds_per_step": ms / 1000, "step_peak_mb": mb}
    path.write_text(json.dumps(run))


def test_cost_goes_to_its_companion_relative_to_the_baseline(workdir):
    config = make_config()
    config["tables"][0].update(cost=True, cost_baseline="lora_r8")
    write_grid(FULL_GRID)
    for seed in SEEDS:
        for task in ("sentiment", "nli"):
            write_cost(task, "lora_r8", seed, 10.0, 4.0)
            write_cost(task, "flat_lora_r8", seed, 15.0, 4.5 if task == "nli" else 4.0)
    entry, csv, md = build(config)
    grid = md_grid(paths.cost_table("table_nlu", "md").read_text(encoding="utf-8"))
    assert list(grid) == ["Full FT", "LoRA (r=8)", "Flat-LoRA (r=8)"]  # one row per method of the table
    assert grid["Flat-LoRA (r=8)"]["ms/step"] == "15.00"
    assert grid["Flat-LoRA (r=8)"]["step peak MB"] == "4.25"
    assert grid["Flat-LoRA (r=8)"]["time vs lora_r8 (x)"] == "1.50"
    assert grid["Flat-LoRA (r=8)"]["extra MB vs lora_r8"] == "0.25"
    assert grid["LoRA (r=8)"]["extra MB vs lora_r8"] == "0.00"
    assert grid["Full FT"]["ms/step"] == ""  # no cost recorded: empty, not zero
    assert "peak of the torch CPU bytes" in paths.cost_table("table_nlu", "md").read_text(encoding="utf-8")
    cost = pd.read_csv(paths.cost_table("table_nlu", "csv"), keep_default_na=False)
    assert list(cost.columns) == ["method", "label", "ms/step", "step peak MB",
                                  "time vs lora_r8 (x)", "extra MB vs lora_r8"]
    assert cost.set_index("method").loc["flat_lora_r8", "ms/step"] == "15.0"  # empty for Full FT: read as text
    assert "peak of the torch CPU bytes" in paths.cost_table("table_nlu", "html").read_text(encoding="utf-8")
    # the table's own files hold nothing measured: they must repeat bit for bit
    for ext in ("md", "tex", "html", "csv"):
        text = paths.table("table_nlu", ext).read_text(encoding="utf-8")
        assert "ms/step" not in text and "peak MB" not in text and "Cost columns" not in text
    assert list(csv.columns) == tables.CSV_COLUMNS
    assert [str(paths.cost_table("table_nlu", e)) for e in ("csv", "md", "html")] == entry["files"][-3:]


def test_cost_companion_is_rebuilt_identically(workdir):
    config = make_config()
    config["tables"][0].update(cost=True)
    write_grid(FULL_GRID)
    write_cost("sentiment", "lora_r8", 0, 10.0, 4.0)
    files, _ = tables.table_files("table_nlu", config, REFERENCE)
    assert tables.table_files("table_nlu", config, REFERENCE)[0] == files
    assert [p for p in files if "_cost" in p.name] == [paths.cost_table("table_nlu", e) for e in ("csv", "md", "html")]
    assert "time vs" not in files[paths.cost_table("table_nlu", "md")]  # no cost_baseline: no relative columns


def test_table_without_cost_has_no_cost_columns_nor_companion(workdir):
    write_grid(FULL_GRID)
    entry, _, md = build()
    assert "ms/step" not in md
    assert not any("_cost" in f for f in entry["files"]) and not paths.cost_table("table_nlu", "csv").exists()


def test_measured_outputs_cover_the_measured_files():
    exempt = lambda path: any(fnmatch.fnmatch(path.as_posix(), p) for p in paths.measured_outputs())  # noqa: E731
    assert all(map(exempt, [paths.claims_cost("json"), paths.cost_table("table_sam", "html"),
                            paths.RESULTS / "benchmarks" / "default_run.json",
                            paths.RESULTS / "screenshots" / "a" / "b.png"]))
    assert not any(map(exempt, [paths.claims("json"), paths.table("table_sam", "md"),
                                paths.table("table_sam_significance", "csv"), paths.tables_index()]))


# ----------------------------------------------------------------------------- HTML pages, empty columns


def test_html_page_shows_the_table_with_its_notes_and_is_deterministic(workdir):
    write_grid(FULL_GRID)
    config = make_config()
    config["methods"]["lora_r8"]["label"] = "LoRA <r=8> & co"  # escaped, never markup
    build(config)
    page = paths.table("table_nlu", "html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<caption>table_nlu. NLU; accuracy (%)</caption>" in page
    assert "LoRA &lt;r=8&gt; &amp; co" in page and "<strong>86.00 ± 1.00</strong> ↑" in page
    assert "<code>table_nlu_significance.md</code>" in page and "Flat-LoRA vs LoRA:" in page
    significance = paths.table("table_nlu_significance", "html").read_text(encoding="utf-8")
    assert "<th" in significance and "mean_diff" in significance
    assert "<code>mde</code>" in significance  # the Markdown's explanation, under the table
    build(config)
    assert paths.table("table_nlu", "html").read_text(encoding="utf-8") == page


def test_a_column_empty_in_every_row_is_left_out(workdir):
    write_grid(FULL_GRID)
    _, csv, md = build(reference={"table1": {"rows": {"LoRA r8": {"SST-2": 94.25}}}})
    header = next(line for line in md.splitlines() if line.startswith("|"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["Method", "sentiment", "paper: SST-2", "nli", "Avg"]
    tex = paths.table("table_nlu", "tex").read_text()
    assert r"\multicolumn{3}{c}{sentiment (SST-2)} & \multicolumn{2}{c}{nli (MNLI)}" in tex
    assert "paper: MNLI" not in paths.table("table_nlu", "html").read_text()
    assert set(csv["paper"]) == {"", "94.25"}  # the CSV keeps every cell
