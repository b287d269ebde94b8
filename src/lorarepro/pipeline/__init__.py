"""The pipeline's side of the package: one function per Snakemake rule (`jobs`), warm job start
(`warm`), GPU slots for local jobs (`gpus`) and the launcher of data-parallel ranks (`launcher`)."""
