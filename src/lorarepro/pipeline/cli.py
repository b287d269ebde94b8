"""The `lorarepro` command: audit a pipeline's outputs, or evaluate saved checkpoints again.
Run from the repository root; `python -m lorarepro` works the same without the console script.
"""

import argparse
import sys
from importlib import metadata
from pathlib import Path

from lorarepro.core import numerics, paths
from lorarepro.core.config import ConfigError, reported_runs
from lorarepro.domain.experiment import load
from lorarepro.pipeline.checks import check_reporting


EXAMPLES = """examples:
  lorarepro audit                                  # audit the default pipeline's outputs
  lorarepro audit --configfile reduced.yaml        # a pipeline run with snakemake --configfile reduced.yaml
  lorarepro audit --retrain 2 --reevaluate 3       # more evidence, slower
  lorarepro reference --check                      # results/ against the committed reference (as CI does)
  lorarepro register --check                       # the config against results/preregistration.json
  lorarepro register --write --reason "time budget"  # register, or record a change as a deviation
  lorarepro evaluate --configfile workflow/configs/paper.yaml wizardlm_mtbench lora_r8
                                                   # evaluate saved checkpoints again (e.g. a judge is now set)
  lorarepro crate                                  # a Workflow Run RO-Crate of the finished pipeline (build/crate/)
  lorarepro estimate --configfile workflow/configs/paper.yaml --gpu h100
                                                   # GPU-hours per table before a run, with the rates' sources

--configfile takes one file; repeat it for several (snakemake's `--configfile a.yaml b.yaml`
is `--configfile a.yaml --configfile b.yaml` here), so it never swallows TASK and METHOD.
"""
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def _parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter  # keeps the examples' layout
    parser = argparse.ArgumentParser(prog="lorarepro", description=__doc__.splitlines()[0], epilog=EXAMPLES,
                                     formatter_class=raw)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    audit = commands.add_parser(
        "audit", help="trace every table cell to its runs and verify every artifact", formatter_class=raw,
        description="Writes results/audit/manual/report.md and audit.json (the pipeline's own audit, its rule, writes "
                    "results/audit/report.md and audit.json); exit status 0 only when every check passes.",
        epilog=EXAMPLES)
    _config_arguments(audit)
    audit.add_argument("--reevaluate", type=_count_or_all, metavar="K",
                       help="checkpoints re-evaluated per table (default 1), or `all`: every checkpoint")
    audit.add_argument("--sample-seed", type=int, metavar="S", help="seed of the re-evaluation/retraining sample")
    audit.add_argument("--retrain", type=int, metavar="K", help="runs retrained in a temporary directory (default 0)")
    audit.add_argument("--gpu-tolerance", type=float, metavar="X", help="metric points a GPU retrain may differ by")
    audit.add_argument("--paper-tolerance", type=float, metavar="X",
                       help="judge reproduced vs paper cells within ±X points (default: shown, not judged)")
    audit.add_argument("--strict", action="store_true", default=None, help="warn and skip fail too")
    audit.add_argument("--report", help="report path (default results/audit/manual/report.md)")
    audit.add_argument("--json", help="JSON path (default results/audit/manual/audit.json)")
    evaluate = commands.add_parser(
        "evaluate", help="evaluate finished runs again from their checkpoints (e.g. MT-Bench once a judge is set)",
        description="Rewrites the runs' result JSONs (metrics, not_run, judge) and MLflow metrics; trains nothing. "
                    "Rebuild the tables afterwards (snakemake reruns the tables rule).",
        formatter_class=raw, epilog=EXAMPLES)
    evaluate.add_argument("task", help="a task of the config's `tasks:`")
    evaluate.add_argument("method", help="a method of the config's `methods:`")
    evaluate.add_argument("--seeds", type=int, nargs="+", help="default: every seed a table, figure or claim reads")
    _config_arguments(evaluate)
    ref = commands.add_parser(
        "reference", help="write or check results/reference.json (what the committed results are, and under which numerics)",
        description="--write after regenerating results/ (commit both); --check exits 1, listing each file, when a "
                    "deterministic file under results/ differs from the reference (timing files are exempt).",
        formatter_class=raw)
    action = ref.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="record the finished pipeline's results as the reference")
    action.add_argument("--check", action="store_true", help="compare results/ with the reference")
    _config_arguments(ref)
    reg = commands.add_parser(
        "register", help="write or check results/preregistration.json (the registered regime, claims and analysis)",
        description="--write registers the config (the first time) or, when its regime or claims differ from the "
                    "registration, records a deviation (--reason required) and registers the new values; --check "
                    "exits 1, naming each key, when the config differs from the registration without a recorded deviation.",
        formatter_class=raw)
    action = reg.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="register, or record a deviation and register the change")
    action.add_argument("--check", action="store_true", help="compare the config with the registration")
    reg.add_argument("--reason", help="why the regime or claims changed after registration (required for a deviation)")
    reg.add_argument("--commit", help="the commit of the deviations recorded without one (once it is known)")
    reg.add_argument("--date", help="the date to record (default: today, UTC)")
    reg.add_argument("--path", default=None, help="the registration file (default results/preregistration.json)")
    _config_arguments(reg)
    crate = commands.add_parser(
        "crate", help="write a Workflow Run RO-Crate (Provenance Run Crate) of the finished pipeline",
        description="The workflow, every training run (a CreateAction with its inputs, parameters, outputs, times, "
                    "numerics and versions), the tables, figures and claims with their hashes and runs, and the audit's "
                    "verdict. Checkpoints are referenced by path and sha256 unless --bundle-checkpoints. "
                    "Needs the `crate` extra (pip install -e .[crate]).", formatter_class=raw)
    crate.add_argument("--out", default=None, help="the crate's directory (default build/crate; replaced)")
    crate.add_argument("--bundle-checkpoints", action="store_true", help="copy the checkpoints into the crate")
    _config_arguments(crate)
    est = commands.add_parser(
        "estimate", help="GPU-hours (or CPU time) per table and in total before a run, with each rate's source",
        description="Tokens from the config (sizes or stated assumptions; max_length as an upper bound), rates from "
                    "the committed benchmarks or a FLOP model (lorarepro.reporting.estimate), with uncertainty.",
        formatter_class=raw)
    est.add_argument("--gpu", default="h100", choices=["h100", "h200", "a100", "4090", "cpu"],
                     help="the device to price (default %(default)s; cpu: a local run on --cores cores)")
    est.add_argument("--cores", type=int, default=2, help="cores of a --gpu cpu run (default %(default)s)")
    est.add_argument("--runs", action="store_true", help="also list every (task, method) with its tokens and rate")
    est.add_argument("--json", metavar="PATH", help="also write the estimate as JSON (`-`: stdout only, as JSON)")
    _config_arguments(est)
    return parser


