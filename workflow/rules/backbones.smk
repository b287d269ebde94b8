def backbone_inputs(wildcards):
    if config["backbones"][wildcards.backbone]["source"] == "pretrain":
        # ancient: see the train rule; the corpus depends only on params below.
        return [ancient(str(paths.pretext_dir(wildcards.backbone)))]
    return []


rule backbone:
    """Build and pretrain a tiny backbone (embedded default), or copy a local save_pretrained dir."""
    input:
        backbone_inputs,
    output:
        directory(str(paths.backbone_dir("{backbone}"))),
    params:
        backbone=lambda w: config["backbones"][w.backbone],
        data_seed=config["data_seed"],
    threads: config["threads"]
    log:
        str(paths.log("backbone", "{backbone}")),
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../scripts/backbone.py"
