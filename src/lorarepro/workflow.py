"""Helpers for the Snakemake script adapters in workflow/scripts/ (kept to a few lines each)."""

import contextlib
import sys
from pathlib import Path


@contextlib.contextmanager
def logged(log_path: str):
    """Send the job's stdout/stderr (progress bars included) to its log file; errors go to both."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            yield
        except BaseException as exc:
            print(f"ERROR: {type(exc).__name__}: {exc}", file=log, flush=True)
            print(f"ERROR ({log_path}): {type(exc).__name__}: {exc}", file=sys.__stderr__, flush=True)
            raise


def job_tags(smk) -> dict:
    """The Snakemake job behind a tracked run: its rule and wildcards (the script object has no job id)."""
    wildcards = ",".join(f"{k}={v}" for k, v in smk.wildcards.items())
    return {"rule": smk.rule, "job": f"{smk.rule}[{wildcards}]"}
