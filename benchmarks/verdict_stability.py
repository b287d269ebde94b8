"""Do the claims' verdicts depend on the machine? The default pipeline rerun under other numerics and backbone draws.

    python benchmarks/verdict_stability.py                                 # every condition (~10 min each, one after another)
    python benchmarks/verdict_stability.py --conditions native-avx2        # a subset, by name (the reference is always read)
    python benchmarks/verdict_stability.py --backbone-seeds 1235 1236      # several backbone draws
    python benchmarks/verdict_stability.py --keep DIR                      # clone into DIR/<condition> and keep the clones

Why: the tiny backbones' pretraining is chaotic, so another CPU's float rounding gives other
backbones, and a verdict could owe more to the machine than to the method. `numerics: portable` pins
the kernels so that every x86-64 CPU computes the committed results; this measures what a machine
that does not pin would see. Conditions, each a full default pipeline (`snakemake --cores 2`) in a
fresh clone of the committed HEAD (all at one commit, so a stale working tree is never measured):

- reference: the committed results (portable, params.yaml's backbone_seed), read, not run;
- native-avx512, native-avx2: `numerics: native` with ATEN_CPU_CAPABILITY set, which makes this
  machine run the torch kernels of a CPU of that ISA (skipped where this CPU lacks the ISA);
- portable-backbone-seed-N: another draw of the backbones (how large a change the verdicts see
  from a different backbone at all, the yardstick for the two above).

A condition is `--configfile stability.yaml` (its overrides) deep-merged over params.yaml. Per
condition: its settings, the pipeline's wall seconds, the backbones' hashes, the numerics
fingerprint of its runs, and each claim's verdict, effect, 95% interval, p, MDE and role; a failed
run is recorded with its log's tail and the next condition runs. Then, for each claim, its verdict
under every condition and the count of (claim, condition) pairs that differ from the reference.
Writes results/benchmarks/verdict_stability.json and .md (the table the README quotes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import yaml

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "results" / "benchmarks"
REFERENCE = "reference"
OVERRIDES = "stability.yaml"
DEFAULT_BACKBONE_SEEDS = [1235]
BACKBONE_MARKER = "lorarepro_backbone.json"  # lorarepro.core.paths.BACKBONE_MARKER (the clone's own package is not importable here)
CLAIM_FIELDS = ("verdict", "effect", "ci95", "p", "mde", "role")
# lorarepro.reporting.claims.COST_MEASURES, for a claims.json from before claims_cost.json: verdicts on
# a measured cost, which can move with the run, not only with the numerics
TIME_MEASURES = ("time_overhead", "time_saving", "memory_overhead")
# Variables lorarepro.core.numerics sets or the libraries it pins read: inherited ones must not leak into a condition
NUMERICS_ENV = ("LORAREPRO_NUMERICS", "ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA",
                "NPY_DISABLE_CPU_FEATURES", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
# The benchmark's own session (an MLflow server, a parent run, a warm job server) is not the clone's
SESSION_ENV = ("VIRTUAL_ENV", "MLFLOW_TRACKING_URI", "LORAREPRO_MLFLOW_PARENT", "LORAREPRO_WARM")
LOG_TAIL = 4000


class Condition(NamedTuple):
    name: str
    overrides: dict | None  # merged over params.yaml; None: the committed results, not run
    env: dict  # set for the pipeline's processes
    cpu_flag: str | None  # /proc/cpuinfo flag the condition needs


def conditions(backbone_seeds: list[int]) -> list[Condition]:
    return [
        Condition(REFERENCE, None, {}, None),
        Condition("native-avx512", {"numerics": "native"}, {"ATEN_CPU_CAPABILITY": "avx512"}, "avx512f"),
        Condition("native-avx2", {"numerics": "native"}, {"ATEN_CPU_CAPABILITY": "avx2"}, "avx2"),
        *(Condition(f"portable-backbone-seed-{seed}", {"numerics": "portable", "backbone_seed": seed}, {}, None)
          for seed in backbone_seeds),
    ]


def select(available: list[Condition], names: list[str] | None) -> list[Condition]:
    """The named conditions in their standard order; the reference always (the others are compared with it)."""
    unknown = sorted(set(names or []) - {c.name for c in available})
    if unknown:
        raise ValueError(f"unknown condition(s) {', '.join(unknown)}; known: {', '.join(c.name for c in available)}")
    return [c for c in available if names is None or c.name in names or c.name == REFERENCE]


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    if not cpuinfo.is_file():
        return set()
    line = next((line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def skip_reason(condition: Condition, flags: set[str]) -> str | None:
    """Why this CPU cannot run the condition (torch would fall back to other kernels and measure nothing new)."""
    if condition.cpu_flag and condition.cpu_flag not in flags:
        return f"this CPU lacks {condition.cpu_flag} (/proc/cpuinfo flags)"
    return None


def machine(flags: set[str]) -> dict:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    return {"cpus": os.cpu_count(), "cpu_model": cpu, "memory_gib": round(memory, 1),
            "isa": sorted(flags & {"avx2", "fma", "avx512f"}),
            "python": platform.python_version(), "platform": platform.platform()}


# ----------------------------------------------------------------------------- one condition's files


def write_overrides(clone: Path, condition: Condition) -> Path:
    path = clone / OVERRIDES
    path.write_text(yaml.safe_dump(condition.overrides, sort_keys=True))
    return path


def settings(params: dict, condition: Condition) -> dict:
    """What the condition computes under: the overrides over the clone's params.yaml, with the
    schema's defaults (numerics portable; backbone_seed falls back to data_seed)."""
    config = {**params, **(condition.overrides or {})}
    return {"numerics": config.get("numerics", "portable"),
            "backbone_seed": config.get("backbone_seed", config.get("data_seed")), "env": dict(condition.env)}


