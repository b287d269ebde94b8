"""A prepared working directory (data + pretrained tiny backbones) for tests that train.

Built once per session from the reduced config; tests chdir into it because every path in
lorarepro is relative to the working directory.
"""

from pathlib import Path

from lorarepro import paths
from lorarepro.backbone import FAMILY_OF_ARCH, build
from lorarepro.data import prepare_pretext, prepare_task


def prepare(root: Path, config: dict) -> None:
    import os

    old = os.getcwd()
    os.chdir(root)
    try:
        for name, task in config["tasks"].items():
            prepare_task(name, task, config["data_seed"], paths.prepared_dir(name))
        for name, bb in config["backbones"].items():
            prepare_pretext(FAMILY_OF_ARCH[bb["arch"]], config["data_seed"], bb["pretrain"]["examples"], paths.pretext_dir(name))
            build(name, config)
    finally:
        os.chdir(old)
