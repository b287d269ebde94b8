"""Audit checks on what each run left on disk: its result JSON, the params it ran with, the content
hashes of its data, backbone and checkpoint, and whether its checkpoint loads from safetensors."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file

from lorarepro.core import paths
from lorarepro.domain import checkpoints, records
from lorarepro.audit.inputs import BadInput, problem, read_json
from lorarepro.audit.report import record
from lorarepro.core.config import ConfigError, column, reported_runs, spec_seeds, specs
from lorarepro.domain.data.io import fingerprint
from lorarepro.domain.experiment import resolve_run
from lorarepro.core.hashing import sha256_dir, sha256_file
from lorarepro.core.tracking import flatten  # the one flattening of nested settings (as MLflow params)

RERUN = "rerun `snakemake --cores 2` (reruns the train jobs whose inputs or params changed)"
_RESULT = re.compile(r"results/runs/([^/]+)/([^/]+)/seed(\d+)\.json$")


@dataclass(frozen=True)
class Run:
    """One finished training run: (task, method, seed) and its result JSON."""

    task: str
    method: str
    seed: int
    result: dict = field(compare=False, hash=False, repr=False)

    @property
    def path(self) -> Path:
        return paths.run_result(self.task, self.method, self.seed)

    @property
    def checkpoint(self) -> Path:
        return paths.checkpoint_dir(self.task, self.method, self.seed)


def _indexed(index_path: Path) -> list[tuple[str, str, int]]:
    """(task, method, seed) of every result JSON that index.json says a table read."""
    if not index_path.is_file():
        return []
    try:
        entries = json.loads(index_path.read_text(encoding="utf-8"))["tables"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return []  # check_tables reports the broken index
    found = (_RESULT.search(run) for entry in entries for run in entry.get("runs", []))
    return [(m[1], m[2], int(m[3])) for m in found if m]


def _unfinished(path: Path) -> dict | None:
    """A diverged run is a recorded outcome the tables show as missing: the `exclusion` check
    (audit.exclusions) holds it against its own files (None here); a missing, irregular or otherwise
    unfinished result JSON is a failure."""
    why = problem(path)
    if why is not None:
        return record("result", "fail", path, f"result JSON {why}", RERUN)
    result = records.load(path)
    if records.is_diverged(result):
        return None
    return record("result", "fail", path, "result JSON not FINISHED", RERUN)


def collect_runs(config: dict, config_id: str = "") -> tuple[list[Run], list[dict]]:
    """Every run the config reports or its index lists; a missing or unfinished one is a failure."""
    wanted = [(t, m, s) for (t, m), seeds in reported_runs(config).items() for s in seeds]
    runs, found = [], []
    for task, method, seed in dict.fromkeys(wanted + _indexed(paths.tables_index(config_id))):
        path = paths.run_result(task, method, seed)
        try:
            result = records.load_finished(path)
        except ValueError as err:
            found.append(record("result", "fail", path, str(err), RERUN))
            continue
        if result is None:
            found += [r for r in [_unfinished(path)] if r is not None]
        elif not isinstance(result, dict) or not isinstance(result.get("config"), dict):
            found.append(record("result", "fail", path, "result JSON is not a run record (no config)", RERUN))
        else:
            runs.append(Run(task, method, seed, result))
    return runs, found


def check_metrics(runs: list[Run]) -> list[dict]:
    """Every metric of a FINISHED run is a number, or null with the reason it was not run (evaluate.NotRun)."""
    out = []
    for run in runs:
        metrics, not_run = run.result.get("metrics") or {}, run.result.get("not_run") or {}
        bad = [k for k, v in metrics.items() if (v is None) != (k in not_run) or not (v is None or isinstance(v, (int, float)))]
        bad += [k for k in not_run if k not in metrics]
        if bad:
            out.append(record("metrics", "fail", run.path, f"splits {bad}: a metric must be a number, or null with "
                              "a reason under not_run", RERUN))
        elif not_run:
            reasons = "; ".join(sorted({f"{r}" for r in not_run.values()}))
            out.append(record("metrics", "info", run.path, f"not run: {sorted(not_run)} ({reasons}); the tables show "
                              "these cells as not run", "configure what the evaluation needs and evaluate the checkpoint again"))
        else:
            out.append(record("metrics", "pass", run.path, f"{len(metrics)} numeric metrics"))
    return out


def runs_by_table(config: dict, runs: list[Run]) -> dict[str, list[Run]]:
    return {tid: [r for r in runs if r.task in {column(t)[0] for t in spec["tasks"]} and r.method in spec["methods"]
                  and r.seed in spec_seeds(config, spec)]
            for tid, spec in specs(config, "tables").items()}


def dict_diff(recorded: dict, expected: dict, limit: int = 6) -> list[str]:
    """Human lines for the keys whose values differ between two nested dicts."""
    a, b = flatten(recorded), flatten(expected)
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>"))
    lines = [f"{k}: {a.get(k, '<absent>')!r} vs {b.get(k, '<absent>')!r}" for k in keys[:limit]]
    return lines + ([f"... {len(keys) - limit} more"] if len(keys) > limit else [])


def check_params(config: dict, runs: list[Run]) -> list[dict]:
    """The settings each run trained with (its `config`) equal what the current params resolve to."""
    out, expected_of = [], {}
    for run in runs:
        key = (run.task, run.method)
        try:  # resolved once per (task, method), as the DAG does
            if key not in expected_of:
                expected_of[key] = resolve_run(config, *key).as_dict()
        except ConfigError as err:
            out.append(record("params", "fail", run.path, f"stale: {err}", RERUN))
            continue
        expected = expected_of[key]
        diff = dict_diff(run.result.get("config") or {}, expected)
        out.append(record("params", "fail", run.path, "stale, ran with vs params now: " + "; ".join(diff), RERUN)
                   if diff else record("params", "pass", run.path, "ran with the current params"))
    return out


class Hashes:
    """Content hashes computed once per audit (several runs share a dataset or a backbone)."""

    def __init__(self):
        self._dirs: dict[Path, str | None] = {}
        self._data: dict[str, tuple[str | None, list[str]]] = {}

    def dir(self, path: Path) -> str | None:
        if path not in self._dirs:
            self._dirs[path] = sha256_dir(path) if path.is_dir() else None
        return self._dirs[path]

    def data(self, task: str) -> tuple[str | None, list[str]]:
        """(fingerprint of the split files as they are now, disagreements with the manifest)."""
        if task not in self._data:
            self._data[task] = _data_content(task)
        return self._data[task]


def _data_content(task: str) -> tuple[str | None, list[str]]:
    manifest_path = paths.manifest(task)
    if not manifest_path.is_file():
        return None, [f"{manifest_path} missing"]
    try:
        manifest = read_json(manifest_path)
        splits = {k: (v["file"], v["sha256"]) for k, v in manifest["splits"].items()}
    except BadInput as bad:
        return None, [str(bad)]
    except (KeyError, TypeError, AttributeError):
        return None, [f"{manifest_path}: not a data manifest (no splits with file and sha256)"]
    problems, hashes = [], []
    for name, sha256 in splits.values():
        file = paths.prepared_dir(task) / name
        if (why := problem(file)) is not None:
            problems.append(f"{file} {why}")
            continue
        hashes.append(sha256_file(file))
        if hashes[-1] != sha256:
            problems.append(f"{file} differs from its manifest entry")
    if fingerprint(sha for _, sha in splits.values()) != manifest.get("sha256"):
        problems.append(f"{manifest_path}: sha256 is not the fingerprint of its splits")
    return fingerprint(hashes), problems


def check_data(runs: list[Run], hashes: Hashes) -> list[dict]:
    out = []
    for task in sorted({r.task for r in runs}):
        _, problems = hashes.data(task)
        out.append(record("data", "fail", paths.manifest(task), "; ".join(problems),
                          "restore the data (`dvc checkout data/prepared`) or " + RERUN)
                   if problems else record("data", "pass", paths.manifest(task), "split files match the manifest"))
    return out


def _backbone_marker(backbone: str) -> str | None:
    marker = checkpoints.backbone_marker(backbone)
    return None if marker is None else marker.get("sha256")


def check_backbones(runs: list[Run], hashes: Hashes) -> list[dict]:
    """The pretrained backbone is bit-identical to what was built (its marker's sha256)."""
    out = []
    for backbone in sorted({r.result["backbone"] for r in runs}):
        file = paths.backbone_dir(backbone) / "model.safetensors"
        marker, content = _backbone_marker(backbone), hashes.dir(paths.backbone_dir(backbone))
        if marker is None or content != marker:
            detail = "missing" if content is None else f"content {content[:12]} ≠ built {str(marker)[:12]} (marker)"
            out.append(record("backbone", "fail", file, detail,
                              "restore it (`dvc checkout models`) or rebuild it, which retrains its runs: " + RERUN))
        else:
            out.append(record("backbone", "pass", file, f"bit-identical to the built backbone ({marker[:12]})"))
    return out


def check_lineage(runs: list[Run], hashes: Hashes) -> list[dict]:
    """The data, backbone and checkpoint hashes a result JSON recorded equal the current content."""
    out = []
    for run in runs:
        lineage = run.result.get("lineage") or {}
        current = {
            "data_sha256": hashes.data(run.task)[0],
            "backbone_sha256": hashes.dir(paths.backbone_dir(run.result["backbone"])),
            "checkpoint_sha256": hashes.dir(run.checkpoint),
        }
        bad = [f"{key} recorded {str(lineage.get(key))[:12]}, content {str(value)[:12]}"
               for key, value in current.items() if lineage.get(key) != value]
        out.append(record("hashes", "fail", run.path, "; ".join(bad),
                          "the artifact changed after training: restore it (`dvc checkout`) or " + RERUN)
                   if bad else record("hashes", "pass", run.path, "data, backbone and checkpoint match the content"))
    return out


def check_checkpoints(runs: list[Run]) -> list[dict]:
    out = []
    for run in runs:
        problems = _checkpoint_problems(run)
        file = run.checkpoint
        out.append(record("checkpoint", "fail", file, "; ".join(problems), "restore it (`dvc checkout checkpoints`) or " + RERUN)
                   if problems else record("checkpoint", "pass", file, "loads from safetensors only"))
    return out


def _checkpoint_problems(run: Run) -> list[str]:
    """Loads every safetensors file; no pickle weights; an adapter holds only adapter and head weights."""
    ckpt = run.checkpoint
    if not ckpt.is_dir():
        return ["missing"]
    problems = [f"pickle weights {name} present (never loaded)" for name in checkpoints.pickle_files(ckpt)]
    lora = run.result["config"].get("adapter") is not None
    weights = ckpt / ("adapter_model.safetensors" if lora else "model.safetensors")
    if (why := problem(weights)) is not None:
        return problems + [f"{weights.name} {why}"]
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as err:
        return problems + [f"{weights.name} does not load: {err}"]
    if lora:
        try:
            saved = read_json(ckpt / "adapter_config.json").get("modules_to_save") or []
        except BadInput as bad:
            return problems + [f"adapter_config.json {bad.problem}"]
        foreign = [k for k in tensors if "lora_" not in k
                   and not any(k.removeprefix("base_model.model.").startswith(m + ".") for m in saved)]
        problems += [f"adapter carries backbone weight {k} (the backbone must come unchanged from models/)"
                     for k in foreign[:3]]
    return problems


def check_histories(runs: list[Run]) -> list[dict]:
    """Each run's loss history (CSV) has one row per optimizer step and ends at the final loss its
    result JSON records (MLflow's train_loss series is compared with it step by step: mlflow_runs)."""
    out = []
    for run in runs:
        path = paths.run_history(run.task, run.method, run.seed)
        problems = _history_problems(run)
        out.append(record("history", "fail", path, "; ".join(problems), "restore it from git (`git checkout -- "
                          f"{path}`) or " + RERUN) if problems else
                   record("history", "pass", path, f"{run.result['train']['steps']} steps, ends at the recorded final loss"))
    return out


def _history_problems(run: Run) -> list[str]:
    try:
        history = records.read_history(run.task, run.method, run.seed)
    except (ValueError, OSError) as err:  # pandas' parser errors are ValueErrors
        return [f"does not parse: {err}"]
    if history is None:
        return ["missing or empty"]
    train = run.result.get("train") or {}
    problems = []
    if len(history) != train.get("steps"):
        problems.append(f"{len(history)} rows, the result JSON records {train.get('steps')} optimizer steps")
    final = train.get("final_loss")
    if final is None or f"{history['loss'].iloc[-1]:.6g}" != f"{final:.6g}":
        problems.append(f"last loss {history['loss'].iloc[-1]:.6g}, the result JSON records final_loss {final}")
    return problems


def unverified(runs: list[Run], checked: list[dict]) -> dict[Run, str]:
    """{run: why} of the runs whose files failed a content check (`checked`: the hashes, checkpoint,
    backbone and data records): the audit never loads them, since a changed model directory or
    checkpoint may carry code or pickles."""
    failed = {(r["check"], r["file"]) for r in checked if r["status"] == "fail"}
    out = {}
    for run in runs:
        reasons = {
            ("hashes", str(run.path)): "its data, backbone or checkpoint differ from what training recorded",
            ("checkpoint", str(run.checkpoint)): "its checkpoint failed its check",
            ("backbone", str(paths.backbone_dir(run.result["backbone"]) / "model.safetensors")): "its backbone differs from the one built",
            ("data", str(paths.manifest(run.task))): "its data differ from their manifest",
        }
        why = [text for key, text in reasons.items() if key in failed]
        if why:
            out[run] = "; ".join(why)
    return out