def parse_claims(claims: dict | list, timing: dict | list | None = None) -> dict[str, dict]:
    """{claim id: its verdict and numbers} from claims.json and claims_cost.json (the latter wins
    for a claim in both: it is where the timing claims live once split off)."""
    def records(doc):
        return doc.get("claims", []) if isinstance(doc, dict) else doc

    out = {}
    for doc, from_timing in ((claims, False), (timing or [], True)):
        for record in records(doc):
            entry = {key: record.get(key) for key in CLAIM_FIELDS}
            entry["ci95"] = list(entry["ci95"]) if entry["ci95"] else None
            entry["timing"] = from_timing or record.get("measure") in TIME_MEASURES
            out[record["claim"]] = entry
    return out


def read_claims(results: Path) -> dict[str, dict] | None:
    """The claims of a finished pipeline's results/ (None when it wrote none)."""
    main, timing = results / "claims.json", results / "claims_cost.json"
    if not main.is_file():
        return None
    return parse_claims(json.loads(main.read_text()), json.loads(timing.read_text()) if timing.is_file() else None)


def _run_records(results: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted((results / "runs").glob("*/*/seed*.json"))]


def backbone_hashes(root: Path) -> dict[str, str]:
    """{backbone: sha256} from the markers under models/; the reference clone has no models/ (a DVC
    output, not in git), so there the run records' lineage, which copies the marker's hash, stands in."""
    markers = sorted((root / "models").glob(f"*/{BACKBONE_MARKER}"))
    if markers:
        return {path.parent.name: json.loads(path.read_text())["sha256"] for path in markers}
    return {run["backbone"]: run["lineage"]["backbone_sha256"] for run in _run_records(root / "results")
            if (run.get("lineage") or {}).get("backbone_sha256")}


def numerics_fingerprint(results: Path) -> dict | None:
    return next((run["lineage"]["numerics"] for run in _run_records(results)
                 if (run.get("lineage") or {}).get("numerics")), None)


def finished(root: Path) -> dict:
    """What a finished pipeline in `root` says: claims, backbones, numerics."""
    return {"backbones": backbone_hashes(root), "numerics": numerics_fingerprint(root / "results"),
            "claims": read_claims(root / "results")}


# ----------------------------------------------------------------------------- running


