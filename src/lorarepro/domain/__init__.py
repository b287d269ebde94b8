"""The domain: the run spec, data, methods, task families, evaluation, checkpoints and the run record;
imports only `core`."""
