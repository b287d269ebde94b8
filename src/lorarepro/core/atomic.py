"""Atomic writes: a reader (Snakemake, DVC, a person) never sees a half-written file as finished.

Every output is written to a hidden temporary sibling and renamed into place; if writing fails
(disk full, permission denied, ...) the temporary is removed, an older complete version stays
untouched, and the error is an OutputError that names the output and the reason.
"""

import contextlib
import errno
import json
import os
import shutil
import uuid
from pathlib import Path

# Errors that mean "this output cannot be written here"; others (a bug, a missing input) pass through.
_REASONS = {
    errno.ENOSPC: "disk full (no space left on device)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
}


class OutputError(OSError):
    """An output could not be written; the message names it and why, and no partial file is left."""


def _output_error(path: Path, exc: OSError) -> OutputError:
    reason = _REASONS.get(exc.errno, exc.strerror or str(exc))
    return OutputError(exc.errno, f"cannot write {path}: {reason} (no partial output was left)")


def _is_write_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and not isinstance(exc, OutputError) and exc.errno in _REASONS


def temp_sibling(path: Path) -> Path:
    """A unique name in the target's directory (same suffix), so os.replace is an atomic rename."""
    path = Path(path)
    return path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")


def write_with(path: Path, write):
    """Call `write(tmp)` to fill a temporary sibling of `path`, then rename it into place.

    Returns what `write` returns. On failure the temporary is removed; write errors become OutputError.
    """
    path = Path(path)
    tmp = temp_sibling(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        result = write(tmp)
        os.replace(tmp, path)
        return result
    except OSError as exc:
        if _is_write_error(exc):
            raise _output_error(path, exc) from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _write_synced(tmp: Path, text: str) -> None:
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def write_text(path: Path, text: str) -> Path:
    write_with(path, lambda tmp: _write_synced(tmp, text))
    return Path(path)


def write_json(path: Path, data) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def atomic_dir(final: Path):
    """Yield a fresh temporary directory; when the block succeeds it replaces `final` in one rename.

    If the block or the move fails, the temporary directory is removed and `final` is left as it was.
    """
    final = Path(final)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.mkdir(parents=True)
        yield tmp
        replace_dir(tmp, final)
    except OSError as exc:
        if _is_write_error(exc):
            raise _output_error(final, exc) from exc
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
