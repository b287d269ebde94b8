"""Captions for `snakemake --report`: one reStructuredText file per reported table and figure that
names its config (the `tables:`/`figures:` entry, seeds, each method's resolved settings) and the
runs it was computed from (result JSONs and MLflow run ids), with the audit's verdict; and one for
the audit itself, holding its summary. Written by the `report_captions` rule after the audit;
Snakemake renders each beside its file (captions are per file, so they are files of their own)."""

from __future__ import annotations

import json
from pathlib import Path

from lorarepro.core import paths
from lorarepro.domain import records
from lorarepro.core.atomic import write_text
from lorarepro.core.config import column, spec_seeds, specs
from lorarepro.reporting import cost
from lorarepro.reporting.claims import CLAIMS_ID, COST_ID
from lorarepro.reporting.figures import caption_note
from lorarepro.reporting.tables import SHARPNESS_CAPTION, SHARPNESS_ID


def _settings(name: str, method: str, seeds: list[int]) -> str:
    """The settings (task, method) trained with, as its run record holds them (never resolved again)."""
    found = next((r for s in seeds if (r := records.finished(column(name)[0], method, s)) is not None), None)
    if found is None:
        return "no finished run"
    run = found["config"]
    adapter = run["adapter"]
    adapter = adapter and adapter.get("type", "lora") + (f" r={adapter['r']}" if "r" in adapter else "")
    flat = run["flat"] and f"flat rho={run['flat']['rho']} ({run['flat']['mode']})"
    t = run["training"]
    parts = [adapter or "full fine-tuning", flat, f"lr={t['lr']}", f"epochs={t['epochs']}", f"batch={t['batch_size']}"]
    return ", ".join(p for p in parts if p)


def _config_lines(config: dict, kind: str, spec: dict) -> list[str]:
    lines = [f"**Config**: ``{kind}`` entry ``{spec['id']}`` of the run's params (params.yaml plus any "
             f"``--configfile``); seeds {', '.join(map(str, spec_seeds(config, spec)))}; data_seed {config['data_seed']}.", ""]
    for method in spec["methods"]:
        for task in spec["tasks"]:
            lines.append(f"- ``{method}`` on ``{task}``: {_settings(task, method, spec_seeds(config, spec))}")
    return lines + [""]


def _runs_lines(runs: list[str]) -> list[str]:
    if not runs:
        return ["**Runs**: none finished.", ""]
    lines = [f"**Runs** ({len(runs)} result JSONs, with their MLflow run ids):", ""]
    for run in runs:
        result = records.load_finished(run) if run.endswith(".json") and "sharpness" not in run else None
        run_id = ((result or {}).get("lineage") or {}).get("mlflow_run_id")
        lines.append(f"- ``{run}``" + (f" (MLflow ``{run_id}``)" if run_id else ""))
    return lines + [""]


def _audit_line(audit: dict, files: list[str]) -> list[str]:
    mine = [r for r in audit["records"] if r["file"] in files or r["file"].split("#")[0] in files]
    failed = [r for r in mine if r["status"] == "fail"]
    verdict = (f"**Audit**: {len(mine) - len(failed)} of {len(mine)} checks of this file passed"
               + (f"; FAILED: {'; '.join(r['detail'] for r in failed[:3])}" if failed else
                  " (every cell recomputes exactly from the runs above)" if mine else ""))
    return [verdict, ""]


def _claims_caption(entry: dict, audit: dict) -> str:
    """The caption of claims.csv or claims_cost.csv, from its index entry."""
    md = next(f for f in entry["files"] if f.endswith(".md"))
    return "\n".join([
        f"{entry['caption']}: each claim's statement, the paper's number and source, our effect with its "
        f"95% interval, n, the minimum detectable effect and the verdict (``{md}`` explains each comparison).",
        "", *_runs_lines(entry["runs"]), *_audit_line(audit, entry["files"])])


def _companion_captions(entry: dict, spec: dict, config_lines: list[str], audit: dict) -> dict[str, str]:
    """The captions of a table's significance companion and, with `cost: true`, its cost companion."""
    table_id = entry["id"]
    heads = {paths.table(f"{table_id}_significance", "csv"):
             f"Significance of each Flat variant against its base for ``{table_id}`` "
             "(paired by seed; t-test, sign and permutation tests)."}
    if spec.get("cost"):
        heads[paths.cost_table(table_id, "csv")] = (
            f"{cost.caption(table_id)}: time per optimizer step and the measured peak memory of one "
            "training step, per method, means over its finished runs.")
    return {csv.stem: "\n".join([head, "", *config_lines, *_runs_lines(entry["runs"]), *_audit_line(audit, [str(csv)])])
            for csv, head in heads.items()}


def table_captions(config: dict, index: dict, audit: dict) -> dict[str, str]:
    out = {}
    for entry in index["tables"]:
        if entry["id"] in (CLAIMS_ID, COST_ID):
            out[Path(entry["files"][0]).stem] = _claims_caption(entry, audit)  # claims.<config> for another config
            continue
        if entry["id"] == SHARPNESS_ID:
            head = [SHARPNESS_CAPTION, ""]
            config_lines = _config_lines(config, "tables", {"id": "(every table)", "methods": entry["rows"],
                                                            "tasks": sorted({t for s in specs(config, "tables").values()
                                                                             for t in s["tasks"]})})
        else:
            spec = specs(config, "tables")[entry["id"]]
            head = [entry["caption"], ""]
            config_lines = _config_lines(config, "tables", spec)
            out |= _companion_captions(entry, spec, config_lines, audit)
        files = [str(paths.table(entry["id"], "csv")), str(paths.tables_index())]
        out[entry["id"]] = "\n".join([*head, *config_lines, *_runs_lines(entry["runs"]), *_audit_line(audit, files)])
    return out


def figure_captions(config: dict) -> dict[str, str]:
    out = {}
    for figure_id, spec in specs(config, "figures").items():
        runs = [str(paths.run_result(t, m, s)) for m in spec["methods"] for t in spec["tasks"]
                for s in spec_seeds(config, spec) if paths.run_result(t, m, s).is_file()]
        note = caption_note(config, figure_id)  # how the figure shows its seeds
        out[figure_id] = "\n".join([spec["caption"], "", *([note, ""] if note else []),
                                    *_config_lines(config, "figures", spec), *_runs_lines(runs)])
    return out


def audit_caption(audit: dict) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in audit["counts"].items())
    lines = [f"**Audit {'PASSED' if audit['passed'] else 'FAILED'}**: {counts}. Every table cell recomputed "
             "from the result JSONs index.json lists; each run's lineage checked against MLflow and DVC; "
             "params, checkpoints (safetensors), backbones and a seeded sample of re-evaluations.", ""]
    lines += [f"- {r['status'].upper()} ``{r['check']}`` ``{r['file']}``: {r['detail']}"
              for r in audit["records"] if r["status"] in ("fail", "warn", "skip")]
    return "\n".join(lines) + "\n"


def write_all(config: dict, index_path: Path, audit_path: Path) -> None:
    index = json.loads(Path(index_path).read_text(encoding="utf-8"))
    audit = json.loads(Path(audit_path).read_text(encoding="utf-8"))
    captions = {**table_captions(config, index, audit), **figure_captions(config), "audit": audit_caption(audit)}
    for caption_id, text in captions.items():
        write_text(paths.caption(caption_id), text)