def clone(commit: str, dest: Path) -> str:
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(dest)], check=True)
    # HEAD may move while the conditions run (~10 min each): every clone measures the same commit
    subprocess.run(["git", "-C", str(dest), "checkout", "--quiet", "--detach", commit], check=True)
    return subprocess.run(["git", "-C", str(dest), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()


def pipeline_env(clone_dir: Path, condition: Condition) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in NUMERICS_ENV + SESSION_ENV}
    # the clone's package, not the editable install's /work/main/src; its own MLflow store
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(clone_dir / "src"), os.environ.get("PYTHONPATH")]))
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{clone_dir / 'mlflow.db'}"
    return {**env, **condition.env}


def run_pipeline(clone_dir: Path, condition: Condition) -> dict:
    """`snakemake --cores 2 --configfile stability.yaml` in the clone: wall seconds, and the log's tail if it failed."""
    write_overrides(clone_dir, condition)
    log = clone_dir / "stability.log"
    start = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", OVERRIDES],
                              cwd=clone_dir, env=pipeline_env(clone_dir, condition), stdout=out, stderr=subprocess.STDOUT)
    record = {"wall_seconds": round(time.perf_counter() - start, 1), "returncode": done.returncode}
    if done.returncode != 0:
        text = log.read_text(errors="replace")
        record |= {"error": first_error(text), "log_tail": text[-LOG_TAIL:]}
    return record


def first_error(log: str, lines: int = 6) -> str | None:
    """The log from its first line naming an error: Snakemake prints the cause there and may follow
    it with pages of context (a config validation error dumps the whole schema), so the tail alone can miss it."""
    found = re.search(r"^.*(Error|Exception)\b.*$", log, re.M)
    return None if found is None else "\n".join(log[found.start():].splitlines()[:lines])


def measure(condition: Condition, workdir: Path, commit: str, params: dict, flags: set[str]) -> dict:
    record = {"status": "skipped", "settings": settings(params, condition)}
    reason = skip_reason(condition, flags)
    if reason:
        return {**record, "reason": reason}
    dest = workdir / condition.name
    record["commit"] = clone(commit, dest)
    print(f"{condition.name}: running the default pipeline in {dest} ...", flush=True)
    record |= run_pipeline(dest, condition)
    if record["returncode"] != 0:
        return {**record, "status": "failed", "reason": f"snakemake exited with status {record['returncode']}"}
    found = finished(dest)
    if found["claims"] is None:
        return {**record, **found, "status": "failed", "reason": "the pipeline finished without results/claims.json"}
    return {**record, **found, "status": "ok"}


def read_reference(condition: Condition, workdir: Path, commit: str) -> tuple[dict, dict]:
    """The committed results (read from a clone of the commit the others run) and that commit's params.yaml."""
    dest = workdir / condition.name
    record = {"commit": clone(commit, dest), "status": "ok"}
    params = yaml.safe_load((dest / "params.yaml").read_text())
    record |= {"settings": settings(params, condition), **finished(dest)}
    if record["claims"] is None:
        raise SystemExit(f"commit {commit} has no results/claims.json: nothing to compare with")
    return record, params


# ----------------------------------------------------------------------------- comparison (pure)


def compare(records: dict[str, dict], reference: str = REFERENCE) -> dict:
    """Each claim's verdict under every condition that ran, against the reference's.

    A failed or skipped condition is neither agreement nor disagreement: it is left out of the
    counts and listed under `not_compared`. A claim one side lacks counts as differing (verdict None)."""
    compared = [name for name, r in records.items() if name != reference and r["status"] == "ok"]
    ids = list(dict.fromkeys(c for name in [reference, *compared] for c in records[name]["claims"]))
    per_claim = {}
    for claim in ids:
        verdicts = {name: (records[name]["claims"].get(claim) or {}).get("verdict") for name in [reference, *compared]}
        differs = [name for name in compared if verdicts[name] != verdicts[reference]]
        per_claim[claim] = {"verdicts": verdicts, "agree": len(set(verdicts.values())) == 1, "differs_in": differs}
    return {
        "reference": reference,
        "compared": compared,
        "not_compared": {name: {"status": r["status"], "reason": r.get("reason")}
                         for name, r in records.items() if name != reference and r["status"] != "ok"},
        "claims": per_claim,
        "verdicts_differing": sum(len(c["differs_in"]) for c in per_claim.values()),
        "claims_flipping": [claim for claim, c in per_claim.items() if c["differs_in"]],
        "differing_by_condition": {name: sum(name in c["differs_in"] for c in per_claim.values()) for name in compared},
        "cost_claims": [claim for claim in ids if any((records[n]["claims"].get(claim) or {}).get("timing")
                                                        for n in [reference, *compared])],
        # a flip without another backbone is numerics inside training; with one, it may be the backbone alone
        "backbones_changed": {name: sorted(b for b, sha in (records[name].get("backbones") or {}).items()
                                           if sha != (records[reference].get("backbones") or {}).get(b))
                              for name in compared},
    }


