"""Atomic writes: a reader (Snakemake, DVC, a person) never sees a half-written file as finished."""

import json
import os
import shutil
import uuid
from pathlib import Path


def temp_sibling(path: Path) -> Path:
    """A unique name in the target's directory (same suffix), so os.replace is an atomic rename."""
    path = Path(path)
    return path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")


def write_text(path: Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(path: Path, data) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a fully written temporary directory into place, replacing any older version."""
    final = Path(final)
    if final.exists():
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
