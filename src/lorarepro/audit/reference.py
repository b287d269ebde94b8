"""The committed reference: what the committed results were made from and what they are, so a fresh
run has something to be held against that it never overwrites (dvc.lock holds only directory
hashes, which a fresh clone cannot break down).

results/reference.json holds the numerics fingerprint the results were made under (and, as
information, the CPU), the content hash of each prepared dataset and backbone with a hash of the
config that decides it, and a canonical hash of every deterministic file under results/: a run
record or flatness record without its volatile keys (lorarepro.domain.records), any other file byte for
byte. Files of measured time are exempt by name (EXEMPT), and so is the reference itself.

    lorarepro reference --write    after regenerating results/ (then commit both)
    lorarepro reference --check    exit 1, listing each file, when results/ differs from it (CI)

The audit (`check`) holds data and backbones against it: a difference under an unchanged config
and an equal fingerprint fails, naming the likely cause; under another fingerprint it says which
settings differ instead (exactness is promised only between equal fingerprints).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from pathlib import Path

from lorarepro.core import numerics, paths
from lorarepro.domain import records
from lorarepro.core.atomic import write_json
from lorarepro.audit.report import record
from lorarepro.core.config import backbone_seed

REFERENCE = Path("results/reference.json")
# Measured costs: times and memory (paths.measured_outputs), the reference itself, and what git never holds.
EXEMPT = (*paths.measured_outputs(), str(REFERENCE), "results/report.html", "results/audit/*", "results/report/*")


def exempt(relpath: str) -> bool:
    return any(fnmatch.fnmatch(relpath, pattern) for pattern in EXEMPT)


def canonical_sha256(path: Path) -> str:
    """A file's hash as results compare: run and flatness records without their volatile keys."""
    if path.suffix == ".json" and path.parent.parent.parent.name == "runs":
        record_ = json.loads(path.read_text(encoding="utf-8"))
        volatile = records.SHARPNESS_VOLATILE if path.name.endswith(".sharpness.json") else records.VOLATILE
        data = json.dumps(records.stable(record_, volatile), sort_keys=True).encode()
    else:
        data = path.read_bytes()
    return hashlib.sha256(data).hexdigest()


def result_hashes(root: Path = Path(".")) -> dict[str, str]:
    """{relative path: canonical hash} of every deterministic file under root/results."""
    out = {}
    for path in sorted((root / "results").rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not exempt(rel):
            out[rel] = canonical_sha256(path)
    return out


def _config_sha(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def data_config(config: dict, task: str) -> str:
    return _config_sha(config["tasks"][task], config["data_seed"])


def backbone_config(config: dict, name: str) -> str:
    return _config_sha(config["backbones"][name], backbone_seed(config), config["data_seed"])


def _fingerprint_of_runs(root: Path) -> dict | None:
    """The numerics fingerprint the run records share (a mix is an error: one reference, one fingerprint)."""
    seen = {}
    for path in sorted((root / "results" / "runs").rglob("seed*.json")):
        if not path.name.endswith(".sharpness.json"):
            fp = (json.loads(path.read_text(encoding="utf-8")).get("lineage") or {}).get("numerics")
            seen[json.dumps(fp, sort_keys=True)] = (fp, path)
    if len(seen) > 1:
        (a, pa), (b, pb) = list(seen.values())[:2]
        raise ValueError(f"run records made under different numerics ({pa}, {pb}): {numerics.differences(a, b)}")
    return next(iter(seen.values()))[0] if seen else None


def build(config: dict, root: Path = Path(".")) -> dict:
    """The reference of the finished pipeline in `root`."""
    data = {task: {"sha256": json.loads((root / paths.prepared_dir(task) / "manifest.json").read_text())["sha256"],
                   "config_sha256": data_config(config, task)}
            for task in sorted(config["tasks"]) if (root / paths.prepared_dir(task) / "manifest.json").is_file()}
    backbones = {}
    for name in sorted(config["backbones"]):
        marker = root / paths.backbone_dir(name) / paths.BACKBONE_MARKER
        if marker.is_file():
            info = json.loads(marker.read_text())
            backbones[name] = {"sha256": info["sha256"], "config_sha256": backbone_config(config, name),
                               "cpu_model": info.get("cpu_model")}
    return {"numerics": _fingerprint_of_runs(root), "cpu_model": numerics.cpu_model(), "exempt": list(EXEMPT),
            "data": data, "backbones": backbones, "results": result_hashes(root)}


def write(config: dict, root: Path = Path(".")) -> Path:
    return write_json(root / REFERENCE, build(config, root))


def load(root: Path = Path(".")) -> dict | None:
    path = root / REFERENCE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def compare_results(reference: dict, root: Path = Path(".")) -> list[str]:
    """Each deterministic results file that differs from the reference, is missing or is new."""
    now, then = result_hashes(root), reference["results"]
    return ([f"differs: {p}" for p in sorted(now.keys() & then.keys()) if now[p] != then[p]]
            + [f"missing: {p}" for p in sorted(then.keys() - now.keys())]
            + [f"not in the reference: {p}" for p in sorted(now.keys() - then.keys())])


def _cause(reference: dict, current: dict | None, cpu: str | None) -> tuple[str, bool]:
    """Why content may differ, and whether an exact match was promised (equal fingerprints)."""
    differ = numerics.differences(reference.get("numerics"), current)
    if differ:
        return f"numerics differ from the reference's ({'; '.join(differ)})", False
    mode = (current or {}).get("mode")
    if mode == "portable":
        return (f"same portable numerics fingerprint, so the pinning did not hold on this CPU ({numerics.cpu_model()} vs "
                f"the reference's {cpu}) or a pinned package differs"), True
    return f"native numerics: exact only on the reference's CPU model ({cpu}; this one: {numerics.cpu_model()})", True


def check(config: dict, current: dict | None) -> list[dict]:
    """Data and backbones of the running config against the committed reference (`current`: this
    run's numerics fingerprint, e.g. of its run records). Only entries whose config is unchanged compare."""
    reference = load()
    if reference is None:
        return [record("reference", "info", REFERENCE, "no committed reference: nothing to hold a fresh run against",
                       "after regenerating the results: lorarepro reference --write")]
    out = []
    items = [("data", task, paths.prepared_dir(task), data_config(config, task)) for task in sorted(config["tasks"])]
    items += [("backbones", name, paths.backbone_dir(name), backbone_config(config, name)) for name in sorted(config["backbones"])]
    for kind, name, where, config_sha in items:
        then = reference.get(kind, {}).get(name)
        now = _content_sha(kind, where)
        if then is None or now is None or then["config_sha256"] != config_sha:
            continue  # not in the reference, not built here, or its config changed: nothing to compare
        if now == then["sha256"]:
            out.append(record("reference", "pass", where, f"identical to the committed reference ({now[:12]}…)"))
            continue
        cause, promised = _cause(reference, current, then.get("cpu_model") or reference.get("cpu_model"))
        detail = (f"differs from the committed reference ({REFERENCE}: {then['sha256'][:12]}… → {now[:12]}…) "
                  f"although its config is unchanged; likely cause: {cause}")
        out.append(record("reference", "fail" if promised else "warn", where, detail,
                          "run with `numerics: portable` (the default) and the pinned wheels (constraints.txt)"))
    return out


def _content_sha(kind: str, where: Path) -> str | None:
    marker = where / ("manifest.json" if kind == "data" else paths.BACKBONE_MARKER)
    return json.loads(marker.read_text(encoding="utf-8"))["sha256"] if marker.is_file() else None
