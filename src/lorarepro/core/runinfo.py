"""What every result records about where it came from: package versions, git state, machine."""

import importlib.metadata
import platform
import resource
import subprocess
from pathlib import Path

PACKAGES = ("lorarepro", "torch", "transformers", "peft", "tokenizers", "safetensors", "numpy", "pandas",
            "scikit-learn", "mlflow", "snakemake", "dvc")


def versions() -> dict:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


# Outputs the pipeline itself rewrites: regenerating committed results must not count as dirty code.
NOT_CODE = (":(exclude)results", ":(exclude)dvc.lock")


def git_state(cwd: Path | None = None) -> dict:
    """Commit, and whether tracked code or config differ from it; nulls outside a git checkout."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", ".", *NOT_CODE))
    except (subprocess.CalledProcessError, FileNotFoundError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
