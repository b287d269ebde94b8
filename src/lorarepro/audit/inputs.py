"""Every file the audit reads is checked for type and form before it is used.

Type: a regular file (a symlink counts as what it points to). Opening a FIFO blocks until a writer
comes, a device may never end and a socket cannot be read at all: the audit never opens one, and
never lets DVC or a hash open one either (`special_files` finds them under a tree first). Form: JSON
that parses to the expected type, text that decodes. A bad file is a `BadInput` whose message is
one line naming the file; the audit turns it into a failure record, never a traceback.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path


class BadInput(ValueError):
    """A file the audit needs is missing, not a regular file, or malformed; str() is one line naming it."""

    def __init__(self, path, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}")


def kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def problem(path) -> str | None:
    """Why `path` cannot be read as a file (None when it is a regular file); never opens it."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing" if not os.path.islink(path) else "a broken symlink"
    except OSError as err:
        return f"cannot be examined ({err.strerror})"
    return None if stat.S_ISREG(mode) else f"{kind(mode)}, not a regular file"


def require(path) -> Path:
    """`path`, once it is known to be a regular file; else BadInput."""
    why = problem(path)
    if why is not None:
        raise BadInput(path, why)
    return Path(path)


def read_text(path) -> str:
    require(path)
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise BadInput(path, f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise BadInput(path, f"cannot be read ({err.strerror})") from None


def read_json(path, expect: type = dict):
    """The parsed JSON of a regular file, of type `expect`; else BadInput."""
    text = read_text(path)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise BadInput(path, f"not valid JSON ({err.msg}, line {err.lineno} column {err.colno})") from None
    if not isinstance(value, expect):
        raise BadInput(path, f"JSON {type(value).__name__}, expected {expect.__name__}")
    return value


def special_files(*roots) -> dict[Path, str]:
    """{path: what it is} of everything under these trees (or these files) that is neither a regular
    file nor a directory (a symlink: what it points to; a broken one too). Nothing is opened."""
    found: dict[Path, str] = {}
    for root in map(Path, roots):
        if not os.path.lexists(root):
            continue
        if not os.path.isdir(root):
            if (why := problem(root)) is not None:
                found[root] = why
            continue
        for folder, dirs, files in os.walk(root):
            for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
                path = Path(folder) / name
                why = problem(path)
                if why is not None and not why.startswith("a directory"):
                    found[path] = why
    return found
