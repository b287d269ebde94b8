"""A prepared working directory (data + pretrained tiny backbones) for tests that train.

Built once per session from the reduced config; tests chdir into it because every path in
lorarepro is relative to the working directory.
"""

import shutil
from pathlib import Path

from lorarepro import paths
from lorarepro.backbone import build
from lorarepro.families import of_arch
from lorarepro.data import prepare_pretext, prepare_task


def prepare(root: Path, config: dict) -> None:
    import os

    old = os.getcwd()
    os.chdir(root)
    try:
        for name, task in config["tasks"].items():
            prepare_task(name, task, config["data_seed"], paths.prepared_dir(name))
        for name, bb in config["backbones"].items():
            prepare_pretext(of_arch(bb["arch"]), config["data_seed"], bb["pretrain"]["examples"], paths.pretext_dir(name))
            build(name, config)
    finally:
        os.chdir(old)


REPO = Path(__file__).resolve().parents[1]
WORKFLOW = ("Snakefile", "params.yaml", "workflow")


def copy_repo(root: Path, items=WORKFLOW) -> Path:
    """The repository's `items` (files or directories, no bytecode) copied into `root`, plus the
    top-level `profiles` link as in the repository, so Snakemake runs there as a user runs it."""
    for item in items:
        src, dst = REPO / item, root / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dst)
    (root / "profiles").symlink_to("workflow/profiles")
    return root
