"""Audit check on the figures: each configured figure is drawn again from the run records, in a
scratch directory that sees results/runs read-only, and compared byte for byte with the files in
results/figures (the figures carry no dates or versions, so an unchanged figure redraws identically)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from lorarepro.core import paths
from lorarepro.audit.report import record
from lorarepro.reporting.figures import build_all_figures

REDRAW = "redraw the figures from the result JSONs: `snakemake --cores 2 --forcerun figures`"


def check_figures(config: dict) -> list[dict]:
    if not config.get("figures"):
        return []
    runs = (paths.RESULTS / "runs").resolve()
    with tempfile.TemporaryDirectory(prefix="lorarepro-figures-") as tmp:
        (Path(tmp) / paths.RESULTS).mkdir(parents=True)  # a standalone config's: outputs/<id>/results
        if runs.is_dir():
            os.symlink(runs, Path(tmp) / paths.RESULTS / "runs")
        with contextlib.chdir(tmp):
            drawn = {path: path.read_bytes() for path in build_all_figures(config)}
    return [_compare(path, expected) for path, expected in drawn.items()]


def _compare(path: Path, expected: bytes) -> dict:
    if not path.is_file():
        return record("figures", "fail", path, "missing", REDRAW)
    if path.read_bytes() != expected:
        return record("figures", "fail", path, "differs from the figure drawn again from the result JSONs", REDRAW)
    return record("figures", "pass", path, "redraws identically from the result JSONs")