def markdown(records: dict[str, dict], summary: dict) -> str:
    """claim x condition -> verdict (a verdict unlike the reference's in bold), then each condition's count of such."""
    names, reference = list(records), summary["reference"]
    timing = set(summary["cost_claims"])

    def cell(name: str, claim: str) -> str:
        if name in summary["not_compared"]:
            return f"*{records[name]['status']}*"
        verdict = summary["claims"][claim]["verdicts"][name] or "absent"
        return f"**{verdict}**" if name in summary["claims"][claim]["differs_in"] else verdict

    rows = [["claim", *names], ["---"] * (len(names) + 1)]
    rows += [[claim + (" †" if claim in timing else ""), *(cell(n, claim) for n in names)] for claim in summary["claims"]]
    counts = {**summary["differing_by_condition"], **{n: f"*{records[n]['status']}*" for n in summary["not_compared"]}}
    rows.append(["differs from reference", *("—" if n == reference else str(counts[n]) for n in names)])
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.append("")
    lines.append(f"{summary['verdicts_differing']} (claim, condition) pairs differ from the reference; claims flipping: "
                 f"{', '.join(summary['claims_flipping']) or 'none'}.")
    if timing:
        lines.append("† rests on a measured cost (wall time, peak step memory): its verdict can also move with the run, not only with the numerics.")
    lines += [f"Not compared: {name}, {why['status']} ({why['reason']})." for name, why in summary["not_compared"].items()]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main


def write(out_dir: Path, result: dict) -> str:
    """The JSON and its table; returns the table."""
    table = markdown(result["conditions"], result["summary"])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "verdict_stability.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    (out_dir / "verdict_stability.md").write_text(table)
    return table


def report(records: dict, commit: str, flags: set[str], command: str) -> dict:
    return {"commit": commit, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": command,
            "machine": machine(flags), "conditions": records, "summary": compare(records)}


def run_all(selected: list[Condition], workdir: Path, out_dir: Path, command: str) -> tuple[dict, str]:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    flags = cpu_flags()
    reference, *others = selected
    committed, params = read_reference(reference, workdir, commit)
    records = {reference.name: committed}
    for condition in others:
        records[condition.name] = measure(condition, workdir, commit, params, flags)
        print(f"{condition.name}: {records[condition.name]['status']}", flush=True)
        write(out_dir, report(records, commit, flags, command))  # a crash later keeps the conditions done
    result = report(records, commit, flags, command)
    return result, write(out_dir, result)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conditions", nargs="+", metavar="NAME",
                        help="run only these (default: all; the reference is always read)")
    parser.add_argument("--backbone-seeds", nargs="+", type=int, default=DEFAULT_BACKBONE_SEEDS, metavar="N",
                        help="backbone_seed of each portable-backbone-seed-N condition (default: %(default)s)")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="clone into DIR/<condition> (new) and keep the clones")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="where the JSON and Markdown go (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        selected = select(conditions(args.backbone_seeds), args.conditions)
    except ValueError as exc:
        parser.error(str(exc))
    command = shlex.join(["python", "benchmarks/verdict_stability.py", *(sys.argv[1:] if argv is None else argv)])
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        result, table = run_all(selected, args.keep, args.out, command)
    else:
        with tempfile.TemporaryDirectory(prefix="lorarepro-verdict-stability-") as tmp:
            result, table = run_all(selected, Path(tmp), args.out, command)
    print(table, end="")
    return result


if __name__ == "__main__":
    main()
