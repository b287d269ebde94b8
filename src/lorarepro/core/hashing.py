"""Content hashes for lineage: files, directories (sorted relative paths + bytes), JSON values."""

import hashlib
import json
from pathlib import Path

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# Not content: our backbone marker (it holds the hash) and the empty file Snakemake adds to every
# directory() output after the job, which would otherwise change a checkpoint's hash after the fact.
NOT_CONTENT = ("lorarepro_backbone.json", ".snakemake_timestamp")


def sha256_json(value) -> str:
    """The hash of a value's canonical JSON (sorted keys, no whitespace; tuples as lists, other
    non-JSON values as their str), so equal settings hash equally."""
    plain = json.loads(json.dumps(value, sort_keys=True, default=str))  # keys as strings, then sorted as such
    text = json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_dir(path: Path, exclude: tuple[str, ...] = NOT_CONTENT) -> str:
    """One hash over every file under `path` (names and contents), independent of mtimes."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file() and p.name not in exclude):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()
