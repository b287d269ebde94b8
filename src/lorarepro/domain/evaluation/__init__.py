"""Evaluation: the family's metric on every evaluation split of a task (validation, test, OOD), or
lm-evaluation-harness's benchmarks (`harness`, a generation task with `metric: lm_eval`), and what
some metrics need beyond the model (`judge`: MT-Bench's judge model; `humaneval` and `sandbox`:
running model-written code).

An evaluation can be deliberately not run (it needs code execution, or a judge model that is not
configured): the family raises NotRun, the split's metric is recorded as null with the reason, and
the run still finishes, so its checkpoint can be evaluated later (lorarepro.stages.reevaluate, the
`lorarepro evaluate` command) without training again.
"""

from lorarepro.domain.evaluation.outcome import NotRun, Score
from lorarepro.domain.evaluation.splits import evaluate_splits, record_entries

__all__ = ["NotRun", "Score", "evaluate_splits", "record_entries"]
