"""Every LaTeX table compiles as written in a plain `article` (one and two columns) with booktabs and
graphicx, and fits the page: no overfull box. The tables of the default config and of the paper grid
(Table 1's five GLUE tasks, Table 5's 14 methods, the cost tables) and a wider one, 14 methods x 5
tasks with cost columns, are built from synthetic seeded runs. Skipped where pdflatex is missing."""

import copy
import json
import random
import shutil
import subprocess

import pytest
import yaml

from conftest import ROOT
from lorarepro.core import paths
from lorarepro.core.config import column, spec_seeds, specs
from lorarepro.reporting import tables

pytestmark = pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")

REFERENCE = tables.load_reference(ROOT / "workflow/configs/paper_reference.yaml")
PREAMBLE = "\\documentclass[{options}]{{article}}\n\\usepackage{{booktabs}}\n\\usepackage{{graphicx}}\n\\begin{{document}}\n"


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def wide(config: dict) -> dict:
    """The default config with one more table: 14 methods on five tasks, with cost columns."""
    config = copy.deepcopy(config)
    methods = specs(config, "tables")["table_variants"]["methods"] + ["sam_w_r8", "lora_sam_r8"]
    config["tables"].append({"id": "table_wide", "caption": "Fourteen methods on five tasks.", "paper_table": "table1",
                             "tasks": ["sentiment", "nli", "paraphrase", "digits", "digits_inverted"],
                             "methods": methods, "seeds": [0, 1, 2], "cost": True, "cost_baseline": "lora_r8"})
    return config


def write_runs(config: dict) -> None:
    """A run per table cell and seed, with seeded metrics (every column of its task) and costs; the
    first cell of each table lacks a seed and has a diverged one, so its text is the widest a cell gets."""
    rng, runs, widest = random.Random(0), {}, set()
    for spec in specs(config, "tables").values():
        widest.add((column(spec["tasks"][0])[0], spec["methods"][0]))
        for name in spec["tasks"]:
            task, split = column(name)
            for method in spec["methods"]:
                for seed in spec_seeds(config, spec):
                    run = runs.setdefault((task, method, seed), {
                        "task": task, "method": method, "seed": seed, "metrics": {}, "status": "FINISHED",
                        "resources": {"seconds_per_step": rng.uniform(0.01, 2.0), "step_peak_mb": rng.uniform(10, 90000)}})
                    run["metrics"][split] = round(rng.uniform(40, 99), 4)
    for (task, method, seed), run in runs.items():
        if (task, method) in widest and seed == 1:
            continue
        path = paths.run_result(task, method, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**run, "status": "FAILED" if (task, method) in widest and seed == 0 else "FINISHED"}))


def latex_tables(config: dict) -> dict[str, str]:
    write_runs(config)
    return {table_id: files[paths.table(table_id, "tex")]
            for table_id in specs(config, "tables") for files in [tables.table_files(table_id, config, REFERENCE)[0]]}


def compile_log(workdir, texts: dict[str, str], options: str) -> str:
    for table_id, text in texts.items():
        (workdir / f"{table_id}.tex").write_text(text)
    body = "".join(f"\\input{{{table_id}}}\n\\clearpage\n" for table_id in texts)
    (workdir / "doc.tex").write_text(PREAMBLE.format(options=options) + body + "\\end{document}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=workdir,
                          capture_output=True, text=True, timeout=300)
    log = (workdir / "doc.log").read_text(errors="replace")
    assert done.returncode == 0, log[-3000:]
    return log


@pytest.mark.parametrize("options", ["", "twocolumn"])
@pytest.mark.parametrize("config_file", ["params.yaml", "workflow/configs/paper.yaml"])
def test_every_table_compiles_and_fits_the_page(tmp_path, monkeypatch, config_file, options):
    monkeypatch.chdir(tmp_path)
    config = load(config_file)
    if config_file == "params.yaml":
        config = wide(config)
    texts = latex_tables(config)
    log = compile_log(tmp_path, texts, options)
    assert "Overfull \\hbox" not in log and "Float too large" not in log, log[-3000:]
    assert all(f"(./{table_id}.tex" in log for table_id in texts)  # every table was read


def test_no_empty_column_and_caption_ends_once(workdir_variants):
    tex = workdir_variants
    header = next(line for line in tex.splitlines() if line.startswith("Method"))
    assert "paper" not in header  # the paper reports none of Table 5's numbers here: no empty paper column
    assert ".." not in tex.split("\\caption{")[1].split("}")[0]


@pytest.fixture
def workdir_variants(tmp_path, monkeypatch):
    """table_variants of the default config (no paper numbers), its caption ending in a period."""
    monkeypatch.chdir(tmp_path)
    config = load("params.yaml")
    spec = specs(config, "tables")["table_variants"]
    spec["caption"] += ". The paper's numbers are not transcribed."
    return latex_tables(config)["table_variants"]
