"""Shared helpers of the data families: the generator registry, seeding, splitting, and files.

Every write is atomic (lorarepro.core.atomic: temp file in the same directory, then a rename) so an interrupted
pipeline never leaves a half-written file that a later rule would trust, and parquet bytes are a
pure function of the data so the sha256 fingerprints in the manifests are stable across runs.
"""

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lorarepro.core import atomic
from lorarepro.core.hashing import sha256_file
from lorarepro.core.registry import Registry

SPLITS = ("train", "validation", "test")

# name -> fn(task, task_cfg, data_seed) -> (splits, meta); each data module registers its own
GENERATORS = Registry("data generator")
# How many examples (all splits together) a generator can give one task at a data_seed, for the
# generators drawing from a finite source; checked when the DAG is built, before any job deletes data.
CAPACITY = Registry("generator capacity")


def get_generator(task: str, generator: str) -> Callable:
    if generator not in GENERATORS:
        raise ValueError(f"task {task!r}: unknown data generator {generator!r}; known: {', '.join(sorted(GENERATORS))}")
    return GENERATORS[generator]


def rng_for(data_seed: int, *keys: object) -> np.random.Generator:
    """A generator seeded from data_seed and names; sha256 (not hash()) keeps it stable."""
    text = "|".join([str(int(data_seed)), *(str(k) for k in keys)])
    digest = hashlib.sha256(text.encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def stable_bucket(text: str, buckets: int) -> int:
    """Seed-independent bucket of a string: used to keep pretext and task sentences apart."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") % buckets


def split_sizes(task: str, task_cfg: dict) -> dict[str, int]:
    sizes = task_cfg.get("sizes") or {}
    missing = [s for s in SPLITS if s not in sizes]
    if missing:
        raise ValueError(f"task {task!r}: sizes must give {list(SPLITS)}, missing {missing}")
    out = {s: int(sizes[s]) for s in SPLITS}
    if any(n < 0 for n in out.values()) or out["train"] == 0:
        raise ValueError(f"task {task!r}: split sizes must be >= 0 and train > 0, got {out}")
    return out


def sample_unique(task: str, rng: np.random.Generator, make: Callable, key: str, n: int) -> list:
    """Draw rows from `make(rng)` until n distinct values of row[key]; None rows are rejected."""
    rows, seen = [], set()
    for _ in range(50 * n + 1000):
        if len(rows) == n:
            return rows
        row = make(rng)
        if row is None or row[key] in seen:
            continue
        seen.add(row[key])
        rows.append(row)
    if len(rows) == n:
        return rows
    raise ValueError(f"task {task!r}: could only draw {len(rows)} distinct examples of {n} asked")


def cut_splits(rows: list[dict], sizes: dict[str, int]) -> dict[str, pd.DataFrame]:
    """Consecutive slices of already-shuffled distinct rows, so splits are disjoint."""
    out, start = {}, 0
    for split in SPLITS:
        out[split] = pd.DataFrame(rows[start : start + sizes[split]])
        start += sizes[split]
    return out


def flip_labels(rng: np.random.Generator, labels: np.ndarray, num_labels: int, rate: float):
    """Replace a `rate` fraction of labels by a different random label (a known noise ceiling)."""
    labels = np.asarray(labels, dtype=np.int64).copy()
    flip = rng.random(len(labels)) < rate
    shift = rng.integers(1, num_labels, size=len(labels))
    labels[flip] = (labels[flip] + shift[flip]) % num_labels
    return labels


def noisy_train_split(task: str, task_cfg: dict, data_seed: int, splits: dict, num_labels: int) -> dict:
    """`train_label_noise`: that fraction of the training split's labels flipped to another label, from
    a stream of its own (validation and test stay clean, so the noise hurts learning, not scoring).
    Returns what the manifest records ({} when the task has none)."""
    rate = float(task_cfg.get("train_label_noise", 0.0))
    if not rate:
        return {}
    train = splits["train"]
    labels = flip_labels(rng_for(data_seed, task, "train_label_noise"), train["label"].to_numpy(), num_labels, rate)
    splits["train"] = train.assign(label=labels)
    return {"train_label_noise": rate}


def fingerprint(split_hashes: Iterable[str]) -> str:
    """One hash of a whole prepared dataset: sha256 over its sorted split hashes."""
    return hashlib.sha256("\n".join(sorted(split_hashes)).encode()).hexdigest()


def write_parquet(df: pd.DataFrame, path: Path) -> str:
    """Write df atomically and return the sha256 of the bytes written."""
    table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)

    def write(tmp: Path) -> str:
        pq.write_table(table, tmp, compression="zstd")
        return sha256_file(tmp)

    return atomic.write_with(path, write)


def write_json(obj: dict, path: Path) -> None:
    atomic.write_json(path, obj)


def write_dataset(out_dir: Path, splits: dict[str, pd.DataFrame], header: dict) -> dict:
    """Write every split, then the manifest LAST so its presence means the directory is complete."""
    out_dir = Path(out_dir)
    entries = {}
    for split, df in splits.items():
        name = f"{split}.parquet"
        digest = write_parquet(df, out_dir / name)
        entries[split] = {"file": name, "rows": int(len(df)), "sha256": digest}
    manifest = {**header, "splits": entries}
    manifest["sha256"] = fingerprint(e["sha256"] for e in entries.values())
    write_json(manifest, out_dir / "manifest.json")
    return manifest


def load_split(task_dir: Path, split: str) -> pd.DataFrame:
    path = Path(task_dir) / f"{split}.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"prepared split file not found: {path}")
    try:
        return pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"cannot read parquet file {path}: {err}") from err


def load_manifest(task_dir: Path) -> dict:
    path = Path(task_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot parse manifest {path}: {err}") from err


def verify_dataset(task_dir: Path) -> dict:
    """The manifest, once every split it lists is present with the recorded sha256: a training job
    checks this first, so a missing or corrupt file fails at start-up, naming the file."""
    manifest = load_manifest(task_dir)
    for split, entry in manifest["splits"].items():
        path = Path(task_dir) / entry["file"]
        if not path.is_file():
            raise FileNotFoundError(f"prepared split file not found: {path} (listed in {Path(task_dir) / 'manifest.json'})")
        if sha256_file(path) != entry["sha256"]:
            raise ValueError(f"{path}: content differs from the sha256 in its manifest (corrupt or modified): restore "
                             f"it (`dvc checkout {task_dir}`), or delete {task_dir} to prepare it again (which "
                             "retrains its runs)")
    return manifest
