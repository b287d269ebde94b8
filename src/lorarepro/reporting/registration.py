"""The registration lock: results/preregistration.json pins the regime (the config keys that decide the
runs), the claims (workflow/configs/claims.yaml and the config's `claims:` mapping) and the analysis
(by its behaviour: what it outputs on given run records), and lists every change made after
registration as a deviation with its date, the keys it changed and its reason.

- `lorarepro register --write` registers (the first write) or, when the regime or the claims differ
  from the registration, records a deviation (`--reason` required) and registers the new hashes.
- `lorarepro register --check` exits 1, naming each key, when the current config differs from the
  registration without a recorded deviation.
- `status(config)` and `markdown(status)` give the claims report its registration section.

The registration keeps the registered values themselves (a few KB), not only their hashes, so a
difference is named down to the key (`training.nlu.epochs`), never just "the hash changed". Changes
made before the registration existed are documented in `history` (from git; no hashes).
"""

from __future__ import annotations

import copy
import datetime
import json
import math
from pathlib import Path

import yaml

from lorarepro.core import atomic, paths
from lorarepro.domain import records
from lorarepro.core.hashing import sha256_json

PATH = paths.REGISTRATION
FORMAT = 1

# What decides a run's numbers: its data (data_seed, tasks), its backbone (backbones, backbone_seed),
# its training (seeds, training, methods), its floats (numerics, threads: reduction order; resources'
# gpu: the device), the flatness measurements the `flatter` claim reads (sharpness) and the scoring of
# generation tasks (evaluation: HumanEval sampling, the judge).
REGIME_KEYS = ("seeds", "data_seed", "backbone_seed", "numerics", "threads", "backbones", "tasks", "training",
               "methods", "sharpness", "evaluation", "resources")
# What does not, and why (written into the registration beside REGIME_KEYS).
NOT_REGIME = {
    "claims": "registered on its own (claims.comparisons), with the claims file",
    "tables": "which runs a table shows; a claim reads its own comparisons",
    "figures": "drawings of the runs",
    "jobs": "how runs are split into jobs; a run's result does not depend on it",
    "checkpoint_every": "resume states; a resumed run is bit-identical",
    "warm_start": "how a job process starts",
    "mlflow": "tracking only",
    "audit": "checks of finished outputs",
    "standalone": "how the config files merge (the merged config is what is registered)",
}
# Resource keys that decide where and how long a job runs, never what it computes (dropped from the
# regime's `resources` and each task's `resources`; gpu and gpu_model stay: the device changes floats).
EXECUTION_ONLY = ("mem_mb", "runtime", "slurm_partition")

# The analysis is pinned by what it outputs: results/claims.json without prose (statements, notes,
# sources: wording is not behaviour), floats to 12 significant digits (a reordered sum is no deviation).
ANALYSIS_FILE = Path("results") / "claims.json"
ANALYSIS_VOLATILE = ("note", "statement", "source")
DIGITS = 12

# Changes to the regime made before this registration existed, as the git history shows them
# (documentation, not hashes; `git show --stat <commit>`).
HISTORY = [
    {"commit": "d4e228a", "date": "2026-11-30",
     "keys": ["seeds", "tasks (sizes, train_label_noise, the task set)", "training (epochs)"],
     "change": "the default regime redesigned: 20 paired seeds, small training splits with 20% of their labels "
               "flipped, new epochs and tasks, claims as data",
     "reason": "a regime chosen for power (LoRA-only pilots)",
     "seen_before": "the previous default's Flat-LoRA results had been committed and shown"},
    {"commit": "2311f19", "date": "2026-11-30",
     "keys": ["training.nlu.epochs (8 -> 6)", "sharpness.detail_seeds ([0, 1, 2] -> [0])"],
     "change": "nlu epochs 8 -> 6; flatness details (Hessian, landscape) for seed 0 only",
     "reason": "time budget (the drafted regime ran 576 s before pip)",
     "seen_before": "one full run of the drafted regime, Flat-LoRA included"},
]


class RegistrationError(ValueError):
    """A registration cannot be written or read; the message says why."""


# --------------------------------------------------------------------------- canonical values and hashes


