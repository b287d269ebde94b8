def prepare_data_inputs(w):
    """The task's backbone, when a split keeps rows by their token count (`max_tokens`)."""
    task = config["tasks"][w.task]
    limited = task.get("max_tokens") or any(isinstance(s, dict) and s.get("max_tokens") for s in (task.get("splits") or {}).values())
    return {"backbone": str(paths.backbone_dir(task["backbone"]))} if limited else {}


rule prepare_data:
    """Generate or load one task's splits (+ manifest with sha256) from the data seed."""
    input:
        unpack(prepare_data_inputs),
    output:
        directory(str(paths.prepared_dir("{task}"))),
    params:
        task=lambda w: config["tasks"][w.task],
        data_seed=config["data_seed"],
    log:
        str(paths.log("prepare_data", "{task}")),
    resources:
        **rule_resources("prepare_data"),
    script:
        "../scripts/job.py"


rule prepare_pretext:
    """The pretraining corpus of one pipeline-built backbone, disjoint from all downstream data."""
    output:
        directory(str(paths.pretext_dir("{backbone}"))),
    params:
        backbone=lambda w: config["backbones"][w.backbone],
        data_seed=config["data_seed"],
    priority: 10  # before its backbone, on the critical path
    log:
        str(paths.log("prepare_pretext", "{backbone}")),
    resources:
        **rule_resources("prepare_pretext"),
    script:
        "../scripts/job.py"
