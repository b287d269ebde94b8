"""A prepared working directory (data + pretrained tiny backbones) for tests that train.

Built once per session from the reduced config; tests chdir into it because every path in
lorarepro is relative to the working directory.
"""

import os
import shutil
import subprocess
from pathlib import Path

from lorarepro.core import paths
from lorarepro.stages.backbone import build
from lorarepro.domain.families import of_arch
from lorarepro.domain.data import prepare_pretext, prepare_task


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


def user_env(src: bool = False) -> dict:
    """The environment of a command as a user runs it: no tracking or numerics settings inherited from
    the test process (conftest pins its own); with `src`, this checkout's package first on the path."""
    from lorarepro.core import numerics

    inherited = ("MLFLOW_TRACKING_URI", "LORAREPRO_MLFLOW_PARENT", numerics.MODE_ENV, *numerics.PORTABLE_ENV,
                 *numerics.THREAD_ENV)
    env = {k: v for k, v in os.environ.items() if k not in inherited}
    if src:
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    return env


def run_as_user(cwd: Path, *cmd: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`cmd` in `cwd` with `user_env(src=True)`, its output captured."""
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=user_env(src=True))