def _config_arguments(command: argparse.ArgumentParser) -> None:
    # One file per flag (append): nargs="*" would take TASK and METHOD after it as config files.
    command.add_argument("--configfile", action="append", default=[], metavar="FILE",
                         help="a config file deep-merged over params.yaml, as given to snakemake --configfile; "
                              "repeat the flag for several")
    command.add_argument("--params", default="params.yaml", help="the base config (default: %(default)s)")


def version() -> str:
    """The installed package's version (a source tree never installed says so)."""
    try:
        return metadata.version("lorarepro")
    except metadata.PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def _count_or_all(value: str):
    if value == "all":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number or 'all', not {value!r}") from None


def _load(command: str, args) -> dict | None:
    """The config of `args` (checked, figures included), or None after printing the error naming its file or key."""
    try:
        config = load(args.params, *args.configfile)
        check_reporting(config)
    except ConfigError as err:
        print(f"lorarepro {command}: {err}", file=sys.stderr)
        return None
    numerics.pin(config["numerics"], config["threads"])  # before the command imports torch
    paths.select(paths.config_id(args.configfile), config["standalone"])  # where the pipeline put this config's outputs
    return config


def _unknown_run(config: dict, args) -> str | None:
    """Why (task, method) names no run of the config, naming the known ones; None when both are known."""
    for kind, name in (("task", args.task), ("method", args.method)):
        known = config[kind + "s"]
        if name not in known:
            hint = "" if args.configfile else " (without --configfile: params.yaml's only)"
            return f"unknown {kind} '{name}'; known {kind}s{hint}: {', '.join(sorted(known))}"
    return None


def evaluate(args) -> int:
    config = _load("evaluate", args)
    if config is None:
        return 2
    from safetensors import SafetensorError  # deferred: with the loaders below

    from lorarepro.domain.families.common import allow_remote_code  # deferred: torch, transformers, after numerics.pin
    from lorarepro.stages.reevaluate import evaluate_checkpoint  # deferred: torch, transformers, PEFT
    unknown = _unknown_run(config, args)
    if unknown:
        print(f"lorarepro evaluate: {unknown}", file=sys.stderr)
        return 2
    allow_remote_code(config)
    wanted = reported_runs(config).get((args.task, args.method), config["seeds"])
    for seed in args.seeds if args.seeds is not None else wanted:
        try:
            result = evaluate_checkpoint(config, args.task, args.method, seed)
        except (OSError, ValueError, SafetensorError) as err:  # a missing, unsafe or unreadable file, named
            print(f"lorarepro evaluate: {err}", file=sys.stderr)
            return 1
        not_run = result.get("not_run") or {}
        print(f"{args.task}/{args.method}/seed{seed}: " + ", ".join(
            f"{k} {'not run (' + not_run[k] + ')' if v is None else v}" for k, v in result["metrics"].items()))
    return 0


