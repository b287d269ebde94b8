"""A Workflow Run RO-Crate of a finished pipeline: what a reviewer can take away from one checkout.

The crate follows the Provenance Run Crate profile (https://w3id.org/ro/wfrun/provenance/0.5), which
includes the Workflow Run and Process Run Crate profiles:
- the main entity is the Snakefile (a ComputationalWorkflow), with the rules, the job adapter, the
  schema and the config files as its parts; the rule that trains is a HowToStep of it, implemented by a
  SoftwareApplication (the `train` job of lorarepro);
- one CreateAction for the workflow run (instrument: the workflow; object: the config files; result: the
  tables, figures, claims and the audit's verdict), and an OrganizeAction of the engine (Snakemake)
  that ties it to one ControlAction per training run;
- each training run (results/runs/<task>/<method>/seed<k>.json) is a CreateAction: instrument the train
  tool; object its prepared data and backbone (by path and the content hash of the record's lineage) and
  its parameters (the record's `config` layout); result its checkpoint (by path and sha256; bundled only
  with `bundle_checkpoints`) and its result JSON (bundled); `environment` the numerics fingerprint and
  the software versions of the record;
- every table, figure and claims file is bundled with its sha256 and `isBasedOn` the result JSONs it
  was computed from (results/tables/index.json for the tables; the config's figure and claim specs for
  the others, where a config is given).

Times: a record has no start or finish time of its own. endTime is the result JSON's modification time
(the trainer writes it last) and startTime is endTime minus `resources.seconds` (training only, not the
job's start-up); both are stated in the action's description. A fresh clone resets modification times,
so the times are those of the checkout where the pipeline ran: build the crate there.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from pathlib import Path

from lorarepro.core import paths
from lorarepro.core.config import claim_comparisons, column, spec_seeds, specs
from lorarepro.core.hashing import sha256_file, sha256_json
from lorarepro.domain.records import FINISHED, load

OUT = Path("build") / "crate"  # /build/ is git-ignored: the crate holds times and a per-checkout verdict
PROFILES = {  # the profiles the crate conforms to, by the versions ro-crate-py and roc-validator know
    "https://w3id.org/ro/wfrun/process/0.5": "Process Run Crate",
    "https://w3id.org/ro/wfrun/workflow/0.5": "Workflow Run Crate",
    "https://w3id.org/ro/wfrun/provenance/0.5": "Provenance Run Crate",
}
WFRUN_CONTEXT = "https://w3id.org/ro/terms/workflow-run"  # `environment` (and the other run terms)
RUN_NAME = re.compile(r"seed(\d+)\.json$")
TIMES_NOTE = ("endTime: the result JSON's modification time (written last by the trainer); startTime: endTime minus "
              "the record's resources.seconds (training only). The record itself stores no start or finish time.")


def run_records(root: Path = Path(".")) -> list[Path]:
    """Every result JSON of a training run (results/runs/<task>/<method>/seed<k>.json), sorted."""
    return sorted(p for p in (root / paths.RESULTS / "runs").glob("*/*/seed*.json") if RUN_NAME.search(p.name))


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).isoformat(timespec="seconds")


def _record_times(record: dict, path: Path) -> tuple[str, str, str]:
    """(startTime, endTime, how): the record's own times where it has them, else the file's (TIMES_NOTE)."""
    for start_key, end_key in (("started", "finished"), ("start_time", "end_time")):
        start, end = record.get(start_key), record.get(end_key)
        if start and end:
            return str(start), str(end), f"startTime, endTime: the record's {start_key!r} and {end_key!r}"
    end = path.stat().st_mtime
    seconds = float((record.get("resources") or {}).get("seconds") or 0.0)
    return _iso(end - seconds), _iso(end), TIMES_NOTE


def _files(root: Path, pattern: str) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.glob(pattern) if p.is_file())


def _spec_runs(config: dict, spec: dict, known: set[str]) -> list[str]:
    """The result JSONs a figure or claim spec reads, among those the crate holds."""
    seeds = spec_seeds(config, spec)
    tasks = [column(t)[0] for t in spec.get("tasks") or []]
    methods = spec.get("methods") or [m for pair in spec.get("pairs") or [] for m in pair]
    out = {str(paths.run_result(t, m, s)) for t in tasks for m in methods for s in seeds}
    return sorted(out & known)


def _table_runs(root: Path) -> dict[str, list[str]]:
    index = root / paths.RESULTS / "tables" / "index.json"
    if not index.is_file():
        return {}
    data = json.loads(index.read_text(encoding="utf-8"))
    return {t["id"]: list(t.get("runs") or []) for t in data.get("tables") or []}


def build(out: Path = OUT, *, root: Path = Path("."), config: dict | None = None, configfiles=(),
          bundle_checkpoints: bool = False) -> dict:
    """Write the crate into `out` (replaced if it exists) from the finished pipeline under `root`;
    returns a summary {"path", "runs", "files", "skipped"}. `config`, where given, names the runs each
    figure and claims file reads; `configfiles` are the --configfile files of the pipeline run."""
    from rocrate.model.contextentity import ContextEntity  # deferred: optional extra `crate`
    from rocrate.rocrate import ROCrate  # deferred: optional extra `crate` (pip install -e .[crate])

    root = Path(root)
    crate = ROCrate(version="1.1")  # the base of the Workflow Run profiles 0.5
    crate.name = "lorarepro: a finished pipeline run (Flat-LoRA reproduction)"
    crate.description = ("Workflow Run RO-Crate (Provenance Run Crate profile) of a lorarepro pipeline: the Snakemake "
                         "workflow, every training run with its inputs, parameters and outputs, the tables, figures "
                         "and claims with the runs they rest on, and the audit's verdict.")
    crate.metadata.extra_contexts.append(WFRUN_CONTEXT)
    crate.metadata["conformsTo"] = [{"@id": "https://w3id.org/ro/crate/1.1"}] + [{"@id": p} for p in PROFILES]
    profiles = [crate.add(ContextEntity(crate, p, properties={"@type": "CreativeWork", "name": n, "version": "0.5"}))
                for p, n in PROFILES.items()]
    crate.root_dataset["conformsTo"] = profiles
    summary = {"path": str(out), "runs": 0, "files": [], "skipped": []}

    def add_file(rel: Path, **props):
        entity = crate.add_file(root / rel, dest_path=str(rel), properties={"sha256": sha256_file(root / rel), **props})
        summary["files"].append(str(rel))
        return entity

    # The workflow: the Snakefile and what it is made of.
    snakefile = Path("Snakefile")
    if not (root / snakefile).is_file():
        raise FileNotFoundError(f"{root / snakefile}: not a lorarepro checkout (no Snakefile)")
    workflow = crate.add_workflow(root / snakefile, dest_path="Snakefile", main=True, lang="snakemake", properties={
        "name": "lorarepro pipeline", "sha256": sha256_file(root / snakefile),
        "@type": ["File", "SoftwareSourceCode", "ComputationalWorkflow", "HowTo"]})  # HowTo: a workflow with steps
    summary["files"].append("Snakefile")
    configs = [Path(p) for p in dict.fromkeys([str(paths.PARAMS), *map(str, configfiles)])]
    parts, config_entities = [], []
    for rel in (_files(root, "workflow/rules/*.smk") + _files(root, "workflow/scripts/*.py")
                + _files(root, "workflow/schemas/*.yaml")):
        parts.append(add_file(rel))
    for rel in [c for c in configs if (root / c).is_file()] + [
            p for p in _files(root, "workflow/configs/*.yaml") if p not in configs]:
        entity = add_file(rel, encodingFormat="application/yaml")
        parts.append(entity)
        if rel in configs:
            config_entities.append(entity)
    workflow["hasPart"] = parts

    engine = crate.add(ContextEntity(crate, "https://snakemake.github.io", properties={
        "@type": "SoftwareApplication", "name": "Snakemake"}))
    lorarepro = crate.add(ContextEntity(crate, "#lorarepro", properties={
        "@type": "SoftwareApplication", "name": "lorarepro"}))
    tool = crate.add(ContextEntity(crate, "#tool/train", properties={
        "@type": "SoftwareApplication", "name": "lorarepro.pipeline.jobs.train",
        "description": "the train rule's job (workflow/rules/train.smk): trains one (task, method) run per seed",
        "isPartOf": lorarepro}))
    step = crate.add(ContextEntity(crate, "#step/train", properties={
        "@type": "HowToStep", "name": "train", "workExample": tool, "position": 0}))
    workflow["step"] = [step]
    workflow["hasPart"] = parts

    # Each training run.
    shared: dict[str, object] = {}

    def shared_entity(id_: str, props: dict):
        if id_ not in shared:
            shared[id_] = crate.add(ContextEntity(crate, id_, properties=props))
        return shared[id_]

    actions, controls, run_files, starts, versions_seen = [], [], {}, [], {}
    for rel in (p.relative_to(root) for p in run_records(root)):
        record = load(root / rel)
        if record is None or record.get("status") != FINISHED:
            summary["skipped"].append(str(rel))
            continue
        task, method, seed = record["task"], record["method"], record["seed"]
        lineage = record.get("lineage") or {}
        run_id = f"#run/{task}/{method}/seed{seed}"
        data = shared_entity(f"#data/{task}", {
            "@type": "Dataset", "name": f"prepared data of {task}", "url": f"{paths.prepared_dir(task)}/",
            "sha256": lineage.get("data_sha256"), "description": "not bundled: rebuilt by the pipeline (content hash)"})
        backbone = shared_entity(f"#backbone/{record['backbone']}", {
            "@type": "Dataset", "name": f"backbone {record['backbone']}",
            "url": f"{paths.backbone_dir(record['backbone'])}/", "sha256": lineage.get("backbone_sha256"),
            "description": "not bundled: built or downloaded by the pipeline (content hash)"})
        layout = record.get("config") or {}
        parameters = shared_entity(f"#parameters/{task}/{method}/{sha256_json(layout)[:12]}", {
            "@type": "PropertyValue", "name": f"run settings of {task}/{method} (the record's `config`)",
            "value": json.dumps(layout, sort_keys=True), "encodingFormat": "application/json"})
        numerics = lineage.get("numerics") or {}
        fingerprint = shared_entity(f"#numerics/{sha256_json(numerics)[:12]}", {
            "@type": "PropertyValue", "name": "numerics fingerprint (record lineage.numerics)",
            "value": json.dumps(numerics, sort_keys=True), "encodingFormat": "application/json"})
        versions = record.get("versions") or {}
        versions_entity = shared_entity(f"#versions/{sha256_json(versions)[:12]}", {
            "@type": "PropertyValue", "name": "software versions (record versions)",
            "value": json.dumps(versions, sort_keys=True), "encodingFormat": "application/json"})
        for name, version in versions.items():
            versions_seen.setdefault((name, str(version)), None)
        result_file = add_file(rel, encodingFormat="application/json")
        run_files[str(rel)] = result_file
        ckpt_dir = paths.checkpoint_dir(task, method, seed)
        if bundle_checkpoints and (root / ckpt_dir).is_dir():
            checkpoint = crate.add_dataset(root / ckpt_dir, dest_path=f"{ckpt_dir}/", properties={
                "sha256": lineage.get("checkpoint_sha256"), "name": f"checkpoint {task}/{method}/seed{seed}"})
            for f in sorted(p for p in (root / ckpt_dir).rglob("*") if p.is_file()):
                add_file(f.relative_to(root))
        else:
            checkpoint = crate.add(ContextEntity(crate, f"#checkpoint/{task}/{method}/seed{seed}", properties={
                "@type": "Dataset", "name": f"checkpoint {task}/{method}/seed{seed}", "url": f"{ckpt_dir}/",
                "sha256": lineage.get("checkpoint_sha256"),
                "description": "not bundled (lorarepro crate --bundle-checkpoints bundles it); sha256 of the directory "
                               "as lorarepro.core.hashing.sha256_dir computes it"}))
        start, end, how = _record_times(record, root / rel)
        starts.append(start)
        action = crate.add_action(tool, identifier=run_id, object=[data, backbone, parameters],
                                  result=[checkpoint, result_file], properties={
            "@type": "CreateAction", "name": f"train {task}/{method} seed {seed}", "startTime": start,
            "endTime": end, "actionStatus": {"@id": "http://schema.org/CompletedActionStatus"},
            "description": how})
        action["environment"] = [fingerprint, versions_entity]
        if lineage.get("mlflow_run_id"):
            action["identifier"] = f"mlflow:{lineage['mlflow_run_id']}"
        actions.append(action)
        controls.append(crate.add(ContextEntity(crate, f"#control/{task}/{method}/seed{seed}", properties={
            "@type": "ControlAction", "name": f"orchestrate train {task}/{method} seed {seed}",
            "instrument": step, "object": action})))
        summary["runs"] += 1
    tool["softwareRequirements"] = [
        crate.add(ContextEntity(crate, f"#software/{name}/{version}", properties={
            "@type": "SoftwareApplication", "name": name, "softwareVersion": version}))
        for name, version in sorted(versions_seen)]

    # What the tables, figures and claims rest on.
    known = set(run_files)
    table_runs = _table_runs(root)
    outputs = []
    for rel in _files(root, "results/tables/*"):
        ids = [t for t in table_runs if rel.stem == t or rel.stem.startswith(t + "_")]
        table = max(ids, key=len) if ids else None
        runs = table_runs.get(table, []) if table else (sorted(known) if rel.name == "index.json" else [])
        outputs.append(add_file(rel, isBasedOn=[run_files[r] for r in runs if r in run_files]))
    figure_specs = specs(config, "figures") if config else {}
    for rel in _files(root, "results/figures/*"):
        spec = figure_specs.get(rel.stem)
        runs = _spec_runs(config, spec, known) if spec else []
        outputs.append(add_file(rel, isBasedOn=[run_files[r] for r in runs]))
    claim_runs = sorted({r for c in claim_comparisons(config).values() for r in _spec_runs(config, c, known)}) \
        if config else []
    for rel in _files(root, "results/claims*.*"):
        outputs.append(add_file(rel, isBasedOn=[run_files[r] for r in claim_runs]))

    audit_path = paths.RESULTS / "audit" / "audit.json"
    verdict = None
    if (root / audit_path).is_file():
        audit = json.loads((root / audit_path).read_text(encoding="utf-8"))
        counts: dict[str, int] = {}
        for r in audit.get("records") or []:
            counts[r.get("status", "?")] = counts.get(r.get("status", "?"), 0) + 1
        verdict = {"passed": bool(audit.get("passed")), "checks": counts}
        outputs.append(add_file(audit_path, encodingFormat="application/json", name="the audit's verdict",
                                description=f"passed: {verdict['passed']}; checks by status: "
                                            f"{json.dumps(counts, sort_keys=True)}"))
    summary["audit"] = verdict

    end = max((a["endTime"] for a in actions), default=_iso(dt.datetime.now(dt.timezone.utc).timestamp()))
    run = crate.add_action(workflow, identifier="#pipeline-run", object=config_entities, result=outputs, properties={
        "@type": "CreateAction", "name": "lorarepro pipeline run", "startTime": min(starts, default=end),
        "endTime": end, "actionStatus": {"@id": "http://schema.org/CompletedActionStatus"},
        "description": "startTime: the earliest training run's; endTime: the latest's (" + TIMES_NOTE + ")"})
    crate.add_action(engine, identifier="#orchestration", result=run, properties={
        "@type": "OrganizeAction", "name": "Snakemake orchestration of the pipeline", "object": controls})
    crate.root_dataset["mentions"] = [run]

    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    crate.write(out)
    return summary
