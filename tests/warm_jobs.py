"""Job functions for tests/test_warm.py: importable by name in a fork of the warm server (the
client sends module:function; the fork imports it from the client's sys.path)."""

import json
import os
import sys
import time


def report(args: dict) -> None:
    """Where and how the job ran."""
    print("hello from the job", flush=True)
    print("a warning from the job", file=sys.stderr, flush=True)
    with open(args["out"], "w") as fh:
        json.dump({"pid": os.getpid(), "ppid": os.getppid(), "cwd": os.getcwd(), "marker": os.environ.get("MARKER"),
                   "argv": sys.argv, "torch_loaded": "torch" in sys.modules}, fh)


def fail(args: dict) -> None:
    if args["how"] == "exit":
        sys.exit(3)
    raise ValueError("the job failed on purpose")


def sleep(args: dict) -> None:
    with open(args["out"], "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(60)


def train(args: dict) -> None:
    from lorarepro.domain.experiment import resolve_run
    from lorarepro.stages.training.train import train_task_method

    train_task_method(args["config"], resolve_run(args["config"], args["task"], args["method"]))
