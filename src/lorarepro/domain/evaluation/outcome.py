"""What an evaluation returns besides a plain number: NotRun (deliberately not run, with its reason)
and Score (a metric carrying details for the result JSON). A leaf module: every evaluator imports it."""


class NotRun(Exception):
    """An evaluation that was deliberately not run (e.g. it needs code execution or a judge that is not configured)."""


class Score(float):
    """A metric (%) that carries details for the result JSON (e.g. HumanEval's per-problem outcomes)."""

    def __new__(cls, value: float, details: dict):
        score = super().__new__(cls, value)
        score.details = details
        return score
