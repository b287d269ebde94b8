# Names only: letters, digits, '_' and '-' (the schema enforces the same for config keys).
wildcard_constraints:
    task="[A-Za-z0-9][A-Za-z0-9_-]*",
    method="[A-Za-z0-9][A-Za-z0-9_-]*",
    backbone="[A-Za-z0-9][A-Za-z0-9_-]*",


SEEDS = config["seeds"]


TABLES = specs(config, "tables")
FIGURES = specs(config, "figures")


def run_results(pairs):
    return [str(paths.run_result(t, m, s)) for t, m in pairs for s in SEEDS]


def final_outputs():
    return table_outputs() + figure_outputs() + [str(paths.tables_index()), str(paths.metrics_summary())]


def table_outputs():
    return [str(paths.table(t, ext)) for t in TABLES for ext in ("csv", "md", "tex")]


def figure_outputs():
    return [str(paths.figure(f, ext)) for f in FIGURES for ext in ("png", "pdf")]


# One MLflow parent run per invocation that has work to do (onstart runs only then). Creating the
# store here, before jobs fan out, avoids concurrent SQLite schema creation.
onstart:
    import os
    from lorarepro import tracking

    os.environ["LORAREPRO_MLFLOW_PARENT"] = tracking.start_parent(config, "snakemake")


onsuccess:
    import os
    from lorarepro import tracking

    if os.environ.get("LORAREPRO_MLFLOW_PARENT"):
        tracking.end_parent(config, os.environ["LORAREPRO_MLFLOW_PARENT"], "FINISHED")


onerror:
    import os
    from lorarepro import tracking

    if os.environ.get("LORAREPRO_MLFLOW_PARENT"):
        tracking.end_parent(config, os.environ["LORAREPRO_MLFLOW_PARENT"], "FAILED")