def audit(args) -> int:
    config = _load("audit", args)
    if config is None:
        return 2
    # Its own files, never the audit rule's: Snakemake reruns its audit from those files' age alone
    config_id = paths.config_id(args.configfile)
    report = Path(args.report) if args.report else paths.manual_audit_report(config_id)
    document = Path(args.json) if args.json else paths.manual_audit_json(config_id)
    pipeline = {paths.audit_report(config_id).resolve(), paths.audit_json(config_id).resolve()}
    taken = next((p for p in (report, document) if p.resolve() in pipeline), None)
    if taken is not None:
        print(f"lorarepro audit: {taken} is the pipeline's own audit file (its audit rule writes it); "
              "choose another --report/--json path", file=sys.stderr)
        return 2
    from lorarepro import audit as auditing  # deferred: torch, MLflow, DVC, after numerics.pin
    try:
        options = auditing.Options.from_config(
            config, reevaluate=args.reevaluate, sample_seed=args.sample_seed, retrain=args.retrain,
            gpu_tolerance=args.gpu_tolerance, paper_tolerance=args.paper_tolerance, strict=args.strict)
    except (ValueError, TypeError) as err:
        for old in (report, document):
            old.unlink(missing_ok=True)  # no earlier verdict outlives an audit that did not run
        print(f"lorarepro audit: {err}", file=sys.stderr)
        return 2
    try:
        auditing.run_and_write(config, report, document, options, configfiles=args.configfile)
    except auditing.AuditFailed:
        return 1
    return 0


def check_reference(args) -> int:
    config = _load("reference", args)
    if config is None:
        return 2
    from lorarepro.audit import reference  # deferred: torch (the fingerprint), after numerics.pin

    if args.write:
        print(f"wrote {reference.write(config)}")
        return 0
    committed = reference.load()
    if committed is None:
        print(f"lorarepro reference: no {reference.REFERENCE}", file=sys.stderr)
        return 1
    problems = reference.compare_results(committed)
    for line in problems:
        print(line)
    print(f"{len(problems)} of {len(committed['results'])} reference files differ" if problems
          else f"results/ matches {reference.REFERENCE}: {len(committed['results'])} files (measured times and memory exempt)")
    return 1 if problems else 0


def register(args) -> int:
    config = _load("register", args)
    if config is None:
        return 2
    from lorarepro.reporting import registration  # deferred: reporting's imports, for this command only

    path = Path(args.path) if args.path else registration.PATH
    try:
        if args.check:
            problems = registration.check(config, path=path)
            for line in problems:
                print(line)
            if not problems:
                print(f"the config matches {path} (deviations recorded: "
                      f"{len(registration.load(path=path)['deviations'])})")
            return 1 if problems else 0
        current = registration.load(path=path)
        written, deviation = registration.update(current, config, reason=args.reason, date=args.date, commit=args.commit)
        registration.write(written, path=path)
    except registration.RegistrationError as err:
        print(f"lorarepro register: {err}", file=sys.stderr)
        return 1
    if current is None:
        print(f"registered {path} ({written['registered']})")
    elif deviation is not None:
        print(f"{path}: deviation recorded ({', '.join(deviation['keys'])})")
    else:
        print(f"{path}: no deviation (pins refreshed)")
    return 0


def crate(args) -> int:
    config = _load("crate", args)
    if config is None:
        return 2
    try:
        from lorarepro.pipeline import crate as crating  # deferred: rocrate, the optional extra `crate`
    except ImportError as err:  # pragma: no cover - depends on the environment
        print(f"lorarepro crate: {err} (pip install -e .[crate])", file=sys.stderr)
        return 2
    try:
        summary = crating.build(Path(args.out) if args.out else crating.OUT, config=config,
                                configfiles=args.configfile, bundle_checkpoints=args.bundle_checkpoints)
    except (ImportError, FileNotFoundError, ValueError) as err:
        print(f"lorarepro crate: {err}", file=sys.stderr)
        return 1
    audit_note = "no audit verdict (run the pipeline first: its audit rule writes it)" if summary["audit"] is None else \
        f"audit passed: {summary['audit']['passed']}"
    print(f"wrote {summary['path']}: {summary['runs']} training runs, {len(summary['files'])} files; {audit_note}"
          + (f"; skipped unfinished: {len(summary['skipped'])}" if summary["skipped"] else ""))
    return 0


def estimate(args) -> int:
    config = _load("estimate", args)
    if config is None:
        return 2
    import json  # deferred: this command only

    from lorarepro.reporting import estimate as estimating  # deferred: this command only
    try:
        result = estimating.estimate(config, args.gpu, cores=args.cores)
    except (ValueError, KeyError) as err:
        print(f"lorarepro estimate: {err}", file=sys.stderr)
        return 1
    if args.json == "-":
        print(json.dumps(result, indent=1, default=str))
        return 0
    print(estimating.render(result, runs=args.runs))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # argparse's own message, plus the likely cause: snakemake's several files after one flag
        hint = (f" (--configfile takes one file; repeat the flag: --configfile {' --configfile '.join(extra)})"
                if all(e.endswith(CONFIG_SUFFIXES) for e in extra) else "")
        parser.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    return {"audit": audit, "evaluate": evaluate, "reference": check_reference,
            "register": register, "crate": crate, "estimate": estimate}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