def _canonical(value):
    """Plain JSON data (tuples as lists, keys as strings), so equal configs hash equally."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _strip_execution(resources: dict | None) -> dict:
    """Resources without EXECUTION_ONLY keys, gpu 0 (the default) and what is left empty: absent and
    {mem_mb: ...} register alike."""
    if not isinstance(resources, dict):
        return {}
    out = {}
    for key, value in resources.items():
        if isinstance(value, dict):  # per rule
            value = _strip_execution(value)
            if value:
                out[key] = value
        elif key not in EXECUTION_ONLY and not (key == "gpu" and value == 0):  # a rule's or a task's own keys
            out[key] = value
    return out


def regime(config: dict) -> dict:
    """The run-deciding part of a (schema-filled) config: REGIME_KEYS, execution-only resources left out,
    backbone_seed as the runs use it (data_seed's value where absent)."""
    out = {key: copy.deepcopy(config[key]) for key in REGIME_KEYS if key in config}
    out["backbone_seed"] = config.get("backbone_seed", config.get("data_seed"))
    if _strip_execution(out.pop("resources", None)):
        out["resources"] = _strip_execution(config["resources"])
    for task in (out.get("tasks") or {}).values():
        if isinstance(task, dict) and "resources" in task:
            kept = _strip_execution(task.pop("resources"))
            if kept:
                task["resources"] = kept
    return _canonical(out)


def claims_file(config: dict, root: Path) -> Path | None:
    reference = (config.get("claims") or {}).get("reference")
    return None if reference is None else Path(root) / reference


def claims_values(config: dict, root: Path) -> dict:
    """{"file": the claims file's parsed content (comments are not claims), "comparisons": the config's
    `claims:` section}."""
    path = claims_file(config, root)
    content = None
    if path is not None:
        if not path.is_file():
            raise RegistrationError(f"claims file not found: {path} (config key 'claims.reference')")
        content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return _canonical({"file": content, "comparisons": config.get("claims")})


def differences(old, new, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ (dicts recursed, anything else compared whole)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            a, b = old.get(key), new.get(key)
            if (key in old) == (key in new) or isinstance(a, dict) or isinstance(b, dict):
                inner = differences(a if key in old else {}, b if key in new else {}, path)  # a new dict: its leaves
                out += inner or ([path] if (key in old) != (key in new) else [])  # `flat: {}` turns Flat on
            else:
                out.append(path)
        return out
    return [] if old == new else [prefix or "<all>"]


# --------------------------------------------------------------------------- the analysis, by behaviour


def _rounded(value):
    if isinstance(value, float):
        return value if not math.isfinite(value) or value == 0 else float(f"{value:.{DIGITS}g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items() if k not in ANALYSIS_VOLATILE}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _run_paths(claims_output) -> list[str]:
    paths: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "runs" and isinstance(value, list):
                    paths.update(v for v in value if isinstance(v, str))
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(claims_output)
    return sorted(paths)


def _record_hash(path: Path) -> str | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    volatile = records.SHARPNESS_VOLATILE if path.name.endswith(".sharpness.json") else records.VOLATILE
    return sha256_json(records.stable(data, volatile))


def analysis(root: Path = Path(".")) -> dict | None:
    """The analysis pinned by its behaviour: the hash of results/claims.json (prose and float noise left out)
    and the hash of the run records it read (without their volatile keys). None without a claims.json.

    Same inputs and another output: the analysis changed. Other inputs: new runs, nothing to compare."""
    path = Path(root) / ANALYSIS_FILE
    if not path.is_file():
        return None
    output = json.loads(path.read_text(encoding="utf-8"))
    runs = _run_paths(output)
    inputs = {run: _record_hash(Path(root) / run) for run in runs}
    return {"file": ANALYSIS_FILE.as_posix(), "sha256": sha256_json(_rounded(output)), "inputs_sha256": sha256_json(inputs),
            "runs": len(runs), "left_out": list(ANALYSIS_VOLATILE), "float_digits": DIGITS}


# --------------------------------------------------------------------------- the registration file


def _today() -> str:
    return datetime.datetime.now(datetime.timezone.utc).date().isoformat()


def _pins(config: dict, root: Path) -> dict:
    values = regime(config)
    claims = claims_values(config, root)
    file = claims_file(config, root)
    return {
        "regime": {"keys": list(REGIME_KEYS), "not_regime": NOT_REGIME, "execution_only_resources": list(EXECUTION_ONLY),
                   "sha256": sha256_json(values), "values": values},
        "claims": {"file": None if file is None else Path(config["claims"]["reference"]).as_posix(),
                   "file_sha256": sha256_json(claims["file"]), "comparisons_sha256": sha256_json(claims["comparisons"]),
                   "values": claims},
        "analysis": analysis(root),
    }


def build(config: dict, root: Path = Path("."), date: str | None = None, history: list | None = None) -> dict:
    """A first registration of `config`: its pins, the date, the pre-registration history, no deviations."""
    return {"format": FORMAT, "registered": date or _today(), **_pins(config, root),
            "history": copy.deepcopy(HISTORY if history is None else history), "deviations": []}


def load(root: Path = Path("."), path: Path = PATH) -> dict | None:
    """The registration (None where there is none)."""
    path = Path(root) / path
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RegistrationError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise RegistrationError(f"{path}: not a registration of format {FORMAT}")
    return data


def changed_keys(registration: dict, config: dict, root: Path = Path(".")) -> list[str]:
    """The keys where `config` (and its claims file) differ from the registered values: regime keys as
    they are (`training.nlu.epochs`), the claims file's as `claims file: <claim>.<key>`, the config's
    claims section as `claims.<key>`."""
    values = regime(config)
    claims = claims_values(config, root)
    out = differences(registration["regime"]["values"], values)
    out += [f"claims file: {k}" for k in differences(registration["claims"]["values"]["file"], claims["file"])]
    out += [f"claims.{k}" if k != "<all>" else "claims" for k in
            differences(registration["claims"]["values"]["comparisons"], claims["comparisons"])]
    return out


def analysis_changed(registration: dict, root: Path = Path(".")) -> bool | None:
    """True: the same run records now give other claims output (the analysis changed); False: the same output;
    None: not comparable (no claims.json, or other runs than at registration)."""
    pinned, now = registration.get("analysis"), analysis(root)
    if not pinned or not now or pinned["inputs_sha256"] != now["inputs_sha256"]:
        return None
    return pinned["sha256"] != now["sha256"]


def update(registration: dict | None, config: dict, root: Path = Path("."), reason: str | None = None,
           date: str | None = None, commit: str | None = None) -> tuple[dict, dict | None]:
    """(the registration to write, the deviation recorded or None).

    No registration: a first one. Regime or claims changed, or the analysis gives other output on the same
    runs: a deviation (`reason` required) and the new pins registered. Otherwise the pins are refreshed
    (an analysis pin moves with new runs; that is no deviation). `commit` fills in every deviation whose
    commit is not yet known."""
    if registration is None:
        return build(config, root, date), None
    out = copy.deepcopy(registration)
    keys = changed_keys(registration, config, root)
    if analysis_changed(registration, root):
        keys.append(f"analysis ({ANALYSIS_FILE.as_posix()} differs on the same run records)")
    deviation = None
    if keys:
        if not (reason and reason.strip()):
            raise RegistrationError("the config differs from the registration in " + ", ".join(keys)
                                    + "; a deviation needs its reason (--reason TEXT)")
        deviation = {"date": date or _today(), "keys": keys, "reason": reason.strip(), "commit": None,
                     "regime_sha256": {"before": registration["regime"]["sha256"], "after": sha256_json(regime(config))}}
        out["deviations"].append(deviation)
    out.update(_pins(config, root))
    if commit:
        for entry in out["deviations"]:
            if entry.get("commit") is None:
                entry["commit"] = commit
    return out, deviation


def write(registration: dict, root: Path = Path("."), path: Path = PATH) -> Path:
    return atomic.write_text(Path(root) / path, json.dumps(registration, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def check(config: dict, root: Path = Path("."), path: Path = PATH) -> list[str]:
    """What differs from the registration without a recorded deviation (empty: it matches)."""
    registration = load(root, path)
    if registration is None:
        return [f"no registration: {Path(root) / path} (lorarepro register --write)"]
    problems = [f"{key}: differs from the registration of {registration['registered']} with no deviation recorded"
                for key in changed_keys(registration, config, root)]
    if analysis_changed(registration, root):
        problems.append(f"analysis: {ANALYSIS_FILE.as_posix()} differs from the registered output on the same run records")
    return problems


# --------------------------------------------------------------------------- for the claims report


def status(config: dict, root: Path = Path("."), path: Path = PATH, analysis: bool = True) -> dict:
    """{registered, path, date, matches, differs (keys), analysis (True: same output on the same runs; False:
    changed; None: not comparable or not asked: `analysis=False`, as the claims report that writes that
    output asks), deviations, history} for the claims report."""
    registration = load(root, path)
    if registration is None:
        return {"registered": False, "path": Path(path).as_posix(), "date": None, "matches": False, "differs": [],
                "analysis": None, "deviations": [], "history": list(HISTORY)}
    differs = changed_keys(registration, config, root)
    changed = analysis_changed(registration, root) if analysis else None
    return {"registered": True, "path": Path(path).as_posix(), "date": registration["registered"],
            "matches": not differs and not changed, "differs": differs,
            "analysis": None if changed is None else not changed,
            "deviations": registration.get("deviations", []), "history": registration.get("history", [])}


def markdown(status: dict) -> str:
    """The claims report's registration section: the date, whether the results' config matches, every
    deviation (date, keys, reason, commit) and the changes made before the registration."""
    lines = ["## Registration", ""]
    if not status["registered"]:
        lines += [f"No registration ({status['path']}): the regime these verdicts come from was not registered.", ""]
    else:
        match = ("the config matches it" if status["matches"] else
                 "**the config differs from it without a recorded deviation**: " + ", ".join(status["differs"] or ["analysis"]))
        lines += [f"Registered {status['date']} ({status['path']}); {match}."]
        if status.get("analysis") is not None:
            lines += ["The analysis gives the registered output on the registered runs." if status["analysis"] else
                      "The analysis gives other output on the registered runs."]
        lines += [""]
        if status["deviations"]:
            lines += ["Deviations after registration:", ""]
            for d in status["deviations"]:
                commit = f", commit {d['commit']}" if d.get("commit") else ""
                lines.append(f"- {d['date']}{commit}: {', '.join(d['keys'])}. Reason: {d['reason']}")
            lines += [""]
        else:
            lines += ["No deviation after registration.", ""]
    if status.get("history"):
        lines += ["Changes before registration (git history):", ""]
        for h in status["history"]:
            lines.append(f"- {h['date']}, commit {h['commit']}: {h['change']}, after {h['seen_before']}. "
                         f"Reason: {h['reason']}")
        lines += [""]
    return "\n".join(lines)
