"""Audit check against DVC: the outputs DVC recorded in dvc.lock (data/prepared, models, checkpoints,
…) equal what is on disk, file by file where DVC knows the files, through DVC's own `data_status`.

Policy. No dvc.yaml: skipped (this checkout is not a DVC project). No dvc.lock: warn, "DVC has not
recorded these outputs: run `dvc commit`". A run whose files differ from dvc.lock fails when its
result JSON disagrees with the content too (tampering, or a partial restore), and warns when the
result JSON agrees with the content: the outputs were regenerated after the last `dvc commit`
(e.g. after changing params.yaml). The default pipeline is deterministic, so on a fresh clone its
checkpoints equal the committed dvc.lock and this check passes.

Scope. dvc.yaml's stage is the embedded default's pipeline, so only the default's audit warns about
every changed output. Another config's audit judges its own runs (a config merged over params.yaml
writes them where DVC tracks the default's) and says once, as information, how many tracked outputs
changed that none of its runs made; a standalone config's outputs (outputs/<config id>/) are outside
every DVC output: one information record says that DVC was not checked for it.
"""

from __future__ import annotations

from pathlib import Path

from lorarepro.core import paths
from lorarepro.audit.report import record

COMMIT = "record the regenerated outputs: `dvc commit` (then commit dvc.lock)"
SNAKEMAKE_TIMESTAMP = ".snakemake_timestamp"  # Snakemake's marker in every directory output


def check(runs: list, consistent: set[str], config_id: str = "", root: str | Path = ".") -> list[dict]:
    """`consistent`: result JSON paths whose recorded hashes equal the current content; `config_id`:
    the audited config's (paths.config_id: "" is the embedded default)."""
    root = Path(root)
    if not (root / "dvc.yaml").is_file():
        return [record("dvc", "skip", "dvc.yaml", "not a DVC project: outputs are verified by content hash only",
                       "`dvc init` and add dvc.yaml to version data, backbones and checkpoints")]
    if paths.root() != Path("."):
        return [record("dvc", "info", "dvc.yaml", f"DVC tracks the default's outputs (params.yaml); this standalone "
                       f"config's are under {paths.root()}/, so DVC was not checked for it")]
    if not (root / "dvc.lock").is_file():
        return [record("dvc", "warn", "dvc.lock", "DVC has not recorded these outputs", COMMIT)]
    try:
        changed = _changed(root)
    except Exception as err:  # DVC raises many types; the audit must still write its report
        return [record("dvc", "fail", "dvc.lock", f"DVC could not compute its status: {type(err).__name__}: {err}",
                       "run `dvc status` and fix what it reports")]
    out, claimed = [], set()
    for run in runs:
        dirs = [paths.prepared_dir(run.task), paths.backbone_dir(run.result["backbone"]), run.checkpoint]
        mine = {p: k for p, k in changed.items() if any(_under(p, d) for d in dirs)}
        claimed |= mine.keys()
        if not mine:
            out.append(record("dvc", "pass", run.path, "data, backbone and checkpoint as dvc.lock recorded"))
            continue
        detail = "changed since dvc.lock: " + "; ".join(f"{p} {k}" for p, k in sorted(mine.items())[:4])
        if str(run.path) in consistent:
            out.append(record("dvc", "warn", run.path, detail + " (the result JSON agrees with the content)", COMMIT))
        else:
            out.append(record("dvc", "fail", run.path, detail + " (and the result JSON disagrees)",
                              "restore the recorded outputs: `dvc checkout` (or `dvc pull`)"))
    rest = {p: k for p, k in changed.items() if p not in claimed}
    if config_id and rest:  # the default's outputs (or a third config's): their own config's audit judges them
        first = "; ".join(f"{p} {k}" for p, k in sorted(rest.items())[:4])
        return out + [record("dvc", "info", "dvc.lock", f"{len(rest)} DVC-tracked output(s) changed that no run of "
                             f"this config made, not judged for it (the audit of the config that made them does): {first}")]
    for path, kind in sorted(rest.items()):
        out.append(record("dvc", "warn", path, f"{kind} since dvc.lock (no run's artifact)", COMMIT))
    return out


def _changed(root: Path) -> dict[str, str]:
    """{path: modified|added|deleted} of uncommitted outputs; per file when DVC has the directory
    manifest (.dvc/cache/files/md5/xx/….dir), else per output directory (path ending in /).

    Left out: DVC's `unknown` (a fresh clone's cache lacks the manifest, so DVC cannot tell a file's
    state; the output directory as a whole is still compared and reported), Snakemake's
    `.snakemake_timestamp` files (its bookkeeping of directory outputs, not results) and a directory
    whose changed files DVC lists (each is reported on its own)."""
    from dvc.repo import Repo  # deferred: DVC's import takes ~1 s and only this check needs it

    # no_scm: the audit needs the workspace-vs-dvc.lock comparison only, and works outside git too
    with Repo(str(root), config={"core": {"no_scm": True}}) as repo:
        status = repo.data_status(granular=True, untracked_files="no")
    known = {path: kind for kind, items in (status.get("uncommitted") or {}).items() if kind != "unknown" for path in items}
    return {path: kind for path, kind in known.items() if Path(path).name != SNAKEMAKE_TIMESTAMP
            and not (path.endswith("/") and any(other != path and other.startswith(path) for other in known))}


def _under(path: str, directory: Path) -> bool:
    return path.rstrip("/") == str(directory) or path.startswith(str(directory) + "/")
