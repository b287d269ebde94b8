"""The `lorarepro` command. Run from the repository root:

    lorarepro audit                                 # audit the default pipeline's outputs
    lorarepro audit --configfile reduced.yaml       # a pipeline run with --configfile reduced.yaml
    lorarepro audit --retrain 2 --reevaluate 3      # more evidence, slower
    lorarepro evaluate wizardlm_mtbench lora_r8 --configfile workflow/configs/paper.yaml
                                                    # evaluate saved checkpoints again (e.g. a judge is now set)

(`python -m lorarepro audit` works the same without the console script.)
"""

import argparse
import sys
from pathlib import Path

from lorarepro.config import ConfigError, reported_runs
from lorarepro.experiment import load


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lorarepro", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    audit = commands.add_parser(
        "audit", help="trace every table cell to its runs and verify every artifact",
        description="Writes results/audit/report.md and audit.json; exit status 0 only when every check passes.")
    audit.add_argument("--configfile", nargs="*", default=[], metavar="FILE",
                       help="config files deep-merged over params.yaml, as given to snakemake --configfile")
    audit.add_argument("--params", default="params.yaml", help="the base config (default: %(default)s)")
    audit.add_argument("--reevaluate", type=int, metavar="K", help="checkpoints re-evaluated per table (default 1)")
    audit.add_argument("--sample-seed", type=int, metavar="S", help="seed of the re-evaluation/retraining sample")
    audit.add_argument("--retrain", type=int, metavar="K", help="runs retrained in a temporary directory (default 0)")
    audit.add_argument("--gpu-tolerance", type=float, metavar="X", help="metric points a GPU retrain may differ by")
    audit.add_argument("--paper-tolerance", type=float, metavar="X",
                       help="judge reproduced vs paper cells within ±X points (default: shown, not judged)")
    audit.add_argument("--strict", action="store_true", default=None, help="warn and skip fail too")
    audit.add_argument("--report", help="report path (default results/audit/report.md)")
    audit.add_argument("--json", help="JSON path (default results/audit/audit.json)")
    evaluate = commands.add_parser(
        "evaluate", help="evaluate finished runs again from their checkpoints (e.g. MT-Bench once a judge is set)",
        description="Rewrites the runs' result JSONs (metrics, not_run, judge) and MLflow metrics; trains nothing. "
                    "Rebuild the tables afterwards (snakemake reruns the tables rule).")
    evaluate.add_argument("task")
    evaluate.add_argument("method")
    evaluate.add_argument("--seeds", type=int, nargs="*", help="default: every seed a table, figure or claim reads")
    evaluate.add_argument("--configfile", nargs="*", default=[], metavar="FILE",
                          help="config files deep-merged over params.yaml, as given to snakemake --configfile")
    evaluate.add_argument("--params", default="params.yaml", help="the base config (default: %(default)s)")
    return parser


def evaluate(args) -> int:
    from lorarepro.reevaluate import evaluate_checkpoint  # deferred: torch, transformers, PEFT

    try:
        config = load(args.params, *args.configfile)
    except ConfigError as err:
        print(f"lorarepro evaluate: {err}", file=sys.stderr)
        return 2
    wanted = reported_runs(config).get((args.task, args.method), config["seeds"])
    for seed in args.seeds if args.seeds is not None else wanted:
        try:
            result = evaluate_checkpoint(config, args.task, args.method, seed)
        except (FileNotFoundError, ValueError) as err:
            print(f"lorarepro evaluate: {err}", file=sys.stderr)
            return 1
        not_run = result.get("not_run") or {}
        print(f"{args.task}/{args.method}/seed{seed}: " + ", ".join(
            f"{k} {'not run (' + not_run[k] + ')' if v is None else v}" for k, v in result["metrics"].items()))
    return 0


def audit(args) -> int:
    from lorarepro import audit as auditing  # deferred: torch, MLflow, DVC

    try:
        config = load(args.params, *args.configfile)
        options = auditing.Options.from_config(
            config, reevaluate=args.reevaluate, sample_seed=args.sample_seed, retrain=args.retrain,
            gpu_tolerance=args.gpu_tolerance, paper_tolerance=args.paper_tolerance, strict=args.strict)
    except (ConfigError, ValueError, TypeError) as err:
        print(f"lorarepro audit: {err}", file=sys.stderr)
        return 2
    try:
        auditing.run_and_write(config, args.report and Path(args.report), args.json and Path(args.json), options)
    except auditing.AuditFailed:
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return {"audit": audit, "evaluate": evaluate}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
