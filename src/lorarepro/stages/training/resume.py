"""Step checkpoints, so a training run killed mid-way resumes where it stopped with the same result.

Every `checkpoint_every` optimizer steps (top-level config key) the trainer saves, atomically, one
file `state.pt` under paths.resume_dir(task, method, seed): the trainable parameters (plus, in
in-place Flat mode, the target weights W as the run holds them between steps, rounding drift
included), the optimizer and scheduler states, the torch RNG states, the loss history and the
step. torch.save of tensors, numbers and lists only; loaded with `weights_only=True`, so no pickle
runs. Data order (loop.step_plan) and Flat-LoRA noise (seeded by run seed, step, layer) depend on
the step alone, so nothing else is needed to continue bit-identically.

A state is used only if its fingerprint (the resolved run, seed, data and backbone hashes, library
versions) equals the new run's; otherwise the run starts over and says so in its log. The trainer
deletes the state once the run's outputs are written.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from importlib.metadata import version
from pathlib import Path

import torch

from lorarepro.core.atomic import write_with

FORMAT = 1
STATE = "state.pt"


def fingerprint(run, seed: int, data_sha256: str, backbone_sha256: str) -> str:
    """What must be equal for a saved state to continue this run (a RunSpec; a config change starts over)."""
    libs = {name: version(name) for name in ("torch", "transformers", "peft")}
    blob = {"format": FORMAT, "run": run.as_dict(), "seed": seed, "data": data_sha256, "backbone": backbone_sha256, "libs": libs}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


class StepCheckpoints:
    """Save / load / delete the resume state of one run. `every` <= 0 disables saving."""

    def __init__(self, directory: Path, fingerprint: str, every: int, log=print):
        self.dir, self.fingerprint, self.every, self.log = Path(directory), fingerprint, every, log

    @property
    def path(self) -> Path:
        return self.dir / STATE

    def due(self, steps_done: int, total: int) -> bool:
        return self.every > 0 and steps_done < total and steps_done % self.every == 0

    def save(self, steps_done: int, model, optimizer, scheduler, history, extra_weights: dict | None = None,
             extra: dict | None = None) -> None:
        """Write the state after `steps_done` optimizer steps (temp file + rename: never half-written).
        `extra_weights`: tensors restored into the model beside the trainable ones; `extra`: any other
        tensors and numbers the run needs to continue (e.g. the checkpoint selection's best so far)."""
        state = {
            "format": FORMAT,
            "fingerprint": self.fingerprint,
            "steps_done": steps_done,
            "params": {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad},
            "weights": {n: w.detach().clone() for n, w in (extra_weights or {}).items()},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
            "history": {"steps": list(history.steps), "loss": list(history.loss), "lr": list(history.lr)},
            "extra": extra or {},
        }
        write_with(self.path, lambda tmp: torch.save(state, tmp))

    def load(self) -> dict | None:
        """The saved state if it belongs to this run, else None (and the log says why)."""
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, weights_only=True, map_location="cpu")
        except Exception as exc:  # a truncated or foreign file: never trusted, never fatal
            self.log(f"resume: ignoring unreadable {self.path} ({type(exc).__name__}: {exc}); starting over")
            return None
        if state.get("format") != FORMAT or state.get("fingerprint") != self.fingerprint:
            self.log(f"resume: {self.path} was saved by a different config or code (fingerprint differs); starting over")
            return None
        return state

    def restore(self, state: dict, model, optimizer, scheduler, history) -> int:
        """Put a loaded state into the freshly built model/optimizer/scheduler; returns the next step."""
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in {**state["params"], **state["weights"]}.items():
                if name not in params:
                    raise KeyError(f"resume state {self.path} has parameter '{name}' the model lacks")
                params[name].copy_(value)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        for key in ("steps", "loss", "lr"):
            getattr(history, key)[:] = state["history"][key]
        self.log(f"resume: continuing from {self.path} after step {state['steps_done']}")
        return state["steps_done"]

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
