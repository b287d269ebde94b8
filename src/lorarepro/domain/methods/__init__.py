"""Fine-tuning methods: the PEFT adapters (`lora`: a run's `adapter:` entry picks one adapter kind
through `lora.ADAPTERS`, which answers how it is wrapped, initialised, optimised, called and saved)
and the step strategies that change how one optimizer step is taken (`flat`: Flat-LoRA's random
full-weight noise; `sam`: the SAM baselines).

A method's config entry turns a strategy on by its key (`flat: {...}` or `sam: {...}`); STRATEGIES
maps the key to the strategy's defaults and its builder, so the trainer builds whichever strategy a
run asks for without naming any. A strategy object follows one protocol with the training loop
(lorarepro.stages.training.loop):

    begin_step(step) / end_step()      around the micro-batches of each optimizer step
    ascend()                           only a two-pass strategy (SAM): between its two passes
    close()                            undo anything still applied (also after an exception)
    resume_weights() -> dict | None    tensors a resume state must hold beyond the trainable ones
    finish(pristine) -> dict | None    after training, before evaluation: what the run record
                                       says of the strategy (`pristine(names)` reads the saved
                                       backbone's weights of those layers)

Builders are named, not imported, here: config checks read the defaults without importing torch.
"""

from dataclasses import dataclass

from lorarepro.core.config import deep_merge
from lorarepro.core.registry import Registry, call


@dataclass(frozen=True)
class Strategy:
    defaults: dict  # under the family's `training.<key>` and the method's `<key>` entry
    builder: str  # "module:function", called as function(model, settings, total_steps, seed)


STRATEGIES = Registry("step strategy")
STRATEGIES.register("flat", Strategy({"rho": 0.05, "mode": "exact", "scope": "lora"}, "lorarepro.domain.methods.flat:from_run"))
STRATEGIES.register("sam", Strategy({"rho": 0.05, "space": "weight"}, "lorarepro.domain.methods.sam:from_run"))


def settings(key: str, family_defaults: dict | None, method_entry: dict) -> dict:
    """One strategy's settings: its defaults < the family's `training.<key>` < the method's entry."""
    return deep_merge(STRATEGIES[key].defaults, deep_merge(family_defaults or {}, method_entry))


def chosen(run) -> str | None:
    """The key of the strategy a resolved run (lorarepro.domain.experiment.RunSpec) uses (None: plain optimizer steps)."""
    keys = [key for key in STRATEGIES if run.strategies.get(key) is not None]
    if len(keys) > 1:
        raise ValueError(f"run {run.task}/{run.method} turns on {keys}: one step strategy at a time")
    return keys[0] if keys else None


def build(model, run, total_steps: int, seed: int):
    """The run's (a RunSpec's) step strategy around `model`, or None."""
    key = chosen(run)
    return None if key is None else call(STRATEGIES[key].builder, model, run.strategies[key], total_steps, seed)


def finish(strategy, pristine) -> dict:
    """The run record's strategy entry: `flat` holds Flat-LoRA's report (mode, layers, in-place
    drift); None for every other method (the record's layout since its first version)."""
    return {"flat": None if strategy is None else strategy.finish(pristine)}
