"""Which checkpoint of a run is evaluated and saved: the last step's (the default), or the best epoch's
by the validation loss or metric, as the official code does for GLUE (`load_best_model_at_end` with
`metric_for_best_model="eval_loss"`: the dev set scored after every epoch, the best one restored).

`training.checkpoint_selection`: last | best_validation_loss | best_validation_metric. At the end of
each epoch (and after the last step) the validation split is scored; when it improves on the best so
far, a copy of the trainable parameters is kept (adapter and trained heads: O(adapter) memory). After
training the kept copy replaces the last one. A resume state carries the best so far (`state_dict`),
so an interrupted run selects as an uninterrupted one would.
"""

from __future__ import annotations

import math

import torch

CRITERIA = ("last", "best_validation_loss", "best_validation_metric")


class Selection:
    """`score()` returns the validation value after an epoch (lower is better for the loss)."""

    def __init__(self, criterion: str, model, steps_per_epoch: int, total_steps: int, score) -> None:
        if criterion not in CRITERIA:
            raise ValueError(f"training.checkpoint_selection must be one of {CRITERIA}, got {criterion!r}")
        self.criterion, self.model, self.score = criterion, model, score
        self.steps_per_epoch, self.total_steps = steps_per_epoch, total_steps
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.best: dict[str, torch.Tensor] | None = None

    @property
    def active(self) -> bool:
        return self.criterion != "last"

    def after_step(self, steps_done: int) -> None:
        """At an epoch's end (or the run's), score the model and keep it when it is the best so far."""
        if not self.active or (steps_done % self.steps_per_epoch and steps_done != self.total_steps):
            return
        value = float(self.score())
        sign = 1.0 if self.criterion == "best_validation_loss" else -1.0
        if self.best_value is None or sign * value < sign * self.best_value:
            self.best_value, self.best_step = value, steps_done
            self.best = {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    def restore(self) -> dict | None:
        """Put the best epoch's parameters back; what the run record says of the choice (None: last)."""
        if not self.active or self.best is None:
            return None
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in self.best.items():
                params[name].copy_(value)
        return {"criterion": self.criterion, "step": self.best_step, "epoch": math.ceil(self.best_step / self.steps_per_epoch),
                "value": self.best_value}

    def state_dict(self) -> dict:
        return {"value": self.best_value, "step": self.best_step, "params": self.best}

    def load_state_dict(self, state: dict | None) -> None:
        if state:
            self.best_value, self.best_step, self.best = state["value"], state["step"], state["params"]
