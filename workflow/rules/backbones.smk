def backbone_inputs(wildcards):
    if config["backbones"][wildcards.backbone]["source"] == "pretrain":
        pretext = str(paths.pretext_dir(wildcards.backbone))
        return [ancient_unless_ran_here(pretext, paths.log("backbone", wildcards.backbone))]
    return []


rule backbone:
    """Build and pretrain a tiny backbone (embedded default), or copy a local save_pretrained dir."""
    input:
        backbone_inputs,
    output:
        directory(str(paths.backbone_dir("{backbone}"))),
    params:
        backbone=lambda w: config["backbones"][w.backbone],
        # what else decides the weights: a changed draw or numerics mode rebuilds the backbone
        seed=backbone_seed(config),
        numerics=config["numerics"],
    threads: config["threads"]
    priority: 10  # on the critical path: every train job of its tasks waits for it
    log:
        str(paths.log("backbone", "{backbone}")),
    resources:
        **rule_resources("backbone"),
    script:
        "../scripts/job.py"
